"""False alarms of the in-flight weight-update paths on their correct
configuration (issue 20: no path may false-alarm in 10 reruns on CPU).

Every update path the CPU build runs, each with the cache cleared (the
correct configuration): `--via reload` with `--pause none|abort|wait|keep`
and `--via native` (backend `file`) with `--pause abort|wait|keep`
(`native --pause none` is refused, docs/errors.md). One rerun is one real
`parity-gate weight-update` process holding all 7 paths (two engine
processes: the engine updated in place, put back on the old weights and an
empty cache between paths, then a fresh engine on the new weights). Every
path that does not pass is a false alarm; the script prints the count per
path and the largest logprob difference each check saw over all reruns, so
the margin to the tolerance (--atol, 1e-4) is visible, not only the count.

    python bench/weight_update_reruns.py [--runs 10] [--work DIR] [--json PATH]

Runtime: ~80-110 s a rerun on 2 shared CPU cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_model, dump_json, gate_cli, machine_line  # noqa: E402

SUITE = """name: weight-update-reruns
model: {model}
engine: {{dtype: float32, seed: 0, max_model_len: 256, enforce_eager: true, enable_prefix_caching: true,
          block_size: 32}}
prompts:
  - id: a
    text: "Reinforcement learning samples rollouts and trains on the logprobs the engine returns."
  - id: b
    text: "Teacher forcing scores the same tokens in the same contexts, so versions can be compared."
  - id: c
    token_ids: [5, 17, 42, 99, 7, 64, 128, 3, 250, 31, 12, 77]
sampling:
  - {{name: greedy, temperature: 0.0, max_tokens: 16, logprobs: 1}}
"""
VIAS = {"reload": ("none", "abort", "wait", "keep"), "native": ("abort", "wait", "keep")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pg-wu-reruns-"))
    work.mkdir(parents=True, exist_ok=True)
    old, new = build_model(work / "old", seed=0), build_model(work / "new", seed=1)
    suite = work / "suite.yaml"
    suite.write_text(SUITE.format(model=new))
    t0 = time.perf_counter()
    alarms: dict[str, int] = {}
    worst: dict[str, dict[str, float]] = {}
    evidence: dict[str, dict[str, int]] = {}
    runs = []
    for i in range(args.runs):
        out = work / f"run{i:02d}"
        # `native --pause none` is refused, so each via runs as its own process with its pause modes
        def run_via(via: str, folder: Path):
            return gate_cli("weight-update", "--suite", suite, "--from", old, "--out", folder, "--clear-cache",
                            "--via", via, *[a for p in VIAS[via] for a in ("--pause", p)],
                            log=work / f"{folder.name}.log")
        r1, r2 = run_via("reload", out), run_via("native", Path(f"{out}-native"))
        seconds = r1.seconds + r2.seconds
        paths = []
        for r, folder in ((r1, out), (r2, Path(str(out) + "-native"))):
            if r.rc not in (0, 1):
                print(f"run {i}: exit {r.rc}: {r.stderr.strip()[-2000:]}", file=sys.stderr)
                return 3
            paths += json.loads((folder / "weight_update.json").read_text())["paths"]
        for p in paths:
            name = p["name"]
            alarms[name] = alarms.get(name, 0) + (p["verdict"] != "pass")
            for c in p["checks"]:
                w = worst.setdefault(name, {})
                w[c["id"]] = max(w.get(c["id"], 0.0), c.get("max_abs_diff") or 0.0)
                evidence.setdefault(name, {})[c["id"]] = c.get("tokens_compared") or 0
            if p.get("staleness"):
                w = worst.setdefault(name, {})
                w["staleness.after_switch_max_abs_diff"] = max(w.get("staleness.after_switch_max_abs_diff", 0.0),
                                                               p["staleness"]["after_switch_max_abs_diff"])
        fails = [p["name"] for p in paths if p["verdict"] != "pass"]
        runs.append({"run": i, "seconds": round(seconds, 1), "false_alarms": fails})
        print(f"run {i + 1}/{args.runs}: {len(paths) - len(fails)} of {len(paths)} paths pass"
              + (f", FALSE ALARM: {', '.join(fails)}" if fails else "") + f" ({seconds:.0f} s)", flush=True)
    total = sum(alarms.values())
    print(f"\n{machine_line()}")
    print(f"{args.runs} reruns x {len(alarms)} paths (cache cleared), {time.perf_counter() - t0:.0f} s: "
          f"{total} false alarms")
    print("| path | false alarms | check: max abs diff over all reruns (tokens compared per run) |")
    print("|---|---|---|")
    for name in sorted(alarms):
        cells = "; ".join(f"{cid} {v:.3g}" + (f" ({evidence[name][cid]})" if cid in evidence[name] else "")
                          for cid, v in worst[name].items())
        print(f"| {name} | {alarms[name]} of {args.runs} | {cells} |")
    if args.json:
        dump_json(args.json, {"machine": machine_line(), "runs": runs, "false_alarms": alarms, "worst": worst,
                              "tokens_compared": evidence})
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

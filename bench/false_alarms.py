"""False alarms on identical reruns (target: 20 identical reruns of the demo
give 0 false alarms).

Records one golden of the demo suite (examples/suite.yaml on the tiny
model, as `make demo` does), then runs the real `parity-gate check` against
it N times with nothing changed, each in its own process (one engine each,
as CI runs it). Every run that is not a PASS is a false alarm: it prints the
verdicts, the failing checks, and, per config, the largest value each
in-run check saw (the spread ratio and the centre's shift beyond noise), so
the margin to the bounds is visible, not only the count.

    python bench/false_alarms.py [--runs 20] [--work DIR] [--json PATH]

Runtime: one engine start per run (~25-40 s on 2 shared CPU cores).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, dump_json, gate_cli, machine_line  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pg-false-alarms-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = work / "tiny-model"
    assert gate_cli("tiny-model", "--out", model, "--seed", "0", "--force").rc == 0
    suite = work / "suite.yaml"
    text = (ROOT / "examples" / "suite.yaml").read_text()
    suite.write_text("\n".join(f"model: {model}" if ln.startswith("model:") else ln for ln in text.splitlines())
                     + "\n")
    golden = work / "golden"
    shutil.rmtree(golden, ignore_errors=True)
    rec = gate_cli("record", "--suite", suite, "--out", golden, log=work / "record.log")
    if rec.rc != 0:
        print(rec.stderr[-3000:], file=sys.stderr)
        return 3
    rows = []
    for i in range(args.runs):
        out = work / f"run-{i:02d}"
        shutil.rmtree(out, ignore_errors=True)
        run = gate_cli("check", "--suite", suite, "--golden", golden, "--out", out, log=work / f"run-{i:02d}.log")
        v = json.loads((out / "verdict.json").read_text()) if (out / "verdict.json").exists() else {}
        checks = v.get("checks") or []
        spread = max((c["value"] or 0.0 for c in checks if c["id"] == "sampler.spread"), default=None)
        shift = max((c["value"] or 0.0 for c in checks if c["id"] == "sampler.semantics"), default=None)
        forced = max(((g.get("forced") or {}).get("max_abs_diff") or 0.0
                      for g in ((v.get("measures") or {}).get("per_config") or {}).values()), default=None)
        row = {"run": i, "exit": run.rc, "verdict": v.get("verdict"), "seconds": round(run.seconds, 1),
               "failed": [f"{c['id']} [{c['config']}]" for c in checks if c["status"] == "fail"],
               "spread_ratio_max": spread, "centre_shift_max": shift, "forced_max_abs_diff": forced}
        rows.append(row)
        print(f"run {i:2d}: exit {run.rc} {row['verdict']:<6} spread x{spread if spread is None else round(spread, 4)} "
              f"shift {shift} forced max {forced} {'FAILED ' + ', '.join(row['failed']) if row['failed'] else ''}",
              flush=True)
    alarms = [r for r in rows if r["verdict"] != "pass"]
    summary = {"machine": machine_line(), "runs": len(rows), "false_alarms": len(alarms),
               "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    print(f"{len(alarms)} false alarms in {len(rows)} identical reruns ({summary['seconds']} s)")
    if args.json:
        dump_json(args.json, summary)
    return 1 if alarms else 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU validation tier (DEVELOPERS.md): a real vLLM bump on a real GPU.

Run by a maintainer on a GPU host with two vLLM releases installed side by
side (each importable through its own PYTHONPATH; see DEVELOPERS.md for the
offline kit). It records a golden under the OLD release, checks it under the
old one (expect PASS), under the NEW one (a real bump: expect PASS, every
config comparable or explained), then under the new one with each of the
seed's regressions injected (expect FAIL, the cause named):

  processed   logprobs_mode=processed_logprobs (root cause 1), with --diagnose
  fp32-head   hf_overrides={head_dtype: float32} (root cause 4)
  eager       enforce_eager=true (a changed runtime default, root cause 2)
  prefix      enable_prefix_caching=true (a changed runtime default)
  stale       weight-update without a prefix-cache reset (root cause 3);
  reset       ... and with the reset, the correct path (expect PASS)

Steps beyond the checks: weight-update-paths (AsyncLLM with requests in
flight: reload, native and sleep x keep, wait, abort; a kept cache; a CUDA
backend refused), moe and moe-old (the same on a mixture-of-experts body,
on the new release and, for NeMo-RL PR 2895's case, the old one),
wup-old-keep (the dense body's keep and wait on the old release, beside
moe-old; before vLLM 0.22 keep must fail: issue 42043 drops a token at the
resume), and bisect-args (which of prefix caching, async scheduling and
eager moves the verdict on the new release).

Each step is one `parity-gate` process (one engine each). Results accumulate
in WORK/results.json, so the steps can be split over several invocations
(`--steps`); `--table FILE` writes the Markdown table for bench/RESULTS.md.

    python bench/gpu_tier.py --work W --old-path P_OLD --new-path P_NEW --steps model,record,same,bump
    python bench/gpu_tier.py --work W --old-path P_OLD --new-path P_NEW --steps processed,fp32-head --table T.md

`--model trained` (docs/design.md section 4.4, run G4) runs the tier on a small Llama trained briefly
on Python source (bench/train_tiny.py, on the GPU host itself), where
sampled distributions are peaked as in real use, with prompts that share
prefixes and three configs (greedy; T=1.0 top_k 50, n=2; T=0.6 top_p 0.9,
n=2). Its default steps add `prefix-async`:

  prefix-async  enable_prefix_caching=true + async_scheduling=true, with
                --diagnose (KV reuse across a changed stream)

    python bench/gpu_tier.py --model trained --work W2 --old-path P_OLD --new-path P_NEW \\
        --steps model,record,same,bump,processed,prefix-async,fp32-head,eager --table T.md

`--gate-path P` runs the gate from P (an installed wheel, e.g. the kit's)
instead of this checkout.

CI cannot run this (no GPU); the CPU tiers cover the same logic with the CPU
build. `--cpu` runs the same steps on the tiny model (or, with `--model
trained`, the CPU shape trained for a few steps) with one release, to test
this script itself:

    python bench/gpu_tier.py --cpu --work W --steps model,record,same,bump
    python bench/gpu_tier.py --cpu --model trained --work W --steps model,record,bump,prefix-async
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
N_PROMPTS, MIN_LEN, MAX_LEN, NEW_TOKENS = 64, 32, 256, 64

STEPS = {
    # name: (release, extra CLI args, expected verdict, what it shows)
    "same": ("old", [], "pass", "the golden's own release: every measure exactly 0"),
    "bump": ("new", [], "pass", "a real bump: teacher-forced within noise, sampler semantics checked in-run"),
    "processed": ("new", ["--engine-arg", "logprobs_mode=processed_logprobs", "--diagnose"], "fail",
                  "root cause 1: processed sampler logprobs"),
    "fp32-head": ("new", ["--engine-arg", "hf_overrides={head_dtype: float32}"], "fail",
                  "root cause 4: lm_head in fp32 instead of bf16"),
    "eager": ("new", ["--engine-arg", "enforce_eager=true"], "fail", "root cause 2: a changed runtime default"),
    # Measured on an H200: prefix caching alone, with the plan replayed, moves
    # nothing (4.8e-7, as the bump); what breaks RL is a cache left stale by a
    # weight update, which the weight-update step covers.
    "prefix": ("new", ["--engine-arg", "enable_prefix_caching=true"], "pass",
               "prefix caching switched on: a changed default that must not raise a false alarm"),
    # Run G4 (docs/design.md section 4.4): on a trained model the sampler tokens that still matched across the changed stream
    # moved by up to 0.0386 with both knobs on, and the verdict was PASS.
    "prefix-async": ("new", ["--engine-arg", "enable_prefix_caching=true", "--engine-arg", "async_scheduling=true",
                             "--diagnose"], "fail",
                     "prefix caching + async scheduling: KV reuse and another decode schedule across a changed "
                     "stream; the matched sampler tokens must fail, the knob named"),
}


def _older_than(release: str):
    """An expected exit code that depends on the release run: 1 before `release` ("0.22"), 0 from it on and when
    the version is not known. Stdlib only (this script runs outside the releases' environments, where packaging
    may be missing): the version's leading numbers, "0.26.0+cu130" -> (0, 26, 0)."""
    def numbers(version: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.match(r"\d+(?:\.\d+)*", version).group().split("."))

    def expect(version: str | None) -> int:
        return int(bool(version and re.match(r"\d", version)) and numbers(version) < numbers(release))

    return expect


WUP_RUNS = {  # step: (name, weight-update args, expected exit code, or a function of the release's version)
    "wup-paths": ("paths", ["--via", "reload", "--via", "native", "--via", "sleep", "--pause", "keep", "--pause",
                            "wait", "--pause", "abort"], 0),
    "wup-keep-cache": ("keep-cache", ["--via", "reload", "--pause", "keep", "--keep-cache"], 1),
    # the core paths alone (a short device budget): reload with each pause, native with keep
    "wup-core": ("core", ["--via", "reload", "--pause", "keep", "--pause", "wait", "--pause", "abort"], 0),
    "wup-native-keep": ("native-keep", ["--via", "native", "--pause", "keep"], 0),
    "wup-nccl": ("nccl", ["--via", "native", "--backend", "nccl", "--pause", "keep"], 2),
    # the dense body on the old release: on vLLM 0.20.0 its keep resume fails (round 5, bench/RESULTS.md) as the
    # MoE body's did, vLLM issue 42043 (the async scheduler drops the first token after a keep resume with the
    # cache cleared; fixed in 0.22.0 by PR 42117): expected exit 1 before 0.22, 0 from it on
    "wup-old-keep": ("old-keep", ["--via", "reload", "--pause", "keep", "--pause", "wait"], _older_than("0.22")),
}
WUP_OLD_RELEASE = ("wup-old-keep",)  # WUP_RUNS steps that run on --old-path
DEFAULT_STEPS = {"random": "model,record," + ",".join(s for s in STEPS if s != "prefix-async") + ",weight-update,weight-update-paths",
                 "trained": "model,record,same,bump,processed,prefix-async,fp32-head,eager"}
# the trained model's sampling configs (docs/design.md section 4.4, run G4)
TRAINED_CONFIGS = (("greedy", {"temperature": 0.0}),
                   ("topk", {"temperature": 1.0, "top_k": 50, "n": 2, "seed": 11}),
                   ("topp", {"temperature": 0.6, "top_p": 0.9, "n": 2, "seed": 12}))


def _suite(work: Path, model: Path, cpu: bool) -> Path:
    import random

    rng = random.Random(20261127)
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    n, lo, hi, new = (8, 8, 24, 16) if cpu else (N_PROMPTS, MIN_LEN, MAX_LEN, NEW_TOKENS)
    lines = ["name: gpu-tier", f"model: {model}", "engine:",
             f"  dtype: {'float32' if cpu else 'bfloat16'}", "  seed: 0", "  max_model_len: 512",
             "  logprobs_mode: raw_logprobs", "  enable_prefix_caching: false"]
    if not cpu:
        # more than half the card: a --diagnose ablation can start only if the
        # parent check really released its engine's share first
        lines.append("  gpu_memory_utilization: 0.55")
    lines.append("prompts:")
    for i in range(n):
        ids = [rng.randrange(2, vocab) for _ in range(rng.randint(lo, hi))]
        lines.append(f"  - id: p{i:03d}\n    token_ids: {ids}")
    lines += ["sampling:",
              "  - name: greedy", "    temperature: 0.0", f"    max_tokens: {new}", "    ignore_eos: true",
              "    logprobs: 5",
              "  - name: rollout", "    temperature: 0.7", "    top_p: 0.95", f"    max_tokens: {new}",
              "    ignore_eos: true", "    seed: 11", "    n: 2", "    logprobs: 5"]
    path = work / "suite.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _suite_trained(work: Path, model: Path, prompts: Path, cpu: bool) -> Path:
    new = 16 if cpu else NEW_TOKENS
    lines = ["name: gpu-tier-trained", f"model: {model}", "engine:",
             f"  dtype: {'float32' if cpu else 'bfloat16'}", "  seed: 0", "  max_model_len: 512",
             "  logprobs_mode: raw_logprobs", "  enable_prefix_caching: false"]
    if not cpu:
        lines.append("  gpu_memory_utilization: 0.55")  # as _suite: --diagnose's ablation needs the parent gone
    lines.append("prompts:")
    for p in json.loads(prompts.read_text()):
        lines.append(f"  - id: {p['id']}\n    token_ids: {p['token_ids']}")
    lines.append("sampling:")
    for name, params in TRAINED_CONFIGS:
        lines.append(f"  - name: {name}")
        lines += [f"    {k}: {v}" for k, v in params.items()]
        lines += [f"    max_tokens: {new}", "    ignore_eos: true", "    logprobs: 5"]
    path = work / "suite.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


GATE_PATH = str(REPO)  # --gate-path replaces it


def _env(pythonpath: str) -> dict:
    return dict(os.environ, PYTHONPATH=f"{GATE_PATH}{os.pathsep}{pythonpath}" if pythonpath else GATE_PATH,
                VLLM_USE_FLASHINFER_SAMPLER="0", PYTHONUNBUFFERED="1")


def _gate(args: list[str], pythonpath: str, log: Path, timeout: float = 900,
          command: list | None = None) -> tuple[int, float]:
    t = time.monotonic()
    # cwd: the work folder, since `python -m` puts the cwd first on sys.path, and a checkout's cwd
    # would shadow --gate-path with the working tree's gate (whose report templates are not a package)
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, *(command or ["-m", "gate"]), *map(str, args)], stdout=fh,
                            stderr=subprocess.STDOUT, env=_env(pythonpath), timeout=timeout,
                            cwd=log.parent).returncode
    return rc, time.monotonic() - t


def _paths_summary(out: Path) -> dict:
    """A weight-update run's headline and, per path, its verdict, diagnosis, checks and staleness."""
    if not (out / "weight_update.json").is_file():
        return {}
    res = json.loads((out / "weight_update.json").read_text())
    return {"headline": res["headline"], "vllm_version": res.get("vllm_version"), "paths": {p["name"]: {
        "verdict": p["verdict"], "diagnosis": (p.get("diagnosis") or {}).get("kind"),
        "checks": [f"{c['id']}: {c['status']} ({c['detail']})" for c in p["checks"]],
        "staleness": p.get("staleness")} for p in res["paths"]}}


def _summarise(result: Path) -> dict:
    v = json.loads((result / "verdict.json").read_text())
    per = v["measures"]["per_config"]
    out = {"verdict": v["verdict"], "exit_code": v["exit_code"], "headline": v["headline"],
           "vllm": [v["reference"]["manifest"]["environment"].get("vllm_version"),
                    v["candidate"]["manifest"]["environment"].get("vllm_version")],
           "device": v["candidate"]["manifest"]["environment"].get("device_name"),
           "failed": [f"{c['id']}" + (f" [{c['config']}]" if c.get("config") else "")
                      for c in v["checks"] if c["status"] == "fail"],
           "failed_messages": [c.get("message") for c in v["checks"] if c["status"] == "fail"],
           "engine_check": next((c.get("message") for c in v["checks"] if c["id"] == "engine.requested_applied"),
                                None),
           "not_comparable": [f"{c['id']} [{c['config']}]" for c in v["checks"] if c["status"] == "not_comparable"],
           "notes": v.get("evidence_notes") or [], "configs": {}}
    for name, g in per.items():
        f, s, sem = g.get("forced") or {}, g.get("sampler") or {}, g.get("semantics") or {}
        rel = lambda r: None if not r else {k: r.get(k) for k in ("slope", "mean_residual", "rmse", "tokens")}
        out["configs"][name] = {
            "forced_tokens": f.get("tokens"), "forced_max": f.get("max_abs_diff"), "forced_mean": f.get("mean_abs_diff"),
            "forced_bitwise": f.get("bitwise_equal_fraction"), "top1": f.get("top1_agreement"),
            "sampler_tokens": s.get("tokens"), "sampler_reference_tokens": s.get("reference_tokens"),
            "sampler_max": s.get("max_abs_diff"), "sampler_mean": s.get("mean_abs_diff"),
            "sampler_mismatched": s.get("mismatched"), "sampler_max_location": s.get("max_location"),
            "status": (v.get("configs") or {}).get(name, {}).get("status"),
            "free_run": {k: (g.get("free_run") or {}).get(k) for k in
                         ("sequences", "exact_matches", "stream_changed", "stream_first_position")},
            "semantics": {"golden": sem.get("reference_mode"), "run": sem.get("candidate_mode"),
                          "shift": (sem.get("comparison") or {}).get("shift"),
                          "golden_fit": rel(sem.get("reference")), "run_fit": rel(sem.get("candidate")),
                          "spread": {k: (sem.get("spread") or {}).get(k) for k in
                                     ("reference_rms", "candidate_rms", "rms_ratio", "reference_p99",
                                      "candidate_p99", "p99_ratio", "value", "allowed_extra")}
                          if sem.get("spread") else None}}
    if v.get("diagnosis"):
        out["diagnosis"] = v["diagnosis"].get("summary")
        out["diagnosis_full"] = v["diagnosis"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--old-path", default="", help="PYTHONPATH that imports the old vLLM release")
    ap.add_argument("--new-path", default="", help="PYTHONPATH that imports the new vLLM release")
    ap.add_argument("--model", choices=("random", "trained"), default="random",
                    help="random: Qwen2-0.5B's body, random weights (default); trained: bench/train_tiny.py")
    ap.add_argument("--steps", help="comma-separated steps (default: every step of --model)")
    ap.add_argument("--gate-path", help="PYTHONPATH entry that imports the gate (default: this checkout)")
    ap.add_argument("--table", type=Path, help="write the Markdown results table here")
    ap.add_argument("--cpu", action="store_true", help="tiny model, float32: test this script on the CPU build")
    args = ap.parse_args()
    global GATE_PATH
    if args.gate_path:
        GATE_PATH = str(Path(args.gate_path).resolve())
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    store = work / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    paths = {"old": args.old_path, "new": args.new_path}
    model, golden = work / "model", work / "golden"
    results["model_kind"] = args.model
    for step in [s for s in (args.steps or DEFAULT_STEPS[args.model]).split(",") if s]:
        log = work / f"{step}.log"
        if step == "model" and args.model == "trained":
            rc, secs = _gate(["--out", model, "--prompts", work / "prompts.json", *(["--cpu"] if args.cpu else [])],
                             paths["new"], log, command=[str(REPO / "bench" / "train_tiny.py")])
            if rc == 0:
                _suite_trained(work, model, work / "prompts.json", args.cpu)
            results[step] = {"rc": rc, "seconds": round(secs, 1)}
            if (work / "train.json").is_file():
                results[step]["train"] = json.loads((work / "train.json").read_text())
        elif step == "model":
            rc, secs = _gate(["tiny-model", "--out", model, "--force",
                              *([] if args.cpu else ["--shape", "qwen2-0.5b"])], paths["new"], log)
            _suite(work, model, args.cpu)
            results[step] = {"rc": rc, "seconds": round(secs, 1)}
        elif step == "record":
            rc, secs = _gate(["record", "--suite", work / "suite.yaml", "--out", golden, "--force"], paths["old"], log)
            results[step] = {"rc": rc, "seconds": round(secs, 1)}
        elif step in STEPS:
            release, extra, expect, why = STEPS[step]
            out = work / f"check-{step}"
            rc, secs = _gate(["check", "--suite", work / "suite.yaml", "--golden", golden, "--out", out, "--force",
                              *extra], paths[release], log)
            entry = {"rc": rc, "seconds": round(secs, 1), "release": release, "expect": expect, "why": why,
                     "args": " ".join(map(str, extra))}
            if (out / "verdict.json").is_file():
                entry.update(_summarise(out))
            entry["as_expected"] = entry.get("verdict") == expect
            results[step] = entry
        elif step == "weight-update":
            for name, extra, expect in (("stale", [], "fail"), ("reset", ["--reset-prefix-cache"], "pass")):
                out = work / f"wu-{name}"
                shutil.rmtree(out, ignore_errors=True)
                # the engine starts on model2's weights and is updated in place to the suite's model
                rc, secs = _gate(["weight-update", "--suite", work / "suite.yaml", "--from", work / "model2",
                                  "--out", out, "--engine-arg", "enable_prefix_caching=true", *extra],
                                 paths["new"], work / f"wu-{name}.log")
                entry = {"rc": rc, "seconds": round(secs, 1), "expect": expect}
                if (out / "verdict.json").is_file():
                    entry.update(_summarise(out))
                entry["as_expected"] = entry.get("verdict") == expect
                results[f"weight-update-{name}"] = entry
        elif step == "weight-update-paths" or step in WUP_RUNS:
            # AsyncLLM with requests in flight (docs/weight-update.md): every pause mode on each update path,
            # the cache kept (a stale path that must fail), sleep mode (CUDA only), the CUDA backends (refused
            # until the gate drives a trainer side: exit 2). wup-paths, wup-keep-cache and wup-nccl run one each
            # (a device call has 10 minutes).
            every = ("wup-paths", "wup-keep-cache", "wup-nccl")
            for name, extra, expect in [WUP_RUNS[s] for s in WUP_RUNS
                                           if step == s or (step == "weight-update-paths" and s in every)]:
                out = work / f"wup-{name}"
                shutil.rmtree(out, ignore_errors=True)
                release = "old" if step in WUP_OLD_RELEASE else "new"
                rc, secs = _gate(["weight-update", "--suite", work / "suite.yaml", "--from", work / "model2",
                                  "--out", out, "--engine-arg", "enable_prefix_caching=true",
                                  "--atol", "0.05", *extra], paths[release], work / f"wup-{name}.log")
                entry = {"rc": rc, "seconds": round(secs, 1), "release": release}
                entry.update(_paths_summary(out))
                expect_rc = expect(entry.get("vllm_version")) if callable(expect) else expect
                entry.update(expect_rc=expect_rc, as_expected=rc == expect_rc)
                results[f"weight-update-paths-{name}"] = entry
        elif step == "bisect-args":
            # which of three changed runtime knobs moves the verdict on the new release (docs/bisect.md)
            out = work / "bisect-args"
            shutil.rmtree(out, ignore_errors=True)
            knobs = ("enable_prefix_caching", "async_scheduling", "enforce_eager")
            rc, secs = _gate(["bisect", "--suite", work / "suite.yaml", "--out", out, "--on", "fail",
                              *[a for k in knobs for a in ("--good-args", f"{k}=false")],
                              *[a for k in knobs for a in ("--bad-args", f"{k}=true")]],
                             paths["new"], work / "bisect-args.log", timeout=1800)
            entry = {"rc": rc, "seconds": round(secs, 1)}
            if (out / "bisect.json").is_file():
                b = json.loads((out / "bisect.json").read_text())
                entry.update(moving_args=b.get("moving_args"), headline=b.get("headline"),
                             probes=[{k: pr.get(k) for k in ("name", "verdict", "exit_code", "seconds", "headline")}
                                     for pr in b.get("probes") or []])
            results[step] = entry
        elif step in ("moe", "moe-old"):
            # a mixture-of-experts body (fused-MoE weight layout): every path on the new release; on the old one
            # (vLLM 0.20.0) reload with CUDA graphs on, NeMo-RL PR 2895's case (graphs left on stale MoE weights)
            moe = work / "moe"
            if not (moe / "suite.yaml").is_file():
                moe.mkdir(parents=True, exist_ok=True)
                for name, seed in (("model", 0), ("model2", 1)):
                    _gate(["tiny-model", "--out", moe / name, "--force", "--seed", str(seed),
                           "--shape", "qwen2-moe"], paths["new"], moe / f"{name}.log")
                _suite(moe, moe / "model", args.cpu)
            extra = (["--via", "reload", "--via", "native", "--pause", "keep", "--pause", "wait", "--pause", "abort"]
                     if step == "moe" else ["--via", "reload", "--pause", "keep", "--pause", "wait"])
            out = work / f"wup-{step}"
            shutil.rmtree(out, ignore_errors=True)
            rc, secs = _gate(["weight-update", "--suite", moe / "suite.yaml", "--from", moe / "model2", "--out", out,
                              "--engine-arg", "enable_prefix_caching=true", "--atol", "0.05", *extra],
                             paths["new" if step == "moe" else "old"], work / f"wup-{step}.log")
            entry = {"rc": rc, "seconds": round(secs, 1), "release": "new" if step == "moe" else "old"}
            entry.update(_paths_summary(out))
            results[step] = entry
        elif step == "model2":
            rc, secs = _gate(["tiny-model", "--out", work / "model2", "--force", "--seed", "1",
                              *([] if args.cpu else ["--shape", "qwen2-0.5b"])], paths["new"], log)
            results[step] = {"rc": rc, "seconds": round(secs, 1)}
        else:
            raise SystemExit(f"unknown step {step!r}")
        store.write_text(json.dumps(results, indent=1, default=str) + "\n")
        key = (f"weight-update-paths-{WUP_RUNS[step][0]}" if step in WUP_RUNS
               else step if step in results else "weight-update-reset")
        print(f"{step}: {json.dumps(results.get(key), default=str)[:600]}", flush=True)
    results.setdefault("host", {"platform": platform.platform(), "python": sys.version.split()[0]})
    store.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if args.table:
        args.table.write_text(table_trained(results) if args.model == "trained" else table(results))
    return 0


def _n(x) -> str:
    return "–" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def _steps(results: dict):
    """(step, its summary, its per-config rows) for every step that produced a verdict."""
    for step, r in results.items():
        if isinstance(r, dict) and "verdict" in r:
            yield step, r, r.get("configs") or {}


def table(results: dict) -> str:
    rows = ["| step | vLLM golden → run | verdict (expected) | teacher-forced max / mean / bitwise [config] | "
            "sampler tokens compared of golden [config] | in-run semantics golden → run (slope) | cause named | "
            "time (s) |", "|---|---|---|---|---|---|---|---|"]
    for step, r, cfgs in _steps(results):
        forced = "; ".join(f"{_n(c['forced_max'])} / {_n(c['forced_mean'])} / {_n(c['forced_bitwise'])} [{n}]"
                           for n, c in cfgs.items())
        sampler = "; ".join(f"{_n(c['sampler_tokens'])} of {_n(c['sampler_reference_tokens'])} [{n}]"
                            for n, c in cfgs.items())
        sem = "; ".join(f"{c['semantics']['golden']} → {c['semantics']['run']} "
                        f"({_n((c['semantics']['golden_fit'] or {}).get('slope'))} → "
                        f"{_n((c['semantics']['run_fit'] or {}).get('slope'))}) [{n}]"
                        for n, c in cfgs.items()
                        if c["semantics"]["golden"] and not c["semantics"]["golden"].startswith("raw (="))
        cause = r.get("diagnosis") or ", ".join(r.get("failed") or []) or "–"
        ok = "" if r.get("as_expected") else " **unexpected**"
        rows.append(f"| {step} | {' → '.join(map(str, r.get('vllm') or []))} | {r['verdict']} ({r.get('expect')})"
                    f"{ok} | {forced} | {sampler} | {sem} | {cause[:300]} | {r.get('seconds')} |")
    return "\n".join(rows) + "\n"


def table_trained(results: dict) -> str:
    """One row per step: verdict, failed checks, and per config the forced max, the matched sampler
    tokens (compared of golden, max diff) and the relation's spread (rms golden -> run)."""
    rows = ["| step | verdict (expected) | failed checks | forced max [config] | sampler matched tokens: "
            "compared of golden, max diff [config] | spread rms golden → run (ratio) [config] | cause named | "
            "time (s) |", "|---|---|---|---|---|---|---|---|"]
    for step, r, cfgs in _steps(results):
        forced = "; ".join(f"{_n(c['forced_max'])} [{n}]" for n, c in cfgs.items())
        sampler = "; ".join(f"{_n(c['sampler_tokens'])} of {_n(c['sampler_reference_tokens'])}, "
                            f"{_n(c['sampler_max'])} [{n}]" for n, c in cfgs.items())
        spread = "; ".join(f"{_n(sp['reference_rms'])} → {_n(sp['candidate_rms'])} (x{_n(sp['rms_ratio'])}) [{n}]"
                           for n, c in cfgs.items() if (sp := c["semantics"].get("spread")))
        failed = ", ".join(r.get("failed") or []) or "–"
        cause = (r.get("diagnosis") or "–").replace("|", "/").replace("\n", " ")
        ok = "" if r.get("as_expected") else " **unexpected**"
        rows.append(f"| {step} | {r['verdict']} ({r.get('expect')}){ok} | {failed} | {forced} | {sampler} | "
                    f"{spread} | {cause[:400]} | {r.get('seconds')} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())

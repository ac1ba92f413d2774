"""Scale on a real GPU (docs/scale.md): the chunked plan, resume, shards and tensor
parallelism with a real vLLM release, in bf16.

Run on a GPU host with one vLLM release importable (PYTHONPATH, see
DEVELOPERS.md). On a random-weight model of Qwen2-0.5B's shape it:

  record       record a golden with --call-size (calls of 32 requests)
  check        check it, uninterrupted (the baseline)
  resume       check killed with SIGTERM after a few calls, then resumed:
               are the traces byte-identical to the baseline?
  resume-nopc  the same with enable_prefix_caching=false on both runs
  shards       check --shard 1/2 and 2/2, then merge: equal to the baseline?
  tp2          check at tensor_parallel_size=2 against the TP=1 golden
               (needs 2 GPUs): what TP changes, and is it named?
  memory       record P and 4P prompts: peak RSS of the gate process

Every step is one or two `parity-gate` processes (one engine each).
Results accumulate in WORK/scale.json, so steps can be split over calls
(`--steps`).

    python bench/gpu_scale.py --work W --steps record,check,resume [--prompts 128]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ, VLLM_USE_FLASHINFER_SAMPLER="0", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def gate(*args: object, log: Path | None = None, timeout: float = 900) -> dict:
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "gate", *map(str, args)], capture_output=True, text=True,
                       env=_env(), timeout=timeout)
    if log is not None:
        log.write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    return {"rc": p.returncode, "seconds": round(time.monotonic() - t, 1), "stdout": p.stdout[-1500:],
            "stderr_tail": "\n".join(p.stderr.strip().splitlines()[-3:])}


OPTS = {"dtype": "bfloat16", "cpu": False}


def suite(work: Path, prompts: int, name: str, extra: str = "") -> Path:
    rng = random.Random(prompts)
    lines = [f"model: {work / 'model'}", "engine:", f"  dtype: {OPTS['dtype']}", "  seed: 0", "  max_model_len: 1024",
             *([] if OPTS["cpu"] else ["  gpu_memory_utilization: 0.35"]),
             *(f"  {e}" for e in extra.split(";") if e), "prompts:"]
    for i in range(prompts):
        ids = [rng.randrange(10, 300) for _ in range(rng.randrange(16, 96))]  # the tiny tokenizer: 384 ids
        lines.append(f"  - id: p{i:05d}\n    token_ids: {ids}")
    lines += ["sampling:", "  - name: greedy", "    temperature: 0.0", "    max_tokens: 64", "    ignore_eos: true",
              "    logprobs: 5", "  - name: hot", "    temperature: 0.8", "    max_tokens: 64", "    ignore_eos: true",
              "    seed: 3", "    logprobs: 5"]
    path = work / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def verdict(folder: Path) -> dict:
    v = json.loads((folder / "verdict.json").read_text())
    return {"verdict": v["verdict"], "checks": {f"{c['id']}[{c.get('config')}]": c.get("value") for c in v["checks"]},
            "warnings": v.get("warnings", []),
            "moved": [r["key"] for r in v.get("environment_diff", []) if r.get("differs")]}


def same_records(a: Path, b: Path) -> dict:
    la = (a / "traces.jsonl").read_text().splitlines()[1:]
    lb = (b / "traces.jsonl").read_text().splitlines()[1:]
    differ = sum(x != y for x, y in zip(la, lb)) + abs(len(la) - len(lb))
    return {"identical": la == lb, "records": len(la), "records_that_differ": differ}


def kill_and_resume(work: Path, name: str, extra_args: list[str], calls: int) -> dict:
    out = work / name
    args = ["check", "--suite", work / "suite.yaml", "--golden", work / "golden", "--out", out,
            "--progress-interval", "0", *extra_args]
    log = work / f"{name}.killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "gate", *map(str, args)], stdout=fh, stderr=subprocess.STDOUT,
                                env=_env())
    deadline = time.monotonic() + 600
    while f"engine calls {calls}/" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            return {"error": "run ended before the kill point", "log": log.read_text()[-1500:]}
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    last = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("parity-gate: interrupted")]
    resumed = gate(*args, log=work / f"{name}.resumed.log")
    return {"killed_rc": proc.returncode, "message": last[-1] if last else None, "resumed": resumed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--steps", required=True)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--cpu", action="store_true", help="tiny model, float32: to test this script on the CPU build")
    a = ap.parse_args()
    OPTS.update(dtype="float32" if a.cpu else "bfloat16", cpu=a.cpu)
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    store = work / "scale.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for step in a.steps.split(","):
        t = time.monotonic()
        if step == "model":
            r = gate("tiny-model", "--out", work / "model", *([] if a.cpu else ["--shape", "qwen2-0.5b"]), "--force")
        elif step == "record":
            suite(work, a.prompts, "suite")
            r = gate("record", "--suite", work / "suite.yaml", "--out", work / "golden", "--call-size", 32,
                     "--quiet", "--force", log=work / "record.log")
        elif step == "check":
            r = gate("check", "--suite", work / "suite.yaml", "--golden", work / "golden", "--out", work / "base",
                     "--force", "--quiet", log=work / "check.log")
            r["verdict"] = verdict(work / "base")
        elif step == "resume":
            r = kill_and_resume(work, "resumed", ["--force"], 5)
            r.update(same_records(work / "base", work / "resumed"))
        elif step == "resume-nopc":
            nopc = ["--engine-arg", "enable_prefix_caching=false", "--force"]
            r = {"base": gate("check", "--suite", work / "suite.yaml", "--golden", work / "golden", "--out",
                              work / "base-nopc", "--quiet", *nopc)}
            r.update(kill_and_resume(work, "resumed-nopc", nopc, 5))
            r.update(same_records(work / "base-nopc", work / "resumed-nopc"))
        elif step == "shards":
            r = {f"shard{i}": gate("check", "--suite", work / "suite.yaml", "--golden", work / "golden", "--out",
                                   work / f"s{i}", "--shard", f"{i}/2", "--quiet", "--force") for i in (1, 2)}
            r["merge"] = gate("merge", work / "s1", work / "s2", "--suite", work / "suite.yaml", "--golden",
                              work / "golden", "--out", work / "merged", "--force")
            r.update(same_records(work / "base", work / "merged"))
            r["verdict_merged"] = verdict(work / "merged")
        elif step == "tp2":
            r = gate("check", "--suite", work / "suite.yaml", "--golden", work / "golden", "--out", work / "tp2",
                     "--engine-arg", "tensor_parallel_size=2", "--force", "--quiet", log=work / "tp2.log")
            if (work / "tp2" / "verdict.json").exists():
                v = json.loads((work / "tp2" / "verdict.json").read_text())
                r["verdict"] = verdict(work / "tp2")
                r["measures"] = {k: v["measures"].get(k) for k in ("teacher_forced", "sampler", "free_run")
                                 if k in v["measures"]}
                r.update(same_records(work / "base", work / "tp2"))
        elif step == "memory":
            r = {}
            for n in (a.prompts, 4 * a.prompts):
                s = suite(work, n, f"mem-{n}")
                code = ("import os,subprocess,sys,json;p=subprocess.Popen(sys.argv[1:]);_,st,ru=os.wait4(p.pid,0);"
                        "print(json.dumps({'rc':os.waitstatus_to_exitcode(st),'maxrss_mib':ru.ru_maxrss/1024}))")
                t1 = time.monotonic()
                p = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "gate", "record", "--suite",
                                    str(s), "--out", str(work / f"mem-{n}"), "--quiet", "--force"],
                                   capture_output=True, text=True, env=_env(), timeout=900)
                r[str(n)] = dict(json.loads(p.stdout.strip().splitlines()[-1]), seconds=round(time.monotonic() - t1))
            r["ratio_4x"] = round(r[str(4 * a.prompts)]["maxrss_mib"] / r[str(a.prompts)]["maxrss_mib"], 3)
        else:
            sys.exit(f"unknown step {step}")
        r["step_seconds"] = round(time.monotonic() - t, 1)
        results[step] = r
        store.write_text(json.dumps(results, indent=1))
        print(step, json.dumps(r)[:1500], flush=True)


if __name__ == "__main__":
    main()

"""Gate overhead: `parity-gate check` wall time against
the same vLLM calls done bare, side by side, engine start reported apart.

A suite of N prompts (random token ids, 33..64 long) x (`greedy` + `sampled`
n=2) on the tiny model; a golden is recorded once (it also warms vLLM's
compile cache). Then, `--reps` times, alternating which goes first:

  gate: `parity-gate -v check` through the CLI, in its own process, so the
        number is whatever check does today (replay, records, traces on disk,
        comparison, verdict, reports). Engine start is read from its log line
        "engine started in X s" (gate/run/replay.py: vLLM import + LLM()).
  bare: this script's --bare worker, in its own process: `import vllm`,
        `vllm.LLM(**the same engine args)` (timed as its engine start), then the same generate() calls
        with the same SamplingParams and prompt token ids, in the same order
        and batches: the calls come from the obtained trace's batch plan
        (`manifest.batch_plan.calls`, which lists check's own-token scoring
        calls too) and the golden's token ids; the parameters are built the
        way gate/run/engine.py builds them. Nothing is written or compared.

Reported per run: process wall time, engine start, wall time without the
engine start, and the time inside generate(). The headline ratio is
(gate wall - gate engine start) / (bare wall - bare engine start), both
whole processes (interpreter start and imports included on both sides);
the ratio against bare generate() time alone is shown too. Target:
<= 1.05x excluding engine start. Median over reps.

    python bench/gate_overhead.py [--prompts 128] [--max-tokens 64] [--reps 3] [--json PATH]

The machine's 2 cores are shared: expect noise of several percent.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    build_model,
    child_env,
    dump_json,
    gate_cli,
    machine_line,
    random_prompts,
    write_suite,  # noqa: E402
)

# max_num_batched_tokens: every prompt of a free-run call prefills in one step. On the CPU build a seeded
# request whose prefill is split over steps fails ("RuntimeError: CPU Generator does not use offset": vLLM
# rewinds the generator's offset, which only CUDA generators support); 256 seeded prompts of up to 64
# tokens exceed the default budget of 4096.
ENGINE = {"dtype": "float32", "seed": 0, "max_model_len": 256, "logprobs_mode": "raw_logprobs",
          "max_num_batched_tokens": 16384}
STARTED = re.compile(r"engine started in ([0-9.]+)s")
CALL = re.compile(r"(\w+) call(?: \d+/\d+)? for config \S+: \d+ requests in ([0-9.]+)s")


def sampling(max_tokens: int) -> list[dict[str, Any]]:
    return [{"name": "greedy", "temperature": 0.0, "max_tokens": max_tokens, "logprobs": 5, "ignore_eos": True},
            {"name": "sampled", "temperature": 0.8, "top_p": 0.95, "max_tokens": max_tokens, "seed": 11, "n": 2,
             "logprobs": 5, "ignore_eos": True}]


# ---------------------------------------------------------------- bare worker
def _read_jsonl(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, records = None, []
    with open(path) as fh:
        for line in fh:
            obj = json.loads(line)
            if header is None:
                header = obj
            elif "prompt_id" in obj:
                records.append(obj)
    return header["manifest"], records


def bare_worker(golden: Path, obtained: Path) -> dict[str, Any]:
    """The same engine and generate() calls as `check`, nothing else."""
    t_proc = time.perf_counter()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as gate/run/engine.py sets them
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    g_manifest, g_records = _read_jsonl(golden / "traces.jsonl")
    o_manifest, _ = _read_jsonl(obtained / "traces.jsonl")
    engine_args = o_manifest["engine_args"]["requested"]
    calls = o_manifest["batch_plan"]["calls"]
    sampling_ = g_manifest["suite"]["sampling"]
    prompts = {r["prompt_id"]: r["prompt_token_ids"] for r in g_records}
    completions = {(r["config"], r["prompt_id"], r["sample"]): r["completion_token_ids"] for r in g_records}
    model = str((ROOT / g_manifest["model"]["path"]).resolve()) if not Path(g_manifest["model"]["path"]).is_absolute() \
        else g_manifest["model"]["path"]

    # `import vllm` is outside the engine start, as in check: it imports vllm
    # (validating the suite) before the engine start it logs
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    t = time.perf_counter()
    llm = LLM(model=model, **engine_args)
    start = time.perf_counter() - t

    def free_params(params: dict[str, Any], seed: int) -> Any:
        p = {k: params[k] for k in ("temperature", "top_p", "top_k", "max_tokens", "seed", "min_tokens", "ignore_eos")
             if k in params}
        p["seed"] = seed
        p["logprobs"] = params.get("logprobs", 0)
        return SamplingParams(**p)

    def score_params(params: dict[str, Any]) -> Any:
        return SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=int(params["logprobs"]), logprobs=None)

    own: dict[tuple, list[int]] = {}
    in_generate = 0.0
    per_call: list[float] = []
    for call in calls:
        keys = [tuple(k) for k in call["requests"]]
        params = sampling_[call["config"]]
        if call["kind"] == "free":
            ps = [TokensPrompt(prompt_token_ids=list(prompts[k[1]])) for k in keys]
            sps = [free_params(params, int(params["seed"]) + k[2]) for k in keys]
        else:
            src = own if call["kind"] == "own" else completions
            ps = [TokensPrompt(prompt_token_ids=list(prompts[k[1]]) + list(src[k])) for k in keys]
            sps = [score_params(params)] * len(keys)
        t = time.perf_counter()
        outs = llm.generate(ps, sps, use_tqdm=False)
        per_call.append(round(time.perf_counter() - t, 3))
        in_generate += per_call[-1]
        if call["kind"] == "free":
            for k, o in zip(keys, outs):
                own[k] = list(o.outputs[0].token_ids)
    return {"engine_start": start, "in_generate": in_generate, "calls": len(calls), "per_call": per_call,
            "inside_process": time.perf_counter() - t_proc}


# ---------------------------------------------------------------- parent
def run_gate(suite: Path, golden: Path, out: Path, log: Path) -> dict[str, Any]:
    r = gate_cli("-v", "check", "--suite", suite, "--golden", golden, "--out", out, "--force", log=log)
    if r.rc != 0:
        raise SystemExit(f"check exited {r.rc} (an unchanged engine must pass): {r.stderr[-2000:]}")
    m = STARTED.search(r.stderr)
    if m is None:
        raise SystemExit("check's log has no 'engine started in X s' line; see " + str(log))
    calls = [float(x[1]) for x in CALL.findall(r.stderr)]
    return {"wall": r.seconds, "engine_start": float(m.group(1)), "in_generate": sum(calls), "calls": len(calls)}


def run_bare(golden: Path, obtained: Path) -> dict[str, Any]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--bare", str(golden), str(obtained)], capture_output=True,
                       text=True, cwd=ROOT, env=child_env(), timeout=900)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"bare worker failed:\n{p.stderr[-3000:]}")
    return dict(json.loads(p.stdout.strip().splitlines()[-1]), wall=wall)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--work", type=Path, help="working folder (kept); default: a temp folder, removed")
    ap.add_argument("--bare", nargs=2, type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.bare:
        print(json.dumps(bare_worker(*a.bare)))
        return 0
    work = a.work or Path(tempfile.mkdtemp(prefix="gate-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    log(f"gate overhead: {machine_line()}; work folder {work}")
    t_all = time.perf_counter()
    try:
        model = build_model(work / "model", seed=0)
        vocab = len(json.loads((model / "tokenizer.json").read_text())["model"]["vocab"])
        suite = write_suite(work / "suite.yaml", "gate-overhead", model, ENGINE,
                            random_prompts(a.prompts, seed=0, vocab=vocab, min_len=33, max_len=64),
                            sampling(a.max_tokens))
        golden = work / "golden"
        rec = gate_cli("record", "--suite", suite, "--out", golden, "--force", log=work / "record.log")
        if rec.rc != 0:
            raise SystemExit(f"record failed: {rec.stderr[-2000:]}")
        log(f"  record (also warms the compile cache): {rec.seconds:.0f} s")
        runs = []
        for i in range(a.reps):
            order = ("gate", "bare") if i % 2 == 0 else ("bare", "gate")
            res: dict[str, Any] = {}
            for who in order:
                out = work / "result"
                if who == "gate":
                    res["gate"] = run_gate(suite, golden, out, work / f"check-{i}.log")
                else:
                    if not (out / "traces.jsonl").is_file():  # the bare side replays the calls check recorded
                        run_gate(suite, golden, out, work / "check-plan.log")
                    res["bare"] = run_bare(golden, out)
                log(f"  rep {i + 1} {who}: {res[who]['wall']:.1f} s (engine start {res[who]['engine_start']:.1f} s)")
            runs.append(res)
        seconds = time.perf_counter() - t_all
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)

    def excl(r: dict[str, Any]) -> float:
        return r["wall"] - r["engine_start"]

    rows = []
    for i, r in enumerate(runs, 1):
        g, b = r["gate"], r["bare"]
        rows.append({"rep": i, "gate_wall": g["wall"], "gate_start": g["engine_start"], "gate_excl": excl(g),
                     "gate_generate": g["in_generate"], "bare_wall": b["wall"], "bare_start": b["engine_start"],
                     "bare_excl": excl(b), "bare_generate": b["in_generate"], "ratio": excl(g) / excl(b),
                     "ratio_vs_generate": excl(g) / b["in_generate"]})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "rep"}
    n_req = a.prompts * 3
    head = ["rep", "check wall (s)", "check engine start", "check w/o start", "check in generate()",
            "bare wall (s)", "bare engine start", "bare w/o start", "bare in generate()", "ratio w/o start",
            "ratio vs bare generate()"]
    print(f"Gate overhead, {date.today().isoformat()}: {machine_line()}; {a.prompts} prompts x (greedy + sampled "
          f"n=2) = {n_req} requests, {a.max_tokens} tokens each, top-5; {runs[0]['gate']['calls']} generate() calls "
          f"per run\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in [*rows, dict(med, rep="median")]:
        print(f"| {r['rep']} | {r['gate_wall']:.1f} | {r['gate_start']:.1f} | {r['gate_excl']:.1f} | "
              f"{r['gate_generate']:.1f} | {r['bare_wall']:.1f} | {r['bare_start']:.1f} | {r['bare_excl']:.1f} | "
              f"{r['bare_generate']:.1f} | {r['ratio']:.3f} | {r['ratio_vs_generate']:.3f} |")
    ok = med["ratio"] <= 1.05
    line = (f"gate overhead: check/bare excluding engine start = {med['ratio']:.3f}x median of {a.reps} "
            f"(target <= 1.05: {'met' if ok else 'NOT met'}); vs bare generate() alone {med['ratio_vs_generate']:.3f}x; "
            f"engine start {med['gate_start']:.1f} s (check) vs {med['bare_start']:.1f} s (bare); {seconds:.0f} s")
    print(f"\n{line}")
    if a.json:
        dump_json(a.json, {"date": date.today().isoformat(), "machine": machine_line(), "prompts": a.prompts,
                           "requests": n_req, "max_tokens": a.max_tokens, "reps": rows, "median": med,
                           "summary": line, "seconds": round(seconds, 1)})
    return 0  # a missed target is reported, not raised: the shared runner's noise is not a failure


if __name__ == "__main__":
    sys.exit(main())

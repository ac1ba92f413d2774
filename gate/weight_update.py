"""The in-flight weight-update path (issue 5, item 4).

An RL loop keeps one vLLM engine alive and pushes new weights into it after
every optimizer step. Anything the engine derived from the old weights and
did not invalidate (the prefix cache's KV blocks, first of all) makes the
next rollouts a mix of old and new policy: drift that no fresh-engine check
can see. We reproduce that loop:

1. `update` worker: an engine on weights A runs the suite's batch plan (the
   rollouts of step N; with prefix caching on, this fills the cache), then
   receives weights B in place through vLLM's own mechanism
   (`LLM.collective_rpc("reload_weights", weights_iterator=...)`, the
   in-place reload RL frameworks use; fallback `LLM.apply_model(lambda m:
   m.load_weights(...))`) and runs the plan again -> trace "updated". If
   asked it then calls `LLM.reset_prefix_cache()` and runs it a third time
   -> trace "updated+reset" (the ablation, from the same engine).
2. `fresh` worker: a new engine started on B scores the tokens of both
   traces (prefill) -> the references (what policy B says of those tokens).
3. Compare updated vs its reference (the verdict) and updated+reset vs its
   reference (the diagnosis): stale cached state shows as drift in the
   rollouts' sampler logprobs that the reset removes.

Each worker is its own process (one engine per process, design.md section 7).
The suite's `model:` is B; `--from` gives A."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gate.errors import BadInput, InfraError

__all__ = ["update_weights_in_place", "run_worker", "weight_update_check", "add_arguments", "run"]

log = logging.getLogger(__name__)


def _weights(model_dir: Path):
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise BadInput(f"{model_dir}: no *.safetensors weights to push", "point --from/--model at a model folder")
    for f in files:
        yield from load_file(str(f)).items()


def update_weights_in_place(llm: Any, model_dir: Path) -> str:
    """Push the tensors of `model_dir` into a running engine; returns the
    mechanism used. Derived state (prefix cache) is NOT reset here: that is
    the caller's job, exactly as in vLLM's API."""
    try:
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": _weights(model_dir)})
        return "collective_rpc('reload_weights', weights_iterator=...)"
    except (AttributeError, NotImplementedError, TypeError) as exc:
        log.info("reload_weights unavailable (%s); using apply_model(load_weights)", exc)
    weights = list(_weights(model_dir))
    llm.apply_model(lambda model: model.load_weights(iter(weights)))
    return "apply_model(lambda m: m.load_weights(...))"


def _write(out: Path, kind: str, engine: Any, suite: Any, engine_args: dict, model_dir: Path, prompts: dict,
           texts: dict, sampling: dict, calls: list, state: dict, extra: dict) -> None:
    from gate import commands as c  # the record path's own helpers: same plan, same records
    from gate.identity import model_identity
    from gate.trace import TraceWriter

    manifest = c._manifest(kind, engine, suite, engine_args, model_identity(model_dir), prompts, texts, sampling,
                           calls)
    manifest.extra.update(extra)
    with TraceWriter(out, manifest) as writer:
        for rec in c._records(engine, state, prompts, sampling):
            writer.write(rec)


def _rescore(engine: Any, trace_dir: Path, out: Path, info: dict[str, Any]) -> None:
    """Reference for a rollout trace: the fresh engine on B scores the same
    tokens in the same contexts (prefill). Its logprobs go in both channels,
    so `sampler` compares the rollout's decode logprobs against what policy B
    says about those very tokens: the importance ratio an RL trainer sees.
    (Decode vs prefill: ~1e-6 apart on CPU float32, design.md section 4;
    on GPU use forced-decode scoring where the engine offers it.)"""
    from gate.trace import Record, TraceWriter, read_trace

    reader = read_trace(trace_dir)
    records = list(reader.records())
    sampling = reader.manifest.suite.get("sampling") or {}
    manifest = reader.manifest
    manifest = type(manifest)(**{**manifest.to_json(), "kind": "golden",
                                 "engine_args": {"requested": dict(engine.engine_args), "resolved": engine.resolved()},
                                 "extra": dict(manifest.extra, weight_update=info,
                                               scoring_paths={"sampler": "prefill", "forced": "prefill"})})
    with TraceWriter(out, manifest) as writer:
        for config in sorted({r.config for r in records}):
            batch = [r for r in records if r.config == config]
            k = int((sampling.get(config) or {}).get("logprobs", 0) or 0)
            scores = engine.score([(r.prompt_token_ids, r.completion_token_ids) for r in batch], k)
            for r, sc in zip(batch, scores):
                samp = sc.completion(len(r.prompt_token_ids))
                writer.write(Record(config=r.config, prompt_id=r.prompt_id, sample=r.sample, seed=r.seed,
                                    prompt_token_ids=r.prompt_token_ids, completion_token_ids=r.completion_token_ids,
                                    sampler=samp, forced=sc, prompt_tokens=r.prompt_tokens,
                                    completion_tokens=r.completion_tokens, finish_reason=r.finish_reason))


def run_worker(mode: str, suite_path: Path, out: Path, weights_from: Path | None, reset: bool,
               overrides: list[str]) -> dict[str, Any]:
    """One engine, in this process. mode "update": start on `weights_from`
    (A), run the plan, push B, run the plan (-> out/updated), optionally
    reset the prefix cache and run again (-> out/reset). mode "fresh": start
    on the suite's model (B) and score the tokens of each of those traces
    (-> out/fresh-updated, out/fresh-reset)."""
    from gate import commands as c
    from gate.identity import model_vocab_size
    from gate.suite import load_suite

    suite = load_suite(suite_path)
    engine_args = dict(suite.engine, **c._engine_overrides(overrides))
    sampling = {s.name: s.params for s in suite.sampling}
    start_on = suite.model if mode == "fresh" else Path(weights_from)  # type: ignore[arg-type]
    engine = c._start_engine(start_on, engine_args, suite.engine_lines)
    info: dict[str, Any] = {"mode": mode, "start_model": str(start_on)}
    if mode == "fresh":
        for name in ("updated", "reset"):
            if (out / name).is_dir():
                _rescore(engine, out / name, out / f"fresh-{name}", info)
        return info
    prompts = c._tokenize_prompts(suite, engine, model_vocab_size(suite.model))
    texts = {p.id: p.text for p in suite.prompts}
    calls = [x for x in c._plan(prompts, sampling, [s.name for s in suite.sampling]) if x["kind"] == "free"]
    c._run_plan(engine, calls, prompts, sampling, None)  # rollouts on A: fills the caches
    t = time.monotonic()
    info["mechanism"] = update_weights_in_place(engine.llm, suite.model)
    info["update_seconds"] = round(time.monotonic() - t, 3)
    info["prefix_cache_reset"] = False
    state = c._run_plan(engine, calls, prompts, sampling, None)
    _write(out / "updated", "obtained", engine, suite, engine_args, suite.model, prompts, texts, sampling, calls,
           state, {"weight_update": dict(info)})
    if reset:
        info["prefix_cache_reset"] = bool(engine.llm.reset_prefix_cache())
        state = c._run_plan(engine, calls, prompts, sampling, None)
        _write(out / "reset", "obtained", engine, suite, engine_args, suite.model, prompts, texts, sampling, calls,
               state, {"weight_update": dict(info)})
    return info


def _spawn(args: list[str], log_path: Path, timeout: float) -> None:
    cmd = [sys.executable, "-m", "gate.weight_update", "--worker", *args]
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, env=dict(os.environ))
    if proc.returncode != 0:
        tail = " ".join(log_path.read_text(errors="replace").strip().splitlines()[-2:])[:400]
        raise InfraError(f"weight-update worker failed (exit {proc.returncode}): {tail}", f"see {log_path}")


def weight_update_check(suite: Path, weights_from: Path, out: Path, overrides: list[str] | None = None,
                        reset_in_run: bool = False, timeout: float = 600) -> dict[str, Any]:
    """The whole path: workers, then verdict (updated vs fresh) with a
    diagnosis (updated+reset vs fresh). `reset_in_run` models a framework
    that does reset the cache after each update: the gated trace is then
    the reset one. Writes out/verdict.json + reports; returns the verdict."""
    from gate.compare import compare_traces
    from gate.policy import DEFAULT_POLICY, evaluate, parse_policy
    from gate.suite import load_suite
    from gate.trace import read_trace
    from gate.verdict import build_verdict, write_verdict

    overrides = list(overrides or [])
    out = Path(out)
    work = out / "weight_update"
    work.mkdir(parents=True, exist_ok=True)
    extra = [a for o in overrides for a in ("--engine-arg", o)]
    t0 = time.monotonic()
    _spawn(["--mode", "update", "--suite", str(suite), "--from", str(weights_from), "--out", str(work),
            "--reset", *extra], work / "update.log", timeout)
    _spawn(["--mode", "fresh", "--suite", str(suite), "--out", str(work), *extra], work / "fresh.log", timeout)
    s = load_suite(suite)
    configs = {x.name for x in s.sampling}
    policy = parse_policy(s.policy, str(suite), DEFAULT_POLICY, configs) if s.policy is not None else DEFAULT_POLICY
    gated = work / ("reset" if reset_in_run else "updated")

    def verdict_for(cand: Path, label: str) -> dict[str, Any]:
        ref = work / f"fresh-{cand.name}"
        result = compare_traces(read_trace(ref), read_trace(cand), policy.tolerances())
        checks = evaluate(policy, result)
        return build_verdict(
            mode="compare", reference=("fresh engine on B, same tokens", str(ref), read_trace(ref).manifest),
            candidate=(label, str(cand), read_trace(cand).manifest), result=result, checks=checks, policy=policy,
            prompts_new=[], prompts_unused=[], warnings=[],
            reproduce=f"parity-gate weight-update --suite {suite} --from {weights_from} --out {out}"
                      + "".join(f" --engine-arg {o}" for o in overrides) + (" --reset-prefix-cache" if reset_in_run
                                                                            else ""),
            files={"verdict": "verdict.json"})

    main = verdict_for(gated, "engine updated A -> B in place" + (" + prefix cache reset" if reset_in_run else ""))
    info = read_trace(gated).manifest.extra.get("weight_update", {})
    if main["verdict"] == "fail" and not reset_in_run:
        ablated = verdict_for(work / "reset", "updated + reset_prefix_cache()")
        main["diagnosis"] = diagnose_update(main, ablated, info, time.monotonic() - t0)
    main["weight_update"] = info
    write_verdict(out, main)
    try:
        from gate.report import render_result

        render_result(out)
    except ImportError:  # pragma: no cover
        pass
    return main


def _mx(v: dict[str, Any], ch: str) -> float | None:
    return ((v["measures"]["overall"].get(ch)) or {}).get("max_abs_diff")


def diagnose_update(stale: dict[str, Any], reset: dict[str, Any], info: dict[str, Any],
                    seconds: float) -> dict[str, Any]:
    """Pure: name the cause from the stale and the reset comparison."""
    from gate.diagnose import _fmt

    restores = reset["verdict"] == "pass"
    nums = "; ".join(f"{label} max abs diff {_fmt(_mx(stale, ch))} -> {_fmt(_mx(reset, ch))}"
                     for ch, label in (("forced", "teacher-forced"), ("sampler", "sampler"))
                     if _mx(stale, ch) is not None or _mx(reset, ch) is not None)
    fr = (stale["measures"]["overall"].get("free_run") or {})
    cause = ("stale prefix cache after the in-place weight update: KV blocks computed with the old weights (A) "
             "are reused by requests after the update to B")
    finding = {"cause": cause, "knobs": ["reset_prefix_cache"], "ablation": "reset_prefix_cache",
               "restores_parity": restores, "status": "ran", "setting": "llm.reset_prefix_cache() after the update",
               "detail": f"calling llm.reset_prefix_cache() after {info.get('mechanism', 'the update')} "
                         f"{'restores' if restores else 'does not restore'} parity with a fresh engine on B: {nums}; "
                         f"free runs matching the fresh engine: {fr.get('exact_matches')} of {fr.get('sequences')}",
               "measures_after": reset["measures"]["overall"], "seconds": round(seconds, 1)}
    if restores:
        summary = (f"likely cause: {cause}; resetting the prefix cache after the update restores parity ({nums}). "
                   "Teacher-forced scoring (prompt_logprobs) bypasses the prefix cache, so the stale state shows in "
                   "the rollouts' sampler logprobs and free runs")
        kind = "stale_state"
    else:
        summary = (f"the in-place update differs from a fresh engine on B even after resetting the prefix cache "
                   f"({nums}): other state derived from the old weights, or the update path's numerics")
        kind = "weight_update"
    return {"summary": summary, "kind": kind, "findings": [finding], "not_ablated": [], "drift_start": None,
            "semantics": None, "baseline": None, "budget_s": None}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--suite", required=True, type=Path, help="suite whose model is the new weights (B)")
    parser.add_argument("--from", dest="weights_from", required=True, type=Path,
                        help="model folder with the old weights (A) the engine starts on")
    parser.add_argument("--out", required=True, type=Path, help="result folder")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--reset-prefix-cache", action="store_true",
                        help="gate the run that resets the prefix cache after the update (what a framework should do)")


def run(args: argparse.Namespace) -> int:
    v = weight_update_check(args.suite, args.weights_from, args.out, args.engine_arg, args.reset_prefix_cache)
    print(v["headline"])
    if v.get("diagnosis"):
        print(f"  diagnosis: {v['diagnosis']['summary']}")
    print(f"  results: {args.out}")
    return int(v["exit_code"])


def _worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gate.weight_update --worker")
    p.add_argument("--mode", choices=("fresh", "update"), required=True)
    p.add_argument("--suite", type=Path, required=True)
    p.add_argument("--from", dest="weights_from", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reset", action="store_true")
    p.add_argument("--engine-arg", action="append", default=[])
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="parity-gate: %(message)s")
    info = run_worker(a.mode, a.suite, a.out, a.weights_from, a.reset, a.engine_arg)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":  # pragma: no cover - entry for the worker processes and a quick manual run
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker_main(sys.argv[2:]))
    parser = argparse.ArgumentParser(prog="parity-gate weight-update")
    add_arguments(parser, "weight-update")
    logging.basicConfig(level=logging.INFO, format="parity-gate: %(message)s")
    sys.exit(run(parser.parse_args()))

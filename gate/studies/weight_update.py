"""The in-flight weight-update path (docs/diagnosis.md, docs/design.md section 4.4).

An RL loop keeps one vLLM engine alive and pushes new weights into it after
every optimizer step. Anything the engine derived from the old weights and
did not invalidate (the prefix cache's KV blocks, first of all) makes the
next rollouts a mix of old and new policy: drift that no fresh-engine check
can see. We reproduce that loop and compare like with like:

1. reference: `parity-gate record` on the new weights B (the suite's model),
   a fresh engine -> `fresh/`, a golden with its batch plan: the free-run
   generate() calls of every config, then its scoring calls.
2. update worker: an engine started on the old weights A runs the plan's
   free-run calls (the rollouts of step N; with prefix caching on, this
   fills the cache), receives B in place through vLLM's own mechanism
   (`LLM.collective_rpc("reload_weights", weights_iterator=...)`, the
   in-place reload RL frameworks use; fallback `LLM.apply_model(lambda m:
   m.load_weights(...))`), then replays the reference's batch plan exactly
   as `check` does (same requests, same order, same batches, scoring the
   reference's tokens) -> `updated/`. Then `LLM.reset_prefix_cache()` and
   the same replay again -> `reset/`.
3. compare each replay with the reference, as `check` compares a run with
   its golden: decode logprobs with decode logprobs (over the matching
   free-run prefix), prefill scores with prefill scores. Never decode with
   prefill: on a GPU in bf16 the two paths differ by up to ~0.04 with
   nothing wrong (docs/design.md section 4.3), which is what made the first version
   of this path false-alarm on the correct path.

Both sides start their measured replay with an empty prefix cache (a fresh
engine; an updated engine after the reset), so the correct path is the same
computation as the reference, and stale state is the only thing left to
differ. Teacher-forced scoring bypasses vLLM's prefix cache, so stale KV
shows in the rollouts: sampler logprobs and free runs.

GPU memory: the two engines are two processes, one after the other (never
at once), so each may take the suite's `gpu_memory_utilization` share of the
card (vLLM's default 0.9); this process starts no engine and holds none."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

from gate.core.compare import compare_traces
from gate.core.errors import BadInput, GateError, InfraError
from gate.core.identity import model_identity
from gate.core.policy import DEFAULT_POLICY, evaluate, parse_policy
from gate.core.rows import BatchCall, SamplingParams, Verdict
from gate.core.trace import TraceWriter, read_trace
from gate.core.verdict import build_verdict, write_verdict
from gate.report.render import render_result
from gate.run import replay  # the check path's own replay: same calls, same batches
from gate.run.child import GPU_MEMORY_HINT, error_line, is_gpu_memory_error, run_child
from gate.run.suite import load_suite
from gate.studies.diagnose import _fmt

__all__ = ["update_weights_in_place", "replay_update", "run_worker", "judge", "weight_update_check",
           "diagnose_update", "add_arguments", "run", "REFERENCE", "UPDATED", "RESET", "WEIGHT_UPDATE_POLICY"]

log = logging.getLogger(__name__)

WORK_DIR = "weight_update"
REFERENCE, UPDATED, RESET = "fresh", "updated", "reset"


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


def replay_update(engine: Any, calls: list[BatchCall], prompts: dict[str, list[int]],
                  completions: dict[tuple, list[int]], sampling: dict[str, SamplingParams],
                  push: Callable[[], str], reset_cache: Callable[[], Any] | None) -> tuple[dict[str, Any], dict]:
    """The update worker's engine work, given an engine started on A.

    Runs the plan's free-run calls (rollouts on A), `push()`es the new
    weights, then replays `calls` exactly as `check` replays a golden
    (`completions`: the reference's tokens, scored in the scoring calls).
    With `reset_cache`, calls it and replays once more. Returns (info,
    {"updated": state, "reset": state})."""
    replay.run_plan(engine, [x for x in calls if x["kind"] == "free"], prompts, sampling, None)
    t = time.monotonic()
    info: dict[str, Any] = {"mechanism": push(), "prefix_cache_reset": False}
    info["update_seconds"] = round(time.monotonic() - t, 3)
    states = {UPDATED: replay.run_plan(engine, calls, prompts, sampling, completions)}
    if reset_cache is not None:
        info["prefix_cache_reset"] = bool(reset_cache())
        states[RESET] = replay.run_plan(engine, calls, prompts, sampling, completions)
    return info, states


def run_worker(suite_path: Path, reference: Path, out: Path, weights_from: Path, reset: bool,
               overrides: list[str]) -> dict[str, Any]:
    """One engine, in this process: start on `weights_from` (A), then
    `replay_update` against the reference golden (recorded on B), writing
    out/updated and (with `reset`) out/reset."""
    suite = load_suite(suite_path)
    ref = read_trace(reference)
    manifest = ref.manifest
    prompts: dict[str, list[int]] = {}
    completions: dict[tuple, list[int]] = {}
    for rec in ref.records():
        prompts[rec.prompt_id] = list(rec.prompt_token_ids)
        completions[rec.key] = list(rec.completion_token_ids)
    sampling = manifest.suite.get("sampling") or {}
    calls = (manifest.batch_plan or {}).get("calls") or []
    if not calls:
        raise BadInput(f"{reference}: reference has no batch plan", "re-run parity-gate weight-update")
    # the reference's batch shape, as `check` replays it
    engine_args = replay.replay_engine_args(suite.engine, replay.engine_overrides(overrides), manifest)
    engine = replay.start_engine(Path(weights_from), engine_args, suite.engine_lines)
    info, states = replay_update(engine, calls, prompts, completions, sampling,
                                 push=lambda: update_weights_in_place(engine.llm, suite.model),
                                 reset_cache=engine.llm.reset_prefix_cache if reset else None)
    info["start_model"] = str(weights_from)
    texts = {k: v.get("text") for k, v in (manifest.suite.get("prompts") or {}).items()}
    model_id = model_identity(suite.model)  # the engine holds B's weights now
    for name, state in states.items():
        man = replay.build_manifest("obtained", engine, suite, engine_args, model_id, prompts, texts, sampling, calls)
        man.extra.update(weight_update=dict(info, trace=name))
        with TraceWriter(out / name, man) as writer:
            for rec in replay.build_records(engine, state, prompts, sampling):
                writer.write(rec)
    return info


def _gate_child(cmd: list[str], log_path: Path, what: str, timeout: float) -> None:
    res = run_child(cmd, log_path, timeout)
    if res.timed_out:
        raise InfraError(f"weight-update: {what} ran past {timeout:.0f} s", f"see {log_path}")
    if res.returncode != 0:
        text = log_path.read_text(errors="replace") if log_path.is_file() else ""
        hint = f"see {log_path}" + (f"; {GPU_MEMORY_HINT}" if is_gpu_memory_error(text) else "")
        raise InfraError(f"weight-update: {what} failed (exit {res.returncode}): {error_line(text)}", hint)


# Both sides run the same engine config, batch plan and seeds, so an unchanged
# computation reproduces every free-run token (bitwise across engine instances
# on the GPU, docs/design.md section 4.3). A divergence is evidence, and the one a
# stale cache usually leaves: its first token already differs, so the sampler
# channel has no matching prefix to compare. A suite's policy can relax it.
WEIGHT_UPDATE_POLICY = {"checks": {"free_run.exact_match_rate": 1.0}}


def _policy(suite_path: Path):
    s = load_suite(suite_path)
    configs = {x.name for x in s.sampling}
    base = parse_policy(WEIGHT_UPDATE_POLICY, "weight-update defaults", DEFAULT_POLICY, configs)
    return parse_policy(s.policy, str(suite_path), base, configs) if s.policy is not None else base


def judge(work: Path, out: Path, suite: Path, weights_from: Path, overrides: list[str] | None = None,
          reset_in_run: bool = False, seconds: float | None = None) -> Verdict:
    """Verdict from the traces in `work` (no engine): the gated replay
    (`reset` with `reset_in_run`, else `updated`) against the fresh reference,
    with a diagnosis from the reset replay when the stale one fails. Writes
    out/verdict.json and the reports; returns the verdict."""
    t0 = time.monotonic()
    overrides = list(overrides or [])
    work, out = Path(work), Path(out)
    policy = _policy(suite)
    ref = work / REFERENCE
    gated = work / (RESET if reset_in_run else UPDATED)
    repro = (f"parity-gate weight-update --suite {suite} --from {weights_from} --out {out}"
             + "".join(f" --engine-arg {o}" for o in overrides) + (" --reset-prefix-cache" if reset_in_run else ""))

    def verdict_for(cand: Path, label: str) -> Verdict:
        result = compare_traces(read_trace(ref), read_trace(cand), policy.tolerances())
        checks = evaluate(policy, result)
        return build_verdict(
            mode="compare", reference=("fresh engine on B, same batch plan", str(ref), read_trace(ref).manifest),
            candidate=(label, str(cand), read_trace(cand).manifest), result=result, checks=checks, policy=policy,
            prompts_new=[], prompts_unused=[], warnings=[], reproduce=repro, files={"verdict": "verdict.json"})

    main = verdict_for(gated, "engine updated A -> B in place" + (" + prefix cache reset" if reset_in_run else ""))
    info = read_trace(gated).manifest.extra.get("weight_update", {})
    if main["verdict"] != "pass" and not reset_in_run and (work / RESET).is_dir():
        ablated = verdict_for(work / RESET, "updated + reset_prefix_cache()")
        main["diagnosis"] = diagnose_update(main, ablated, info,
                                            (seconds or 0.0) + time.monotonic() - t0)
    main["weight_update"] = dict(info, reference="fresh engine on B: parity-gate record, same batch plan",
                                 compared="decode vs decode, prefill vs prefill")
    write_verdict(out, main)
    render_result(out)
    return main


def weight_update_check(suite: Path, weights_from: Path, out: Path, overrides: list[str] | None = None,
                        reset_in_run: bool = False, timeout: float = 600) -> Verdict:
    """The whole path: the reference (a fresh engine on B), then the update
    worker (one engine on A, updated in place), each in its own process and
    one after the other, then `judge`. `reset_in_run` models a framework that
    does reset the prefix cache after each update: the gated trace is then
    the reset one. Returns the verdict."""
    overrides = list(overrides or [])
    out = Path(out)
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    extra = [a for o in overrides for a in ("--engine-arg", o)]
    t0 = time.monotonic()
    _gate_child([sys.executable, "-m", "gate", "record", "--suite", str(suite), "--out", str(work / REFERENCE),
                 "--force", *extra], work / "fresh.log", "the fresh engine on the new weights", timeout)
    _gate_child([sys.executable, "-m", "gate.studies.weight_update", "--worker", "--suite", str(suite),
                 "--from", str(weights_from), "--reference", str(work / REFERENCE), "--out", str(work), "--reset",
                 *extra], work / "update.log", "the engine updated in place", timeout)
    return judge(work, out, suite, weights_from, overrides, reset_in_run, time.monotonic() - t0)


def _mx(v: Verdict, ch: str) -> float | None:
    return ((v["measures"]["overall"].get(ch)) or {}).get("max_abs_diff")


def diagnose_update(stale: Verdict, reset: Verdict, info: dict[str, Any],
                    seconds: float) -> dict[str, Any]:
    """Pure: name the cause from the stale and the reset comparison."""
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
    g = parser.add_argument_group("update paths on AsyncLLM with requests in flight (docs/weight-update.md)")
    g.add_argument("--via", action="append", choices=("reload", "native", "sleep"),
                   help="how the weights get in: reload (collective_rpc reload_weights), native (the four-phase "
                        "weight-transfer API), sleep (sleep/wake_up, GPU only); repeat for several")
    g.add_argument("--pause", action="append", choices=("none", "abort", "wait", "keep"),
                   help="pause_generation mode around the update (none: update while generating); repeat for several")
    g.add_argument("--clear-cache", dest="clear_cache", action="store_true", default=True,
                   help="pause_generation(clear_cache=True) (default)")
    g.add_argument("--keep-cache", dest="clear_cache", action="store_false",
                   help="pause_generation(clear_cache=False): KV from the old weights survives the update")
    g.add_argument("--backend", default="file",
                   help="weight-transfer backend for --via native (default file: vLLM's lifecycle, tensors read "
                        "from the model folder; nccl/ipc need CUDA and a trainer process)")
    g.add_argument("--max-tokens", type=int, default=None,
                   help="tokens per in-flight request (greedy; default 16 on CPU, 128 on a GPU, where the engine "
                        "runs ahead of the client and short requests finish before the update lands)")
    g.add_argument("--switch-at", type=int, default=None,
                   help="update once every in-flight request has this many tokens (default max-tokens / 3)")
    g.add_argument("--atol", type=float, default=1e-4,
                   help="logprob tolerance against the fresh engines (default 1e-4: CPU float32; on a GPU use "
                        "the floor `parity-gate determinism` measures)")
    g.add_argument("--test-skip-weights", default="", help=argparse.SUPPRESS)  # tests: a partial update


def run(args: argparse.Namespace) -> int:
    from gate.studies.weight_update_inflight import refuse_bad_models, refuse_bad_request

    # every refusal before anything is written or an engine starts (docs/errors.md, weight-update-*)
    if args.pause or args.via:
        if args.reset_prefix_cache:
            raise BadInput("weight-update: --reset-prefix-cache belongs to the synchronous path",
                           "with --via/--pause use --clear-cache or --keep-cache")
        refuse_bad_request(args.via or ["reload"], args.pause or ["keep"], args.backend, args.max_tokens,
                           args.switch_at, args.atol)
    refuse_bad_models(load_suite(args.suite), args.weights_from)
    if args.pause or args.via:
        from gate.studies.weight_update_inflight import inflight_check

        r = inflight_check(args.suite, args.weights_from, args.out, args.via or ["reload"], args.pause or ["keep"],
                           args.clear_cache, args.backend, args.engine_arg, args.max_tokens, args.switch_at,
                           args.atol, test_skip_weights=args.test_skip_weights)
        print(r["headline"])
        for p in r["paths"]:
            if p.get("diagnosis"):
                print(f"  {p['name']}: {p['diagnosis']['summary']}")
        print(f"  results: {args.out}")
        return int(r["exit_code"])
    v = weight_update_check(args.suite, args.weights_from, args.out, args.engine_arg, args.reset_prefix_cache)
    print(v["headline"])
    if v.get("diagnosis"):
        print(f"  diagnosis: {v['diagnosis']['summary']}")
    print(f"  results: {args.out}")
    return int(v["exit_code"])


def _worker_main(argv: list[str]) -> int:
    """`python -m gate.studies.weight_update --worker ...`: the update worker's own
    process. Errors end in one `parity-gate: <kind>: ...` line, like the CLI,
    so the parent can show the real cause."""
    p = argparse.ArgumentParser(prog="gate.studies.weight_update --worker")
    p.add_argument("--suite", type=Path, required=True)
    p.add_argument("--from", dest="weights_from", type=Path, required=True)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reset", action="store_true")
    p.add_argument("--engine-arg", action="append", default=[])
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="parity-gate: %(message)s")
    try:
        info = run_worker(a.suite, a.reference, a.out, a.weights_from, a.reset, a.engine_arg)
    except GateError as exc:
        sys.stderr.write(f"parity-gate: {exc.kind}: {exc.line()}\n")
        return exc.exit_code
    print(json.dumps(info))
    return 0


if __name__ == "__main__":  # pragma: no cover - entry for the worker process
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker_main(sys.argv[2:]))
    sys.exit("use 'parity-gate weight-update' (this entry point only runs the worker)")

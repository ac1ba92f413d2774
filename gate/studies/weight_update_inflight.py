"""Weight updates the way RL frameworks drive vLLM: `AsyncLLM` with
requests genuinely in flight at the update (docs/weight-update.md).

`parity-gate weight-update --pause MODE` (or `--via native`) runs this path
instead of the synchronous replay in gate/studies/weight_update.py, keeping its
design: references from fresh engines, the same batches on both sides,
decode compared with decode.

1. update worker (one process, one engine on the old weights A): the
   suite's prompts as one batch (a fresh engine: the old-weights reference),
   then, per update path: the same prompts started together; when each has
   `switch_at` tokens, `pause_generation(mode, clear_cache)` (not for
   `none`), the new weights B pushed `via` reload or the native
   weight-transfer API, `resume_generation()`; then the same prompts again
   as new requests (post-update). Between two paths the engine goes back to
   A and an empty cache.
2. fresh worker (one process, one engine on B), per path: the in-flight
   requests' continuations (prompt + the tokens each had under A, decoded on
   from there, as a frozen request continues), the post-update batch, and
   every in-flight token scored (the new weights' logprob of it: what the
   trainer computes).
3. judge (pure, gate/studies/update_judge.py): post-update requests must equal the fresh engine on B;
   `wait` in-flight requests must equal the A reference; `abort` returns
   partial outputs equal to the A reference; `keep` with the cache cleared
   must continue exactly as the fresh engine on B does; `keep` with the
   cache kept, and `none`, carry old KV: their staleness is reported per
   token, not failed. An update with no effect, or one that reached only
   some layers, fails and is named.

Greedy sampling only: a seeded sampler's continuation would start a new
random stream, so only greedy continuations are comparable token by token."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from gate.core.errors import BadInput, GateError
from gate.core.fsutil import atomic_write_text
from gate.core.update_rows import FreshRun, PathSpec, PathVerdict, PromptInput, UpdateRun, WeightUpdateResult
from gate.run.replay import engine_overrides
from gate.run.suite import Suite, load_suite
from gate.run.update_spec import UPDATE_PAUSES, UPDATE_VIAS, WeightUpdateSpec
from gate.studies.update_judge import continuation_plan, judge_path

__all__ = ["VIAS", "PAUSES", "CUDA_BACKENDS", "DEFAULT_MAX_TOKENS", "resolve_max_tokens", "refuse_unsupported",
           "refuse_bad_request", "refuse_bad_models", "suite_update_paths", "inflight_check"]

log = logging.getLogger(__name__)

VIAS, PAUSES = UPDATE_VIAS, UPDATE_PAUSES  # declared with the suite's `weight_update:` section
FILE_BACKEND = "file"
# vLLM's own weight-transfer backends: each moves tensors over CUDA (NCCL, CUDA IPC) or Ray, from a trainer process
CUDA_BACKENDS = ("nccl", "ipc", "sparse_nccl", "nccl_m2n", "sharded_rdt")
DEFAULT_ATOL = 1e-4
# Logprobs asked for per generated token: the sampled one and the top 5, so that a parting at a near tie can be
# checked against every near-best token of the reference, not only its runner-up: on a flat (random) model three or
# more tokens can lie within noise of the top (docs/weight-update.md, "Near ties").
TOP_LOGPROBS = 5
# Tokens per in-flight request when none is given. On a GPU the engine runs ahead of the client: measured on an
# H100 (bf16, 64 requests of 16 tokens, the update at token 5), every request had finished before the pause
# reached the engine, so nothing was in flight. 128 tokens and the switch at a sixteenth (a third on CPU) leave
# the update room to land mid-generation: on an H200 with the switch at an eighth (16), the engine had made 63
# to 94 tokens of each request by the pause, and on 2 of 9 paths all 128.
DEFAULT_MAX_TOKENS = {"cpu": 16, "cuda": 128}


def resolve_max_tokens(max_tokens: int | None, cuda: bool | None = None) -> int:
    """`max_tokens`, or the default for this machine (DEFAULT_MAX_TOKENS)."""
    if max_tokens is not None:
        return max_tokens
    return DEFAULT_MAX_TOKENS["cuda" if (_cuda() if cuda is None else cuda) else "cpu"]


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def refuse_unsupported(vias: list[str], pauses: list[str], backend: str, cuda: bool) -> None:
    """Exit 2 before anything runs for a path this engine build cannot run."""
    if "sleep" in vias and not cuda:
        raise BadInput("weight-update --via sleep: not supported by this engine build: sleep mode needs CUDA's "
                       "memory allocator, and the CPU worker's sleep()/wake_up() only log 'sleep mode is not "
                       "supported on CPU' and do nothing",
                       "run --via sleep on a GPU (the GPU tier does); on CPU use --via reload or --via native")
    if "native" in vias and "none" in pauses:
        raise BadInput("weight-update --via native --pause none: not supported by this engine build: "
                       "start_weight_update() moves the layers to meta tensors until finish_weight_update(), so a "
                       "step that runs in between fails (onednn_mm on meta tensors) and the engine dies",
                       "pause first (--pause abort, wait or keep), as vLLM's weight-transfer docs do")
    if "native" in vias and backend != FILE_BACKEND:
        if backend not in CUDA_BACKENDS:
            raise BadInput(f"weight-update --backend {backend}: unknown weight-transfer backend",
                           f"use {FILE_BACKEND} or one of {', '.join(CUDA_BACKENDS)}")
        why = ("it moves tensors over CUDA (NCCL, CUDA IPC) or Ray" if not cuda else
               "parity-gate does not drive its trainer side yet")
        raise BadInput(f"weight-update --via native --backend {backend}: not supported by this engine build: {why}",
                       f"use --backend {FILE_BACKEND} (vLLM's weight-transfer lifecycle, tensors read from the "
                       "model folder)")


def refuse_bad_request(vias: list[str], pauses: list[str], backend: str, max_tokens: int | None,
                       switch_at: int | None, atol: float, cuda: bool | None = None) -> int:
    """Every refusal that needs only the flags (docs/errors.md, `weight-update-*`), before any file is read
    or engine started; returns the switch point. `max_tokens` None: the machine's default."""
    cuda = _cuda() if cuda is None else cuda
    refuse_unsupported(vias, pauses, backend, cuda)
    max_tokens = resolve_max_tokens(max_tokens, cuda)
    if max_tokens < 2:
        raise BadInput(f"weight-update --max-tokens {max_tokens}: too few tokens to be in flight",
                       "use --max-tokens 2 or more (default 16 on CPU, 128 on a GPU)")
    # a GPU engine runs ahead of the client: update early in the request so that it lands mid-generation
    switch = switch_at if switch_at is not None else max(1, max_tokens // (16 if cuda else 3))
    if not 0 < switch < max_tokens:
        raise BadInput(f"weight-update --switch-at {switch}: must lie between 1 and --max-tokens - 1 "
                       f"({max_tokens - 1})",
                       "the update happens after that many tokens of each in-flight request")
    if not (isinstance(atol, (int, float)) and math.isfinite(atol) and atol >= 0):
        raise BadInput(f"weight-update --atol {atol}: must be a finite number >= 0",
                       "use the floor that parity-gate determinism measures (default 1e-4 on CPU float32)")
    return switch


def refuse_bad_models(suite: Any, weights_from: Path) -> None:
    """The old weights (--from) and the new (the suite's model) must be two model folders with
    safetensors weights (both paths push *.safetensors), checked before any engine starts."""
    src = Path(weights_from)
    if not src.exists():
        raise BadInput(f"weight-update --from {src}: model folder does not exist",
                       "point --from at the folder of the old weights (A) the engine starts on")
    if not src.is_dir() or not (src / "config.json").is_file():
        raise BadInput(f"weight-update --from {src}: not a model folder (no config.json)",
                       "point --from at a Hugging Face model folder with the old weights (A)")
    for what, folder in (("--from", src), ("the suite's model", Path(suite.model))):
        if not any(p.is_file() for p in folder.glob("*.safetensors")):
            raise BadInput(f"weight-update: {what} {folder} has no *.safetensors weights to load or push",
                           "save the weights as safetensors (model.save_pretrained(..., safe_serialization=True))")
    if src.resolve() == Path(suite.model).resolve():
        raise BadInput(f"weight-update --from {src}: is the suite's model itself, so the update changes nothing and "
                       "an update with no effect could not be told from a correct one",
                       "point --from at the old weights (A) and the suite's model at the new ones (B)")



def suite_update_paths(suite: Suite, mode: str, shard: Any, engine: str,
                       untested: list[str]) -> WeightUpdateSpec | None:
    """The suite's `weight_update:` paths a check runs (`check --weight-update
    MODE`, `--engine ENGINE`), each refused now (before the engine starts) if
    this engine build cannot run it; in a shard or with --engine hf none runs,
    and `untested` says so."""
    spec = suite.weight_update
    if spec is None or mode == "off":
        return None
    if shard is not None or engine == "hf":
        untested.append(f"weight_update: the suite's {len(spec.paths)} update paths do not run "
                        + ("in a shard (run them in an unsharded check)" if shard is not None else "with --engine hf"))
        return None
    for p in spec.paths:
        try:
            refuse_bad_request([p.via], [p.pause], spec.backend, spec.max_tokens, spec.switch_at, spec.atol)
            refuse_bad_models(dataclasses.replace(suite, model=spec.load), spec.source)
        except BadInput as exc:
            raise BadInput(f"{suite.path}{p.where}: weight_update path {p.name}: {exc.what}",
                           f"{exc.hint}; or run check --weight-update off") from None
    return spec

def _prompts(suite: Any) -> list[PromptInput]:
    out: list[PromptInput] = []
    for p in suite.prompts:
        if p.token_ids is not None:
            out.append({"token_ids": list(p.token_ids)})
        elif p.text is not None:
            out.append({"text": p.text})
        else:
            raise BadInput(f"{suite.path}{p.where}: prompt {p.id!r} has neither text nor token_ids",
                           "weight-update takes plain text or token_ids prompts")
    return out


def _child(cmd: list[str], log_path: Path, what: str, timeout: float) -> None:
    from gate.studies.weight_update import _gate_child

    _gate_child(cmd, log_path, what, timeout)


def _worker(kind: str, spec: Any, work: Path, what: str, timeout: float) -> Any:
    """One worker process (`--worker update|fresh`): its spec written to work/KIND-spec.json, its result read
    from work/KIND.json, its log in work/KIND.log."""
    _write_json(work / f"{kind}-spec.json", spec)
    _child([sys.executable, "-m", "gate.studies.weight_update_inflight", "--worker", kind,
            str(work / f"{kind}-spec.json"), str(work / f"{kind}.json")], work / f"{kind}.log", what, timeout)
    return json.loads((work / f"{kind}.json").read_text())


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def _summary(result: WeightUpdateResult) -> str:
    lines = [f"# weight-update: {result['headline']}", "",
             f"vLLM {result.get('vllm_version') or 'version not recorded'}, tolerance {result['tolerance']:g}, "
             f"{result['max_tokens']} tokens a request, the update at token {result['switch_at']}.", ""]
    lines.append("| path | verdict | update call | old/new-weight tokens in flight | staleness after switch "
                 "(max abs diff, k3) |")
    lines.append("|---|---|---|---|---|")
    for p in result["paths"]:
        s = p.get("staleness") or {}
        st = (f"{s['after_switch_max_abs_diff']:.3g}, {s['after_switch_k3']:.3g}"
              + ("" if s.get("expected") else " (must be 0)")) if s else "-"
        toks = f"{s['tokens_old_weights']}/{s['tokens_new_weights']}" if s else "-"
        lines.append(f"| {p['name']} | {p['verdict']} | {p.get('mechanism') or '-'} | {toks} | {st} |")
    for p in result["paths"]:
        if p.get("diagnosis"):
            lines += ["", f"- **{p['name']}**: {p['diagnosis']['summary']}"]
    return "\n".join(lines) + "\n"


def inflight_check(suite_path: Path, weights_from: Path, out: Path, vias: list[str], pauses: list[str],
                   clear_cache: bool, backend: str = FILE_BACKEND, overrides: list[str] | None = None,
                   max_tokens: int | None = None, switch_at: int | None = None, atol: float = DEFAULT_ATOL,
                   timeout: float = 600, test_skip_weights: str = "", paths: list[PathSpec] | None = None,
                   new_weights: Path | None = None) -> WeightUpdateResult:
    """The whole in-flight path: refusals, the update worker, the fresh
    worker, the judge. Writes out/weight_update.json and out/summary.md.
    `paths` ({via, pause, clear_cache} each, as a suite declares them)
    replaces the vias x pauses product; `new_weights` what the update loads
    (default the suite's model)."""
    max_tokens = resolve_max_tokens(max_tokens)
    if paths is None:
        switch = refuse_bad_request(vias, pauses, backend, max_tokens, switch_at, atol)
        paths = [{"via": v, "pause": p, "clear_cache": clear_cache} for v in vias for p in pauses]
    else:
        for p in paths:
            switch = refuse_bad_request([p["via"]], [p["pause"]], backend, max_tokens, switch_at, atol)
    suite = load_suite(suite_path)
    if new_weights is not None:
        suite = dataclasses.replace(suite, model=Path(new_weights))
    refuse_bad_models(suite, weights_from)
    engine_args = dict(suite.engine, **engine_overrides(list(overrides or [])))
    out = Path(out)
    work = out / "weight_update"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    spec = {"model_old": str(weights_from), "model_new": str(suite.model), "engine_args": engine_args,
            "paths": paths, "prompts": _prompts(suite), "max_tokens": max_tokens, "logprobs": TOP_LOGPROBS,
            "switch_at": switch, "skip_prefix": test_skip_weights}
    upd: UpdateRun = _worker("update", spec, work, "the engine updated with requests in flight", timeout)
    plans = [continuation_plan(run, p["pause"], upd["old"], atol) for p, run in zip(paths, upd["runs"])]
    fspec = {"model_new": str(suite.model), "engine_args": engine_args, "plans": plans, "prompts": upd["prompts"],
             "max_tokens": max_tokens, "logprobs": TOP_LOGPROBS}
    fresh: FreshRun = _worker("fresh", fspec, work, "the fresh engine on the new weights", timeout)
    judged: list[PathVerdict] = []
    for p, run, plan, f in zip(paths, upd["runs"], plans, fresh["plans"]):
        v = judge_path(p, run, upd["old"], f, plan, atol)
        v["name"] = run["path"]
        judged.append(v)
    failed = [v["name"] for v in judged if v["verdict"] == "fail"]
    headline = (f"FAIL: {len(failed)} of {len(judged)} update paths differ from fresh engines: {', '.join(failed)}"
                if failed else f"PASS: {len(judged)} update paths match fresh engines on the old and new weights")
    result: WeightUpdateResult = {
        "verdict": "fail" if failed else "pass", "exit_code": 1 if failed else 0, "headline": headline,
        "vllm_version": upd.get("vllm_version"),
        "reference": "fresh AsyncLLM engines on the old (A) and the new (B) weights, same batches; "
                     "decode compared with decode, staleness against B's teacher-forced logprobs",
        "tolerance": atol, "switch_at": switch, "max_tokens": max_tokens,
        "engine_start_seconds": upd.get("engine_start_seconds"),
        "seconds": round(time.monotonic() - t0, 1), "paths": judged}
    _write_json(out / "weight_update.json", result)
    atomic_write_text(out / "summary.md", _summary(result))
    return result


def _worker_main(argv: list[str]) -> int:
    """`python -m gate.studies.weight_update_inflight --worker update|fresh SPEC OUT`."""
    logging.basicConfig(level=logging.INFO, format="parity-gate: %(message)s")
    role, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    from gate.run.engine import _prepare_environment

    _prepare_environment()
    from gate.run import async_engine as ae

    try:
        if role == "update":
            res = ae.run_update_worker(
                model_old=Path(spec["model_old"]), model_new=Path(spec["model_new"]), engine_args=spec["engine_args"],
                paths=[ae.UpdatePath(p["via"], p["pause"], p["clear_cache"]) for p in spec["paths"]],
                prompts=spec["prompts"], max_tokens=spec["max_tokens"], logprobs=spec["logprobs"],
                switch_at=spec["switch_at"], skip_prefix=spec.get("skip_prefix", ""))
        else:
            res = ae.run_fresh_worker(model_new=Path(spec["model_new"]), engine_args=spec["engine_args"],
                                      plans=spec["plans"], prompts=spec["prompts"], max_tokens=spec["max_tokens"],
                                      logprobs=spec["logprobs"])
    except GateError as exc:
        sys.stderr.write(f"parity-gate: {exc.kind}: {exc.line()}\n")
        return exc.exit_code
    atomic_write_text(Path(out_path), json.dumps(res))
    return 0


if __name__ == "__main__":  # pragma: no cover - entry for the worker processes
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker_main(sys.argv[2:]))
    sys.exit("use 'parity-gate weight-update --pause ...' (this entry point only runs the workers)")

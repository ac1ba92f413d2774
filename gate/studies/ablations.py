"""The ablations of a diagnosis (docs/diagnosis.md): from a verdict's
environment diff, one rerun per knob that can be moved back to the golden's
value, then one with all of them, and the differences that cannot be moved
back here (versions, hardware). Pure: data in, data out."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gate.core.rows import Verdict

__all__ = ["Ablation", "AblationOutcome", "Runner", "plan_ablations", "show_value"]

# Resolved-config keys that are also vllm.EngineArgs names: moving one back is
# `--engine-arg KEY=<golden's resolved value>`.
_ENGINE_KEYS = {
    "dtype", "logprobs_mode", "max_model_len", "max_logprobs", "seed", "enforce_eager", "hf_overrides",
    "quantization", "enable_prefix_caching", "block_size", "kv_cache_dtype", "max_num_seqs",
    "max_num_batched_tokens", "async_scheduling", "enable_chunked_prefill", "tensor_parallel_size",
    "pipeline_parallel_size",
}
# Resolved keys that are read from the environment, not from engine args.
_ENV_BACKED = {"batch_invariant": "VLLM_BATCH_INVARIANT", "attention_backend": "VLLM_ATTENTION_BACKEND"}
# Keys whose value is derived from another knob: ablate the knob instead.
_DERIVED = {"head_dtype": "hf_overrides"}
# Names used in messages, where the raw key says too little.
_TITLES = {"hf_overrides": "lm_head precision (hf_overrides)", "head_dtype": "lm_head dtype",
           "logprobs_mode": "logprobs_mode", "batch_invariant": "VLLM_BATCH_INVARIANT"}


@dataclass(frozen=True)
class Ablation:
    """One rerun: the check's own overrides plus these knobs moved back."""

    name: str                               # e.g. "logprobs_mode" or "all"
    knobs: tuple[str, ...]                  # diff keys it moves back
    engine_args: dict[str, Any]             # extra --engine-arg KEY=VALUE (golden's values)
    env: dict[str, str | None]              # environment variables to set (None: unset)
    description: str                        # "logprobs_mode processed_logprobs -> raw_logprobs"


@dataclass(frozen=True)
class AblationOutcome:
    ablation: Ablation
    status: str                             # "ran" | "skipped" | "error"
    verdict: str | None = None              # "pass" | "fail"
    measures: dict[str, Any] = field(default_factory=dict)   # channel -> {max_abs_diff, mean_abs_diff, ...}
    seconds: float = 0.0
    error: str | None = None
    result_dir: str | None = None


Runner = Callable[[Ablation, Path, float], AblationOutcome]


def show_value(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def _env_value(ref: Any) -> str | None:
    if isinstance(ref, bool):
        return "1" if ref else "0"
    return None if ref is None else str(ref)


def plan_ablations(verdict: Verdict) -> tuple[list[Ablation], list[dict[str, Any]]]:
    """From a verdict's environment diff: one ablation per movable knob, then
    one with all of them (when there are several). Also returns the
    differences that cannot be moved back here (versions, hardware)."""
    rows = [r for r in verdict.get("environment_diff", []) if r.get("differs")]
    ref_manifest = (verdict.get("reference") or {}).get("manifest") or {}
    requested = (ref_manifest.get("engine_args") or {}).get("requested") or {}
    ref_env = (ref_manifest.get("environment") or {}).get("env") or {}
    by_key = {r["key"]: r for r in rows}
    singles: dict[str, Ablation] = {}
    fixed: list[dict[str, Any]] = []
    for r in rows:
        key, group, ref, cand = r["key"], r.get("group", ""), r.get("reference"), r.get("candidate")
        knob = _DERIVED.get(key, key)
        if knob != key and knob in by_key:
            continue  # the underlying knob has its own row and ablation
        desc = f"{_TITLES.get(key, key)} {show_value(ref)} -> {show_value(cand)}"
        if group == "environment" and key.startswith("env."):
            var = key[4:]
            singles[key] = Ablation(var, (key,), {}, {var: _env_value(ref)}, desc)
        elif group.startswith("engine") and key in _ENV_BACKED:
            var = _ENV_BACKED[key]
            if key == "attention_backend" and var not in ref_env:
                fixed.append(dict(r, why="attention backend was chosen by vLLM; no setting to move back"))
                continue
            value = ref_env.get(var) if key == "attention_backend" else _env_value(ref)
            singles[key] = Ablation(key, (key,), {}, {var: value}, desc)
        elif group.startswith("engine") and knob != key:
            value = requested.get(knob, {} if knob == "hf_overrides" else None)
            if knob == "hf_overrides" and not value and key == "head_dtype" and "default" not in str(ref):
                value = {"head_dtype": ref}
            singles[knob] = Ablation(knob, (key,), {knob: value}, {}, desc)
        elif group == "engine" and key in _ENGINE_KEYS:
            singles[key] = Ablation(key, (key,) + tuple(k for k, v in _DERIVED.items() if v == key and k in by_key),
                                    {key: requested.get(key, ref) if key == "hf_overrides" else ref}, {}, desc)
        elif group == "engine (requested)":
            singles[key] = Ablation(key, (key,), {key: ref} if ref is not None else {}, {}, desc)
            if ref is None:
                fixed.append(dict(r, why="set only in the run; remove it from the suite or --engine-arg to test"))
                del singles[key]
        else:
            fixed.append(dict(r, why="not a setting of this run (version, hardware or build)"))
    plan = list(singles.values())
    if len(plan) > 1:
        args: dict[str, Any] = {}
        env: dict[str, str | None] = {}
        for a in plan:
            args.update(a.engine_args)
            env.update(a.env)
        plan.append(Ablation("all", tuple(k for a in plan for k in a.knobs), args, env,
                             "all of: " + "; ".join(a.description for a in plan)))
    return plan, fixed

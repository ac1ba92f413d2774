"""The engine args a run asked for against what vLLM resolved: one check
(policy `unapplied_engine_args: fail`, the default) or warnings (`warn`)."""
from __future__ import annotations

from typing import Any

from gate.core.checks import CheckResult
from gate.core.rows import UnappliedArg
from gate.core.thresholds import ENGINE_CHECK, Policy

__all__ = ["engine_check", "unapplied_engine_args"]


_DTYPE_ALIASES = {"half": "float16", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_UNRESOLVED = ("auto", None, "")  # a request that leaves the choice to vLLM: whatever it resolves is applied


def _same_setting(requested: Any, resolved: Any) -> bool:
    """Whether vLLM applied a requested value (types and spellings differ:
    "float32" vs "torch.float32", 1 vs 1.0, true vs "True")."""
    def norm(v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().lower().replace("torch.", "")
            v = _DTYPE_ALIASES.get(v, v)
            if v in ("true", "false"):
                return v == "true"
            try:
                return float(v)
            except ValueError:
                return v
        if isinstance(v, bool):
            return v
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return v
    return norm(requested) == norm(resolved)


def unapplied_engine_args(manifest: Any) -> list[UnappliedArg]:
    """Engine args a run asked for that vLLM resolved to something else
    (keys it resolves under the same name only; 'auto' is never a request)."""
    args = getattr(manifest, "engine_args", None) or {}
    requested, resolved = args.get("requested") or {}, args.get("resolved") or {}
    out = []
    for key in sorted(requested):
        want = requested[key]
        if key not in resolved or (isinstance(want, str) and want.strip().lower() in _UNRESOLVED) or want is None:
            continue
        if key == "hf_overrides" and isinstance(want, dict) and isinstance(resolved[key], dict):
            if all(_same_setting(v, resolved[key].get(k)) for k, v in want.items()):
                continue
        elif _same_setting(want, resolved[key]):
            continue
        out.append({"key": key, "requested": want, "resolved": resolved[key]})
    return out


def engine_check(policy: Policy, manifest: Any, label: str = "run") -> tuple[CheckResult | None, list[str]]:
    """The run's requested-vs-resolved engine args as one check (policy
    `unapplied_engine_args: fail`, the default) or as warnings (`warn`).
    None when the run records no requested args vLLM resolves under the same
    name (a trainer dump): nothing was asked, nothing is claimed."""
    args = getattr(manifest, "engine_args", None) or {}
    requested, resolved = args.get("requested") or {}, args.get("resolved") or {}
    asked = [k for k in requested if k in resolved]
    if not asked:
        return None, []
    bad = unapplied_engine_args(manifest)
    lines = [f"{b['key']}: requested {_plain_value(b['requested'])}, resolved {_plain_value(b['resolved'])}: "
             f"this engine ignored it" for b in bad]
    if bad and policy.unapplied_engine_args == "warn":
        return None, [f"the {label} asked for an engine arg vLLM did not apply ({line})" for line in lines]
    spec = ENGINE_CHECK
    status = "fail" if bad else "pass"
    detail = (f"{len(bad)} of {len(asked)} requested engine args not applied: " + "; ".join(lines) if bad else
              f"all {len(asked)} requested engine args that vLLM resolves by name were applied")
    message = (f"{status.upper()} {spec.title}: {detail}; allowed unapplied_args <= 0 (policy "
               f"unapplied_engine_args: warn makes this a warning)")
    return CheckResult(id=spec.id, title=spec.title, channel=spec.channel, config=None, status=status,
                       measure=spec.measure, value=float(len(bad)), op=spec.op, bound=0.0, n_bad=len(bad),
                       n_total=len(asked), worst=None, message=message,
                       evidence={"compared": len(asked), "reference": len(asked), "floor": 1,
                                 "unit": "engine args"}), []


def _plain_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)

"""A policy read, layered and applied. Precedence is CLI (--policy) over
the suite's `policy:` over the defaults (the table in `core/thresholds`),
and any config may override (docs/policy.md); `evaluate` judges every check
of every config (each through `core/checks`)."""
from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Any

from gate.core.checks import CheckResult, evaluate_check
from gate.core.compare import ComparisonResult
from gate.core.errors import BadInput
from gate.core.thresholds import CHECKS, DEFAULT_POLICY, FAIL_ON, TOLERANCE_CHECKS, UNAPPLIED, Policy, Rules
from gate.core.yamlio import load_yaml

__all__ = ["load_policy", "parse_policy", "layered_policy", "evaluate"]

_BY_ID = {c.id: c for c in CHECKS}


def _got(value: Any) -> str:
    """The offending value, short enough for one line (a 400-digit integer is not)."""
    text = repr(value)
    return text if len(text) <= 60 else f"a {len(str(abs(value)))}-digit integer" if type(value) is int \
        else text[:57] + "..."


def _refuse(err: dict[str, Any], where: str) -> BadInput:
    """One pydantic error of the policy model (gate/core/policy_model.py) as the
    line this policy key has always had (docs/errors.md)."""
    loc, raw = list(err["loc"]), err.get("input")
    got = _got(raw)
    if loc[:1] == ["per_config"] and len(loc) >= 2:
        where = f"{where} (per_config.{loc[1]})"
        loc = loc[2:]
        if not loc:
            return BadInput(f"{where}: policy must be a mapping, got {type(raw).__name__}",
                            "see docs/policy.md for the keys")
    key = loc[0]
    if err["type"] == "extra_forbidden" and len(loc) == 1:  # in per_config (the top level is said in _validate)
        return BadInput(f"{where}: unknown policy keys [{key!r}] in a per_config entry",
                        "allowed there: atol, rtol, checks, min_evidence")
    if key in ("atol", "rtol"):
        return BadInput(f"{where}: policy '{key}' must be a non-negative number, got {got}",
                        "write a number, e.g. 1e-4 (unquoted)")
    if key == "min_evidence":
        return BadInput(f"{where}: policy 'min_evidence' must be a share in (0, 1], got {got}",
                        "e.g. min_evidence: 0.5 (a check must compare half of the reference's tokens)")
    if key == "checks" and len(loc) == 1:
        return BadInput(f"{where}: policy 'checks' must be a mapping of check id to bound",
                        f"known checks: {', '.join(_BY_ID)}")
    if key == "checks":
        check = loc[1]
        if err["type"] == "extra_forbidden":
            # Said in the message itself: a suite keeps only the message of a policy problem.
            near = difflib.get_close_matches(str(check), list(_BY_ID), n=1)
            guess = f"did you mean {near[0]!r}? " if near else ""
            return BadInput(f"{where}: unknown check {check!r} in policy ({guess}known checks: {', '.join(_BY_ID)})",
                            "see docs/policy.md for what each check measures")
        if check in TOLERANCE_CHECKS:
            return BadInput(f"{where}: check {check!r} takes its bound from atol/rtol",
                            "set policy.atol (and rtol) instead, or null to stop gating on it")
        return BadInput(f"{where}: policy 'checks.{check}' must be a non-negative number or null, got {got}",
                        "write a number, e.g. 1e-4 (unquoted)")
    if key == "per_config":
        return BadInput(f"{where}: policy 'per_config' must map config names to policies",
                        "e.g. per_config: {hot: {atol: 1.0e-3}}")
    if key == "fail_on":
        return BadInput(f"{where}: policy fail_on must be one of {FAIL_ON}, got {got}",
                        "use 'regression' (default) or 'never'")
    if key == "unapplied_engine_args":
        return BadInput(f"{where}: policy unapplied_engine_args must be one of {UNAPPLIED}, got {got}",
                        "use 'fail' (default: a requested knob that vLLM did not apply fails the check) or 'warn'")
    return BadInput(f"{where}: policy '{key}': {err['msg']}", "see docs/policy.md for the keys")


_KEYS = ("atol", "rtol", "checks", "per_config", "fail_on", "min_evidence", "unapplied_engine_args")


def _validate(data: dict[str, Any], where: str) -> None:
    """The shape of a policy mapping is the model's (gate/core/policy_model.py
    PolicyFile, which gate/schemas/policy.schema.json is generated from);
    the first problem is one line with the key and a fix."""
    from pydantic import ValidationError

    from gate.core.policy_model import PolicyFile
    try:
        PolicyFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1)
        if unknown:
            raise BadInput(f"{where}: unknown policy keys {unknown}", f"allowed: {', '.join(_KEYS)}") from None
        raise _refuse(errors[0], where) from None


def _rules(data: dict[str, Any], base: Rules) -> Rules:
    """`base` with the keys of one validated policy layer over it."""
    bounds = dict(base.bounds)
    for key, value in (data.get("checks") or {}).items():
        bounds[key] = "off" if key in TOLERANCE_CHECKS else None if value is None else float(value)  # type: ignore
    return Rules(atol=float(data.get("atol", base.atol)), rtol=float(data.get("rtol", base.rtol)), bounds=bounds,
                 min_evidence=float(data.get("min_evidence", base.min_evidence)))


def parse_policy(data: Any, where: str, base: Policy = DEFAULT_POLICY,
                 configs: set[str] | None = None) -> Policy:
    """Layer a policy mapping over `base`. Keys: atol, rtol, checks, per_config, fail_on."""
    if data is None:
        return base
    if not isinstance(data, dict):
        raise BadInput(f"{where}: policy must be a mapping, got {type(data).__name__}",
                       "see docs/policy.md for the keys")
    _validate(data, where)
    default = _rules(data, base.default)
    per_config = {name: replace(r) for name, r in base.per_config.items()}
    for name, sub in (data.get("per_config") or {}).items():
        if configs is not None and name not in configs:
            raise BadInput(f"{where}: policy per_config names unknown sampling config {name!r}",
                           f"known configs: {', '.join(sorted(configs))}")
        per_config[name] = _rules(sub, per_config.get(name, default))
    return Policy(default=default, per_config=per_config, fail_on=data.get("fail_on", base.fail_on),
                  unapplied_engine_args=data.get("unapplied_engine_args", base.unapplied_engine_args))


def load_policy(path: Path, base: Policy = DEFAULT_POLICY, configs: set[str] | None = None) -> Policy:
    data = load_yaml(path)
    return parse_policy(data, str(path), base, configs)


def layered_policy(suite_policy: Any, suite_path: str, policy_file: Path | None, fail_on: str | None,
                   configs: set[str] | None) -> Policy:
    """The policy a run is judged by, in layers: the built-in default, the
    suite's `policy:` section, a `--policy` file, then `--fail-on`."""
    policy = parse_policy(suite_policy, suite_path, DEFAULT_POLICY, configs) if suite_policy is not None \
        else DEFAULT_POLICY
    if policy_file is not None:
        policy = load_policy(policy_file, policy, configs)
    if fail_on is not None:
        policy = replace(policy, fail_on=fail_on)
    return policy


def evaluate(policy: Policy, result: ComparisonResult,
             labels: tuple[str, str] = ("reference", "candidate")) -> list[CheckResult]:
    """Every check, for every sampling config (each config has its own rules).
    Collect everything first; the caller decides once."""
    tokens_at = {(w["channel"], w["config"], w["prompt_id"], w["sample"], w["position"]): w["token"]
                 for w in result.worst_tokens}
    out: list[CheckResult] = []
    for config, group in result.per_config.items():
        rules = policy.rules(config)
        for spec in CHECKS:
            r = evaluate_check(spec, rules, config, group, tokens_at, labels)
            if r is not None:
                out.append(r)
    return out

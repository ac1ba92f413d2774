"""Thresholds and the pass/fail rule. One table of defaults, each with where
it comes from; precedence is CLI (--policy) over the suite's `policy:` over
these defaults, and any config may override (docs/policy.md)."""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gate.core.channel import Tolerance
from gate.core.compare import ComparisonResult
from gate.core.errors import BadInput
from gate.core.measures import short
from gate.core.semantics import CENTRE_FLOOR, SPREAD_RATIO
from gate.core.yamlio import load_yaml

__all__ = ["CheckSpec", "Policy", "CHECKS", "DEFAULT_POLICY", "load_policy", "parse_policy", "evaluate",
           "CheckResult", "engine_check", "unapplied_engine_args"]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    channel: str        # "forced" | "sampler" | "free_run"
    measure: str        # key in the channel summary
    op: str             # "<=" or ">="
    default: float | None  # None: reported, not gated, unless a policy sets a bound
    source: str


# Defaults: a real vLLM bump (0.20 -> 0.26, bf16 model, H100) moved
# teacher-forced scores by at most 1.9e-6; on the same model every config
# change moved the max by 0.75..0.98 and the mean by 0.018..0.043 (H200)
# (docs/design.md section 4.3, runs G1 and G2). 1e-4 sits ~50x above the bump
# and ~7500x below the smallest of those changes; through the gate itself a
# bump moved 4.8e-7 and the smallest knob change 0.0078 (section 4.4, run G3).
# On CPU float32 with a replayed batch plan, an unchanged engine is bitwise
# equal (0).
CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("forced.logprobs_close", "teacher-forced logprobs", "forced", "max_abs_diff", "<=", None,
              "per-token rule |d| <= atol + rtol*|a|; atol 1e-4 from measured bump (1.9e-6) vs knob drift (>=0.75)"),
    CheckSpec("forced.k3_kl", "teacher-forced k3 KL", "forced", "k3_kl", "<=", 1e-6,
              "k3 of a 1e-4 uniform shift is 5e-9; NeMo-RL's 1e-3 is for train-vs-inference, far looser"),
    CheckSpec("forced.top1_agreement", "teacher-forced top-1 agreement", "forced", "top1_agreement", ">=", 0.999,
              "greedy choice must not move; 0.1% slack for genuine near-ties"),
    CheckSpec("sampler.logprobs_close", "sampled-token logprobs", "sampler", "max_abs_diff", "<=", None,
              "same per-token rule on the decode path; catches raw vs processed logprobs (docs/design.md section 1)"),
    CheckSpec("sampler.k3_kl", "sampled-token k3 KL", "sampler", "k3_kl", "<=", 1e-6,
              "as teacher-forced k3, on the logprobs an RL trainer actually consumes"),
    CheckSpec("sampler.mult_prob_error", "sampled-token mult-prob error", "sampler", "mult_prob_error", "<=", None,
              "NeMo-RL gates train vs generation at 1.05; reported only by default"),
    CheckSpec("free_run.exact_match_rate", "free-run exact match", "free_run", "exact_match_rate", ">=", None,
              "depends on batch composition (docs/design.md section 4.3); reported, not gated, by default"),
    CheckSpec("sampler.semantics", "in-run sampler semantics", "semantics", "relation_shift", "<=", CENTRE_FLOOR,
              "each run's sampler logprobs fitted on its own prefill scores of the same tokens; raw vs processed "
              "moves the slope by 1/T - 1 (0.43 at T=0.7) and the mean residual by KL(q||p) > 0; the shift beyond "
              "6 standard errors plus a share of the golden's own residual rms (CPU float32: 0) must stay under "
              "this floor; top-k 20 at T=1 under processed logprobs moves the mean by 2.6e-4"),
    CheckSpec("sampler.spread", "in-run decode-vs-prefill spread", "semantics", "spread_ratio", "<=", SPREAD_RATIO,
              "rms and p99 of (sampler - own prefill) over the golden's (floor 1e-4); a real bf16 bump moved the "
              "rms by ~10%, processed logprobs by 5-30x; symmetric decode-path noise keeps slope 1 and mean 0 "
              "and shows only here"),
)
# Not a per-config check: an engine arg the run asked for, resolved by vLLM to something else.
ENGINE_CHECK = CheckSpec("engine.requested_applied", "requested engine args applied", "engine", "unapplied_args",
                         "<=", 0, "a CI user who asked for a knob wants to know that it was not applied; "
                         "policy unapplied_engine_args: warn turns it into a warning")
UNAPPLIED = ("fail", "warn")
MIN_EVIDENCE = 0.5  # a check must compare at least this share of the reference's tokens in its channel
_BY_ID = {c.id: c for c in CHECKS}
TOLERANCE_CHECKS = {"forced.logprobs_close", "sampler.logprobs_close"}
FAIL_ON = ("regression", "never")


@dataclass(frozen=True)
class Rules:
    """Thresholds for one config (or the default)."""

    atol: float = 1e-4
    rtol: float = 0.0
    bounds: dict[str, float | None] = field(default_factory=lambda: {c.id: c.default for c in CHECKS})
    min_evidence: float = MIN_EVIDENCE

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(self.atol, self.rtol)


@dataclass(frozen=True)
class Policy:
    default: Rules = field(default_factory=Rules)
    per_config: dict[str, Rules] = field(default_factory=dict)
    fail_on: str = "regression"
    unapplied_engine_args: str = "fail"

    def rules(self, config: str | None) -> Rules:
        return self.per_config.get(config, self.default) if config else self.default

    def tolerances(self) -> dict[str | None, Tolerance]:
        tol: dict[str | None, Tolerance] = {None: self.default.tolerance}
        tol.update({name: r.tolerance for name, r in self.per_config.items()})
        return tol


DEFAULT_POLICY = Policy()


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


@dataclass(frozen=True)
class CheckResult:
    id: str
    title: str
    channel: str
    config: str | None
    status: str
    measure: str
    value: float | None
    op: str
    bound: float
    n_bad: int
    n_total: int
    worst: dict[str, Any] | None
    message: str
    # evidence: tokens (or sequences) compared, what the reference offered, the floor a pass needs
    evidence: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # why a check is not comparable, in words


_fmt = short  # one number format for messages (gate/core/measures.py)


def _where(loc: dict[str, Any] | None, tokens: dict | None = None) -> str:
    if not loc:
        return "nowhere"
    tok = f" token {loc['token']!r}" if loc.get("token") is not None else ""
    return (f"config '{loc['config']}' prompt '{loc['prompt_id']}' sample {loc['sample']} "
            f"position {loc['position']}{tok} (id {loc['token_id']})")


def _evidence(spec: CheckSpec, group: dict[str, Any]) -> tuple[int, int]:
    """(compared, offered by the reference) for the check's channel."""
    summary = group.get(spec.channel) or {}
    if spec.channel == "free_run":
        n = summary.get("sequences") or 0
        return n, n
    return summary.get("tokens") or 0, summary.get("reference_tokens") or 0


def _why_not_comparable(spec: CheckSpec, group: dict[str, Any], compared: int, offered: int,
                        labels: tuple[str, str]) -> str:
    ref, cand = labels
    if spec.channel == "sampler":
        fr = group.get("free_run") or {}
        seqs = fr.get("sequences") or 0
        if not seqs:
            return f"the {cand} records no sampler logprobs for these requests"
        at0 = fr.get("diverged_at_start") or 0
        stream = fr.get("stream_changed") or 0
        if stream and stream * 2 >= seqs - (fr.get("exact_matches") or 0):
            first = fr.get("stream_first_position")
            where = ("at position 0" if at0 >= stream else f"at position 0 ({at0}) and later" if first == 0
                     else f"from position {first} on")
            return (f"the random stream changed ({stream}/{seqs} free runs diverge {where}, where both engines "
                    f"give the golden's token the same teacher-forced logprob), so few sampled tokens are the same "
                    f"on both sides")
        if at0 * 2 > seqs:
            return (f"the random stream changed ({at0}/{seqs} free runs diverge at position 0), so few sampled "
                    f"tokens are the same on both sides")
        return (f"{seqs - (fr.get('exact_matches') or 0)}/{seqs} free runs diverge (first at position "
                f"{fr.get('first_divergence_min')}); only the matching prefix is comparable")
    if spec.channel == "forced":
        if not (group.get("forced") or {}).get("candidate_records"):
            return f"the {cand} records no teacher-forced scores"
        return (f"the {cand} has teacher-forced scores of {compared} of the {ref}'s {offered} tokens "
                f"(missing records or scores, or scores of other tokens)")
    if spec.channel == "semantics":
        sem = group.get("semantics") or {}
        if not sem.get("candidate"):
            return f"the {cand} has no sampler logprobs with its own prefill scores of the same tokens"
        if not sem.get("reference"):
            return f"the {ref} has no sampler logprobs with its own prefill scores of the same tokens"
        return "too few tokens, or every token has the same prefill logprob: no relation to fit"
    return "nothing to compare"


def _not_comparable(spec: CheckSpec, config: str | None, group: dict[str, Any], compared: int, offered: int,
                    labels: tuple[str, str], evidence: dict[str, Any], floor: int, rules: Rules,
                    value: float | None, bound: float, label: str) -> CheckResult:
    note = _why_not_comparable(spec, group, compared, offered, labels)
    pct = f" ({100 * compared / offered:.2f}%)" if offered else ""
    message = (f"NOT COMPARABLE {label}: {compared} of {offered} {evidence['unit']} compared{pct}, "
               f"need >= {floor} (min_evidence {rules.min_evidence:g}); {note}")
    return CheckResult(id=spec.id, title=spec.title, channel=spec.channel, config=config, status="not_comparable",
                       measure=spec.measure, value=value, op=spec.op, bound=float(bound), n_bad=0,
                       n_total=compared, worst=None, message=message, evidence=evidence, note=note)


def _evaluate_one(spec: CheckSpec, rules: Rules, config: str | None, group: dict[str, Any],
                  tokens_at: dict, labels: tuple[str, str] = ("reference", "candidate")) -> CheckResult | None:
    bound = rules.bounds.get(spec.id)
    if spec.id in TOLERANCE_CHECKS:
        if bound == "off":
            return None
        bound = rules.atol
    if bound is None:
        return None
    compared, offered = _evidence(spec, group)
    if compared == 0 and offered == 0:
        return None  # neither side has this channel: nothing expected, nothing claimed
    floor = max(1, math.ceil(rules.min_evidence * offered)) if offered else 1
    evidence = {"compared": compared, "reference": offered, "floor": floor,
                "unit": "sequences" if spec.channel == "free_run" else "tokens"}
    label = spec.title + (f" [{config}]" if config else "")
    summary = group.get(spec.channel) or {}
    comparison = None
    if spec.id == "sampler.spread":
        comparison = summary.get("spread")
        value = (comparison or {}).get("value")
        bound = float(bound) + (comparison or {}).get("allowed_extra", 0.0)
    elif spec.channel == "semantics":
        comparison = summary.get("comparison")
        value = (comparison or {}).get("shift")
    else:
        value = summary.get(spec.measure)
    thin = compared < floor
    # Below the floor a check is judged like any other: thin evidence is not too thin to fail, but it is
    # too thin to pass (see below). A rate of too few free runs says nothing either way.
    if value is None or compared == 0 or (thin and spec.channel == "free_run"):
        return _not_comparable(spec, config, group, compared, offered, labels, evidence, floor, rules, value,
                               bound, label)
    if spec.channel == "free_run":
        n_total = summary["sequences"]
        n_bad = n_total - summary["exact_matches"]
        worst_loc = (summary["diverged"] or [None])[0]
        worst = None
        passed = value >= bound
        where = (f"first at config '{worst_loc['config']}' prompt '{worst_loc['prompt_id']}' sample "
                 f"{worst_loc['sample']} position {worst_loc['position']}" if worst_loc else "none diverged")
        detail = f"{n_bad} of {n_total} sequences ({100 * n_bad / max(n_total, 1):.2f}%) diverged; {where}"
    elif spec.id == "sampler.spread":
        n_total, worst = compared, None
        passed = value <= bound
        n_bad = 0 if passed else n_total
        c = comparison
        p99 = ("" if c.get("p99_ratio") is None else
               f", p99 |residual| {_fmt(c['candidate_p99'])} vs {_fmt(c['reference_p99'])} "
               f"(x{_fmt(c['p99_ratio'])})")
        detail = (("decode path drifted from prefill path: " if not passed else "")
                  + f"rms(sampler - own prefill) {_fmt(c['candidate_rms'])} in the {labels[1]} vs "
                  f"{_fmt(c['reference_rms'])} in the {labels[0]} (x{_fmt(c['rms_ratio'])} over max(golden, "
                  f"floor {_fmt(c['floor'])})){p99}; beyond a band of {_fmt(c['band'])}: "
                  f"{100 * (c['candidate_beyond_band'] or 0):.2f}% vs {100 * (c['reference_beyond_band'] or 0):.2f}%; "
                  f"over {n_total} of its own sampled tokens")
    elif spec.channel == "semantics":
        n_total, worst = compared, None
        passed = value <= bound
        n_bad = 0 if passed else n_total
        ref, cand = summary.get("reference") or {}, summary.get("candidate") or {}

        def rel(r: dict[str, Any]) -> str:
            slope = "n/a" if r.get("slope") is None else f"{r['slope']:.4f}"
            return f"slope {slope}, mean(sampler - own prefill) {r.get('mean_residual', 0.0):+.2e}"
        slope_part = ("" if comparison.get("slope_shift") is None else
                      f", slope shift {_fmt(comparison['slope_shift'])} (noise {_fmt(comparison['slope_noise'])})")
        detail = (f"{labels[0]} {summary.get('reference_mode')} ({rel(ref)}), {labels[1]} "
                  f"{summary.get('candidate_mode')} ({rel(cand)}) over {n_total} of its own sampled tokens; "
                  f"mean shift {_fmt(comparison['mean_shift'])} (noise {_fmt(comparison['mean_noise'])}){slope_part}; "
                  f"shift beyond noise {_fmt(value)}")
    else:
        n_total, n_bad = summary["tokens"], summary["mismatched"]
        worst = summary.get("max_location")
        if worst is not None:
            worst = dict(worst, token=tokens_at.get((spec.channel, worst["config"], worst["prompt_id"],
                                                     worst["sample"], worst["position"])),
                         abs_diff=summary["max_abs_diff"])
        excluded = summary.get("excluded") or {}
        gaps = "".join(f"; {excluded[k]} {k.replace('_', ' ')} tokens" for k in ("null", "one_sided_inf")
                       if excluded.get(k))
        if spec.id in TOLERANCE_CHECKS:
            passed = n_bad == 0
            rule = f"|d| <= {_fmt(rules.atol)}" + (f" + {_fmt(rules.rtol)}*|a|" if rules.rtol else "")
            detail = (f"{n_bad} of {n_total} tokens ({100 * n_bad / max(n_total, 1):.2f}%) differ by more than "
                      f"{rule}; max abs diff {_fmt(summary['max_abs_diff'])} at {_where(worst)}{gaps}")
        elif spec.measure == "top1_agreement":
            # A rate needs slack for its sample size: at least one flip (a genuine near-tie) is allowed,
            # more only as (1 - bound) of the tokens allows.
            n_bad = summary.get("top1_disagreements") or 0
            allowed = max(1, math.floor((1 - bound) * n_total))
            passed = n_bad <= allowed
            detail = (f"{n_bad} of {n_total} tokens ({100 * n_bad / max(n_total, 1):.2f}%) changed their top-1 "
                      f"token (at most {allowed} allowed), top1_agreement {_fmt(value)}; max abs diff "
                      f"{_fmt(summary['max_abs_diff'])} at {_where(worst)}{gaps}")
        else:
            passed = value <= bound if spec.op == "<=" else value >= bound
            # same fixed shape as the tolerance checks: N of M first, then the measure
            detail = (f"{n_bad} of {n_total} tokens ({100 * n_bad / max(n_total, 1):.2f}%) beyond tolerance, "
                      f"{spec.measure} {_fmt(value)}; max abs diff "
                      f"{_fmt(summary['max_abs_diff'])} at {_where(worst)}{gaps}")
    if thin and passed:  # never a pass below the floor: nothing it compared is beyond its rule
        return _not_comparable(spec, config, group, compared, offered, labels, evidence, floor, rules, value,
                               bound, label)
    status = "pass" if passed else "fail"
    if thin:
        detail += (f"; on thin evidence ({compared} of {offered} {evidence['unit']}, below the floor of {floor} "
                   f"a pass needs): too few to pass, enough to fail")
    if spec.id == "sampler.spread":
        allowed = (f"allowed spread_ratio <= {_fmt(rules.bounds.get(spec.id))} + "
                   f"{_fmt(comparison['allowed_extra'])} (6 standard errors at these sizes)")
    elif spec.id in TOLERANCE_CHECKS:
        allowed = f"allowed max abs diff {spec.op} {_fmt(bound)}"
    else:
        allowed = f"allowed {spec.measure} {spec.op} {_fmt(bound)}"
    message = f"{status.upper()} {label}: {detail}; {allowed}"
    return CheckResult(id=spec.id, title=spec.title, channel=spec.channel, config=config, status=status,
                       measure=spec.measure, value=value, op=spec.op, bound=float(bound), n_bad=n_bad,
                       n_total=n_total, worst=worst, message=message, evidence=evidence)


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
            r = _evaluate_one(spec, rules, config, group, tokens_at, labels)
            if r is not None:
                out.append(r)
    return out


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


def unapplied_engine_args(manifest: Any) -> list[dict[str, Any]]:
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

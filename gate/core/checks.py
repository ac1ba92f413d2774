"""Judging one check of one sampling config: its measure against its
bound, whether the evidence is enough to judge at all, and the message
with its fixed shape (what, how many of how many, the greatest difference
and where, the bound)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gate.core.measures import short
from gate.core.rows import CheckWorst, Evidence
from gate.core.thresholds import TOLERANCE_CHECKS, CheckSpec, Rules

__all__ = ["CheckResult", "evaluate_check"]


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
    worst: CheckWorst | None
    message: str
    # evidence: tokens (or sequences) compared, what the reference offered, the floor a pass needs
    evidence: Evidence = field(default_factory=dict)  # type: ignore[assignment]
    note: str | None = None  # why a check is not comparable, in words


_fmt = short  # one number format for messages (gate/core/measures.py)


def _where(loc: CheckWorst | None, tokens: dict | None = None) -> str:
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
                    labels: tuple[str, str], evidence: Evidence, floor: int, rules: Rules,
                    value: float | None, bound: float, label: str) -> CheckResult:
    note = _why_not_comparable(spec, group, compared, offered, labels)
    pct = f" ({100 * compared / offered:.2f}%)" if offered else ""
    message = (f"NOT COMPARABLE {label}: {compared} of {offered} {evidence['unit']} compared{pct}, "
               f"need >= {floor} (min_evidence {rules.min_evidence:g}); {note}")
    return CheckResult(id=spec.id, title=spec.title, channel=spec.channel, config=config, status="not_comparable",
                       measure=spec.measure, value=value, op=spec.op, bound=float(bound), n_bad=0,
                       n_total=compared, worst=None, message=message, evidence=evidence, note=note)


def evaluate_check(spec: CheckSpec, rules: Rules, config: str | None, group: dict[str, Any],
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
    evidence: Evidence = {"compared": compared, "reference": offered, "floor": floor,
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

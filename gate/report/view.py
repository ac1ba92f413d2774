"""The view model the templates render: a verdict read tolerantly into
plain values (checks sorted failing first, environment rows, worst tokens
made readable, evidence and update-path rows), at one of the detail levels
that the size-limited outputs step down through."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

from gate.core.measures import CHANNEL_MEASURES
from gate.core.tokentext import is_byte_level, readable, readable_join
from gate.report.charts import _mermaid
from gate.report.rl_view import rl_view, share
from gate.report.values import _fit_words, _float, _int, _list, _mapping, _num, _rows

__all__ = ["Level", "LEVELS", "build_view"]

_KEY_ENV = ("vllm_version", "vllm_commit", "torch_version", "cuda_version", "gpu_name", "gpu", "device",
            "driver_version")
_GROUP_ORDER = {"environment": 0, "model": 1, "engine": 2, "env": 3}


@dataclass(frozen=True)
class Level:
    """How much detail a rendering carries; later levels cut more."""
    name: str
    checks: int = 200
    worst: int = 15
    env_unchanged: bool = True
    env_rows: int = 200
    chart: bool = True
    per_config: bool = True
    warnings: int = 10
    prompts: int = 20
    evidence: bool = True   # the decode-path evidence and RL tables (their one-line sentence stays)
    note: str = ""


_CUT = "Details were cut to fit GitHub's size limit"
LEVELS = (
    Level("full"),
    Level("no per-config", per_config=False, worst=10, env_unchanged=False, env_rows=60, checks=60, prompts=5,
           note=f"{_CUT}: per-config details and unchanged settings are only in the HTML report."),
    Level("compact", per_config=False, worst=5, env_unchanged=False, env_rows=20, checks=20, chart=False,
           warnings=5, prompts=0, evidence=False,
           note=f"{_CUT}: only the worst tokens, failing checks first and changed settings are shown here."),
    Level("minimal", per_config=False, worst=0, env_unchanged=False, env_rows=8, checks=8, chart=False,
           warnings=3, prompts=0, evidence=False,
           note=f"{_CUT}: this is a minimal summary."),
)


def _env_value(x: Any) -> str:
    if x is None:
        return "(unset)"
    if isinstance(x, str):
        return x
    return json.dumps(x, sort_keys=True)


def _ratio(c: dict[str, Any]) -> str:
    """How far a failing check is past its bound, in words."""
    value, bound = _float(c.get("value")), _float(c.get("bound"))
    if c.get("status") != "fail" or value is None or bound is None or value != value or bound != bound:
        return ""
    if c.get("op", "<=") in ("<=", "<") and 0 < bound < value:
        if math.isinf(value):
            return "infinitely past the bound"
        r = value / bound  # inf when it overflows, never an exception
        if r < 10:
            return f"{r:.2f}× the bound"
        return f"{r:,.0f}× the bound" if r < 1e15 else f"{_num(r)}× the bound"
    return f"off by {_num(abs(value - bound))}"


def _strip_prefix(headline: str, verdict: str) -> str:
    head, sep, rest = headline.partition(":")
    return rest.strip() if sep and head.strip().lower() == verdict else headline


def _pct(n: Any, d: Any, unit: str = "") -> str:
    if not isinstance(n, int) or not isinstance(d, int) or d <= 0:
        return ""
    hundredths = n * 10000 // d  # integer arithmetic: a forged 300-digit count must not overflow a float
    return f"{n:,} of {d:,}{' ' + unit if unit else ''} ({hundredths // 100}.{hundredths % 100:02d}%)"


def _sort_checks(checks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(checks, key=lambda c: (c.get("status") != "fail", c.get("config") is not None))


def build_view(v: dict[str, Any], level: Level) -> dict[str, Any]:
    checks = _sort_checks(v.get("checks") or [])
    failed = [c for c in checks if c.get("status") == "fail"]
    env_rows = sorted((r for r in v.get("environment_diff") or [] if isinstance(r, dict)),
                      key=lambda r: (not r.get("differs"), _GROUP_ORDER.get(r.get("group", ""), 9)))
    changed = [dict(r, ref=_env_value(r.get("reference")), cand=_env_value(r.get("candidate")))
               for r in env_rows if r.get("differs")]
    key_same = [dict(r, ref=_env_value(r.get("reference")), cand=_env_value(r.get("candidate")))
                for r in env_rows if not r.get("differs") and r.get("key") in _KEY_ENV]
    other_same = [dict(r, ref=_env_value(r.get("reference")), cand=_env_value(r.get("candidate")))
                  for r in env_rows if not r.get("differs") and r.get("key") not in _KEY_ENV]
    measures = _mapping(v.get("measures"))
    per_config = {str(k): _group(m) for k, m in _mapping(measures.get("per_config")).items()}
    overall = _group(measures.get("overall"))
    worst_rows = _rows(v.get("worst_tokens"))
    byte_level = is_byte_level(str(t) for w in worst_rows for t in _token_strings(w))
    worst = [dict(w, token=readable(str(w.get("token") or ""), byte_level),
                  before=_context(w.get("context_before"), tail=True, byte_level=byte_level),
                  after=_context(w.get("context_after"), byte_level=byte_level))
             for w in worst_rows]
    prompts = _mapping(v.get("prompts"))
    warnings = [w for w in v.get("warnings") or [] if isinstance(w, str)]
    untested = [w[len(_UNTESTED):] for w in warnings if w.startswith(_UNTESTED)]
    warnings = [w for w in warnings if not w.startswith(_UNTESTED)]
    rl = rl_view(v.get("rl"), v.get("mode", "check"))
    return {
        "verdict": v["verdict"],
        "passed": v["verdict"] == "pass",
        "blocking": v.get("exit_code", 1 if v["verdict"] != "pass" else 0) != 0,
        "mode": v.get("mode", "check"),
        "headline": v["headline"],
        # The headline already starts with "FAIL:"/"PASS:"; the title says that.
        "headline_body": _strip_prefix(v["headline"], v["verdict"]),
        "ref_label": (v.get("reference") or {}).get("label") or "golden",
        "cand_label": (v.get("candidate") or {}).get("label") or "run",
        "checks": checks[: level.checks],
        "checks_hidden": max(0, len(checks) - level.checks),
        "n_checks": len(checks),
        "failed": failed,
        "inconclusive": v["verdict"] == "inconclusive",
        "n_not_comparable": sum(c.get("status") == "not_comparable" for c in checks),
        "evidence_notes": [n for n in v.get("evidence_notes") or [] if isinstance(n, str)][: level.warnings],
        "ratio": _ratio,
        "pct": _pct,
        "changed": changed[: level.env_rows],
        "changed_hidden": max(0, len(changed) - level.env_rows),
        "n_changed": len(changed),
        "key_same": key_same if level.env_rows >= 8 else [],
        "other_same": other_same if level.env_unchanged else [],
        "warnings": warnings[: level.warnings],
        "warnings_hidden": max(0, len(warnings) - level.warnings),
        "untested": untested[: level.warnings],
        "untested_hidden": max(0, len(untested) - level.warnings),
        "extent": _extent,
        "evidence": _evidence_rows(v, per_config)[: level.checks] if level.evidence else [],
        "rl": rl if level.evidence else None,
        "rl_sentence": (rl or {}).get("sentence"),
        "diagnosis": _diagnosis(v.get("diagnosis")),
        "update_paths": _update_paths(v.get("weight_update"), checks),
        "worst": worst[: level.worst],
        "worst_all": worst,
        "top_token": worst[0] if worst else None,
        "chart": _mermaid(_mapping(v.get("by_position"))) if level.chart else [],
        "per_config": per_config if level.per_config else {},
        "overall": overall,
        "prompts_new": _list(prompts.get("new")),
        "prompts_unused": _list(prompts.get("unused")),
        "prompts_cap": level.prompts,
        "reproduce": v["reproduce"],
        "note": level.note,
        "measure_keys": _MEASURE_ROWS,
    }


# The schema leaves the insides of measures, diagnosis and charts open; the
# templates read them through these, so a hand-edited verdict that the schema
# accepts still renders (a wrong type shows as n/a, never a traceback).
def _group(m: Any) -> dict[str, Any]:
    """One measures group: channel mappings (or None) and the free-run mapping."""
    m = _mapping(m)
    out = dict(m, forced=m.get("forced") if isinstance(m.get("forced"), dict) else None,
               sampler=m.get("sampler") if isinstance(m.get("sampler"), dict) else None)
    fr = m.get("free_run")
    out["free_run"] = dict(fr, diverged=_rows(fr.get("diverged"))) if isinstance(fr, dict) else None
    return out


def _update_paths(update: Any, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per weight-update path the suite declared (verdict.weight_update):
    its verdict, the update call, the tokens compared, the in-flight
    staleness (reported, not failed) and the named cause of a failure."""
    if not isinstance(update, dict):
        return []
    by_id = {c.get("id"): c for c in checks}
    rows = []
    for p in _rows(update.get("paths")):
        c = by_id.get(f"weight_update.{p.get('name')}") or {}
        st = _mapping(p.get("staleness"))
        stale = (f"{_num(st.get('after_switch_max_abs_diff'))} (k3 {_num(st.get('after_switch_k3'))}"
                 f"{'' if st.get('expected', True) else ', must be 0'})") if st else "-"
        rows.append({"name": str(p.get("name") or ""), "status": str(c.get("status") or p.get("verdict") or ""),
                     "mechanism": str(p.get("mechanism") or "-"),
                     "tokens": _mapping(c.get("evidence")).get("compared"), "max_abs_diff": c.get("value"),
                     "staleness": stale, "cause": str(_mapping(p.get("diagnosis")).get("summary") or "")})
    return rows


def _diagnosis(d: Any) -> dict[str, Any] | None:
    if not isinstance(d, dict):
        return None
    findings = [dict(f, cause=str(f.get("cause") or ""), detail=str(f["detail"]) if f.get("detail") else None)
                for f in _rows(d.get("findings"))]
    return dict(d, summary=str(d.get("summary") or ""), findings=findings)


def _token_strings(w: dict[str, Any]) -> list[Any]:
    return [w.get("token") or "", *_list(w.get("context_before")), *_list(w.get("context_after"))]


def _context(tokens: Any, limit: int = 24, tail: bool = False, byte_level: bool | None = None) -> str:
    """A few tokens of context as plain (still untrusted) text, readable
    (gate.core.tokentext), cut to `limit` characters on the side away from the token."""
    text = readable_join((str(t) for t in tokens), byte_level) if isinstance(tokens, list) else ""
    if len(text) <= limit:
        return text
    return "…" + text[-limit:] if tail else text[:limit] + "…"


_UNTESTED = "untested: "   # a warning about a knob the suite cannot exercise (gate/run/exercise.py)
_PER_TOKEN = ("forced", "sampler")


def _extent(c: dict[str, Any]) -> str:
    """How much of the evidence a check's verdict rests on, in its own unit:
    "N of M tokens (P%) beyond tolerance" only for the per-token channels;
    the in-run relation and its spread are judged on a sample of tokens as a
    whole, the engine check counts engine args (evidence.unit)."""
    ev = _mapping(c.get("evidence"))
    channel = c.get("channel")
    unit = str(ev.get("unit") or ("sequences" if channel == "free_run" else "tokens"))
    n_bad, n_total = c.get("n_bad"), c.get("n_total")
    if c.get("status") == "not_comparable":
        share = _pct(ev.get("compared"), ev.get("reference"), unit)
        return f"not comparable: {share} compared" if share else "not comparable"
    if channel == "free_run":
        share = _pct(n_bad, n_total, unit)
        return f"{share} diverged" if share else ""
    if channel == "engine":
        share = _pct(n_bad, n_total, unit)
        return f"{share} not applied" if share else ""
    if channel in _PER_TOKEN and unit == "tokens":
        share = _pct(n_bad, n_total, unit)
        return f"{share} beyond tolerance" if share else ""
    if channel == "weight_update":
        bad = f"; {n_bad} of {n_total} update checks failed" if n_bad else ""
        return f"{ev.get('compared', 0):,} tokens against fresh engines{bad}"
    total = ev.get("compared", n_total)
    return f"judged on {total:,} {unit} as a whole" if isinstance(total, int) and not isinstance(total, bool) else ""


def _evidence_rows(v: dict[str, Any], per_config: dict[str, Any]) -> list[dict[str, str]]:
    """Per config, one line each of the decode path's evidence: the in-run
    relation on both sides, its spread, and the matched sampled tokens."""
    matched = _mapping(v.get("sampler_matched"))
    out = []
    for name, m in per_config.items():
        sem = _mapping(m.get("semantics"))
        ref, cand, spread = _mapping(sem.get("reference")), _mapping(sem.get("candidate")), _mapping(sem.get("spread"))
        mt = _mapping(matched.get(name))
        sampler = _mapping(m.get("sampler"))
        if not (ref or cand or mt):
            continue
        spread_txt = "n/a"
        if spread:
            spread_txt = f"rms x{_num(spread.get('rms_ratio'))}"
            if spread.get("p99_ratio") is not None:
                spread_txt += f", p99 x{_num(spread.get('p99_ratio'))}"
            if spread.get("band") is not None:
                spread_txt += (f"; beyond the band {_num(spread.get('band'))}: "
                               f"{share(spread.get('reference_beyond_band'))} vs "
                               f"{share(spread.get('candidate_beyond_band'))}")
        if mt:
            tokens = _int(mt.get("tokens"))
            matched_txt = (f"{tokens:,} tokens, max abs diff {_num(sampler.get('max_abs_diff'))}" if tokens
                           else "none (the free runs part at once)")
        else:
            matched_txt = "n/a"
        out.append({"config": name, "reference": _fit_words(ref), "candidate": _fit_words(cand),
                    "spread": spread_txt, "matched": matched_txt})
    return out


_MEASURE_ROWS = tuple((m.name, m.label) for m in CHANNEL_MEASURES) + (
    ("path_reference", "scoring path (reference)"), ("path_candidate", "scoring path (candidate)"),
)

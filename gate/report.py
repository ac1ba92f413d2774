"""`parity-gate report RESULT_DIR`: render comment.md, report.html and
summary.md from RESULT_DIR/verdict.json (docs/verdict.md).

Templates ship inside the package as `gate.templates` and are loaded through
importlib.resources, so an installed wheel renders without the source tree.
Every string from the verdict is treated as untrusted: Markdown templates
escape each expression by default (see `_md_finalize`), HTML autoescapes.
"""
from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import importlib.resources
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, urlsplit

import jinja2

from gate._fsutil import atomic_write_text
from gate._markdown import md_code_block, md_html, md_inline, shorten, visible
from gate._tokentext import is_byte_level, readable, readable_join
from gate.errors import InfraError
from gate.verdict import read_verdict

__all__ = ["COMMENT_LIMIT", "SUMMARY_LIMIT_BYTES", "OUTPUTS", "comment_marker", "render_comment", "render_summary",
           "render_html", "render_result", "add_arguments", "run"]

log = logging.getLogger(__name__)

COMMENT_LIMIT = 65_536            # GitHub rejects longer comment bodies (422)
SUMMARY_LIMIT_BYTES = 1_048_576   # GitHub step summary: 1 MiB per step
OUTPUTS = ("comment.md", "report.html", "summary.md")
_KEY_ENV = ("vllm_version", "vllm_commit", "torch_version", "cuda_version", "gpu_name", "gpu", "device",
            "driver_version")
_GROUP_ORDER = {"environment": 0, "model": 1, "engine": 2, "env": 3}


# --------------------------------------------------------------------------- public API

def comment_marker(context: str = "parity-gate") -> str:
    """The hidden marker that finds the sticky comment again. It names the
    status context, so two gates on one PR keep separate comments. The context
    is percent-encoded so it can never close the HTML comment."""
    return f"<!-- parity-gate:comment context={quote(context, safe=' /:._()[]@,+')} -->"


def render_comment(verdict: dict[str, Any], *, context: str = "parity-gate", max_chars: int = COMMENT_LIMIT,
                   report_url: str | None = None) -> str:
    """The sticky PR comment; at most `max_chars` characters, cutting details
    (with a visible note pointing at the HTML report) when it would not fit."""
    return _fit(verdict, "comment.md.j2", lambda s: len(s), max_chars,
                marker=comment_marker(context), report_url=_link(report_url))


def render_summary(verdict: dict[str, Any], *, max_bytes: int = SUMMARY_LIMIT_BYTES,
                   report_url: str | None = None) -> str:
    """The job summary: verdict, checks and environment diff, at most `max_bytes` UTF-8 bytes."""
    return _fit(verdict, "summary.md.j2", lambda s: len(s.encode("utf-8")), max_bytes,
                marker="", report_url=_link(report_url))


def render_html(verdict: dict[str, Any]) -> str:
    """One self-contained HTML page: inline CSS, SVG and script, no external requests."""
    view = _view(verdict, _LEVELS[0])
    script = _env("html").get_template("report.js.j2").render()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return _env("html").get_template("report.html.j2").render(
        v=view, charts=_charts(verdict), script=script, script_hash=f"sha256-{digest}")


def render_result(result_dir: Path, *, context: str = "parity-gate",
                  report_url: str | None = None) -> dict[str, Path]:
    """Render all outputs from RESULT_DIR/verdict.json, each written atomically.
    Returns {file name: path}."""
    result_dir = Path(result_dir)
    verdict = read_verdict(result_dir)
    texts = {
        "comment.md": render_comment(verdict, context=context, report_url=report_url),
        "report.html": render_html(verdict),
        "summary.md": render_summary(verdict, report_url=report_url),
    }
    written = {}
    for name, text in texts.items():
        path = result_dir / name
        atomic_write_text(path, text)
        log.info("wrote %s (%d chars)", path, len(text))
        written[name] = path
    return written


def add_arguments(parser: argparse.ArgumentParser, name: str = "report") -> None:
    parser.add_argument("result_dir", metavar="RESULT_DIR", type=Path,
                        help="directory holding verdict.json (the --out of check or compare)")
    parser.add_argument("--context", default="parity-gate",
                        help="status context named in the comment's hidden marker (default: parity-gate)")
    parser.add_argument("--report-url", metavar="URL", default=None,
                        help="where report.html can be opened (a workflow run with the result as an artifact); "
                             "comment and summary link it (publish passes the run's URL itself)")


def run(args: argparse.Namespace) -> int:
    render_result(args.result_dir, context=getattr(args, "context", "parity-gate"),
                  report_url=getattr(args, "report_url", None))
    return 0


def _link(url: str | None) -> "Md | None":
    """An http(s) URL made safe for a Markdown link target (no space or
    parenthesis can end it early), or None for anything else."""
    if not url or urlsplit(url).scheme not in ("http", "https"):
        return None
    return Md(quote(url, safe=":/?#[]@!$&'*+,;=%~-._"))


# --------------------------------------------------------------------------- templates

class Md(str):
    """Text already safe for Markdown: the finalizer leaves it alone."""


def _md_finalize(value: Any) -> str:
    """Every `{{ }}` in a Markdown template is escaped unless a filter marked
    it safe: a forgotten filter shows backslashes, it never injects."""
    if isinstance(value, Md):
        return value
    if value is None:
        return ""
    return md_inline(value, limit=300)


@functools.lru_cache(maxsize=2)
def _env(kind: str = "md") -> jinja2.Environment:
    """"md": Markdown templates, escaped by the finalizer; "html": autoescaped."""
    try:
        root = importlib.resources.files("gate.templates")
    except ModuleNotFoundError:
        raise InfraError("the report templates (package gate.templates) are not installed",
                         "install parity-gate (pip install . or pip install -e .)") from None

    def load(name: str) -> tuple[str, None, Any]:
        return root.joinpath(name).read_text(encoding="utf-8"), None, lambda: True

    common: dict[str, Any] = dict(loader=jinja2.FunctionLoader(load), undefined=jinja2.StrictUndefined,
                                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    if kind == "html":
        env = jinja2.Environment(autoescape=True, **common)
    else:
        env = jinja2.Environment(autoescape=False, finalize=_md_finalize, **common)
        env.filters.update(
            md=lambda x, limit=60, spaces=False: Md(md_inline(x, limit, spaces)),
            mdh=lambda x, limit=60, spaces=False: Md(md_html(x, limit, spaces)),
            raw=Md,
            codeblock=lambda x: Md(md_code_block(str(x))),
        )
    env.filters.update(num=lambda x: Md(_num(x)), vis=visible, short=shorten,
                       op=lambda x: _OPS.get(str(x), str(x)))
    return env


def _render_md(template: str, **kw: Any) -> str:
    return _env("md").get_template(template).render(**kw)


# --------------------------------------------------------------------------- view model

@dataclass(frozen=True)
class _Level:
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
_LEVELS = (
    _Level("full"),
    _Level("no per-config", per_config=False, worst=10, env_unchanged=False, env_rows=60, checks=60, prompts=5,
           note=f"{_CUT}: per-config details and unchanged settings are only in the HTML report."),
    _Level("compact", per_config=False, worst=5, env_unchanged=False, env_rows=20, checks=20, chart=False,
           warnings=5, prompts=0, evidence=False,
           note=f"{_CUT}: only the worst tokens, failing checks first and changed settings are shown here."),
    _Level("minimal", per_config=False, worst=0, env_unchanged=False, env_rows=8, checks=8, chart=False,
           warnings=3, prompts=0, evidence=False,
           note=f"{_CUT}: this is a minimal summary."),
)


def _fit(verdict: dict[str, Any], template: str, size: Any, limit: int, **kw: Any) -> str:
    for level in _LEVELS:
        text = _render_md(template, v=_view(verdict, level), **kw)
        if size(text) <= limit:
            if level is not _LEVELS[0]:
                log.info("%s: cut to level %r to fit %d", template, level.name, limit)
            return text
    # Even the minimal level did not fit (absurd limit): hard cut, note kept.
    note = "\n\n… cut to fit the size limit; see report.html.\n"
    while size(text) > limit and text:
        text = text[: max(0, len(text) - max(64, size(text) - limit)) - len(note)]
    return (text + note) if size(text + note) <= limit else text


# verdict.json has no infinities: write_verdict spells them as these strings.
_NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _float(x: Any) -> float | None:
    """A number from the verdict as a float (inf for "Infinity"), or None for
    anything else. Every chart and ratio reads numbers through this."""
    if isinstance(x, bool):
        return None
    if isinstance(x, float):
        return x
    if isinstance(x, int):
        try:
            return float(x)
        except OverflowError:  # an int beyond the float range
            return math.inf if x > 0 else -math.inf
    return _NONFINITE.get(x) if isinstance(x, str) else None


def _int(x: Any, default: int = 0) -> int:
    """A finite number as an int (charts count and position with these)."""
    f = _float(x)
    return int(f) if f is not None and math.isfinite(f) else default


def _num(x: Any) -> str:
    """Total: any value gives a short string; inf and huge values never raise."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}" if abs(x) < 10 ** 30 else _num(_float(x))
    if isinstance(x, str) and x in _NONFINITE:
        x = _NONFINITE[x]
    if not isinstance(x, float):
        return str(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.4g}"
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant.removesuffix('.0')}e{exp}"


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


_OPS = {"<=": "≤", ">=": "≥", "<": "<", ">": ">", "==": "="}


def _pct(n: Any, d: Any, unit: str = "") -> str:
    if not isinstance(n, int) or not isinstance(d, int) or d <= 0:
        return ""
    hundredths = n * 10000 // d  # integer arithmetic: a forged 300-digit count must not overflow a float
    return f"{n:,} of {d:,}{' ' + unit if unit else ''} ({hundredths // 100}.{hundredths % 100:02d}%)"


def _sort_checks(checks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(checks, key=lambda c: (c.get("status") != "fail", c.get("config") is not None))


def _view(v: dict[str, Any], level: _Level) -> dict[str, Any]:
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
    rl = _rl_view(v.get("rl"), v.get("mode", "check"))
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
def _mapping(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _rows(x: Any) -> list[dict[str, Any]]:
    return [r for r in _list(x) if isinstance(r, dict)]


def _group(m: Any) -> dict[str, Any]:
    """One measures group: channel mappings (or None) and the free-run mapping."""
    m = _mapping(m)
    out = dict(m, forced=m.get("forced") if isinstance(m.get("forced"), dict) else None,
               sampler=m.get("sampler") if isinstance(m.get("sampler"), dict) else None)
    fr = m.get("free_run")
    out["free_run"] = dict(fr, diverged=_rows(fr.get("diverged"))) if isinstance(fr, dict) else None
    return out


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
    (gate._tokentext), cut to `limit` characters on the side away from the token."""
    text = readable_join((str(t) for t in tokens), byte_level) if isinstance(tokens, list) else ""
    if len(text) <= limit:
        return text
    return "…" + text[-limit:] if tail else text[:limit] + "…"


_UNTESTED = "untested: "   # a warning about a knob the suite cannot exercise (gate/exercise.py)
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
    total = ev.get("compared", n_total)
    return f"judged on {total:,} {unit} as a whole" if isinstance(total, int) and not isinstance(total, bool) else ""


def _check_of(v: dict[str, Any], check_id: str, config: str) -> dict[str, Any] | None:
    """The check `check_id` for `config`, else its overall one."""
    rows = [c for c in _rows(v.get("checks")) if c.get("id") == check_id]
    return next((c for c in rows if c.get("config") == config), None) or next(
        (c for c in rows if c.get("config") is None), None)


def _fit_words(side: dict[str, Any]) -> str:
    if not side:
        return "n/a"
    parts = [f"slope {_num(side.get('slope'))}", f"offset {_num(side.get('offset'))}",
             f"rms {_num(side.get('rms_residual', side.get('rmse')))}"]
    if side.get("p99_abs_residual") is not None:
        parts.append(f"p99 |residual| {_num(side.get('p99_abs_residual'))}")
    return ", ".join(parts) + f" ({_num(side.get('tokens'))} tokens)"


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
                               f"{_share(spread.get('reference_beyond_band'))} vs "
                               f"{_share(spread.get('candidate_beyond_band'))}")
        if mt:
            tokens = _int(mt.get("tokens"))
            matched_txt = (f"{tokens:,} tokens, max abs diff {_num(sampler.get('max_abs_diff'))}" if tokens
                           else "none (the free runs part at once)")
        else:
            matched_txt = "n/a"
        out.append({"config": name, "reference": _fit_words(ref), "candidate": _fit_words(cand),
                    "spread": spread_txt, "matched": matched_txt})
    return out


def _share(x: Any) -> str:
    f = _float(x)
    return "n/a" if f is None or f != f else f"{100 * f:.2f}%"


# --------------------------------------------------------------------------- RL view

_RL_ROWS = (
    ("tokens", "tokens"),
    ("ratio_mid", "ratio ρ, 1st–99th percentile"),
    ("ratio_range", "ratio ρ, min – max"),
    ("clip_fraction", "outside PPO's clip range (|ρ − 1| > 0.2)"),
    ("tis_truncated_fraction", "above the TIS cap (ρ > C)"),
    ("tis_mean_weight", "TIS mean weight min(ρ, C)"),
    ("k3_kl", "k3 KL"),
    ("mult_prob_error", "mult-prob error"),
    ("max_abs_log_ratio", "max |log ρ|"),
)


def _rho(x: Any) -> str:
    """A ratio near 1 with the digits that show how near (0.9999987, not 1)."""
    f = _float(x)
    if f is not None and 0 < abs(f - 1) < 1e-3:
        return f"{f:.7g}"
    return _num(x)


def _rl_cell(stats: dict[str, Any], key: str) -> str:
    r = _mapping(stats.get("ratio"))
    if key == "ratio_mid":
        return f"{_rho(r.get('p1'))} – {_rho(r.get('p99'))}"
    if key == "ratio_range":
        return f"{_rho(r.get('min'))} – {_rho(r.get('max'))}"
    if key in ("clip_fraction", "tis_truncated_fraction"):
        return _share(stats.get(key))
    if key == "tokens":
        excluded = _mapping(stats.get("excluded"))
        extra = sum(_int(excluded.get(k)) for k in ("null", "one_sided_inf"))
        return _num(stats.get("tokens")) + (f" (+{extra:,} without a finite ratio)" if extra else "")
    return _num(stats.get(key))


def _rl_view(rl: Any, mode: str) -> dict[str, Any] | None:
    """The importance-ratio view (docs/trainer.md): columns of measures and
    one plain sentence of what the drift means for PPO/GRPO."""
    if not isinstance(rl, dict):
        return None
    trainer = rl.get("view") == "trainer" or (rl.get("view") is None and "ratio" in rl)
    if trainer:
        paths = _mapping(rl.get("paths"))
        cols = [(f"trainer vs rollout ({paths.get('candidate', 'trainer')} vs {paths.get('reference', 'decode')})",
                 rl)]
    else:
        cols = [(title, _mapping(rl.get(ch))) for ch, title in (("forced", "teacher-forced"),
                                                                ("sampler", "matched sampled tokens"))]
    cols = [(t, c) for t, c in cols if _int(c.get("tokens"))]
    if not cols:
        return None
    rows = [{"label": label, "cells": [_rl_cell(c, key) for _, c in cols]} for key, label in _RL_ROWS]
    cap = _num(_float(rl.get("tis_cap")) or _float(cols[0][1].get("tis_cap")) or 2.0)
    return {"trainer": trainer, "columns": [t for t, _ in cols], "rows": rows, "cap": cap,
            "sentence": _rl_sentence(cols, trainer, cap)}


def _rl_sentence(cols: list[tuple[str, dict[str, Any]]], trainer: bool, cap: str) -> str:
    def size(c: tuple[str, dict[str, Any]]) -> float:
        f = _float(c[1].get("max_abs_log_ratio"))
        return -1.0 if f is None or f != f else f
    title, s = max(cols, key=size)
    r = _mapping(s.get("ratio"))
    clip, trunc = _float(s.get("clip_fraction")) or 0.0, _float(s.get("tis_truncated_fraction")) or 0.0
    who = "the trainer's importance ratios against these rollouts" if trainer else \
        "importance ratios computed by a trainer that agreed with the golden engine"
    if size((title, s)) == 0:
        return (f"The ratio is exactly 1 on every compared token ({', '.join(t for t, _ in cols)}): "
                f"for PPO/GRPO, {who} are not moved at all.")
    spread = (f"ρ spans {_rho(r.get('p1'))} to {_rho(r.get('p99'))} (1st to 99th percentile; "
              f"extremes {_rho(r.get('min'))} and {_rho(r.get('max'))}) on the {title}")
    if clip == 0 and trunc == 0:
        return (f"For PPO/GRPO: {spread}, inside the clip range 0.8 to 1.2 everywhere, so {who} "
                f"move by at most that much and no clipped update changes.")
    return (f"For PPO/GRPO: {spread}; {_share(clip)} of these tokens fall outside the clip range 0.8 to 1.2 "
            f"and {_share(trunc)} exceed the TIS cap {cap}, so {who} would be clipped or truncated there "
            f"by this change alone.")


_MEASURE_ROWS = (
    ("tokens", "tokens compared"), ("mismatched", "tokens beyond tolerance"),
    ("bitwise_equal_fraction", "bitwise equal"), ("max_abs_diff", "max abs diff"),
    ("mean_abs_diff", "mean abs diff"), ("p99_abs_diff", "p99 abs diff"), ("mult_prob_error", "mult-prob error"),
    ("k1_kl", "k1 KL"), ("k2", "k2"), ("k3_kl", "k3 KL"), ("chi2", "chi2"), ("clip_fraction", "clip fraction"),
    ("prob_diff_max", "max prob diff"), ("log_ppl_diff_max", "max log-ppl diff"),
    ("top1_agreement", "top-1 agreement"), ("topk_overlap", "top-k overlap"),
    ("path_reference", "scoring path (reference)"), ("path_candidate", "scoring path (candidate)"),
)


def _merge_buckets(rows: Any, max_points: int) -> list[dict[str, Any]]:
    """Merge adjacent position buckets so a chart has at most `max_points`.
    Rows come back with float `max_abs_diff`/`mean_abs_diff` (inf allowed)
    and int `start`/`end`/`count`; a row without a max is dropped."""
    clean = []
    for r in _rows(rows):
        mx = _float(r.get("max_abs_diff"))
        if mx is None or mx != mx:
            continue
        mean = _float(r.get("mean_abs_diff"))
        clean.append(dict(r, max_abs_diff=mx, mean_abs_diff=0.0 if mean is None or mean != mean else mean,
                          start=_int(r.get("start")), end=_int(r.get("end")), count=max(0, _int(r.get("count")))))
    if len(clean) <= max_points:
        return clean
    k = math.ceil(len(clean) / max_points)
    out = []
    for i in range(0, len(clean), k):
        grp = clean[i:i + k]
        count = sum(r["count"] for r in grp)
        mean = (sum(r["mean_abs_diff"] * r["count"] for r in grp if r["count"]) / count) if count else 0.0
        out.append({"start": grp[0]["start"], "end": grp[-1]["end"], "count": count,
                    "mean_abs_diff": mean, "max_abs_diff": max(r["max_abs_diff"] for r in grp)})
    return out


_MERMAID_CAP = 1e4  # mermaid's numbers have no exponent and no infinity: larger values are drawn at the cap


def _plain(x: float) -> str:
    """A decimal without exponent: mermaid's number grammar has none."""
    s = f"{min(max(x, 0.0), _MERMAID_CAP):.10f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


_CHANNEL_TITLE = {"forced": "teacher-forced", "sampler": "sampled-token"}


def _mermaid(by_position: dict[str, Any]) -> list[dict[str, str]]:
    charts = []
    for channel in ("forced", "sampler"):
        rows = _merge_buckets(by_position.get(channel), 40)
        if not rows or max(r["max_abs_diff"] for r in rows) <= 0:
            continue
        labels = ", ".join(f'"{r["start"]}-{r["end"] - 1}"' for r in rows)
        values = ", ".join(_plain(r["max_abs_diff"]) for r in rows)
        capped = any(r["max_abs_diff"] > _MERMAID_CAP for r in rows)
        note = f" (inf and values above {_num(_MERMAID_CAP)} drawn at {_num(_MERMAID_CAP)})" if capped else ""
        charts.append({"channel": _CHANNEL_TITLE[channel],
                       "body": f'xychart-beta\n    title "{_CHANNEL_TITLE[channel]}: max abs diff by token position'
                               f'{note}"\n'
                               f'    x-axis "completion position" [{labels}]\n'
                               f'    y-axis "max abs diff"\n    line [{values}]'})
    return charts


# --------------------------------------------------------------------------- SVG charts (HTML)

def _charts(v: dict[str, Any]) -> dict[str, Any]:
    failing = {c.get("channel") for c in _rows(v.get("checks")) if c.get("status") == "fail"}
    return {"histograms": _histograms(_mapping(v.get("histogram"))),
            "positions": _position_charts(_mapping(v.get("by_position")), failing),
            "heatmap": _heatmap(v.get("per_prompt")),
            "relations": _relations(v),
            "matched": _matched_charts(v),
            "has_matched": isinstance(v.get("sampler_matched"), dict)}


# Golden and run are told apart by colour; red is kept for what is beyond a bound.
_REF_COLOR, _CAND_COLOR, _BAD, _NEUTRAL = "#0969da", "#bc4c00", "#cf222e", "#8c959f"


def _f1(x: float) -> str:
    return f"{x:.1f}"


@dataclass(frozen=True)
class _Axes:
    """A plot area: data ranges mapped onto pixels."""
    x0: float
    x1: float
    y0: float
    y1: float
    left: int = 50
    top: int = 10
    w: int = 250
    h: int = 190

    def px(self, x: float) -> float:
        return self.left + self.w * (x - self.x0) / (self.x1 - self.x0)

    def py(self, y: float) -> float:
        return self.top + self.h - self.h * (y - self.y0) / (self.y1 - self.y0)

    def line(self, slope: float, offset: float, color: str, title: str) -> dict[str, Any] | None:
        """y = slope * x + offset, cut to the plot area (no clipPath: the page has no url() references)."""
        if not (math.isfinite(slope) and math.isfinite(offset)):
            return None
        if slope == 0:
            lo, hi = (self.x0, self.x1) if self.y0 <= offset <= self.y1 else (0.0, 0.0)
        else:
            xa, xb = (self.y0 - offset) / slope, (self.y1 - offset) / slope
            lo, hi = max(self.x0, min(xa, xb)), min(self.x1, max(xa, xb))
        if not lo < hi:
            return None
        return {"kind": "line", "x1": _f1(self.px(lo)), "y1": _f1(self.py(slope * lo + offset)),
                "x2": _f1(self.px(hi)), "y2": _f1(self.py(slope * hi + offset)), "stroke": color, "width": 2,
                "title": title}

    def frame(self, xlabel: str, ylabel: str, yticks: list[tuple[float, str]] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"kind": "rect", "x": self.left, "y": self.top, "w": self.w, "h": self.h,
                                      "fill": "none", "stroke": "#d1d9e0"}]
        for x in _ticks(self.x0, self.x1):
            out.append({"kind": "text", "x": _f1(self.px(x)), "y": self.top + self.h + 14, "anchor": "middle",
                        "text": _num(float(x))})
        for y, label in yticks if yticks is not None else [(t, _num(float(t))) for t in _ticks(self.y0, self.y1)]:
            out.append({"kind": "line", "x1": self.left, "y1": _f1(self.py(y)), "x2": self.left + self.w,
                        "y2": _f1(self.py(y)), "stroke": "#eaeef2", "width": 1})
            out.append({"kind": "text", "x": self.left - 4, "y": _f1(self.py(y) + 4), "anchor": "end", "text": label})
        out.append({"kind": "text", "x": self.left + self.w / 2, "y": self.top + self.h + 30, "anchor": "middle",
                    "text": xlabel})
        out.append({"kind": "text", "x": 12, "y": self.top + self.h / 2, "anchor": "middle", "text": ylabel,
                    "rotate": True})
        return out


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return []
    raw = span / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 12) for i in range(int((hi - start) / step + 1e-9) + 1)]


def _pairs(x: Any) -> list[tuple[float, float]]:
    """Finite [a, b] pairs from the verdict (anything else is left out)."""
    out = []
    for p in _list(x):
        if isinstance(p, list) and len(p) == 2:
            a, b = _float(p[0]), _float(p[1])
            if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
                out.append((a, b))
    return out


def _padded(lo: float, hi: float, least: float = 1e-6) -> tuple[float, float]:
    if hi - lo < least:
        mid = (hi + lo) / 2
        lo, hi = mid - least, mid + least
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _relations(v: dict[str, Any]) -> list[dict[str, Any]]:
    """Per config, the in-run relation (sampler logprob against the same
    run's prefill logprob of the same tokens) of golden and run overlaid:
    the scatter with both fitted lines and the residual band around y = x,
    the residuals (sampler - prefill) against prefill, where a spread too
    small for the first panel shows, and the residual histogram."""
    out = []
    per_config = _mapping(_mapping(v.get("measures")).get("per_config"))
    labels = ((v.get("reference") or {}).get("label") or "golden", (v.get("candidate") or {}).get("label") or "run")
    for name, m in per_config.items():
        sem = _mapping(_mapping(m).get("semantics"))
        sides = [(labels[0], _REF_COLOR, _mapping(sem.get("reference"))),
                 (labels[1], _CAND_COLOR, _mapping(sem.get("candidate")))]
        pts = [(label, color, side, _pairs(side.get("points"))) for label, color, side in sides]
        if not any(p for *_, p in pts):
            continue
        spread = _mapping(sem.get("spread"))
        band = _float(spread.get("band"))
        band = band if band is not None and math.isfinite(band) and band > 0 else None
        coords = [c for *_, p in pts for xy in p for c in xy]
        lo, hi = _padded(min(coords), max(coords))
        ax = _Axes(lo, hi, lo, hi)
        shapes = ax.frame("own prefill logprob", "sampler logprob")
        if band is not None:
            shapes.append({"kind": "poly", "fill": "#dafbe1", "title": f"band: |sampler - prefill| <= {_num(band)}",
                           "points": " ".join(f"{_f1(ax.px(x))},{_f1(ax.py(y))}" for x, y in
                                              ((lo, lo + band), (hi, hi + band), (hi, hi - band), (lo, lo - band)))})
        diag = ax.line(1.0, 0.0, _NEUTRAL, "y = x (sampler equals prefill)")
        if diag:
            shapes.append(dict(diag, width=1, dash=True))
        res_max = max((abs(y - x) for *_, p in pts for x, y in p), default=0.0)
        r = max(res_max, band or 0.0) * 1.15 or 1e-6
        ax2 = _Axes(lo, hi, -r, r, left=58)
        shapes2 = ax2.frame("own prefill logprob", "sampler − prefill")
        if band is not None and band < r:
            shapes2.append({"kind": "rect", "x": ax2.left, "y": _f1(ax2.py(band)), "w": ax2.w,
                            "h": _f1(ax2.py(-band) - ax2.py(band)), "fill": "#dafbe1", "stroke": "none",
                            "title": f"band: |sampler - prefill| <= {_num(band)}"})
        zero = ax2.line(0.0, 0.0, _NEUTRAL, "residual 0")
        if zero:
            shapes2.append(dict(zero, width=1, dash=True))
        for label, color, side, p in pts:
            slope, offset = _float(side.get("slope")), _float(side.get("offset"))
            if slope is not None and offset is not None:
                title = f"{label} fit: sampler = {_num(slope)} × prefill + {_num(offset)}"
                for a, sl, off in ((ax, slope, offset), (ax2, slope - 1.0, offset)):
                    seg = a.line(sl, off, color, title)
                    if seg:
                        (shapes if a is ax else shapes2).append(seg)
            for x, y in p:
                tip = f"{label}: prefill {_num(x)}, sampler {_num(y)}, difference {_num(y - x)}"
                shapes.append({"kind": "circle", "cx": _f1(ax.px(x)), "cy": _f1(ax.py(y)), "r": 2.2, "fill": color,
                               "title": tip})
                shapes2.append({"kind": "circle", "cx": _f1(ax2.px(x)), "cy": _f1(ax2.py(y - x)), "r": 2.2,
                                "fill": color, "title": tip})
        out.append({"config": str(name), "scatter": shapes, "residuals": shapes2,
                    "hist": _residual_histogram([(label, color, side) for label, color, side, _ in pts], band),
                    "width": ax.left + ax.w + 10, "height": ax.top + ax.h + 36,
                    "width2": ax2.left + ax2.w + 10, "spread": spread, "band": band,
                    "sides": [{"label": label, "color": color, "fit": _fit_words(side), "points": len(p),
                               "beyond": spread.get("reference_beyond_band" if i == 0 else "candidate_beyond_band")}
                              for i, (label, color, side, p) in enumerate(pts)]})
    return out


def _residual_histogram(sides: list[tuple[str, str, dict[str, Any]]], band: float | None) -> dict[str, Any]:
    """|sampler - prefill| by decade, golden and run side by side (log counts)."""
    counts: list[dict[Any, int]] = []
    for _, _, side in sides:
        h = _mapping(side.get("residual_histogram"))
        c: dict[Any, int] = {"zero": max(0, _int(h.get("zero")))}
        for d in _rows(h.get("decades")):
            e = _float(d.get("exp"))
            if e is not None and math.isfinite(e):
                c[int(e)] = c.get(int(e), 0) + max(0, _int(d.get("count")))
        counts.append(c)
    exps = sorted({k for c in counts for k in c if k != "zero"})
    keys: list[Any] = ["zero", *exps]
    top = max((n for c in counts for n in c.values()), default=0)
    w, hpx, pad, left = 34, 150, 16, 30
    bars, labels = [], []
    scale = math.log10(top + 1) if top > 0 else 1.0
    for i, k in enumerate(keys):
        label = "0" if k == "zero" else f"1e{k}"
        labels.append({"x": _f1(left + i * w + w / 2), "text": label})
        for j, (name, color, _) in enumerate(sides):
            n = counts[j].get(k, 0)
            height = 0.0 if n <= 0 else max(2.0, hpx * math.log10(n + 1) / scale)
            bars.append({"kind": "rect", "x": _f1(left + i * w + 3 + j * (w - 6) / 2), "y": _f1(pad + hpx - height),
                         "w": _f1((w - 6) / 2 - 1), "h": _f1(height), "fill": color, "stroke": "none",
                         "title": f"{name}: {n:,} tokens with |sampler - prefill| "
                                  + ("exactly 0" if k == "zero" else f"in [1e{k}, 1e{k + 1})")})
    marker = None
    if band is not None and exps:
        e = math.log10(band)
        i = next((n for n, k in enumerate(exps) if k > e), len(exps)) - 1  # the decade holding the band
        frac = e - exps[i] if i >= 0 else 0.0
        x = left + (1 + max(i, 0)) * w + (min(max(frac, 0.0), 1.0) if i >= 0 else 0.0) * w
        marker = {"x": _f1(x), "label": f"band {_num(band)}"}
    return {"bars": bars, "labels": labels, "width": left + len(keys) * w + 10, "height": pad + hpx + 34,
            "base": pad + hpx, "left": left, "marker": marker, "empty": top == 0}


def _matched_charts(v: dict[str, Any]) -> list[dict[str, Any]]:
    """Per config, sampler logprob differences (run - golden) of the tokens
    both free runs drew alike, by completion position, on a signed log
    scale: the few tokens a changed random stream leaves are drawn too."""
    out = []
    for name, m in _mapping(v.get("sampler_matched")).items():
        m = _mapping(m)
        tokens = _int(m.get("tokens"))
        pts = sorted(_pairs(m.get("points")))
        check = _check_of(v, "sampler.logprobs_close", str(name)) or {}
        bound = _float(check.get("bound"))
        bound = bound if bound is not None and math.isfinite(bound) and bound > 0 else None
        mags = [abs(d) for _, d in pts if d != 0]
        if mags:
            hi = math.ceil(math.log10(max(mags)))
            lo = math.floor(math.log10(min(mags)))
            if bound is not None:
                lo, hi = min(lo, math.floor(math.log10(bound))), max(hi, math.ceil(math.log10(bound)))
            hi = max(hi, lo + 1)
            lo = max(lo, hi - 10)
        else:
            lo, hi = -8, -4
        steps = hi - lo + 1

        def ys(d: float) -> float:
            if d == 0 or abs(d) < 10.0 ** lo:
                return 0.0
            return math.copysign((math.log10(abs(d)) - lo + 1) / steps, d)

        xmax = max((x for x, _ in pts), default=0.0)
        ax = _Axes(-0.5, max(xmax, 1.0) + 0.5, -1.05, 1.05, left=56, w=420, h=170)
        every = max(1, math.ceil(steps / 4))
        yt = [(0.0, "0")] + [(s * ys(10.0 ** e), f"{'+' if s > 0 else '−'}1e{e}")
                             for e in range(hi, lo - 1, -every) for s in (1, -1)]
        shapes = ax.frame("completion position", "run − golden", yticks=yt)
        if bound is not None:
            for sgn in (1, -1):
                seg = ax.line(0.0, ys(sgn * bound), _NEUTRAL, f"tolerance ±{_num(bound)}")
                if seg:
                    shapes.append(dict(seg, width=1, dash=True))
        bad = 0
        for x, d in pts:
            over = bound is not None and abs(d) > bound
            bad += over
            shapes.append({"kind": "circle", "cx": _f1(ax.px(x)), "cy": _f1(ax.py(ys(d))), "r": 2.6,
                           "fill": _BAD if over else (_NEUTRAL if d == 0 else _REF_COLOR),
                           "title": f"position {int(x)}: run − golden {_num(d)}"
                                    + (" (beyond tolerance)" if over else "")})
        out.append({"config": str(name), "tokens": tokens, "shown": len(pts), "bad": bad, "bound": bound,
                    "max": max((abs(d) for _, d in pts), default=None), "shapes": shapes,
                    "width": ax.left + ax.w + 10, "height": ax.top + ax.h + 36, "lo": lo})
    return out


def _histograms(hist: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for channel in ("forced", "sampler"):
        h = hist.get(channel)
        if not isinstance(h, dict):
            continue
        decades = sorted((int(e), max(0, _int(d.get("count")))) for d in _rows(h.get("decades"))
                         if (e := _float(d.get("exp"))) is not None and math.isfinite(e))
        bins = [("0", max(0, _int(h.get("zero"))), False)]
        bins += [(f"1e{e}", count, e >= -4) for e, count in decades]
        top = max((c for _, c, _ in bins), default=0)
        if top <= 0:
            continue
        scale = math.log10(top + 1)
        w, h_px, pad = 36, 160, 30
        bars = []
        for i, (label, count, bad) in enumerate(bins):
            height = 0.0 if count <= 0 else max(2.0, h_px * math.log10(count + 1) / scale)
            bars.append({"x": pad + i * w + 4, "y": pad + h_px - height, "w": w - 8, "h": height,
                         "label": label, "count": count, "lx": pad + i * w + w / 2, "ly": pad + h_px + 16,
                         "cy": pad + h_px - height - 4, "bad": bad})
        out.append({"channel": _CHANNEL_TITLE[channel], "bars": bars,
                    "width": pad * 2 + len(bins) * w, "height": pad + h_px + 30, "base": pad + h_px, "pad": pad})
    return out


def _position_charts(by_position: dict[str, Any], failing: set[Any] | frozenset[Any] = frozenset()
                     ) -> list[dict[str, Any]]:
    """Max and mean abs diff by position, log-scale y (drift spans decades).
    The scale comes from the finite values; inf is drawn on the top edge and
    named in the tooltip, and ticks are placed by exponent, so 1e308 never
    needs 10.0 ** 309."""
    out = []
    for channel in ("forced", "sampler"):
        rows = _merge_buckets(by_position.get(channel), 120)
        if not rows:
            continue
        pos = [x for r in rows for x in (r["max_abs_diff"], r["mean_abs_diff"]) if 0 < x < math.inf]
        lo = math.floor(math.log10(min(pos))) if pos else -8
        hi = math.ceil(math.log10(max(pos))) if pos else 0
        hi = max(hi, lo + 1)
        W, H, L, T = 480, 180, 44, 16

        def y_exp(e: float) -> float:
            return T + H - H * (e - lo) / (hi - lo)

        def y(val: float) -> float:
            if not val > 0:  # zero, or NaN
                return T + H
            return T if val == math.inf else y_exp(math.log10(val))

        def x(i: int) -> float:
            return L + (W * (i + 0.5) / len(rows))

        every = max(1, math.ceil((hi - lo) / 12))  # at most 13 tick labels, however many decades
        ticks = [{"y": y_exp(e), "label": f"1e{e}"} for e in reversed(range(hi, lo - 1, -every))]
        step = max(1, len(rows) // 8)
        xt = [{"x": x(i), "label": str(rows[i]["start"])} for i in range(0, len(rows), step)]
        # red only for a channel whose check failed; nothing drawn for a channel with no drift at all
        flat = all(r["max_abs_diff"] == 0 for r in rows)
        out.append({"channel": _CHANNEL_TITLE[channel], "width": L + W + 10, "height": T + H + 40,
                    "color": _BAD if channel in failing else _REF_COLOR, "flat": flat,
                    "left": L, "top": T, "plot_w": W, "plot_h": H, "yticks": ticks, "xticks": xt,
                    "max_line": " ".join(f"{x(i):.1f},{y(r['max_abs_diff']):.1f}" for i, r in enumerate(rows)),
                    "mean_line": " ".join(f"{x(i):.1f},{y(r['mean_abs_diff']):.1f}" for i, r in enumerate(rows)),
                    "points": [{"x": x(i), "y": y(r["max_abs_diff"]), "start": r["start"], "end": r["end"],
                                "max": r["max_abs_diff"], "mean": r["mean_abs_diff"], "count": r["count"]}
                               for i, r in enumerate(rows)]})
    return out


def _color(d: float) -> str:
    """Green (bitwise) through amber to red (>= 1e-1), by decade of abs diff."""
    if not d > 0:
        return "#2e7d32"
    t = min(1.0, max(0.0, (math.log10(d) + 8) / 7))   # 1e-8 -> 0, 1e-1 -> 1; inf -> 1
    hue = 120 * (1 - t)
    return f"hsl({hue:.0f},70%,{45 - 5 * t:.0f}%)"


def _row_max(row: dict[str, Any]) -> float:
    """A per-prompt row's larger max abs diff (inf allowed; missing or NaN as 0)."""
    vals = [_float(row.get("forced_max_abs_diff")), _float(row.get("sampler_max_abs_diff"))]
    return max((v for v in vals if v is not None and v == v), default=0.0)


def _heatmap(per_prompt: Any, max_cells: int = 400) -> dict[str, Any]:
    """Per config, one cell per (prompt, sample) colored by its max abs diff;
    adjacent prompts are merged (max) when there are more than `max_cells`."""
    per_prompt = _rows(per_prompt)
    by_cfg: dict[str, list[dict[str, Any]]] = {}
    for row in per_prompt:
        by_cfg.setdefault(str(row.get("config")), []).append(row)
    longest = max((len(r) for r in by_cfg.values()), default=0)
    k = max(1, math.ceil(longest / max_cells))
    cell, label_w = 6 if longest > 100 else 12, 140
    rows = []
    for ri, (cfg, items) in enumerate(by_cfg.items()):
        cells = []
        for i in range(0, len(items), k):
            grp = items[i:i + k]
            d = max(_row_max(g) for g in grp)
            first, last = grp[0], grp[-1]
            title = (f"{visible(first.get('prompt_id'), 40)}" + (f" … {visible(last.get('prompt_id'), 40)}" if k > 1 else "")
                     + f": max abs diff {_num(d)}"
                     + ("" if all(g.get("free_run_match", True) for g in grp) else "; free run diverged"))
            cells.append({"x": label_w + (i // k) * cell, "y": 8 + ri * (cell + 14) + 12, "color": _color(d),
                          "title": title, "div": not all(g.get("free_run_match", True) for g in grp)})
        rows.append({"config": cfg, "y": 8 + ri * (cell + 14) + 10, "cells": cells})
    worst = sorted(per_prompt, key=lambda r: -_row_max(r))[:25]
    return {"rows": rows, "cell": cell, "per_cell": k, "label_w": label_w,
            "width": label_w + math.ceil(longest / k) * cell + 10, "height": 16 + len(rows) * (cell + 14),
            "worst": worst, "n": len(per_prompt)}

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
from urllib.parse import quote

import jinja2

from gate._fsutil import atomic_write_text
from gate._markdown import md_code_block, md_html, md_inline, shorten, visible
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
                marker=comment_marker(context), report_url=report_url)


def render_summary(verdict: dict[str, Any], *, max_bytes: int = SUMMARY_LIMIT_BYTES,
                   report_url: str | None = None) -> str:
    """The job summary: verdict, checks and environment diff, at most `max_bytes` UTF-8 bytes."""
    return _fit(verdict, "summary.md.j2", lambda s: len(s.encode("utf-8")), max_bytes,
                marker="", report_url=report_url)


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


def run(args: argparse.Namespace) -> int:
    render_result(args.result_dir, context=getattr(args, "context", "parity-gate"))
    return 0


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
    note: str = ""


_CUT = "Details were cut to fit GitHub's size limit"
_LEVELS = (
    _Level("full"),
    _Level("no per-config", per_config=False, worst=10, env_unchanged=False, env_rows=60, checks=60, prompts=5,
           note=f"{_CUT}: per-config details and unchanged settings are only in the HTML report."),
    _Level("compact", per_config=False, worst=5, env_unchanged=False, env_rows=20, checks=20, chart=False,
           warnings=5, prompts=0,
           note=f"{_CUT}: only the worst tokens, failing checks first and changed settings are shown here."),
    _Level("minimal", per_config=False, worst=0, env_unchanged=False, env_rows=8, checks=8, chart=False,
           warnings=3, prompts=0,
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


def _pct(n: Any, d: Any) -> str:
    if not isinstance(n, int) or not isinstance(d, int) or d <= 0:
        return ""
    hundredths = n * 10000 // d  # integer arithmetic: a forged 300-digit count must not overflow a float
    return f"{n:,} of {d:,} ({hundredths // 100}.{hundredths % 100:02d}%)"


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
    worst = [dict(w, before=_context(w.get("context_before"), tail=True), after=_context(w.get("context_after")))
             for w in _rows(v.get("worst_tokens"))]
    prompts = _mapping(v.get("prompts"))
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
        "warnings": (v.get("warnings") or [])[: level.warnings],
        "warnings_hidden": max(0, len(v.get("warnings") or []) - level.warnings),
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


def _context(tokens: Any, limit: int = 24, tail: bool = False) -> str:
    """A few tokens of context as plain (still untrusted) text, cut to
    `limit` characters on the side away from the token."""
    text = "".join(str(t) for t in tokens) if isinstance(tokens, list) else ""
    if len(text) <= limit:
        return text
    return "…" + text[-limit:] if tail else text[:limit] + "…"


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
    return {"histograms": _histograms(_mapping(v.get("histogram"))),
            "positions": _position_charts(_mapping(v.get("by_position"))),
            "heatmap": _heatmap(v.get("per_prompt"))}


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


def _position_charts(by_position: dict[str, Any]) -> list[dict[str, Any]]:
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
        out.append({"channel": _CHANNEL_TITLE[channel], "width": L + W + 10, "height": T + H + 40,
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

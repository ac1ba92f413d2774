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
from gate.errors import BadInput, InfraError

__all__ = ["COMMENT_LIMIT", "SUMMARY_LIMIT_BYTES", "OUTPUTS", "comment_marker", "load_verdict",
           "render_comment", "render_summary", "render_html", "render_result", "add_arguments", "run"]

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


def load_verdict(result_dir: Path) -> dict[str, Any]:
    """Read and minimally validate RESULT_DIR/verdict.json; BadInput if not usable."""
    path = Path(result_dir) / "verdict.json"
    hint = "run 'parity-gate check' or 'parity-gate compare' with --out pointing at this directory"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no verdict.json in this result directory", hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}", "check the file's permissions and encoding") from None
    try:
        verdict = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}", hint) from None
    _validate(verdict, path, hint)
    return verdict


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
    verdict = load_verdict(result_dir)
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


# --------------------------------------------------------------------------- validation

def _validate(v: Any, path: Path, hint: str) -> None:
    def bad(what: str) -> BadInput:
        return BadInput(f"{path}: {what}", hint)

    if not isinstance(v, dict) or v.get("schema") != "parity-gate/verdict":
        raise bad("not a parity-gate verdict (expected \"schema\": \"parity-gate/verdict\")")
    if v.get("version") != 1:
        raise BadInput(f"{path}: verdict schema version {v.get('version')!r} is not supported (this gate reads 1)",
                       "re-run check/compare with this version of parity-gate, or upgrade parity-gate")
    if v.get("verdict") not in ("pass", "fail"):
        raise bad(f"\"verdict\" must be \"pass\" or \"fail\", got {v.get('verdict')!r}")
    for key, kind in (("checks", list), ("environment_diff", list), ("headline", str), ("reproduce", str)):
        if not isinstance(v.get(key), kind):
            raise bad(f"\"{key}\" missing or not a {kind.__name__}")
    for i, c in enumerate(v["checks"]):
        if not isinstance(c, dict) or c.get("status") not in ("pass", "fail") or "title" not in c:
            raise bad(f"checks[{i}] needs \"title\" and \"status\" pass/fail")


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


def _num(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
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
    value, bound = c.get("value"), c.get("bound")
    if c.get("status") != "fail" or not isinstance(value, (int, float)) or not isinstance(bound, (int, float)):
        return ""
    if c.get("op", "<=") in ("<=", "<") and bound > 0 and value > bound:
        r = value / bound
        return f"{r:,.0f}× the bound" if r >= 10 else f"{r:.2f}× the bound"
    return f"off by {_num(abs(value - bound))}"


def _strip_prefix(headline: str, verdict: str) -> str:
    head, sep, rest = headline.partition(":")
    return rest.strip() if sep and head.strip().lower() == verdict else headline


_OPS = {"<=": "≤", ">=": "≥", "<": "<", ">": ">", "==": "="}


def _pct(n: Any, d: Any) -> str:
    if not isinstance(n, int) or not isinstance(d, int) or d <= 0:
        return ""
    return f"{n:,} of {d:,} ({100.0 * n / d:.2f}%)"


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
    measures = v.get("measures") or {}
    per_config = measures.get("per_config") or {}
    overall = measures.get("overall") or {}
    worst = [dict(w, before=_context(w.get("context_before"), tail=True), after=_context(w.get("context_after")))
             for w in v.get("worst_tokens") or [] if isinstance(w, dict)]
    prompts = v.get("prompts") or {}
    return {
        "verdict": v["verdict"],
        "passed": v["verdict"] == "pass",
        "blocking": v.get("exit_code", 1 if v["verdict"] == "fail" else 0) != 0,
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
        "ratio": _ratio,
        "pct": _pct,
        "changed": changed[: level.env_rows],
        "changed_hidden": max(0, len(changed) - level.env_rows),
        "n_changed": len(changed),
        "key_same": key_same if level.env_rows >= 8 else [],
        "other_same": other_same if level.env_unchanged else [],
        "warnings": (v.get("warnings") or [])[: level.warnings],
        "warnings_hidden": max(0, len(v.get("warnings") or []) - level.warnings),
        "diagnosis": v.get("diagnosis") if isinstance(v.get("diagnosis"), dict) else None,
        "worst": worst[: level.worst],
        "worst_all": worst,
        "top_token": worst[0] if worst else None,
        "chart": _mermaid(v.get("by_position") or {}) if level.chart else [],
        "per_config": per_config if level.per_config else {},
        "overall": overall,
        "prompts_new": (prompts.get("new") or []),
        "prompts_unused": (prompts.get("unused") or []),
        "prompts_cap": level.prompts,
        "reproduce": v["reproduce"],
        "note": level.note,
        "measure_keys": _MEASURE_ROWS,
    }


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


def _merge_buckets(rows: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """Merge adjacent position buckets so a chart has at most `max_points`."""
    rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("max_abs_diff"), (int, float))]
    if len(rows) <= max_points:
        return rows
    k = math.ceil(len(rows) / max_points)
    out = []
    for i in range(0, len(rows), k):
        grp = rows[i:i + k]
        count = sum(r.get("count") or 0 for r in grp)
        mean = (sum((r.get("mean_abs_diff") or 0) * (r.get("count") or 0) for r in grp) / count) if count else 0.0
        out.append({"start": grp[0].get("start"), "end": grp[-1].get("end"), "count": count,
                    "mean_abs_diff": mean, "max_abs_diff": max(r["max_abs_diff"] for r in grp)})
    return out


def _plain(x: float) -> str:
    """A decimal without exponent: mermaid's number grammar has none."""
    s = f"{x:.10f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


_CHANNEL_TITLE = {"forced": "teacher-forced", "sampler": "sampled-token"}


def _mermaid(by_position: dict[str, Any]) -> list[dict[str, str]]:
    charts = []
    for channel in ("forced", "sampler"):
        rows = _merge_buckets(by_position.get(channel) or [], 40)
        if not rows or max(r["max_abs_diff"] for r in rows) <= 0:
            continue
        labels = ", ".join(f'"{int(r["start"])}-{int(r["end"]) - 1}"' for r in rows)
        values = ", ".join(_plain(float(r["max_abs_diff"])) for r in rows)
        charts.append({"channel": _CHANNEL_TITLE[channel],
                       "body": f'xychart-beta\n    title "{_CHANNEL_TITLE[channel]}: max abs diff by token position"\n'
                               f'    x-axis "completion position" [{labels}]\n'
                               f'    y-axis "max abs diff"\n    line [{values}]'})
    return charts


# --------------------------------------------------------------------------- SVG charts (HTML)

def _charts(v: dict[str, Any]) -> dict[str, Any]:
    return {"histograms": _histograms(v.get("histogram") or {}),
            "positions": _position_charts(v.get("by_position") or {}),
            "heatmap": _heatmap(v.get("per_prompt") or [])}


def _histograms(hist: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for channel in ("forced", "sampler"):
        h = hist.get(channel)
        if not isinstance(h, dict):
            continue
        bins = [("0", int(h.get("zero") or 0))]
        decades = sorted((d for d in h.get("decades") or [] if isinstance(d, dict)), key=lambda d: d["exp"])
        bins += [(f"1e{int(d['exp'])}", int(d.get("count") or 0)) for d in decades]
        top = max((c for _, c in bins), default=0)
        if top <= 0:
            continue
        scale = math.log10(top + 1)
        w, h_px, pad = 36, 160, 30
        bars = []
        for i, (label, count) in enumerate(bins):
            height = 0.0 if count <= 0 else max(2.0, h_px * math.log10(count + 1) / scale)
            bars.append({"x": pad + i * w + 4, "y": pad + h_px - height, "w": w - 8, "h": height,
                         "label": label, "count": count, "lx": pad + i * w + w / 2, "ly": pad + h_px + 16,
                         "cy": pad + h_px - height - 4, "bad": label != "0" and int(label[2:]) >= -4})
        out.append({"channel": _CHANNEL_TITLE[channel], "bars": bars,
                    "width": pad * 2 + len(bins) * w, "height": pad + h_px + 30, "base": pad + h_px, "pad": pad})
    return out


def _position_charts(by_position: dict[str, Any]) -> list[dict[str, Any]]:
    """Max and mean abs diff by position, log-scale y (drift spans decades)."""
    out = []
    for channel in ("forced", "sampler"):
        rows = _merge_buckets(by_position.get(channel) or [], 120)
        if not rows:
            continue
        vals = [float(r["max_abs_diff"]) for r in rows] + [float(r.get("mean_abs_diff") or 0) for r in rows]
        pos = [x for x in vals if x > 0]
        lo = math.floor(math.log10(min(pos))) if pos else -8
        hi = math.ceil(math.log10(max(pos))) if pos else 0
        hi = max(hi, lo + 1)
        W, H, L, T = 480, 180, 44, 16

        def y(val: float) -> float:
            if val <= 0:
                return T + H
            return T + H - H * (math.log10(val) - lo) / (hi - lo)

        def x(i: int) -> float:
            return L + (W * (i + 0.5) / len(rows))

        ticks = [{"y": y(10.0 ** e), "label": f"1e{e}"} for e in range(lo, hi + 1)]
        step = max(1, len(rows) // 8)
        xt = [{"x": x(i), "label": str(rows[i].get("start"))} for i in range(0, len(rows), step)]
        out.append({"channel": _CHANNEL_TITLE[channel], "width": L + W + 10, "height": T + H + 40,
                    "left": L, "top": T, "plot_w": W, "plot_h": H, "yticks": ticks, "xticks": xt,
                    "max_line": " ".join(f"{x(i):.1f},{y(float(r['max_abs_diff'])):.1f}" for i, r in enumerate(rows)),
                    "mean_line": " ".join(f"{x(i):.1f},{y(float(r.get('mean_abs_diff') or 0)):.1f}"
                                          for i, r in enumerate(rows)),
                    "points": [{"x": x(i), "y": y(float(r["max_abs_diff"])), "start": r.get("start"),
                                "end": r.get("end"), "max": r["max_abs_diff"], "mean": r.get("mean_abs_diff"),
                                "count": r.get("count")} for i, r in enumerate(rows)]})
    return out


def _color(d: float) -> str:
    """Green (bitwise) through amber to red (>= 1e-1), by decade of abs diff."""
    if d <= 0:
        return "#2e7d32"
    t = min(1.0, max(0.0, (math.log10(d) + 8) / 7))   # 1e-8 -> 0, 1e-1 -> 1
    hue = 120 * (1 - t)
    return f"hsl({hue:.0f},70%,{45 - 5 * t:.0f}%)"


def _heatmap(per_prompt: list[dict[str, Any]], max_cells: int = 400) -> dict[str, Any]:
    """Per config, one cell per (prompt, sample) colored by its max abs diff;
    adjacent prompts are merged (max) when there are more than `max_cells`."""
    by_cfg: dict[str, list[dict[str, Any]]] = {}
    for row in per_prompt:
        if isinstance(row, dict):
            by_cfg.setdefault(str(row.get("config")), []).append(row)
    longest = max((len(r) for r in by_cfg.values()), default=0)
    k = max(1, math.ceil(longest / max_cells))
    cell, label_w = 6 if longest > 100 else 12, 140
    rows = []
    for ri, (cfg, items) in enumerate(by_cfg.items()):
        cells = []
        for i in range(0, len(items), k):
            grp = items[i:i + k]
            d = max(max(g.get("forced_max_abs_diff") or 0.0, g.get("sampler_max_abs_diff") or 0.0) for g in grp)
            first, last = grp[0], grp[-1]
            title = (f"{visible(first.get('prompt_id'), 40)}" + (f" … {visible(last.get('prompt_id'), 40)}" if k > 1 else "")
                     + f": max abs diff {_num(d)}"
                     + ("" if all(g.get("free_run_match", True) for g in grp) else "; free run diverged"))
            cells.append({"x": label_w + (i // k) * cell, "y": 8 + ri * (cell + 14) + 12, "color": _color(d),
                          "title": title, "div": not all(g.get("free_run_match", True) for g in grp)})
        rows.append({"config": cfg, "y": 8 + ri * (cell + 14) + 10, "cells": cells})
    worst = sorted((r for r in per_prompt if isinstance(r, dict)),
                   key=lambda r: -max(r.get("forced_max_abs_diff") or 0.0, r.get("sampler_max_abs_diff") or 0.0))[:25]
    return {"rows": rows, "cell": cell, "per_cell": k, "label_w": label_w,
            "width": label_w + math.ceil(longest / k) * cell + 10, "height": 16 + len(rows) * (cell + 14),
            "worst": worst, "n": len(per_prompt)}

"""`parity-gate report RESULT_DIR`: render comment.md, report.html and
summary.md from RESULT_DIR/verdict.json (docs/verdict.md).

The view model is `report/view`, the Jinja2 environments `report/templating`,
the charts `report/charts`.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gate.core.fsutil import atomic_write_text
from gate.core.verdict import read_verdict
from gate.report.charts import _charts
from gate.report.templating import link, render_md, template_env
from gate.report.view import LEVELS, build_view

__all__ = ["COMMENT_LIMIT", "SUMMARY_LIMIT_BYTES", "OUTPUTS", "comment_marker", "render_comment", "render_summary",
           "render_html", "render_result", "add_arguments", "run"]

log = logging.getLogger(__name__)

COMMENT_LIMIT = 65_536            # GitHub rejects longer comment bodies (422)
SUMMARY_LIMIT_BYTES = 1_048_576   # GitHub step summary: 1 MiB per step
OUTPUTS = ("comment.md", "report.html", "summary.md")


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
                marker=comment_marker(context), report_url=link(report_url))


def render_summary(verdict: dict[str, Any], *, max_bytes: int = SUMMARY_LIMIT_BYTES,
                   report_url: str | None = None) -> str:
    """The job summary: verdict, checks and environment diff, at most `max_bytes` UTF-8 bytes."""
    return _fit(verdict, "summary.md.j2", lambda s: len(s.encode("utf-8")), max_bytes,
                marker="", report_url=link(report_url))


def render_html(verdict: dict[str, Any]) -> str:
    """One self-contained HTML page: inline CSS, SVG and script, no external requests."""
    view = build_view(verdict, LEVELS[0])
    script = template_env("html").get_template("report.js.j2").render()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return template_env("html").get_template("report.html.j2").render(
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


def _fit(verdict: dict[str, Any], template: str, size: Any, limit: int, **kw: Any) -> str:
    for level in LEVELS:
        text = render_md(template, v=build_view(verdict, level), **kw)
        if size(text) <= limit:
            if level is not LEVELS[0]:
                log.info("%s: cut to level %r to fit %d", template, level.name, limit)
            return text
    # Even the minimal level did not fit (absurd limit): hard cut, note kept.
    note = "\n\n… cut to fit the size limit; see report.html.\n"
    while size(text) > limit and text:
        text = text[: max(0, len(text) - max(64, size(text) - limit)) - len(note)]
    return (text + note) if size(text + note) <= limit else text

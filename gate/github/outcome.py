"""What `publish` posts, built from a result folder: the outcome (a verdict,
or an error without one), the sticky comment's body and the step summary,
each rendered here from the schema-checked verdict.json (never taken from
Markdown in the folder) and ending with the provenance footer."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from gate.core.errors import EXIT_BAD_INPUT, EXIT_PASS, EXIT_REGRESSION, BadInput
from gate.core.verdict import VERDICT_FILE, read_verdict
from gate.github.context import GitHubContext
from gate.report import render as report
from gate.report.markdown import md_inline

__all__ = ["Outcome", "load_outcome", "error_outcome", "invalid_outcome", "comment_marker", "comment_body",
           "summary_markdown", "provenance", "one_line", "COMMENT_LIMIT"]

log = logging.getLogger(__name__)

COMMENT_LIMIT = 65536


@dataclass(frozen=True)
class Outcome:
    """The result being published: a verdict, or an error (exit 2/3) without one."""

    state: str                      # commit status state: success | failure | error | pending
    exit_code: int
    headline: str
    verdict: Mapping[str, Any] | None = None
    result_dir: Path | None = None
    # Markdown the gate itself wrote after the verdict (the action's release
    # bisect section), appended to comment and summary; never the result folder's files
    extra: str = ""

    @property
    def passed(self) -> bool:
        return self.state == "success"


def load_outcome(result_dir: Path, fail_on: str | None = None) -> Outcome:
    verdict = read_verdict(result_dir)  # BadInput (exit 2) when missing or malformed
    failed = verdict["verdict"] != "pass"  # fail, and inconclusive: never a green check on missing evidence
    if fail_on == "regression":
        code = EXIT_REGRESSION if failed else EXIT_PASS
    elif fail_on == "never":
        code = EXIT_PASS
    else:
        code = verdict.get("exit_code", EXIT_REGRESSION if failed else EXIT_PASS)
        if code not in (EXIT_PASS, EXIT_REGRESSION):
            raise BadInput(f"{result_dir}/verdict.json: exit_code must be 0 or 1, got {code!r}")
    headline = str(verdict.get("headline") or ("FAIL" if failed else "PASS"))
    # fail-on: never reports drift but does not gate: the status follows the exit code.
    return Outcome("failure" if code == EXIT_REGRESSION else "success", code, headline, verdict, result_dir)


def error_outcome(exit_code: int, reason: str, result_dir: Path | None = None) -> Outcome:
    kind = "bad input" if exit_code == EXIT_BAD_INPUT else "infrastructure failure"
    return Outcome("error", exit_code, f"ERROR ({kind}): {reason}", None, result_dir)


def invalid_outcome(exc: BadInput, result_dir: Path) -> Outcome:
    """What is published for a result whose verdict.json the schema-checked
    loader refused (missing, malformed, forged): an `error`, never a pass.
    The folder's path is left out, so the 140-character status keeps the why."""
    what = exc.what
    path = str(Path(result_dir) / VERDICT_FILE)
    if what.startswith(path):
        what = VERDICT_FILE + what[len(path):]
    return error_outcome(EXIT_BAD_INPUT, f"the result is invalid: {what}", result_dir)


def one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def comment_marker(context: str) -> str:
    return report.comment_marker(context)


_HEADLINE_CHARS = 300


def _fallback_markdown(outcome: Outcome, run_url: str | None) -> str:
    """For an error outcome, or when rendering failed: a short fixed text
    around the headline, which may come from a fork's verdict, escaped."""
    lines = [f"### parity-gate: {md_inline(outcome.headline, _HEADLINE_CHARS)}", ""]
    if outcome.verdict is not None:
        lines += ["The full report could not be rendered here; it is in the workflow run.", ""]
    if run_url:
        lines.append(f"[Workflow run]({run_url})")
    return "\n".join(lines) + "\n"


def _rendered(outcome: Outcome, name: str, render: Callable[[], str]) -> str | None:
    """The report module's rendering of the validated verdict, or None (then
    the escaped fallback). Never the Markdown files in the result folder:
    on workflow_run those are a fork's, and would be posted as the bot."""
    if outcome.verdict is None:
        return None
    try:
        return render()
    except Exception as exc:  # noqa: BLE001 - untrusted input: a rendering bug must not stop the status
        log.warning("could not render %s (%s: %s); posting a short fallback", name, type(exc).__name__, exc)
        return None


def provenance(ctx: GitHubContext, required_context: str) -> str:
    """The closing line of comment and summary: which commit the result was
    computed for, which commit the suite and golden came from, and, for a
    fork's result, that it does not count. Shas are checked 40-hex strings."""
    parts = []
    if ctx.head_sha:
        parts.append(f"Computed for {ctx.head_sha}")
    if ctx.golden_sha:
        parts.append(f"suite and golden from {ctx.golden_sha}")
    line = "; ".join(parts) + "." if parts else ""
    if ctx.unverified:
        line += (f" **Unverified**: computed by a workflow run from a fork; it does not count for the "
                 f"required check `{md_inline(required_context, 255).replace('`', '')}`.")
    return line.strip()


def _with_footer(body: str, footer: str, limit: int, run_url: str | None) -> str:
    """`body`, then the footer, in at most `limit` characters: a body cut to
    fit ends with a note saying so (the footer is always kept whole)."""
    tail = f"\n\n{footer}\n" if footer else ""

    def join(text: str) -> str:
        return text.rstrip("\n") + "\n" + tail if tail else text

    out = join(body)
    if len(out) <= limit:
        return out
    note = (f"\n\n*Comment truncated at {limit} characters; the full report is in the "
            f"workflow run{': ' + run_url if run_url else ''}.*\n")
    # join() may add one newline after stripping the note's own.
    out = join(body[: max(0, limit - len(note) - len(tail) - 1)] + note)
    return out[:limit]


def comment_body(outcome: Outcome, context: str, run_url: str | None, footer: str = "") -> str:
    marker = comment_marker(context)
    body = _rendered(outcome, "comment.md", lambda: report.render_comment(
        dict(outcome.verdict or {}), context=context, report_url=run_url))
    body = body or _fallback_markdown(outcome, run_url)
    if outcome.extra:
        body = body.rstrip("\n") + "\n" + outcome.extra
    if marker not in body:
        body = f"{marker}\n{body}"
    return _with_footer(body, footer, COMMENT_LIMIT, run_url)


def summary_markdown(outcome: Outcome, run_url: str | None, footer: str = "") -> str:
    body = _rendered(outcome, "summary.md", lambda: report.render_summary(
        dict(outcome.verdict or {}), report_url=run_url))
    body = body or _fallback_markdown(outcome, run_url)
    if outcome.extra:
        body = body.rstrip("\n") + "\n" + outcome.extra
    return body.rstrip("\n") + f"\n\n{footer}\n" if footer else body

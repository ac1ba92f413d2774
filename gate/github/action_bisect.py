"""The release bisect of a failing check (the action's `bisect: on-failure`):
run between the golden's engine release and the release under test, into
RESULT/bisect, and said in a few Markdown lines appended to the comment and
summary. The compute phase keeps the bisect's answer (an exit code and one
line) in RESULT/bisect/action-answer.json; the publish phase writes the
section again from that answer alone. Never changes the check's verdict or
exit code."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

from packaging.version import Version

from gate.core.errors import EXIT_INFRA
from gate.core.fsutil import atomic_write_text
from gate.core.verdict import VERDICT_FILE
from gate.github.action_inputs import ActionSettings
from gate.report.markdown import md_inline
from gate.studies.releases import release_pair

__all__ = ["bisect_section", "append_bisect", "recording", "recorded", "BISECT_ANSWER", "Bisect"]

log = logging.getLogger(__name__)

# `parity-gate bisect ARGV`, run somehow: (exit code, the error's one line, or "" when it ran).
Bisect = Callable[[list[str]], tuple[int, str]]
# RESULT/bisect/ANSWER: the compute phase's bisect exit code and error line,
# from which the publish phase writes the bisect section again.
BISECT_ANSWER = "action-answer.json"


def bisect_section(settings: ActionSettings, result_dir: Path, bisect: Bisect) -> str:
    """After a failing check (bisect: on-failure): bisect between the golden's
    engine release and the release under test, into RESULT/bisect, and say
    the answer (or why there is none) in a few Markdown lines. Never raises:
    the check's verdict and exit code stay what they were."""
    try:
        verdict = json.loads((result_dir / VERDICT_FILE).read_text())
    except (OSError, ValueError) as exc:
        return _bisect_md(f"not run: the verdict cannot be read ({type(exc).__name__})")
    # from manifests the PR's code wrote: only a plain PEP 440 version reaches the comment
    good, bad, why = release_pair(verdict)
    if good is None or bad is None:
        return _bisect_md(f"not run: {why}")
    if settings.shard:
        return _bisect_md("not run: this is one shard's check; bisect from the merged result with `parity-gate bisect`")
    if why:
        hint = " (`parity-gate bisect --good-args ... --bad-args ...` names an arg)" if Version(good) == Version(bad) else ""
        return _bisect_md(f"not run: {why}{hint}")
    out = result_dir / "bisect"
    argv = ["bisect", "--suite", settings.suite, "--golden", settings.golden, "--good", good, "--bad", bad,
            "--on", "fail", "--out", str(out), *sum((["--engine-arg", a] for a in settings.engine_args), [])]
    log.info("running parity-gate %s", " ".join(argv))
    code, error = bisect(argv)
    try:
        doc = json.loads((out / "bisect.json").read_text())
    except (OSError, ValueError):
        doc = {}
    if code == 1 and doc.get("first_bad"):
        first = doc["first_bad"]
        notes = doc.get("release_notes")
        unchanged = [p["name"] for p in doc.get("probes", []) if p.get("moved") is False]
        line = f"first drifting release: **{first}**" + (f" ([release notes]({notes}))" if notes else "")
        if unchanged:
            line += f"; {', '.join(unchanged)} unchanged"
        what = [w for p in doc.get("probes", []) if p.get("name") == first for w in p.get("what", [])][:2]
        tail = f"\n\n{md_inline('; '.join(what), limit=300)}" if what else ""
        return _bisect_md(line + tail + f"\n\nThe bisect's report: `{out.name}/` in the result folder.")
    if code == 0:
        return _bisect_md(f"nothing fails at {bad} when the bisect checks it again (a flaky check?); "
                          f"see `{out.name}/` in the result folder")
    return _bisect_md(f"could not run (exit {code}): {_short(error or 'see the job log')}; the verdict above stands")


def _short(text: str) -> str:
    return md_inline(text, limit=300)


def _bisect_md(text: str) -> str:
    if not text.startswith("first drifting"):
        text = "bisect " + text
    return f"\n### Release bisect\n\n{text}\n"


def append_bisect(result_dir: Path, section: str) -> None:
    for name in ("comment.md", "summary.md"):
        path = result_dir / name
        if path.is_file():
            atomic_write_text(path, path.read_text().rstrip("\n") + "\n" + section)


def recording(bisect: Bisect, result_dir: Path) -> Bisect:
    """The bisect, its answer kept in RESULT/bisect for the publish phase."""
    def run_and_record(argv: list[str]) -> tuple[int, str]:
        code, error = bisect(argv)
        out = result_dir / "bisect"
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / BISECT_ANSWER, json.dumps({"exit_code": code, "error": error}) + "\n")
        return code, error
    return run_and_record


def recorded(result_dir: Path) -> Bisect:
    """The compute phase's bisect answer, read back. The result folder is
    the compute container's: only an int and one line are taken from it,
    and the section is written here, as `bisect_section` writes it."""
    def answer(argv: list[str]) -> tuple[int, str]:
        try:
            doc = json.loads((result_dir / "bisect" / BISECT_ANSWER).read_text())
            code, error = doc["exit_code"], doc["error"]
        except (OSError, ValueError, KeyError, TypeError):
            return EXIT_INFRA, "the compute phase left no bisect answer"
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(error, str):
            return EXIT_INFRA, "the compute phase's bisect answer is malformed"
        return code, error
    return answer

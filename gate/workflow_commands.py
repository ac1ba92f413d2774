"""The Actions runner's file and stdout protocols: step outputs
(GITHUB_OUTPUT), the job summary (GITHUB_STEP_SUMMARY) and `::error::` /
`::warning::` annotations."""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Iterable, Mapping, TextIO

__all__ = ["write_outputs", "append_step_summary", "annotation", "emit_annotations",
           "STEP_SUMMARY_LIMIT", "ANNOTATION_LIMIT"]

STEP_SUMMARY_LIMIT = 1024 * 1024  # bytes per step; GitHub rejects the whole summary beyond it
ANNOTATION_LIMIT = 50


def _output_line(name: str, value: str) -> str:
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    # Multiline: a random delimiter, so a value can't end the block early
    # and inject outputs of its own.
    while True:
        delim = f"ghadelimiter_{secrets.token_hex(16)}"
        if delim not in value:
            break
    return f"{name}<<{delim}\n{value}\n{delim}\n"


def write_outputs(path: Path | None, outputs: Mapping[str, str]) -> None:
    """Append step outputs; the runner reads the file when the step ends."""
    if path is None:
        return
    for name in outputs:
        if not name or any(c in name for c in "=<\n\r "):
            raise ValueError(f"bad output name {name!r}")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(_output_line(k, str(v)) for k, v in outputs.items()))


def _truncate_utf8(text: str, limit: int, note: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = max(0, limit - len(note.encode("utf-8")))
    return data[:room].decode("utf-8", "ignore") + note


def append_step_summary(path: Path | None, markdown: str, note: str) -> bool:
    """Append to the job summary within the 1 MiB per-step limit (what is
    already in the file counts). Returns whether it was truncated."""
    if path is None:
        return False
    used = path.stat().st_size if path.exists() else 0
    room = max(0, STEP_SUMMARY_LIMIT - used)
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    cut = _truncate_utf8(text, room, note)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(cut)
    return cut != text


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, title: str | None = None) -> str:
    """One workflow command line, escaped so untrusted text (token strings
    from models) can't start a command of its own."""
    props = f" title={_escape_property(title)}" if title else ""
    return f"::{level}{props}::{_escape_data(message)}\n"


def emit_annotations(out: TextIO, items: Iterable[tuple[str, str, str]], limit: int = ANNOTATION_LIMIT) -> int:
    """Write (level, title, message) annotations, at most `limit`; one last
    warning says how many were left out. Returns how many were written."""
    items = list(items)
    shown = items if len(items) <= limit else items[: limit - 1]
    for level, title, message in shown:
        out.write(annotation(level, message, title))
    if len(shown) < len(items):
        out.write(annotation("warning", f"{len(items) - len(shown)} more annotations left out; "
                                        "see the job summary", "parity-gate"))
    out.flush()
    return len(shown)

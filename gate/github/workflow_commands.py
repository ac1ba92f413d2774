"""The Actions runner's file and stdout protocols: step outputs
(GITHUB_OUTPUT), the job summary (GITHUB_STEP_SUMMARY) and `::error::` /
`::warning::` annotations."""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Mapping, TextIO

from gate.core.errors import BadInput, InfraError
from gate.core.fsutil import NotRegularFile, describe_file_kind, open_regular

__all__ = ["write_outputs", "append_step_summary", "check_runner_file", "annotation", "emit_annotations",
           "STEP_SUMMARY_LIMIT", "ANNOTATIONS_PER_LEVEL"]

STEP_SUMMARY_LIMIT = 1024 * 1024  # bytes per step; GitHub rejects the whole summary beyond it
# GitHub shows at most 10 annotations of each level (error, warning, notice)
# per step and drops the rest without a word.
ANNOTATIONS_PER_LEVEL = 10


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


_FULL = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def _refuse(variable: str, path: Path, what: str) -> BadInput:
    return BadInput(f"{variable}={path}: {what}",
                    f"point {variable} at a file (the Actions runner sets it), or unset it outside Actions")


def check_runner_file(path: Path | None, variable: str) -> None:
    """GITHUB_OUTPUT / GITHUB_STEP_SUMMARY must name a regular file (or a
    path where one can be made): a folder gives one bad-input line, and a
    FIFO is refused before anything could block on it. Cheap: call it
    before anything is posted."""
    if path is None:
        return
    try:
        kind = describe_file_kind(os.stat(path).st_mode)
    except FileNotFoundError:
        if not Path(path).parent.is_dir():
            raise _refuse(variable, path, "its folder does not exist") from None
        return
    except OSError as exc:
        raise _refuse(variable, path, f"cannot be reached ({exc.strerror})") from None
    except ValueError:  # a NUL character
        raise _refuse(variable, path, "is not a valid path") from None
    if kind:
        raise _refuse(variable, path, f"is {kind}, not a file")


def _open_append(path: Path, variable: str) -> BinaryIO:
    """The file, opened for appending without ever blocking (see
    open_regular): a FIFO without a reader fails at once."""
    check_runner_file(path, variable)
    try:
        return open_regular(path, append=True)
    except NotRegularFile as exc:
        raise _refuse(variable, path, f"is {exc.kind}, not a file") from None
    except OSError as exc:
        if exc.errno in _FULL:
            raise _full(variable, path, exc) from None
        what = {errno.EISDIR: "is a folder, not a file", errno.ENXIO: "is a FIFO (named pipe), not a file"}.get(
            exc.errno or 0, f"cannot be written ({exc.strerror})")
        raise _refuse(variable, path, what) from None


def _full(variable: str, path: Path, exc: OSError) -> InfraError:
    return InfraError(f"{variable}={path}: cannot write ({exc.strerror}): disk full / read-only",
                      "free space on the runner, or make the path writable")


def _append(path: Path, variable: str, text_for: Callable[[int], str]) -> str:
    """Append `text_for(bytes already in the file)`, unbuffered; returns what was written."""
    fh = _open_append(path, variable)
    try:
        text = text_for(os.fstat(fh.fileno()).st_size)
        data = text.encode("utf-8", "backslashreplace")  # a lone surrogate is written as its escape
        while data:
            data = data[fh.write(data):]
    except OSError as exc:
        if exc.errno in _FULL:
            raise _full(variable, path, exc) from None
        raise
    finally:
        fh.close()
    return text


def write_outputs(path: Path | None, outputs: Mapping[str, str], variable: str = "GITHUB_OUTPUT") -> None:
    """Append step outputs; the runner reads the file when the step ends."""
    if path is None:
        return
    for name in outputs:
        if not name or any(c in name for c in "=<\n\r "):
            raise ValueError(f"bad output name {name!r}")
    block = "".join(_output_line(k, str(v)) for k, v in outputs.items())
    _append(path, variable, lambda used: block)


def _truncate_utf8(text: str, limit: int, note: str) -> str:
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return text
    room = max(0, limit - len(note.encode("utf-8", "backslashreplace")))
    return data[:room].decode("utf-8", "ignore") + note


def append_step_summary(path: Path | None, markdown: str, note: str, variable: str = "GITHUB_STEP_SUMMARY") -> bool:
    """Append to the job summary within the 1 MiB per-step limit (what is
    already in the file counts). Returns whether it was truncated."""
    if path is None:
        return False
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    cut = _append(path, variable, lambda used: _truncate_utf8(text, max(0, STEP_SUMMARY_LIMIT - used), note))
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


def emit_annotations(out: TextIO, items: Iterable[tuple[str, str, str]], per_level: int = ANNOTATIONS_PER_LEVEL,
                     used: Mapping[str, int] | None = None) -> int:
    """Write (level, title, message) annotations, in order, at most
    `per_level` of each level, counting the `used` ones this step already
    wrote. When any are left out, one closing warning says how many, and
    room is kept for it among the shown warnings, so GitHub never drops it.
    Returns how many items were written (the note not counted)."""
    items = list(items)
    used = dict(used or {})
    counts: dict[str, int] = {}
    for level, _, _ in items:
        counts[level] = counts.get(level, 0) + 1
    room = {level: max(0, per_level - used.get(level, 0)) for level in counts}
    if any(n > room[level] for level, n in counts.items()):
        room["warning"] = max(0, min(room.get("warning", per_level), per_level - used.get("warning", 0)) - 1)
    written: dict[str, int] = {}
    shown = 0
    for level, title, message in items:
        if written.get(level, 0) < room.get(level, 0):
            written[level] = written.get(level, 0) + 1
            out.write(annotation(level, message, title))
            shown += 1
    if shown < len(items) and used.get("warning", 0) < per_level:
        out.write(annotation("warning", f"{len(items) - shown} more annotations left out; "
                                        "see the job summary", "parity-gate"))
    out.flush()
    return shown

"""Problems of an input file, collected rather than raised one at a time:
each is named with its file:line, and all of them are raised once, as one
BadInput, when the file has been read whole (docs/suite-format.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gate.core.errors import BadInput

__all__ = ["Problems", "FileProblems", "one_message", "line_of", "is_int", "surrogate", "MAX_PROBLEMS"]

MAX_PROBLEMS = 20  # shown in the one-line message; the rest are counted


def line_of(container: Any, key: Any) -> str:
    lines = getattr(container, "lines", None)
    try:
        return f":{lines[key]}" if lines is not None else ""
    except (KeyError, IndexError, TypeError):
        return ""


class Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{self.path}{where}: {message}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        raise BadInput(one_message(self.items, "problems in the suite"),
                       "fix the suite file (see docs/suite-format.md)")


def one_message(items: list[str], what: str) -> str:
    if len(items) == 1:
        return items[0]
    shown = "; ".join(items[:MAX_PROBLEMS])
    more = f"; and {len(items) - MAX_PROBLEMS} more" if len(items) > MAX_PROBLEMS else ""
    return f"{len(items)} {what}: {shown}{more}"


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def surrogate(text: str) -> str | None:
    """Where `text` holds a lone surrogate (YAML and JSON can write "\\ud800"):
    not Unicode, so no tokenizer, trace or report can take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate {text[exc.start]!r} at character {exc.start}, which is not valid Unicode"
    return None


class FileProblems(Problems):
    """Problems found in another file (prompts_file) keep that file's name."""

    def __init__(self, parent: Problems, location: str) -> None:
        self.parent, self.location = parent, location

    def add(self, where: str, message: str) -> None:
        self.parent.items.append(f"{self.location}: {message}")

"""JSON paths in messages (`verdict.checks[0].status`) and the one check a
schema cannot state about text: every string is valid Unicode. Standard
library only: the trace reader uses both without loading the models."""
from __future__ import annotations

from typing import Any

__all__ = ["json_path", "first_invalid_text"]


def json_path(path: str, key: str | int) -> str:
    """`path.key`, `path[3]`, or `path['odd key']` (ASCII-escaped: one line, always)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if key.isidentifier() and key.isascii() else f"{path}[{ascii(key)}]"


def first_invalid_text(value: Any, name: str = "value") -> str | None:
    """The JSON path of the first string or key that is not valid Unicode (a
    lone surrogate such as the escape \\ud800, which json reads but no UTF-8
    file can hold), or None."""
    stack: list[tuple[str, Any]] = [(name, value)]
    while stack:
        path, item = stack.pop()
        if type(item) is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return path
        elif type(item) is dict:
            for key in reversed(list(item)):
                sub = json_path(path, key)
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{sub} (the key)"
                stack.append((sub, item[key]))
        elif type(item) is list:
            stack.extend((json_path(path, i), item[i]) for i in reversed(range(len(item))))
    return None

"""The suite's prompts: inline under `prompts:` or one per line of a JSONL
`prompts_file:`, each with the place it was written for messages."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate.core.fsutil import NotRegularFile, TooLarge, open_regular
from gate.core.yamlio import PROMPTS_FILE_SIZE_LIMIT, cannot_read, mib
from gate.run.problems import FileProblems, Problems, is_int, surrogate

__all__ = ["Prompt", "parse_prompt", "load_prompts_file", "prompt_location"]


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    where: str = ""


def parse_prompt(item: Any, where: str, problems: Problems) -> Prompt | None:
    if not isinstance(item, dict):
        problems.add(where, f"prompt must be a mapping with 'id' and 'text' or 'token_ids', got {type(item).__name__}")
        return None
    unknown = set(item) - {"id", "text", "token_ids"}
    if unknown:
        problems.add(where, f"unknown prompt keys {sorted(unknown, key=str)} (allowed: id, text, token_ids)")
    pid = item.get("id")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or str(pid) == "":
        problems.add(where, f"prompt 'id' must be a non-empty string, got {pid!r}")
        return None
    pid = str(pid)  # `id: 7` is the prompt '7' everywhere, messages included
    bad = surrogate(pid)
    if bad:
        problems.add(where, f"prompt id {pid!r} holds {bad}")
        return None
    has_text, has_ids = "text" in item, "token_ids" in item
    if has_text == has_ids:
        problems.add(where, f"prompt {pid!r} needs exactly one of 'text' or 'token_ids'")
        return None
    if has_text:
        if not isinstance(item["text"], str) or not item["text"]:
            problems.add(where, f"prompt {pid!r}: 'text' must be a non-empty string")
            return None
        bad = surrogate(item["text"])
        if bad:
            problems.add(where, f"prompt {pid!r}: 'text' holds {bad}")
            return None
        return Prompt(id=str(pid), text=item["text"], where=where)
    ids = item["token_ids"]
    if not isinstance(ids, list) or not ids or not all(is_int(t) and t >= 0 for t in ids):
        problems.add(where, f"prompt {pid!r}: 'token_ids' must be a non-empty list of non-negative integers")
        return None
    return Prompt(id=str(pid), token_ids=tuple(ids), where=where)


def load_prompts_file(path: Path, problems: Problems, where: str) -> list[Prompt]:
    """JSONL, one prompt per line, read line by line: a regular file of at
    most PROMPTS_FILE_SIZE_LIMIT bytes. Lines end at "\\n" only (JSON text
    may hold U+2028 and the like), so line numbers match an editor's."""
    limit = PROMPTS_FILE_SIZE_LIMIT
    try:
        fh = open_regular(path, limit)
    except (OSError, ValueError, NotRegularFile, TooLarge) as exc:
        why = ("not found (relative paths resolve against the suite's folder)" if isinstance(exc, FileNotFoundError)
               else "is a folder, not a JSONL file" if isinstance(exc, IsADirectoryError)
               else f"{exc} for a prompts file" if isinstance(exc, TooLarge)
               else str(exc) if isinstance(exc, NotRegularFile) else cannot_read(exc))
        problems.add(where, f"prompts_file {path} {why}")
        return []
    out = []
    with fh:
        used, i = 0, 0
        while raw := fh.readline(limit - used + 1):
            i += 1
            used += len(raw)
            if used > limit:
                problems.add(where, f"prompts_file {path} is over the {mib(limit)} limit for a prompts file")
                return []
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.items.append(f"{path}:{i}: not UTF-8 text")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.items.append(f"{path}:{i}: malformed JSON line ({exc.msg})")
                continue
            except (ValueError, RecursionError) as exc:  # 5,000-digit ints, deep nesting
                problems.items.append(f"{path}:{i}: unreadable JSON line ({str(exc).split(';')[0]})")
                continue
            prompt = parse_prompt(obj, "", FileProblems(problems, f"{path}:{i}"))
            if prompt is not None:
                out.append(Prompt(prompt.id, prompt.text, prompt.token_ids, where=f"{path}:{i}"))
    return out


def prompt_location(suite_path: Path, p: Prompt) -> str:
    """suite.yaml:LINE for a suite prompt, prompts.jsonl:LINE for a prompts_file one."""
    return f"{suite_path}{p.where}" if not p.where or p.where.startswith(":") else p.where

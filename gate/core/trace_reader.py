"""The trace reader: the header checked at open, records checked as they
stream (docs/trace-format.md)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from gate.core.errors import BadInput
from gate.core.fsutil import NotRegularFile, open_regular
from gate.core.jsonpath import first_invalid_text
from gate.core.trace_format import (
    DAMAGED,
    FORMAT,
    LFS_POINTER,
    MAJOR,
    MINOR,
    NUMERIC,
    REDO,
    Manifest,
    Record,
    hint_for,
    loads,
    trace_path,
)
from gate.core.trace_records import record_from_json

__all__ = ["TraceReader", "read_trace"]

# A JSON escape of a UTF-16 surrogate: the only way a lone one can reach a str.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class TraceReader:
    """Reads a trace file lazily: the header at open, records as they stream.

    Every line is checked against gate/schemas/trace-v1.schema.json (records
    by the equivalent fast checks in `trace_records.record_ok`), plus what the schema
    cannot say: lengths that must agree, order, and the end marker."""

    def __init__(self, location: Path) -> None:
        self.path = trace_path(location)
        if not self.path.exists():
            raise BadInput(f"trace file {self.path} does not exist",
                           "pass a folder written by 'parity-gate record' or 'check'")
        with self._open() as fh:
            first = fh.readline()
        if not first.strip():
            raise BadInput(f"{self.path}:1: trace file is empty", REDO)
        if first.startswith(LFS_POINTER.encode()):
            # A Git LFS pointer: the checkout (or `git archive`, which never
            # fetches LFS objects) holds the pointer, not the trace.
            raise BadInput(f"{self.path}: a Git LFS pointer, not the trace: the LFS object was not fetched",
                           "check out with lfs: true (actions/checkout) or run 'git lfs pull'; with the action's "
                           "golden-from: base, check the base commit out with LFS and use golden-from: workspace "
                           "(docs/github.md, 'Where goldens live')")
        try:
            header = self._parse(first, 1)
        except BadInput:
            raise BadInput(f"{self.path}:1: not a parity-gate trace file (the first line is not a JSON header)",
                           "pass a folder written by 'parity-gate record' or the trace writer") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise BadInput(f"{self.path}:1: not a parity-gate trace file (no '{FORMAT}' header)",
                           "pass a folder written by 'parity-gate record' or the trace writer")
        version = header.get("version")
        if type(version) is not int or version != MAJOR:
            raise BadInput(f"{self.path}:1: trace format version {version!r} is not supported (this parity-gate "
                           f"reads version {MAJOR})",
                           "re-record with this parity-gate, or use the parity-gate that wrote it")
        minor = header.get("minor", 0)
        # A newer minor only adds optional keys (docs/trace-format.md): ignore what we do not know.
        self.newer = type(minor) is int and minor > MINOR
        self._text(first, header, 1, "header")
        from gate.core import models, validation  # pydantic: once per file, never per record
        problem = validation.problem(models.Header, header, "header", open_objects=self.newer)
        if problem:
            raise BadInput(f"{self.path}:1: {problem}", hint_for(problem))
        self.manifest = Manifest.from_json(header["manifest"], f"{self.path}:1", self.newer)

    def _open(self) -> BinaryIO:
        try:
            return open_regular(self.path)
        except NotRegularFile as exc:
            raise BadInput(f"trace file {self.path} {exc}",
                           "pass a folder written by 'parity-gate record' or 'check', or its traces.jsonl") from None
        except OSError as exc:
            raise BadInput(f"trace file {self.path} is not readable: {exc.strerror}",
                           "check the path and its permissions") from None

    def _parse(self, raw: bytes, lineno: int, rest: bytes | None = None) -> Any:
        try:
            return loads(raw, rest)
        except RecursionError:
            raise BadInput(f"{self.path}:{lineno}: JSON nested too deeply to be a trace line", DAMAGED) from None
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError):
                why = "truncated or malformed JSON" if raw.rstrip(b"\n") == raw or raw.strip() else "empty line"
                msg = f"{why} ({exc.msg}; column {exc.colno})"
            elif isinstance(exc, UnicodeDecodeError):
                msg = f"not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at column {exc.start + 1})"
            else:
                msg = str(exc)
            raise BadInput(f"{self.path}:{lineno}: {msg}", DAMAGED) from None

    def _text(self, raw: bytes, obj: Any, lineno: int, name: str) -> None:
        """Refuse lone surrogates: json reads the escape \\ud800 into a str
        that no report, verdict or trace could write back as UTF-8."""
        if _SURROGATE_ESCAPE.search(raw):
            bad = first_invalid_text(obj, name)
            if bad:
                raise BadInput(f"{self.path}:{lineno}: {bad} is not valid Unicode (a lone surrogate escape such "
                               f"as \\ud800)", REDO)

    def records(self) -> Iterator[Record]:
        count = 0
        last: tuple[str, str, int] | None = None
        ended = False
        with self._open() as fh:
            fh.readline()
            for lineno, raw in enumerate(fh, start=2):
                if ended:
                    raise BadInput(f"{self.path}:{lineno}: data after the end marker", REDO)
                # What json does not turn into numbers: keys, strings, null, and any true/false or \u escape.
                rest = raw.translate(None, NUMERIC)
                obj = self._parse(raw, lineno, rest)
                if type(obj) is dict and obj.get("end") is True:
                    from gate.core import models, validation
                    problem = validation.problem(models.End, obj, "end marker", open_objects=self.newer)
                    if problem:
                        raise BadInput(f"{self.path}:{lineno}: {problem}", DAMAGED)
                    if obj["records"] != count:
                        raise BadInput(f"{self.path}:{lineno}: end marker says {obj['records']} records, "
                                       f"file has {count}", "the trace file is damaged; re-record it")
                    ended = True
                    continue
                where = f"{self.path}:{lineno}"
                if b"\\u" in rest:
                    self._text(raw, obj, lineno, "record")
                record = record_from_json(obj, where, self.newer, exact=b"true" in rest or b"false" in rest)
                if last is not None and record.key <= last:
                    raise BadInput(f"{where}: record {record.key} is out of order or duplicated",
                                   "records must be sorted by (config, prompt_id, sample), each once")
                last = record.key
                count += 1
                yield record
        if not ended:
            raise BadInput(f"{self.path}: no end marker after {count} records (file truncated)",
                           "the trace file is incomplete; re-record it or restore it from CI artifacts")

    def __iter__(self) -> Iterator[Record]:
        return self.records()


def read_trace(location: Path) -> TraceReader:
    return TraceReader(location)

"""The trace writer: records streamed into traces.jsonl, atomically, each
line read back as a reader would. Also the API a trainer uses to dump its
own per-token logprobs (docs/trace-format.md, "Writing traces from a
trainer"), imported from `gate.core.trace`."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from gate.core.errors import BadInput
from gate.core.fsutil import atomic_open
from gate.core.jsonpath import first_invalid_text
from gate.core.trace_format import FORMAT, MAJOR, MINOR, PATHS, TRACE_FILE, Manifest, Record, dumps, reject_constant
from gate.core.trace_records import record_from_json

__all__ = ["TraceWriter"]


class TraceWriter:
    """Streams records into `<out>/traces.jsonl`, atomically.

    The file appears only when the writer closes without error; records
    must come sorted by (config, prompt id, sample). Each line is read back
    as a reader would, so the writer refuses what a reader would refuse."""

    def __init__(self, out: Path, manifest: Manifest | Callable[[], Manifest]) -> None:
        """`manifest` may be a function, called when the writer closes: for a
        header that depends on the records (the sampler relation), written in
        one pass. The records then wait in a temp file beside the trace."""
        # a folder (existing or not) gets traces.jsonl inside; only a *.jsonl path is the file itself
        self.path = Path(out) if Path(out).suffix == ".jsonl" else Path(out) / TRACE_FILE
        self._manifest = manifest
        self._ctx = atomic_open(self.path, "w")
        self._fh: Any = None
        self._body: Any = None
        self._last: tuple[str, str, int] | None = None
        self.count = 0

    def _header(self, manifest: Manifest) -> str:
        header = {"format": FORMAT, "version": MAJOR, "minor": MINOR, "manifest": manifest.to_json()}
        line = self._line(header, "trace header")
        try:
            from gate.core import models, validation
            problem = validation.problem(models.Header, json.loads(line, parse_constant=reject_constant), "header")
        except ValueError as exc:
            problem = f"manifest holds {str(exc).split()[0]}, which a reader refuses"
        if problem:
            raise BadInput(f"trace header: {problem}", "pass a Manifest of JSON-compatible mappings")
        return line

    def __enter__(self) -> "TraceWriter":
        if callable(self._manifest):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._body = self._fh = tempfile.TemporaryFile("w+", encoding="utf-8", dir=self.path.parent)
            return self
        line = self._header(self._manifest)
        self._fh = self._ctx.__enter__()
        self._fh.write(line + "\n")
        return self

    def write(self, record: Record) -> None:
        assert self._fh is not None, "use TraceWriter as a context manager"
        if self._last is not None and record.key <= self._last:
            raise BadInput(f"trace record {record.key} written after {self._last}",
                           "write records sorted by (config, prompt_id, sample), each key once")
        where = f"record {record.key}"
        for scores in (record.sampler, record.forced, record.own):
            if scores is not None and scores.path not in PATHS:
                raise BadInput(f"{where}: unknown scoring path {scores.path!r}", f"use one of {PATHS}")
        line = self._line(record.to_json(), where)
        try:
            record_from_json(json.loads(line, parse_constant=reject_constant), where,
                              exact="true" in line or "false" in line)
        except ValueError as exc:  # NaN or +inf, written by allow_nan
            raise BadInput(f"{where}: {exc}",
                           "write finite logprobs; -inf is allowed for tokens outside a processed top-k") from None
        self._fh.write(line + "\n")
        self._last = record.key
        self.count += 1

    @staticmethod
    def _line(obj: dict[str, Any], where: str) -> str:
        try:
            line = dumps(obj)
        except (TypeError, ValueError, RecursionError) as exc:
            raise BadInput(f"{where}: cannot be written as JSON ({exc})",
                           "pass plain ints, floats, strings, lists and dicts (numpy: use .tolist())") from None
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            bad = first_invalid_text(json.loads(line), where)
            if bad:
                raise BadInput(f"{bad} is not valid Unicode (a lone surrogate); it cannot be written as UTF-8",
                               "pass valid Unicode strings")
        return line

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._fh is None:  # __enter__ refused the header: nothing was opened
            return False
        if self._body is not None:  # header last: header, then the records, into the trace
            with self._body:
                if exc_type is None:
                    line = self._header(self._manifest())  # type: ignore[operator]
                    with self._ctx as fh:
                        fh.write(line + "\n")
                        self._body.seek(0)
                        shutil.copyfileobj(self._body, fh, 1 << 20)
                        fh.write(dumps({"end": True, "records": self.count}) + "\n")
            return False
        if exc_type is None:
            self._fh.write(dumps({"end": True, "records": self.count}) + "\n")
        return self._ctx.__exit__(exc_type, exc, tb)

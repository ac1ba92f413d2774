"""Trace format v1: one JSON header line (the manifest), one line per record,
one trailer line. Documented in docs/trace-format.md, schema in
gate/schemas/trace-v1.schema.json.

This is also the writer API a trainer uses to dump its own per-token
logprobs (docs/trace-format.md, "Writing traces from a trainer")."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from gate._fsutil import atomic_open
from gate.errors import BadInput

__all__ = ["FORMAT", "MAJOR", "MINOR", "TRACE_FILE", "Scores", "Record", "Manifest",
           "TraceWriter", "TraceReader", "read_trace", "sort_key", "trace_path"]

FORMAT = "parity-gate/trace"
MAJOR = 1
MINOR = 0
TRACE_FILE = "traces.jsonl"

# Where a number came from. Compare like with like (design.md section 7).
PATHS = ("decode", "prefill", "forced_decode", "trainer", "hf")


@dataclass(frozen=True)
class Scores:
    """Per-token logprobs from one scoring path.

    For `Record.sampler` the lists align with the completion tokens. For
    `Record.forced` they align with the whole scored sequence (prompt then
    completion); position 0 has no logprob (None)."""

    path: str
    logprobs: Sequence[float | None]
    top_ids: Sequence[Sequence[int] | None] | None = None
    top_logprobs: Sequence[Sequence[float] | None] | None = None
    # forced only: the completion ids that were scored (the golden's, in `check`)
    completion_token_ids: Sequence[int] | None = None

    def completion(self, prompt_len: int, path: str | None = None) -> "Scores":
        """The completion positions of teacher-forced scores, aligned like a
        sampler channel (to compare a scoring path against rollouts)."""
        tail = (lambda xs: None if xs is None else list(xs[prompt_len:]))
        return Scores(path=path or self.path, logprobs=list(self.logprobs[prompt_len:]),
                      top_ids=tail(self.top_ids), top_logprobs=tail(self.top_logprobs))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "logprobs": list(self.logprobs)}
        if self.top_ids is not None:
            d["top_ids"] = [None if t is None else list(t) for t in self.top_ids]
            d["top_logprobs"] = [None if t is None else list(t) for t in (self.top_logprobs or [])]
        if self.completion_token_ids is not None:
            d["completion_token_ids"] = list(self.completion_token_ids)
        return d


@dataclass(frozen=True)
class Record:
    config: str
    prompt_id: str
    sample: int
    prompt_token_ids: Sequence[int]
    completion_token_ids: Sequence[int]
    seed: int | None = None
    sampler: Scores | None = None
    forced: Scores | None = None
    # decoded strings, so reports need no tokenizer; optional for trainer dumps
    prompt_tokens: Sequence[str] | None = None
    completion_tokens: Sequence[str] | None = None
    finish_reason: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.config, self.prompt_id, self.sample)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "config": self.config, "prompt_id": self.prompt_id, "sample": self.sample,
            "seed": self.seed, "prompt_token_ids": list(self.prompt_token_ids),
            "completion_token_ids": list(self.completion_token_ids),
            "finish_reason": self.finish_reason,
            "sampler": None if self.sampler is None else self.sampler.to_json(),
            "forced": None if self.forced is None else self.forced.to_json(),
        }
        if self.prompt_tokens is not None:
            d["prompt_tokens"] = list(self.prompt_tokens)
        if self.completion_tokens is not None:
            d["completion_tokens"] = list(self.completion_tokens)
        return d


def sort_key(record: Record) -> tuple[str, str, int]:
    """Records are sorted by (config, prompt id, sample) so comparison streams."""
    return record.key


@dataclass(frozen=True)
class Manifest:
    """The header line. Every field but `kind` may be empty in a trainer's dump;
    `compare` then warns instead of refusing (design.md section 7)."""

    kind: str  # "golden" | "obtained" | "trainer" | any producer name
    environment: dict[str, Any] = field(default_factory=dict)
    engine_args: dict[str, Any] = field(default_factory=dict)  # {"requested": {...}, "resolved": {...}}
    model: dict[str, Any] = field(default_factory=dict)
    suite: dict[str, Any] = field(default_factory=dict)
    batch_plan: dict[str, Any] = field(default_factory=dict)
    tool: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> "Manifest":
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise BadInput(f"{where}: trace header has no manifest 'kind'", "re-record the traces")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise BadInput(f"{where}: unknown manifest keys {sorted(unknown)}",
                           "the file was written by a newer parity-gate; upgrade parity-gate")
        for name in names - {"kind"}:
            if name in data and not isinstance(data[name], dict):
                raise BadInput(f"{where}: manifest '{name}' must be a mapping, got {type(data[name]).__name__}",
                               "re-record the traces")
        return cls(**data)


def trace_path(location: Path) -> Path:
    """A trace set is a folder holding traces.jsonl, or the file itself."""
    location = Path(location)
    return location / TRACE_FILE if location.is_dir() else location


def _reject_constant(name: str) -> float:
    if name == "-Infinity":
        return -math.inf  # valid: a token outside a processed top-k
    raise ValueError(f"{name} is not a valid logprob")


def _dumps(obj: Any) -> str:
    # allow_nan lets -inf through as -Infinity; NaN/+inf are refused in _check_floats.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def _check_floats(values: Sequence[Any], what: str) -> None:
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            _check_floats(v, what)
            continue
        if v != v or v == math.inf:
            raise BadInput(f"{what}: logprob {v} at index {i} is not valid (NaN or +inf)",
                           "write finite logprobs; -inf is allowed for tokens outside a processed top-k")


class TraceWriter:
    """Streams records into `<out>/traces.jsonl`, atomically.

    The file appears only when the writer closes without error; records
    must come sorted by (config, prompt id, sample)."""

    def __init__(self, out: Path, manifest: Manifest) -> None:
        # a folder (existing or not) gets traces.jsonl inside; only a *.jsonl path is the file itself
        self.path = Path(out) if Path(out).suffix == ".jsonl" else Path(out) / TRACE_FILE
        self._manifest = manifest
        self._ctx = atomic_open(self.path, "w")
        self._fh = None
        self._last: tuple[str, str, int] | None = None
        self.count = 0

    def __enter__(self) -> "TraceWriter":
        self._fh = self._ctx.__enter__()
        self._fh.write(_dumps({"format": FORMAT, "version": MAJOR, "minor": MINOR,
                               "manifest": self._manifest.to_json()}) + "\n")
        return self

    def write(self, record: Record) -> None:
        assert self._fh is not None, "use TraceWriter as a context manager"
        if self._last is not None and record.key <= self._last:
            raise BadInput(f"trace record {record.key} written after {self._last}",
                           "write records sorted by (config, prompt_id, sample), each key once")
        where = f"record {record.key}"
        for scores in (record.sampler, record.forced):
            if scores is not None:
                if scores.path not in PATHS:
                    raise BadInput(f"{where}: unknown scoring path {scores.path!r}", f"use one of {PATHS}")
                _check_floats(scores.logprobs, where)
                if scores.top_logprobs is not None:
                    _check_floats(scores.top_logprobs, where)
        obj = record.to_json()
        _record_from_json(obj, where)  # refuse now what a reader would refuse later (e.g. length mismatch)
        self._fh.write(_dumps(obj) + "\n")
        self._last = record.key
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self._fh.write(_dumps({"end": True, "records": self.count}) + "\n")
        return self._ctx.__exit__(exc_type, exc, tb)


class TraceReader:
    """Reads a trace file lazily: the header at open, records as they stream."""

    def __init__(self, location: Path) -> None:
        self.path = trace_path(location)
        if not self.path.exists():
            raise BadInput(f"trace file {self.path} does not exist",
                           "pass a folder written by 'parity-gate record' or 'check'")
        try:
            with open(self.path, "rb") as fh:
                first = fh.readline()
        except OSError as exc:
            raise BadInput(f"trace file {self.path} is not readable: {exc.strerror}",
                           "check the path and its permissions") from None
        if not first.strip():
            raise BadInput(f"{self.path}:1: trace file is empty", "re-record the traces")
        try:
            header = self._parse(first, 1)
        except BadInput:
            raise BadInput(f"{self.path}:1: not a parity-gate trace file (the first line is not a JSON header)",
                           "pass a folder written by 'parity-gate record' or the trace writer") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise BadInput(f"{self.path}:1: not a parity-gate trace file (no '{FORMAT}' header)",
                           "pass a folder written by 'parity-gate record' or the trace writer")
        version = header.get("version")
        if not isinstance(version, int) or version != MAJOR:
            raise BadInput(f"{self.path}:1: trace format version {version!r} is not supported (this parity-gate "
                           f"reads version {MAJOR})",
                           "re-record with this parity-gate, or use the parity-gate that wrote it")
        self.manifest = Manifest.from_json(header.get("manifest"), f"{self.path}:1")

    def _parse(self, raw: bytes, lineno: int) -> Any:
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError):
                why = "truncated or malformed JSON" if raw.rstrip(b"\n") == raw or raw.strip() else "empty line"
                msg = f"{why} ({exc.msg}; column {exc.colno})"
            elif isinstance(exc, UnicodeDecodeError):
                msg = f"not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at column {exc.start + 1})"
            else:
                msg = str(exc)
            raise BadInput(f"{self.path}:{lineno}: {msg}",
                           "the trace file is damaged; re-record it or restore it from CI artifacts") from None

    def records(self) -> Iterator[Record]:
        count = 0
        last: tuple[str, str, int] | None = None
        ended = False
        with open(self.path, "rb") as fh:
            fh.readline()
            for lineno, raw in enumerate(fh, start=2):
                if ended:
                    raise BadInput(f"{self.path}:{lineno}: data after the end marker", "re-record the traces")
                obj = self._parse(raw, lineno)
                if isinstance(obj, dict) and obj.get("end") is True:
                    if obj.get("records") != count:
                        raise BadInput(f"{self.path}:{lineno}: end marker says {obj.get('records')} records, "
                                       f"file has {count}", "the trace file is damaged; re-record it")
                    ended = True
                    continue
                record = _record_from_json(obj, f"{self.path}:{lineno}")
                if last is not None and record.key <= last:
                    raise BadInput(f"{self.path}:{lineno}: record {record.key} is out of order or duplicated",
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


def _require(obj: dict, key: str, types: type | tuple, where: str, optional: bool = False) -> Any:
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise BadInput(f"{where}: record has no '{key}'", "re-record the traces")
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and types is int):
        raise BadInput(f"{where}: '{key}' must be {getattr(types, '__name__', types)}, got {type(value).__name__}",
                       "re-record the traces")
    return value


def _scores_from_json(obj: Any, where: str, expected_len: int) -> Scores | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: scores must be a mapping", "re-record the traces")
    path = _require(obj, "path", str, where)
    if path not in PATHS:
        raise BadInput(f"{where}: unknown scoring path {path!r}", f"use one of {', '.join(PATHS)}")
    logprobs = _require(obj, "logprobs", list, where)
    if len(logprobs) != expected_len:
        raise BadInput(f"{where}: {path} scores have {len(logprobs)} logprobs for {expected_len} tokens",
                       "re-record the traces")
    top_ids = obj.get("top_ids")
    top_lps = obj.get("top_logprobs")
    if top_ids is not None and (not isinstance(top_ids, list) or not isinstance(top_lps, list)
                                or len(top_ids) != expected_len or len(top_lps) != expected_len):
        raise BadInput(f"{where}: {path} top-k lists do not match the {expected_len} tokens",
                       "re-record the traces")
    return Scores(path=path, logprobs=logprobs, top_ids=top_ids, top_logprobs=top_lps,
                  completion_token_ids=obj.get("completion_token_ids"))


def _record_from_json(obj: Any, where: str) -> Record:
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: record must be a JSON object", "re-record the traces")
    prompt_ids = _require(obj, "prompt_token_ids", list, where)
    completion_ids = _require(obj, "completion_token_ids", list, where)
    sampler = _scores_from_json(obj.get("sampler"), where, len(completion_ids))
    forced_raw = obj.get("forced")
    forced_completion = (forced_raw or {}).get("completion_token_ids") if isinstance(forced_raw, dict) else None
    n_forced = len(prompt_ids) + len(forced_completion if forced_completion is not None else completion_ids)
    forced = _scores_from_json(forced_raw, where, n_forced)
    return Record(
        config=_require(obj, "config", str, where), prompt_id=_require(obj, "prompt_id", str, where),
        sample=_require(obj, "sample", int, where), seed=obj.get("seed"),
        prompt_token_ids=prompt_ids, completion_token_ids=completion_ids,
        sampler=sampler, forced=forced, prompt_tokens=obj.get("prompt_tokens"),
        completion_tokens=obj.get("completion_tokens"), finish_reason=obj.get("finish_reason"))


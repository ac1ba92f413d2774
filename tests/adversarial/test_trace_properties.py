"""Property tests of the trace reader (docs/trace-format.md): records
generated within gate/schemas/trace-v1.schema.json read back identical
through TraceWriter; records just outside it raise BadInput naming the file
and line; and the reader's fast checks, the record model (gate/core/models.py) and the JSON
Schema specification (the jsonschema package) give the same answer."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.core import models, validation
from gate.core.errors import BadInput
from gate.core.trace import (
    FORMAT,
    MAJOR,
    MINOR,
    PATHS,
    TRACE_FILE,
    Manifest,
    Record,
    Scores,
    TraceReader,
    TraceWriter,
)
from gate.core.trace_format import dumps
from gate.core.trace_records import record_ok

ID_MAX = 2 ** 63 - 1
FLOAT_MAX = 1.7976931348623157e308
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------ within the schema
token_ids = st.lists(st.integers(0, ID_MAX), max_size=6)
number = st.floats(max_value=FLOAT_MAX, allow_nan=False) | st.integers(-1000, 1000)  # -inf included, +inf not
strings = st.text(max_size=6)  # hypothesis leaves surrogates out: every string is valid Unicode


@st.composite
def scores(draw: Any, n: int, nullable: bool = True, completion_ids: bool = False) -> Scores:
    logprobs = draw(st.lists(number | st.none() if nullable else number, min_size=n, max_size=n))
    top_ids = top_lps = None
    if draw(st.booleans()):
        widths = draw(st.lists(st.none() | st.integers(0, 4), min_size=n, max_size=n))
        top_ids = [None if w is None else draw(st.lists(st.integers(0, ID_MAX), min_size=w, max_size=w))
                   for w in widths]
        top_lps = [None if w is None else draw(st.lists(number, min_size=w, max_size=w)) for w in widths]
    cids = draw(st.none() | token_ids) if completion_ids else None
    return Scores(path=draw(st.sampled_from(PATHS)), logprobs=logprobs, top_ids=top_ids, top_logprobs=top_lps,
                  completion_token_ids=cids)


@st.composite
def records(draw: Any) -> Record:
    prompt, completion = draw(token_ids), draw(token_ids)
    forced = None
    if draw(st.booleans()):
        forced = draw(scores(len(prompt) + len(completion)))
        if draw(st.booleans()):  # obtained traces: forced scores the golden's completion, of its own length
            golden = draw(token_ids)
            forced = draw(scores(len(prompt) + len(golden)))
            forced = Scores(forced.path, forced.logprobs, forced.top_ids, forced.top_logprobs, golden)
    return Record(
        config=draw(strings), prompt_id=draw(strings), sample=draw(st.integers(0, 2 ** 64)),
        seed=draw(st.none() | st.integers(-(2 ** 63), 2 ** 64)),
        prompt_token_ids=prompt, completion_token_ids=completion,
        sampler=draw(st.none() | scores(len(completion))), forced=forced,
        own=draw(st.none() | scores(len(prompt) + len(completion))),
        prompt_tokens=draw(st.none() | st.lists(strings, max_size=4)),
        completion_tokens=draw(st.none() | st.lists(strings, max_size=4)),
        finish_reason=draw(st.none() | strings))


def _write(path: Path, recs: list[Record]) -> Path:
    unique = {r.key: r for r in recs}
    with TraceWriter(path, Manifest(kind="trainer")) as w:
        for key in sorted(unique):
            w.write(unique[key])
    return w.path


@SETTINGS
@given(recs=st.lists(records(), min_size=1, max_size=4))
def test_trace_properties__records_within_the_schema_read_back_identical(tmp_path, recs):
    path = _write(tmp_path / "t.jsonl", recs)
    written = {r.key: r for r in recs}
    back = list(TraceReader(path).records())
    assert [r.key for r in back] == sorted(written)
    for r in back:  # the same JSON text: -0.0, -inf, ints and None all survive
        assert dumps(r.to_json()) == dumps(written[r.key].to_json())


# ------------------------------------------------------------------ just outside the schema
INF, SURROGATE = "\x00+inf\x00", "\x00surrogate\x00"  # placeholders, spelled 1e400 and \ud800 in the line
bad_id = (st.text(max_size=3) | st.floats(allow_nan=False, allow_infinity=False)
          | st.integers(max_value=-1) | st.integers(min_value=ID_MAX + 1) | st.booleans() | st.none()
          | st.lists(st.integers(0, 9), max_size=2) | st.just({"id": 1}))
bad_logprob = (st.text(max_size=3) | st.booleans() | st.lists(number, min_size=1, max_size=2)
               | st.just({"lp": -1.0}) | st.just(INF) | st.integers(min_value=2 ** 1100, max_value=2 ** 2000))


def _places(obj: dict, kind: str) -> list[tuple]:
    """JSON paths in `obj` where a value of `kind` ('id' or 'logprob') sits."""
    out: list[tuple] = []
    if kind == "id":
        out += [(k, i) for k in ("prompt_token_ids", "completion_token_ids") for i in range(len(obj[k]))]
    for ch in ("sampler", "forced", "own"):
        s = obj.get(ch)
        if not s:
            continue
        if kind == "id":
            out += [(ch, "completion_token_ids", i) for i in range(len(s.get("completion_token_ids") or []))]
            out += [(ch, "top_ids", i, j) for i, row in enumerate(s.get("top_ids") or [])
                    for j in range(len(row or []))]
        else:
            out += [(ch, "logprobs", i) for i in range(len(s["logprobs"]))]
            out += [(ch, "top_logprobs", i, j) for i, row in enumerate(s.get("top_logprobs") or [])
                    for j in range(len(row or []))]
    return out


def _put(obj: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


@st.composite
def outside(draw: Any) -> tuple[dict, str]:
    """A record's JSON with one change that takes it just outside the format,
    and what the message must say."""
    obj = draw(records()).to_json()
    kinds = ["sample", "unknown key", "missing key", "surrogate", "path"]
    kinds += ["id"] * bool(_places(obj, "id")) + ["logprob"] * bool(_places(obj, "logprob"))
    kinds += ["length"] * any(obj.get(c) for c in ("sampler", "forced", "own"))
    kinds += ["row width"] * any((obj.get(c) or {}).get("top_ids") for c in ("sampler", "forced", "own"))
    kind = draw(st.sampled_from(kinds))
    if kind == "sample":
        obj["sample"] = draw(st.integers(max_value=-1) | st.booleans() | strings
                             | st.floats(allow_nan=False, allow_infinity=False))
        return obj, "record.sample "
    if kind == "unknown key":
        obj[draw(st.sampled_from(["typo", "Config", "samples"]))] = 1
        return obj, "record has unknown keys"
    if kind == "missing key":
        key = draw(st.sampled_from(["config", "prompt_id", "sample", "prompt_token_ids", "completion_token_ids"]))
        del obj[key]
        return obj, f"record has no '{key}'"
    if kind == "surrogate":
        key = draw(st.sampled_from(["config", "prompt_id"]))
        obj[key] = SURROGATE
        return obj, f"record.{key} is not valid Unicode"
    if kind == "path":
        channel = draw(st.sampled_from(["sampler", "forced", "own"]))
        obj[channel] = {"path": draw(strings.filter(lambda p: p not in PATHS)), "logprobs": []}
        return obj, f"record.{channel}.path must be one of"
    if kind in ("id", "logprob"):
        place = draw(st.sampled_from(_places(obj, kind)))
        _put(obj, place, draw(bad_id if kind == "id" else bad_logprob))
        return obj, "record." + place[0]
    channel = draw(st.sampled_from([c for c in ("sampler", "forced", "own") if obj.get(c)
                                    and (kind == "length" or obj[c].get("top_ids"))]))
    if kind == "length":
        obj[channel]["logprobs"].append(-1.0)
        return obj, "scores have"
    rows = obj[channel]["top_ids"]
    i = draw(st.sampled_from(range(len(rows))))
    rows[i] = (rows[i] or []) + [1]
    return obj, f"top_ids row {i} holds"


def _line(obj: dict) -> str:
    return dumps(obj).replace(json.dumps(INF), "1e400").replace(json.dumps(SURROGATE), '"\\ud800"')


def _file(path: Path, obj: dict) -> Path:
    header = {"format": FORMAT, "version": MAJOR, "minor": MINOR, "manifest": {"kind": "trainer"}}
    path.write_text("\n".join([dumps(header), _line(obj), dumps({"end": True, "records": 1})]) + "\n",
                    encoding="utf-8")
    return path


@SETTINGS
@given(case=outside())
def test_trace_properties__records_just_outside_the_schema_name_file_and_line(tmp_path, case):
    obj, needle = case
    path = _file(tmp_path / TRACE_FILE, obj)
    before = path.read_bytes()
    with pytest.raises(BadInput) as exc:
        list(TraceReader(path).records())
    assert exc.value.what.startswith(f"{path}:2: "), exc.value.what
    assert needle in exc.value.what, exc.value.what
    assert "\n" not in exc.value.line()
    assert path.read_bytes() == before


# ------------------------------------------------------------------ three views of the schema agree
_TRACE_SCHEMA = json.loads(resources.files("gate.schemas").joinpath("trace-v1.schema.json").read_text())
_RECORD_SCHEMA = {k: v for k, v in _TRACE_SCHEMA.items() if k != "oneOf"} | {"$ref": "#/$defs/Record"}
_SPEC = jsonschema.Draft202012Validator(_RECORD_SCHEMA)


def _has(value: Any, kinds: tuple) -> bool:
    if isinstance(value, kinds):
        return True
    if isinstance(value, dict):
        return any(_has(v, kinds) for v in value.values())
    if isinstance(value, list):
        return any(_has(v, kinds) for v in value)
    return False


@SETTINGS
@given(data=st.data())
def test_trace_properties__fast_checks_validator_and_specification_agree(data):
    obj = data.draw(st.builds(lambda r: r.to_json(), records()) | outside().map(lambda c: c[0]))
    obj = json.loads(_line(obj))  # exactly what a reader holds: 1e400 is now +inf, \ud800 a lone surrogate
    valid = validation.problem(models.Record, obj, "record") is None
    assert record_ok(obj, False, exact=True) is valid
    if not _has(obj, (bool,)):  # the fast path: no true/false literal on the line
        assert record_ok(obj, False, exact=False) is valid
    if _SPEC.is_valid(obj) is not valid:  # only where this project is stricter, by design
        problem = validation.problem(models.Record, obj, "record")
        assert ("must be an integer" in problem and "got the number" in problem) or "-digit integer" in problem, \
            problem

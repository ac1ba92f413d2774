"""The documented JSON Schemas accept what the gate writes."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from gate.core.trace import Manifest, Record, Scores, TraceWriter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _schema(name: str) -> dict:
    return json.loads(resources.files("gate.schemas").joinpath(name).read_text())


def test_schema__every_trace_line_validates(tmp_path):
    schema = _schema("trace-v1.schema.json")
    with TraceWriter(tmp_path, Manifest(kind="trainer")) as w:
        w.write(Record(config="c", prompt_id="p", sample=0, prompt_token_ids=[1, 2], completion_token_ids=[3],
                       sampler=Scores(path="decode", logprobs=[-0.5], top_ids=[[3, 4]], top_logprobs=[[-0.5, -1.0]]),
                       forced=Scores(path="prefill", logprobs=[None, -1.25, -0.5], completion_token_ids=[3])))
    lines = (tmp_path / "traces.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        jsonschema.validate(json.loads(line), schema)


def test_schema__rejects_a_record_with_an_unknown_path():
    schema = _schema("trace-v1.schema.json")
    bad = {"config": "c", "prompt_id": "p", "sample": 0, "prompt_token_ids": [1], "completion_token_ids": [],
           "sampler": {"path": "guess", "logprobs": []}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "verdicts").glob("*.json")))
def test_schema__report_fixture_verdicts_validate(name):
    jsonschema.validate(json.loads((FIXTURES / "verdicts" / name).read_text()), _schema("verdict.schema.json"))

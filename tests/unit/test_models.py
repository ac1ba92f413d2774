"""The typed models (gate/core/models.py): the committed JSON Schemas are
exactly what the models generate, and a document that breaks a model gets
one line naming the JSON path, what belongs there and what was found."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from gate.core.models import Bisect, Verdict
from gate.core.schema_docs import SCHEMAS, schema_of, schema_text
from gate.core.validation import problem

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "verdicts"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_models__committed_schema_is_what_the_model_generates(name):
    committed = resources.files("gate.schemas").joinpath(name).read_text(encoding="utf-8")
    assert committed == schema_text(name), f"gate/schemas/{name} is stale: run 'python -m gate.schemas'"
    jsonschema.Draft202012Validator.check_schema(schema_of(name))


def test_models__schema_check_entry_point_passes_on_the_committed_files():
    proc = subprocess.run([sys.executable, "-m", "gate.schemas", "--check"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_models__fixture_verdicts_are_valid(name):
    assert problem(Verdict, json.loads((FIXTURES / name).read_text()), "verdict") is None


def _verdict() -> dict:
    return json.loads(next(iter(sorted(FIXTURES.glob("*.json")))).read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda v: v.update(exit_code=True), "verdict.exit_code must be one of 0, 1, got true"),
    (lambda v: v.update(mode=None), "verdict.mode must be one of 'check', 'compare', got null"),
    (lambda v: v["checks"][0].update(bound=10 ** 400), "verdict.checks[0].bound must be a number, got a 401-digit "
                                                       "integer"),
    (lambda v: v["checks"][0].update(n_bad=True), "verdict.checks[0].n_bad must be an integer, got true"),
    (lambda v: v["checks"][0].update(value=math.nan), "verdict.checks[0].value must be a number or a string or "
                                                      "null, got the number NaN"),
    (lambda v: v["measures"]["per_config"].update({"a b": []}), "verdict.measures.per_config['a b'] must be an "
                                                                "object, got an array"),
    (lambda v: v.update(configs={"c": {"status": "pass", "reason": "r"}}), "verdict.configs.c has no 'notes'"),
])
def test_models__a_broken_verdict_gets_one_line_with_its_path(edit, message):
    v = _verdict()
    edit(v)
    assert problem(Verdict, v, "verdict") == message


def test_models__bisect_refuses_unknown_keys_and_short_candidates():
    doc = {"schema": "parity-gate/bisect", "version": 1, "mode": "releases", "package": "vllm", "on": "fail",
           "suite": "s.yaml", "good": "0.1", "bad": "0.2", "candidates": ["0.1", "0.2"], "engine_args": [],
           "done": True, "first_bad": "0.2", "last_good": "0.1", "release_notes": None, "golden": None,
           "errors": [], "timings": {"0.1": 1.5}, "probes": [{"name": "0.1", "status": "good"}]}
    assert problem(Bisect, doc, "bisect") is None
    assert problem(Bisect, dict(doc, extra=1), "bisect") == "bisect has unknown keys ['extra']"
    assert problem(Bisect, dict(doc, candidates=["x"]), "bisect") == "bisect.candidates must hold at least 2 items, got 1"
    assert problem(Bisect, dict(doc, probes=[{"name": "0.1", "status": "odd"}]), "bisect") == (
        "bisect.probes[0].status must be one of 'good', 'pass', 'changed', 'fail', 'skipped', 'not probed', "
        "got 'odd'")


def test_models__policy_schema_accepts_what_the_policy_accepts_and_refuses_what_it_refuses():
    from gate.core.errors import BadInput
    from gate.core.policy import parse_policy
    schema = schema_of("policy.schema.json")
    good = {"atol": 1.0e-3, "rtol": 0, "min_evidence": 0.5, "checks": {"forced.k3_kl": 1e-6, "sampler.logprobs_close": None},
            "per_config": {"hot": {"atol": 2.0e-3}}, "fail_on": "never", "unapplied_engine_args": "warn"}
    jsonschema.validate(good, schema)
    parse_policy(good, "p.yaml", configs={"hot"})
    for bad in ({"atol": -1}, {"checks": {"forced.logprobs_close": 1.0}}, {"checks": {"forced.k3kl": 1}},
                {"per_config": {"hot": {"fail_on": "never"}}}, {"min_evidence": 0}, {"fail_on": "always"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(BadInput):
            parse_policy(bad, "p.yaml", configs={"hot"})


def test_models__policy_problems_stay_one_short_line():
    from gate.core.errors import BadInput
    from gate.core.policy import parse_policy
    with pytest.raises(BadInput) as exc:
        parse_policy({"per_config": {"hot": {"fail_on": "never"}}}, "p.yaml", configs={"hot"})
    assert exc.value.what == "p.yaml (per_config.hot): unknown policy keys ['fail_on'] in a per_config entry"
    with pytest.raises(BadInput) as exc:
        parse_policy({"atol": 10 ** 400}, "p.yaml")
    assert exc.value.what == "p.yaml: policy 'atol' must be a non-negative number, got a 401-digit integer"


def test_models__the_readers_fast_key_sets_are_the_models_keys():
    from gate.core import models
    from gate.core.trace_records import RECORD_KEYS, SCORES_KEYS
    assert RECORD_KEYS == {f.alias or n for n, f in models.Record.model_fields.items()}
    assert SCORES_KEYS == {f.alias or n for n, f in models.Scores.model_fields.items()}

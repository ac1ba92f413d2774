"""`check` runs the update paths a suite declares (`weight_update:`,
docs/weight-update.md) after its comparison: one check per path in
verdict.json, rendered in comment.md and report.html.

Engine starts: 3 (the check's engine, then the engine updated in place
and the fresh engine on the new weights, both paths in each), reusing the
session's golden (tests/integration/conftest.py): ~115 s on 2 cores."""
from __future__ import annotations

import json

import pytest

from tests.integration.conftest import SUITE, gate


@pytest.mark.engine
def test_check_runs_the_suites_update_paths_one_check_each(cycle, models, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(model=models[0]) + f"""\
weight_update:
  from: {models[1]}
  max_tokens: 8
  paths:
    - {{via: reload, pause: keep}}
    - {{via: native, pause: wait, cache: clear}}
""")
    # the session's golden ends re-recorded with processed logprobs (conftest `cycle`)
    r = gate("check", "--suite", suite, "--golden", cycle["golden"].out, "--out", tmp_path / "r",
             "--engine-arg", "logprobs_mode=processed_logprobs")
    assert r.rc == 0, r.stdout + r.stderr[-3000:]
    v = json.loads((tmp_path / "r" / "verdict.json").read_text())
    assert v["verdict"] == "pass" and "2 weight-update paths match fresh engines" in v["headline"]
    paths = {c["id"]: c for c in v["checks"] if c["channel"] == "weight_update"}
    assert set(paths) == {"weight_update.reload/keep/clear-cache", "weight_update.native/wait/clear-cache"}
    for c in paths.values():
        assert c["status"] == "pass" and c["config"] is None and c["evidence"]["compared"] > 0, c
        assert c["value"] <= c["bound"] == 1e-4
    assert [p["name"] for p in v["weight_update"]["paths"]] == ["reload/keep/clear-cache", "native/wait/clear-cache"]
    # the release the update ran on (a diagnosis such as token_lost_at_resume depends on it)
    assert v["weight_update"]["vllm_version"] == v["candidate"]["manifest"]["environment"]["vllm_version"]
    comment = (tmp_path / "r" / "comment.md").read_text()
    assert "### Weight-update paths (0 failed of 2)" in comment and "reload/keep/clear-cache" in comment
    assert 'id="weight-update-table"' in (tmp_path / "r" / "report.html").read_text()

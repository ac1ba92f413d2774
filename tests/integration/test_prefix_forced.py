"""Prefix caching and the forced channel, on the real CPU engine: with prefix caching on, `prompt_logprobs` depend on what was cached
before (vLLM issues 42019, 42245). `check` replays the golden's batch plan,
so a run with the golden's cache settings hits the cache where the golden
did and its teacher-forced scores are bitwise the golden's. The same check
asks for `async_scheduling=true`, which the CPU build resolves to false: the
verdict names the knob as requested but not applied, and fails on it alone."""
from __future__ import annotations

import json

import pytest

from tests.integration.conftest import gate

pytestmark = pytest.mark.engine

BLOCK = 128  # the CPU build's KV block size
SHARED = [(7 * i) % 300 + 20 for i in range(BLOCK + 12)]  # more than one full block, shared by every prompt

SUITE = """\
name: prefix-forced
model: {model}
engine:
  dtype: float32
  seed: 0
  max_model_len: 256
  logprobs_mode: raw_logprobs
  enable_prefix_caching: true
prompts:
{prompts}
sampling:
  - name: greedy
    temperature: 0.0
    max_tokens: 8
    logprobs: 3
  - name: hot
    temperature: 0.8
    max_tokens: 8
    seed: 3
    n: 2
    logprobs: 3
"""


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("prefix-forced")
    prompts = "\n".join(f"  - id: p{i}\n    token_ids: {SHARED + [40 + i, 50 + i, 60 + i]}" for i in range(4))
    suite = root / "suite.yaml"
    suite.write_text(SUITE.format(model=models[0], prompts=prompts))
    out = {"record": gate("record", "--suite", suite, "--out", root / "golden")}
    assert out["record"].rc == 0, out["record"].stderr[-3000:]
    out["check"] = gate("check", "--suite", suite, "--golden", root / "golden", "--out", root / "check",
                        "--engine-arg", "async_scheduling=true")
    return out


def test_prefix_forced__the_replayed_plan_keeps_forced_scores_bitwise_with_prefix_caching_on(runs):
    v = json.loads((runs["check"].out / "verdict.json").read_text())
    assert v["candidate"]["manifest"]["engine_args"]["resolved"]["enable_prefix_caching"] is True
    for config in ("greedy", "hot"):
        forced = v["measures"]["per_config"][config]["forced"]
        assert forced["tokens"] == forced["reference_tokens"] > 0
        assert forced["bitwise_equal_fraction"] == 1.0 and forced["max_abs_diff"] == 0.0
        assert forced["prompt_tokens"] > 4 * BLOCK  # the shared block was scored, and equal (max 0 above)
        assert forced["prompt_max_abs_diff"] == 0.0


def test_prefix_forced__async_scheduling_asked_for_and_ignored_is_named_and_fails(runs):
    run = runs["check"]
    assert run.rc == 1, run.stdout + run.stderr[-2000:]
    v = json.loads((run.out / "verdict.json").read_text())
    failed = [c for c in v["checks"] if c["status"] == "fail"]
    assert [c["id"] for c in failed] == ["engine.requested_applied"], [c["message"] for c in failed]
    assert "async_scheduling: requested true, resolved false: this engine ignored it" in failed[0]["message"]
    assert "async_scheduling: requested true, resolved false" in run.stdout
    assert "async_scheduling" in (run.out / "comment.md").read_text()

"""What the golden and the suite already tell is refused before the engine
starts (docs/errors.md), and an engine limitation met while the
engine runs ends in one line with its cause and fix, an error.json, and no
empty leftovers."""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pytest

from gate.core.errors import BadInput, StaleGolden
from gate.core.trace import read_trace
from gate.run.golden import match_workload
from gate.run.suite import load_suite
from tests._util import run_cli, tree
from tests.integration.test_errors import VALID_SUITE, Ctx

OTHER_SUITE = """\
name: other
model: {m0}
engine:
  dtype: float32
prompts:
  - id: x
    token_ids: [9, 8, 7]
sampling:
  - name: hot
    temperature: 0.7
    max_tokens: 3
    logprobs: 2
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from gate.run.tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    return build_tiny_model(root / "m0", seed=0), build_tiny_model(root / "m1", seed=1)


@pytest.fixture
def ctx(models, tmp_path) -> Ctx:
    return Ctx(tmp_path, *models)


def _named(ctx: Ctx, path: Path, name: str) -> None:
    """The crafted golden names the suite 'suite': name it as `record` of suite `name` would."""
    ctx.damage_json(path, 1, lambda header: header["manifest"]["suite"].__setitem__("name", name))


def _args(ctx: Ctx) -> argparse.Namespace:
    return argparse.Namespace(suite=Path("suite.yaml"))


# ------------------------------------------------------------------ item 10
def test_refusals__golden_of_another_suite_refused_before_the_engine(ctx):
    ctx.suite(OTHER_SUITE, "other.yaml")
    _named(ctx, ctx.golden("golden", suite="other.yaml"), "other")
    ctx.suite()
    before = tree(ctx.d)
    t0 = time.monotonic()
    proc = run_cli(*ctx.check(), cwd=ctx.d)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("parity-gate: bad input: --golden golden shares no (config, prompt id) with suite "
                           "'suite' (suite.yaml): it was recorded from suite 'other'; configs 'hot' vs 'greedy'; "
                           "prompts 'x' vs 'a', 'b'"), line
    assert "parity-gate record --suite suite.yaml --out NEW_GOLDEN_DIR" in line
    assert "--update" not in line  # never overwrite another suite's golden
    assert tree(ctx.d) == before, "nothing may be written before the refusal"
    assert elapsed < 15, f"took {elapsed:.1f}s: the engine must not start"


def test_refusals__shared_configs_but_no_shared_prompt_is_refused(ctx):
    ctx.suite()
    ctx.golden()
    suite = load_suite(ctx.d / ctx.suite(VALID_SUITE.replace("id: a", "id: c").replace("id: b", "id: d")))
    golden = read_trace(ctx.d / "golden").manifest
    with pytest.raises(BadInput) as err:
        match_workload(suite, golden, Path("golden"), _args(ctx).suite, [])
    assert "shared configs 'greedy'; prompts 'a', 'b' vs 'c', 'd'" in err.value.what


def test_refusals__partial_overlap_proceeds_and_says_what_the_golden_does_not_cover(ctx, caplog):
    ctx.suite()
    ctx.golden()
    grown = VALID_SUITE.replace("sampling:", "  - id: new\n    token_ids: [6, 7]\nsampling:")
    suite = load_suite(ctx.d / ctx.suite(grown))
    golden = read_trace(ctx.d / "golden").manifest
    keys = [("greedy", "a", 0), ("greedy", "b", 0)]
    with caplog.at_level(logging.WARNING, logger="gate"):
        workload = match_workload(suite, golden, Path("golden"), _args(ctx).suite, keys)
    assert workload.include == set(keys)
    assert workload.new == ["prompt new"]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "the golden does not cover 1 prompts ('new') of suite 'suite'" in said
    assert "parity-gate record --suite suite.yaml --out golden --update" in said  # its own golden: update it


def test_refusals__another_suites_golden_is_never_advised_for_update(ctx, caplog):
    """A golden of another suite that shares a (config, prompt id) goes on,
    with a warning; but a stale config in it is re-recorded into a new
    folder, never with --update into that suite's golden."""
    ctx.suite(VALID_SUITE, "other.yaml")
    _named(ctx, ctx.golden("golden", suite="other.yaml"), "other")
    golden = read_trace(ctx.d / "golden").manifest
    suite = load_suite(ctx.d / ctx.suite(VALID_SUITE.replace("max_tokens: 3", "max_tokens: 4")))
    with caplog.at_level(logging.WARNING, logger="gate"), pytest.raises(StaleGolden) as err:
        match_workload(suite, golden, Path("golden"), _args(ctx).suite, [])
    assert "--update" not in err.value.hint
    assert "parity-gate record --suite suite.yaml --out suite-golden" in err.value.hint
    assert "golden is the golden of suite 'other'" in err.value.hint
    assert "was recorded from suite 'other', not suite 'suite'" in caplog.text


# ------------------------------------------------------------------ item 9
LONG_SUITE = """\
model: {m0}
engine:
  dtype: float32
  max_model_len: 256
  max_num_batched_tokens: 64
  max_num_seqs: 8
prompts:
  - id: long
    token_ids: [%s]
sampling:
  - name: hot
    temperature: 0.7
    max_tokens: 3
    seed: 7
    logprobs: 2
""" % ", ".join(str(10 + i % 300) for i in range(150))


def test_refusals__seeded_prompt_longer_than_a_step_refused_before_the_engine(ctx):
    pytest.importorskip("vllm")
    ctx.suite(LONG_SUITE)
    before = tree(ctx.d)
    proc = run_cli(*ctx.record(), cwd=ctx.d, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.splitlines()[-1]
    assert line.startswith("parity-gate: bad input: suite.yaml:8: prompt 'long' has 150 token ids, more than one "
                           "engine step holds (max_num_batched_tokens 64), and sampling config 'hot' is seeded"), line
    assert "--engine-arg max_num_batched_tokens=150" in line and "-v" not in line and "resume" not in line
    assert "Loading safetensors" not in proc.stderr, "the engine must not load the model"
    assert tree(ctx.d) == before


BATCH_SUITE = """\
model: {m0}
engine:
  dtype: float32
  seed: 0
  max_model_len: 256
  max_num_batched_tokens: 64
  max_num_seqs: 8
prompts:
  - id: a
    token_ids: [%s]
  - id: b
    token_ids: [%s]
sampling:
  - name: hot
    temperature: 0.7
    max_tokens: 3
    seed: 7
    logprobs: 2
""" % (", ".join(str(10 + i) for i in range(40)), ", ".join(str(60 + i) for i in range(40)))


@pytest.mark.engine
@pytest.mark.slow
def test_refusals__split_met_while_running_names_cause_and_fix_then_the_fix_runs(ctx):
    """Two 40-token prompts in one call of a 64-token budget: the second's
    prefill is split in the first step. That depends on the batch, so the
    engine meets it: exit 3 with the cause and the fix (no '-v', no resume),
    error.json in --out, no checkpoint left. The hint's fix then records,
    into the same --out, a golden whose fingerprint names its libraries and
    sampler."""
    ctx.suite(BATCH_SUITE)
    proc = run_cli("record", "--suite", "suite.yaml", "--out", "golden", cwd=ctx.d, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = proc.stderr.splitlines()[-1]
    assert line.startswith("parity-gate: engine limitation: vLLM split the prefill of a seeded request during "
                           "free-running generation (config 'hot': 2 requests with 80 prompt tokens in one call, "
                           "max_num_batched_tokens 64)"), line
    assert "run with -v" not in line and "resume" not in line
    assert "--engine-arg max_num_batched_tokens=82" in line
    error = json.loads((ctx.d / "golden" / "error.json").read_text())
    assert error["kind"] == "engine limitation" and error["exit_code"] == 3
    assert not (ctx.d / ".golden.run").exists(), "no checkpoint may be left behind"
    assert not (ctx.d / "golden" / "traces.jsonl").exists()

    fixed = run_cli("record", "--suite", "suite.yaml", "--out", "golden", "--engine-arg",
                    "max_num_batched_tokens=82", cwd=ctx.d, timeout=600)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert not (ctx.d / "golden" / "error.json").exists()
    env = read_trace(ctx.d / "golden").manifest.environment
    from importlib import metadata

    assert env["transformers_version"] == metadata.version("transformers")
    assert env["tokenizers_version"] == metadata.version("tokenizers")
    assert env["sampler_backend"] == "cpu-native"  # read off the running engine's model runner

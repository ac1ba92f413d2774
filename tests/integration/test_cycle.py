"""record -> pass -> drift -> fail -> update -> pass, on the real vLLM CPU engine."""
from __future__ import annotations

import json

import pytest

from tests.integration.conftest import gate

pytestmark = pytest.mark.engine

DRIFT_MEASURES = ("max_abs_diff", "mean_abs_diff", "p99_abs_diff", "k1_kl", "k2", "k3_kl", "chi2", "clip_fraction",
                  "prob_diff_max", "log_ppl_diff_max", "log_ppl_diff_mean", "prompt_max_abs_diff")


def _verdict(run):
    return json.loads((run.out / "verdict.json").read_text())


def test_check__unchanged_engine_passes_with_every_drift_measure_exactly_zero(cycle):
    run = cycle["unchanged"]
    assert run.rc == 0, run.stderr[-2000:]
    assert run.stdout.startswith("PASS: all ")
    v = _verdict(run)
    assert v["verdict"] == "pass" and v["exit_code"] == 0
    for channel in ("forced", "sampler"):
        m = v["measures"]["overall"][channel]
        assert m["tokens"] > 0
        for key in DRIFT_MEASURES:
            if key == "prompt_max_abs_diff" and channel == "sampler":
                assert m[key] is None  # the decode path has no prompt positions
                continue
            assert m[key] == 0.0, (channel, key, m[key])
        assert m["bitwise_equal_fraction"] == 1.0
        assert m["mult_prob_error"] == 1.0
        assert m["top1_agreement"] == 1.0 and m["topk_overlap"] == 1.0
    fr = v["measures"]["overall"]["free_run"]
    assert fr["exact_match_rate"] == 1.0
    assert not [r for r in v["environment_diff"] if r["differs"]]


def test_check__writes_obtained_traces_reports_and_verdict(cycle):
    out = cycle["unchanged"].out
    for name in ("traces.jsonl", "verdict.json", "comment.md", "report.html", "summary.md"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".*.partial"))
    from gate.core.trace import read_trace

    obtained = read_trace(out)
    assert obtained.manifest.kind == "obtained"
    records = list(obtained.records())
    assert len(records) == 3 * 1 + 3 * 2  # 3 prompts x (greedy n=1 + hot n=2)
    assert all(r.forced is not None and r.forced.path == "prefill" for r in records)
    assert all(r.sampler is not None and r.sampler.path == "decode" for r in records)


def test_check__processed_logprobs_fails_naming_the_sampled_token_checks(cycle):
    run = cycle["processed"]
    assert run.rc == 1, run.stderr[-2000:]
    assert "FAIL sampled-token logprobs [hot]" in run.stdout
    v = _verdict(run)
    failed = {(c["id"], c["config"]) for c in v["checks"] if c["status"] == "fail"}
    assert ("sampler.logprobs_close", "hot") in failed
    # teacher-forced prefill scores are raw in both modes: they must not move
    assert not any(cid.startswith("forced.") for cid, _ in failed)
    assert v["measures"]["per_config"]["hot"]["sampler"]["max_abs_diff"] > 1e-2
    # greedy (temperature 0) sampler logprobs are the same in both modes
    assert v["measures"]["per_config"]["greedy"]["sampler"]["max_abs_diff"] == 0.0
    moved = {r["key"]: (r["reference"], r["candidate"]) for r in v["environment_diff"] if r["differs"]}
    assert moved == {"logprobs_mode": ("raw_logprobs", "processed_logprobs")}
    assert "changed: logprobs_mode: 'raw_logprobs' -> 'processed_logprobs'" in run.stdout


def test_check__bfloat16_against_float32_golden_fails_on_teacher_forced_scores(cycle):
    run = cycle["bf16"]
    assert run.rc == 1, run.stderr[-2000:]
    v = _verdict(run)
    failed = {c["id"] for c in v["checks"] if c["status"] == "fail"}
    assert "forced.logprobs_close" in failed
    assert v["measures"]["overall"]["forced"]["max_abs_diff"] > 1e-3
    assert any(r["key"] == "dtype" and r["differs"] for r in v["environment_diff"])


def test_record__update_reports_created_updated_unused_and_then_passes(cycle):
    update = cycle["update"]
    assert update.rc == 0, update.stderr[-2000:]
    assert "0 created, 9 updated, 0 unused" in update.stdout
    assert cycle["after_update"].rc == 0, cycle["after_update"].stdout


def test_compare__golden_against_obtained_gives_the_check_verdict(cycle, tmp_path):
    golden_before_update = cycle["processed"]  # its obtained traces vs the unchanged run's
    run = gate("compare", cycle["unchanged"].out, golden_before_update.out, "--out", tmp_path / "cmp")
    assert run.rc == 1, run.stderr
    v = json.loads((tmp_path / "cmp" / "verdict.json").read_text())
    assert v["mode"] == "compare"
    assert v["measures"]["per_config"]["hot"]["sampler"]["max_abs_diff"] == pytest.approx(
        json.loads((golden_before_update.out / "verdict.json").read_text())
        ["measures"]["per_config"]["hot"]["sampler"]["max_abs_diff"])


def test_check__fail_on_never_reports_but_exits_zero(cycle, suite, tmp_path):
    # no engine needed to prove the policy path: compare the failing traces again
    run = gate("compare", cycle["unchanged"].out, cycle["processed"].out, "--out", tmp_path / "r",
               "--fail-on", "never")
    assert run.rc == 0
    v = json.loads((tmp_path / "r" / "verdict.json").read_text())
    assert v["verdict"] == "fail" and v["exit_code"] == 0


def test_check__real_verdict_validates_against_the_documented_schema(cycle):
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("gate.schemas").joinpath("verdict.schema.json").read_text())
    for name in ("unchanged", "processed", "bf16"):
        jsonschema.validate(_verdict(cycle[name]), schema)


def test_examples__trainer_dump_then_compare_reports_rl_measures(cycle, models, tmp_path):
    """examples/trainer_dump.py as docs/trace-format.md tells a user to run it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.parent
    rollouts = cycle["unchanged"].out  # a vLLM run of the suite: sampler logprobs of its own tokens
    p = subprocess.run([sys.executable, str(root / "examples" / "trainer_dump.py"), "--rollouts", str(rollouts),
                        "--model", str(models[0]), "--out", str(tmp_path / "trainer")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    run = gate("compare", rollouts, tmp_path / "trainer", "--out", tmp_path / "rl")
    assert run.rc == 0, run.stdout + run.stderr[-2000:]  # float32 trainer vs vLLM CPU: ~1e-5, inside 1e-4
    v = json.loads((tmp_path / "rl" / "verdict.json").read_text())
    rl = v["rl"]
    assert rl is not None and rl["tokens"] > 0
    assert 0 <= rl["k3_kl"] < 1e-8 and rl["clip_fraction"] == 0.0 and rl["tis_truncated_fraction"] == 0.0
    assert v["measures"]["overall"]["sampler"]["path_candidate"] == "trainer"


# ------------------------------------------------------------ a changed random stream
def test_check__changed_random_stream_passes_on_teacher_forced_and_in_run_evidence(stream):
    """Every rollout of 'hot' diverges at position 0, so its sampler channel
    compares (almost) nothing: said in words, vouched for by the in-run
    semantics, and the verdict still passes on evidence."""
    run = stream["raw"]
    assert run.rc == 0, run.stdout + run.stderr[-2000:]
    v = _verdict(run)
    assert v["verdict"] == "pass"
    hot = v["measures"]["per_config"]["hot"]
    assert hot["free_run"]["diverged_at_start"] * 2 > hot["free_run"]["sequences"]
    assert hot["forced"]["tokens"] == hot["forced"]["reference_tokens"] > 0
    assert hot["forced"]["max_abs_diff"] == 0.0
    sampler = {c["id"]: c for c in v["checks"] if c["config"] == "hot" and c["channel"] == "sampler"}
    assert sampler and all(c["status"] == "not_comparable" for c in sampler.values())
    sem = next(c for c in v["checks"] if c["id"] == "sampler.semantics" and c["config"] == "hot")
    assert sem["status"] == "pass" and sem["evidence"]["compared"] >= 24
    assert hot["semantics"]["reference_mode"] == hot["semantics"]["candidate_mode"] == "raw"
    note = next(n for n in v["evidence_notes"] if "'hot'" in n)
    assert "random stream changed" in note and "semantics checked in-run instead: raw -> raw" in note
    assert v["configs"]["hot"]["status"] == "pass"
    assert "not comparable: sampler channel not comparable for 'hot'" in run.stdout
    assert "not comparable" in (run.out / "comment.md").read_text()


def test_check__changed_random_stream_with_processed_logprobs_fails_naming_the_semantics(stream):
    """raw -> processed across a bump whose stream changed: the sampler channel
    has nothing to compare, the in-run relation catches it."""
    run = stream["processed"]
    assert run.rc == 1, run.stdout + run.stderr[-2000:]
    v = _verdict(run)
    sem = next(c for c in v["checks"] if c["id"] == "sampler.semantics" and c["config"] == "hot")
    assert sem["status"] == "fail", sem["message"]
    assert "golden raw" in sem["message"] and "run processed" in sem["message"]
    hot = v["measures"]["per_config"]["hot"]["semantics"]
    assert hot["candidate"]["mean_residual"] > 0.02 and abs(hot["reference"]["mean_residual"]) < 1e-6
    assert "FAIL in-run sampler semantics [hot]" in run.stdout
    # greedy is unaffected by the mode: teacher-forced and sampler stay exact
    greedy = v["measures"]["per_config"]["greedy"]
    assert greedy["forced"]["max_abs_diff"] == 0.0 and greedy["sampler"]["max_abs_diff"] == 0.0

"""Pure parts of gate.diagnose: planning ablations from a verdict, and naming
the cause from (fake) ablation outcomes."""
from __future__ import annotations

import json
from pathlib import Path

from gate.diagnose import Ablation, AblationOutcome, diagnose, plan_ablations, summarize


def _row(key, ref, cand, group="engine"):
    return {"key": key, "group": group, "reference": ref, "candidate": cand, "differs": ref != cand}


def _verdict(rows, requested=None, env=None, forced=0.0, sampler=0.745):
    ch = lambda x: {"max_abs_diff": x, "mean_abs_diff": x / 10, "k3_kl": x * x / 2, "bitwise_equal_fraction": 0.3,
                    "tolerance": {"atol": 1e-4, "rtol": 0.0}}
    return {"environment_diff": rows,
            "reference": {"manifest": {"engine_args": {"requested": requested or {}}, "environment": {"env": env or {}}}},
            "measures": {"overall": {"forced": ch(forced), "sampler": ch(sampler), "free_run": {"exact_match_rate": 1}}}}


def test_plan__one_ablation_per_engine_knob_then_all():
    v = _verdict([_row("logprobs_mode", "raw_logprobs", "processed_logprobs"), _row("dtype", "float32", "bfloat16"),
                  _row("block_size", 128, 128)])
    plan, fixed = plan_ablations(v)
    assert [a.name for a in plan] == ["logprobs_mode", "dtype", "all"]
    assert plan[0].engine_args == {"logprobs_mode": "raw_logprobs"}
    assert plan[-1].engine_args == {"logprobs_mode": "raw_logprobs", "dtype": "float32"}
    assert fixed == []


def test_plan__head_dtype_is_ablated_through_hf_overrides():
    v = _verdict([_row("hf_overrides", {"head_dtype": "float32"}, {}), _row("head_dtype", "float32", "default (model dtype)")],
                 requested={"dtype": "bfloat16", "hf_overrides": {"head_dtype": "float32"}})
    plan, _ = plan_ablations(v)
    assert len(plan) == 1
    assert plan[0].engine_args == {"hf_overrides": {"head_dtype": "float32"}}
    assert set(plan[0].knobs) == {"hf_overrides", "head_dtype"}


def test_plan__versions_are_not_ablatable_and_env_knobs_are():
    v = _verdict([_row("vllm_version", "0.31.0", "0.32.0", "environment"),
                  _row("env.VLLM_BATCH_INVARIANT", None, "1", "environment"),
                  _row("batch_invariant", False, True)])
    plan, fixed = plan_ablations(v)
    assert [f["key"] for f in fixed] == ["vllm_version"]
    envs = [a.env for a in plan if a.name != "all"]
    assert {"VLLM_BATCH_INVARIANT": None} in envs and {"VLLM_BATCH_INVARIANT": "0"} in envs


def _outcome(ablation, verdict, sampler):
    return AblationOutcome(ablation, "ran", verdict=verdict,
                           measures={"forced": {"max_abs_diff": 0.0}, "sampler": {"max_abs_diff": sampler}})


def test_summarize__names_the_single_knob_that_restores_parity():
    v = _verdict([_row("logprobs_mode", "raw_logprobs", "processed_logprobs")])
    plan, fixed = plan_ablations(v)
    d = summarize({"forced": {"max_abs_diff": 0.0}, "sampler": {"max_abs_diff": 0.745}},
                  [_outcome(plan[0], "pass", 0.0)], fixed, None)
    assert d["kind"] == "config"
    assert d["summary"].startswith("likely cause: logprobs_mode raw_logprobs -> processed_logprobs")
    assert "sampler max abs diff 0.745 -> 0" in d["summary"]
    assert d["findings"][0]["restores_parity"] is True
    json.dumps(d)  # verdict.json must hold it


def test_summarize__nothing_restores_means_numeric_with_drift_start():
    v = _verdict([_row("vllm_version", "0.31.0", "0.32.0", "environment"), _row("enforce_eager", False, True)])
    plan, fixed = plan_ablations(v)
    start = {"forced": {"sequences_drifting": 3, "earliest_position": 2, "median_first_position": 4.0},
             "sampler": {"sequences_drifting": 0, "earliest_position": None}, "prompt_max_abs_diff": 1e-3}
    d = summarize({"forced": {"max_abs_diff": 0.01}}, [_outcome(plan[0], "fail", 0.01)], fixed, start)
    assert d["kind"] == "numeric"
    assert "numeric or version-internal" in d["summary"] and "vllm_version 0.31.0 -> 0.32.0" in d["summary"]
    assert "earliest at completion position 2" in d["summary"]
    assert d["findings"][0]["restores_parity"] is False


def test_diagnose__budget_bounds_the_ablations(tmp_path: Path):
    v = _verdict([_row("dtype", "float32", "bfloat16"), _row("max_num_seqs", 256, 4)])
    now = [0.0]
    calls = []

    def runner(ablation: Ablation, out: Path, left: float) -> AblationOutcome:
        calls.append((ablation.name, left))
        now[0] += 40.0
        return _outcome(ablation, "fail", 0.1)

    d = diagnose(suite=tmp_path / "s.yaml", golden=tmp_path / "g", verdict=v, work_dir=tmp_path / "w",
                 budget_s=60, runner=runner, clock=lambda: now[0])
    assert [c[0] for c in calls] == ["dtype", "max_num_seqs"]
    assert calls[0][1] == 60 and calls[1][1] == 20
    statuses = [f["status"] for f in d["findings"]]
    assert statuses == ["ran", "ran", "skipped"]
    assert d["kind"] == "undetermined"


def test_diagnose__all_together_is_skipped_once_a_single_knob_restores(tmp_path: Path):
    v = _verdict([_row("dtype", "float32", "bfloat16"), _row("max_num_seqs", 256, 4)])
    seen = []

    def runner(ablation, out, left):
        seen.append(ablation.name)
        return _outcome(ablation, "pass" if ablation.name == "dtype" else "fail", 0.0 if ablation.name == "dtype" else 0.1)

    d = diagnose(suite=tmp_path / "s.yaml", golden=tmp_path / "g", verdict=v, work_dir=tmp_path / "w", runner=runner)
    assert seen == ["dtype", "max_num_seqs"]
    assert "dtype float32 -> bfloat16" in d["summary"] and "max_num_seqs" not in d["summary"]

"""Pure parts of gate.studies.diagnose: planning ablations from a verdict, and naming
the cause from (fake) ablation outcomes."""
from __future__ import annotations

import json
from pathlib import Path

from gate.run.child import error_line, is_gpu_memory_error
from gate.studies.ablations import Ablation, AblationOutcome, plan_ablations
from gate.studies.diagnose import diagnose, summarize

PASS_VERDICT = Path(__file__).resolve().parents[1] / "fixtures" / "verdicts" / "pass.json"


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


# ---------------------------------------------------------------- failed ablations and child processes
NCCL_NOISE = ("[rank0]:[W1127 11:02:03.123456789 ProcessGroupNCCL.cpp:1496] Warning: WARNING: destroy_process_group() "
              "was not called before program exit, which can leak resources.")


def test_error_line__the_cli_error_and_its_cause_not_the_nccl_warning_after_them():
    log = "\n".join([
        "INFO 11-27 11:02:00 [core.py:95] Initializing a V1 LLM engine",
        "ERROR 11-27 11:02:01 [core.py:700] EngineCore failed to start.",
        "Traceback (most recent call last):",
        '  File "vllm/v1/engine/core.py", line 691, in run_engine_core',
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
        "initializing the engine.",
        "parity-gate: infrastructure failure: vLLM engine failed to start: RuntimeError: Engine core initialization "
        "failed. See root cause above. Failed core proc(s): {} (hint: run with -v for the engine log)",
        NCCL_NOISE, ""])
    line = error_line(log)
    assert line.startswith("parity-gate: infrastructure failure: vLLM engine failed to start")
    assert "cause in the log: ValueError: No available memory for the cache blocks" in line
    assert "ProcessGroupNCCL" not in line
    assert is_gpu_memory_error(log)


def test_error_line__an_exception_without_a_cli_line():
    log = "Traceback (most recent call last):\n  File \"a.py\", line 3\ntorch.OutOfMemoryError: CUDA out of memory. " \
          "Tried to allocate 20.00 GiB\n" + NCCL_NOISE + "\n\n"
    assert error_line(log).startswith("torch.OutOfMemoryError: CUDA out of memory")


def test_error_line__the_cli_line_alone_when_it_already_names_the_exception():
    log = "parity-gate: bad input: engine args rejected by vLLM: ValueError: max_model_len too large\n" + NCCL_NOISE
    assert error_line(log) == ("parity-gate: bad input: engine args rejected by vLLM: ValueError: max_model_len too "
                               "large")


def _fake_child(tmp_path: Path) -> Path:
    """Stands in for `python -m gate`: logs its start and end, exits 3 with a
    real-looking error followed by noise for the ablation named 'broken',
    and leaves a grandchild running (as a vLLM engine-core process might)."""
    script = tmp_path / "fake_gate.py"
    script.write_text(f"""
import json, os, shutil, subprocess, sys, time
events = {str(tmp_path / 'events.jsonl')!r}
args = sys.argv[1:]
out = args[args.index('--out') + 1]
broken = any('broken' in a for a in args)
helpers = {str(tmp_path / 'helpers.txt')!r}
def running(pid):
    try:
        with open(f'/proc/{{pid}}/stat') as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False
def note(what):
    pids = [int(x) for x in open(helpers).read().split()] if os.path.exists(helpers) else []
    with open(events, 'a') as fh:
        fh.write(json.dumps({{'what': what, 'out': os.path.basename(out), 't': time.time(),
                             'helpers_running': [p for p in pids if running(p)]}}) + '\\n')
note('start')
# a helper process in the same process group that outlives its parent
helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
with open(helpers, 'a') as fh:
    fh.write(f'{{helper.pid}}\\n')
time.sleep(0.3)
if broken:
    sys.stderr.write('Traceback (most recent call last):\\n  File "vllm/engine.py", line 9\\n')
    sys.stderr.write('ValueError: No available memory for the cache blocks. Try increasing '
                     '`gpu_memory_utilization` when initializing the engine.\\n')
    sys.stderr.write('parity-gate: infrastructure failure: vLLM engine failed to start: RuntimeError: Engine core '
                     'initialization failed. See root cause above. (hint: run with -v for the engine log)\\n')
    sys.stderr.write({NCCL_NOISE!r} + '\\n')
    note('end')
    sys.exit(3)
os.makedirs(out, exist_ok=True)
if any('garbled' in a for a in args):
    open(os.path.join(out, 'verdict.json'), 'w').write('{{}}')
else:
    shutil.copyfile({str(PASS_VERDICT)!r}, os.path.join(out, 'verdict.json'))
note('end')
""")
    return script


def test_subprocess_runner__ablations_run_one_at_a_time_and_show_the_real_error(tmp_path: Path):
    import sys

    from gate.studies.diagnose import subprocess_runner

    v = _verdict([_row("dtype", "float32", "bfloat16"), _row("enforce_eager", False, True)])
    plan, _ = plan_ablations(v)
    broken = Ablation("broken", ("dtype",), {"dtype": "broken"}, {}, "dtype float32 -> bfloat16")
    runner = subprocess_runner(tmp_path / "s.yaml", tmp_path / "g", [], log_dir=tmp_path / "logs",
                               program=[sys.executable, str(_fake_child(tmp_path))], grace_s=0.2)
    outcomes = [runner(a, tmp_path / "w" / f"{i:02d}-{a.name}", 60) for i, a in enumerate([broken, plan[1]])]
    assert outcomes[0].status == "error"
    err = outcomes[0].error
    assert err.startswith("check exited 3: parity-gate: infrastructure failure: vLLM engine failed to start")
    assert "cause in the log: ValueError: No available memory for the cache blocks" in err
    assert "gpu_memory_utilization share" in err and "ProcessGroupNCCL" not in err
    assert outcomes[1].status == "ran" and outcomes[1].verdict == "pass"
    # never overlapping: the second child started after the first had ended,
    # and the first one's lingering helper was ended before that
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["what"] for e in events] == ["start", "end", "start", "end"]
    assert events[2]["helpers_running"] == []
    d = summarize({"forced": {"max_abs_diff": 0.1}}, outcomes[:1], [], None)
    assert d["kind"] == "undetermined"
    assert "1 ablation(s) failed to run (first: broken: check exited 3: parity-gate: infrastructure failure" \
        in d["summary"]


def test_subprocess_runner__unusable_verdict_from_a_child_is_an_error_finding(tmp_path: Path):
    import sys

    from gate.studies.diagnose import subprocess_runner

    garbled = Ablation("garbled", ("dtype",), {"dtype": "garbled"}, {}, "dtype float32 -> bfloat16")
    runner = subprocess_runner(tmp_path / "s.yaml", tmp_path / "g", [], log_dir=tmp_path / "logs",
                               program=[sys.executable, str(_fake_child(tmp_path))], grace_s=0.2)
    outcome = runner(garbled, tmp_path / "w" / "00-garbled", 60)
    assert outcome.status == "error"
    assert outcome.error.startswith("check wrote an unusable verdict: ")
    assert "verdict.json: not a parity-gate verdict" in outcome.error


def test_run_child__waits_for_and_ends_what_the_child_left_running(tmp_path: Path):
    import sys

    from gate.run.child import _group_alive, run_child

    res = run_child([sys.executable, "-c", "import subprocess, sys; "
                     "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"],
                    tmp_path / "c.log", 30, grace_s=0.2)
    assert res.returncode == 0 and res.left_behind == 1 and not res.timed_out
    assert not _group_alive(res.pid)


def test_error_line__as_seen_on_a_gpu_the_cli_line_once_when_it_holds_the_cause():
    """The log of an ablation that could not start on an H200 (vLLM 0.26.0)
    while another process held 95 GB: the last line is NCCL's."""
    cause = ("ValueError: Free memory on device cuda:0 (45.64/139.8 GiB) on startup is less than desired GPU memory "
             "utilization (0.92, 128.62 GiB). Decrease GPU memory utilization or reduce GPU memory used by other "
             "processes.")
    log = "\n".join([
        "[W1127 11:29:40.426852125 socket.cpp:207] [c10d] The hostname of the client socket cannot be retrieved.",
        f"parity-gate: infrastructure failure: vLLM engine failed to start: {cause} (hint: run with -v for the "
        "engine log; check memory and the vLLM install)",
        "[rank0]:[W1127 11:29:41.788981497 ProcessGroupNCCL.cpp:1575] Warning: WARNING: destroy_process_group() was "
        "not called before program exit, which can leak resources."])
    line = error_line(log)
    assert line.startswith("parity-gate: infrastructure failure: vLLM engine failed to start: ValueError: Free memory")
    assert "cause in the log" not in line and line.count("Free memory") == 1
    assert is_gpu_memory_error(log)

"""The environment diff names a change of parallel layout (docs/scale.md)."""
from __future__ import annotations

from gate.core.trace import Manifest
from gate.core.verdict import _hardware_warnings, environment_diff


def _man(tp: int, dp: int = 1, backend: str | None = None) -> Manifest:
    return Manifest(kind="golden", environment={"vllm_version": "0.32.0", "device_name": "NVIDIA H100"},
                    engine_args={"requested": {"tensor_parallel_size": tp},
                                 "resolved": {"tensor_parallel_size": tp, "data_parallel_size": dp,
                                              "distributed_executor_backend": backend, "dtype": "bfloat16"}})


def test_environment_diff__tp1_golden_against_tp2_check_is_named_with_a_warning():
    diff = environment_diff(_man(1), _man(2, backend="mp"))
    moved = {r["key"]: (r["reference"], r["candidate"]) for r in diff if r["differs"]}
    assert moved == {"tensor_parallel_size": (1, 2), "distributed_executor_backend": (None, "mp")}
    (warning,) = _hardware_warnings(diff)
    assert "tensor_parallel_size 1 -> 2" in warning and "parallel layout" in warning


def test_environment_diff__data_parallel_counts_as_a_layout_change_and_same_layout_warns_nothing():
    assert "data_parallel_size 1 -> 2" in _hardware_warnings(environment_diff(_man(1), _man(1, dp=2)))[0]
    assert _hardware_warnings(environment_diff(_man(2), _man(2))) == []


# ------------------------------------------------------------------ weight-update paths
def _path(name, status="pass", tokens=(5, 4), diagnosis=None):
    checks = [{"id": f"c{i}", "status": status if i == 0 else "pass", "detail": f"detail {i}",
               "tokens_compared": t, "max_abs_diff": 0.0 if status == "pass" else 0.4} for i, t in enumerate(tokens)]
    return {"name": name, "verdict": status, "checks": checks, "diagnosis": diagnosis, "mechanism": "m",
            "staleness": {"after_switch_max_abs_diff": 0.2, "after_switch_k3": 0.01, "expected": True}}


def _base(verdict="pass"):
    return {"verdict": verdict, "exit_code": 0 if verdict == "pass" else 1, "fail_on": "regression",
            "headline": "PASS: all 12 comparable checks passed" if verdict == "pass" else "FAIL: 1 of 12 checks failed",
            "checks": [{"id": "forced.logprobs_close", "status": verdict}]}


def test_add_update_paths__one_check_per_path_with_its_evidence():
    from gate.core.verdict import add_update_paths

    v = add_update_paths(_base(), {"tolerance": 1e-4, "paths": [_path("reload/keep/clear-cache"),
                                                                   _path("native/wait/clear-cache")]})
    assert v["verdict"] == "pass" and v["exit_code"] == 0
    assert v["headline"].endswith("; 2 weight-update paths match fresh engines (18 tokens)")
    added = v["checks"][1:]
    assert [c["id"] for c in added] == ["weight_update.reload/keep/clear-cache", "weight_update.native/wait/clear-cache"]
    assert all(c["channel"] == "weight_update" and c["config"] is None and c["evidence"] == {"compared": 9,
                                                                                               "unit": "tokens"}
               for c in added)
    assert "staleness after the switch: max abs diff 0.2" in added[0]["note"]


def test_add_update_paths__a_failing_path_fails_the_verdict_with_its_cause():
    from gate.core.verdict import add_update_paths

    stale = _path("reload/keep/keep-cache", "fail", diagnosis={"kind": "stale_prefix_cache",
                                                               "summary": "stale prefix cache: clear_cache=False"})
    v = add_update_paths(_base(), {"tolerance": 1e-4, "paths": [_path("reload/wait/clear-cache"), stale]})
    assert v["verdict"] == "fail" and v["exit_code"] == 1
    assert v["headline"] == ("FAIL: 1 of 2 weight-update paths: update path reload/keep/keep-cache fails: "
                             "stale prefix cache: clear_cache=False")
    never = add_update_paths(dict(_base(), fail_on="never"), {"tolerance": 1e-4, "paths": [stale]})
    assert never["verdict"] == "fail" and never["exit_code"] == 0
    both = add_update_paths(_base("fail"), {"tolerance": 1e-4, "paths": [stale]})
    assert both["headline"].startswith("FAIL: 1 of 12 checks failed; and update path reload/keep/keep-cache fails")


def test_add_update_paths__nothing_passes_on_zero_evidence():
    from gate.core.verdict import add_update_paths

    v = add_update_paths(_base(), {"tolerance": 1e-4, "paths": [_path("reload/abort/clear-cache", tokens=(0, 0))]})
    assert v["verdict"] == "fail" and v["checks"][-1]["status"] == "fail"
    assert "no token was compared; nothing passes on zero evidence" in v["headline"]

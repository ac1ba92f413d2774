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

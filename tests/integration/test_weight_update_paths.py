"""Weight updates on AsyncLLM with requests in flight (marker `engine`,
docs/weight-update.md): each pause mode and update path against fresh
engines, a stale path failing by name, and the paths this CPU build cannot
run refused with exit 2 before any engine starts.

Engine starts: 2 per weight-update run (the engine updated in place, then a
fresh engine on the new weights), 4 runs: ~310 s on 2 cores (72-81 s a run)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gate.run.tinymodel import build_tiny_model

SUITE = """name: weight-update-paths
model: {model}
engine: {{dtype: float32, seed: 0, max_model_len: 256, enforce_eager: true, enable_prefix_caching: true,
          block_size: 32}}
prompts:
  - id: a
    text: "Reinforcement learning samples rollouts and trains on the logprobs the engine returns."
  - id: b
    text: "Teacher forcing scores the same tokens in the same contexts, so versions can be compared."
sampling:
  - {{name: greedy, temperature: 0.0, max_tokens: 8, logprobs: 1}}
"""


def _gate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gate", "weight-update", *map(str, args)], capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wu-paths")
    old, new = build_tiny_model(root / "a", seed=0), build_tiny_model(root / "b", seed=1)
    suite = root / "suite.yaml"
    suite.write_text(SUITE.format(model=new))
    return suite, old


def _paths(out: Path) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((out / "weight_update.json").read_text())["paths"]}


@pytest.mark.engine
@pytest.mark.slow
def test_every_pause_mode_on_reload_and_native_matches_fresh_engines(setup, tmp_path):
    suite, old = setup
    r = _gate("--suite", suite, "--from", old, "--out", tmp_path / "r", "--via", "reload", "--via", "native",
              "--pause", "keep", "--pause", "wait", "--pause", "abort")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    paths = _paths(tmp_path / "r")
    assert len(paths) == 6 and all(p["verdict"] == "pass" for p in paths.values())
    c = next(c for c in paths["reload/keep/clear-cache"]["checks"]
             if c["id"] == "in_flight.requests_continue_across_update")
    assert c["status"] == "pass" and c["tokens_compared"] == 2 * 16  # every frozen request went on to its length
    for via in ("reload", "native"):
        keep = paths[f"{via}/keep/clear-cache"]
        # genuinely in flight: each request made tokens under the old weights, then under the new ones
        assert all(0 < q["old_weights_tokens"] < q["tokens"] for q in keep["in_flight"])
        assert keep["staleness"]["after_switch_max_abs_diff"] == 0.0 and not keep["staleness"]["expected"]
        aborted, waited = paths[f"{via}/abort/clear-cache"], paths[f"{via}/wait/clear-cache"]
        assert all(q["finish_reason"] == "abort" and q["tokens"] < 16 for q in aborted["in_flight"])
        assert all(q["switched_at"] is None and q["tokens"] == 16 for q in waited["in_flight"])
    assert paths["native/keep/clear-cache"]["mechanism"].startswith("init_weight_transfer_engine")


@pytest.mark.engine
@pytest.mark.slow
def test_no_pause_with_the_cache_reset_keeps_requests_running_across_the_update(setup, tmp_path):
    suite, old = setup
    r = _gate("--suite", suite, "--from", old, "--out", tmp_path / "r", "--via", "reload", "--pause", "none")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    p = _paths(tmp_path / "r")["reload/none/clear-cache"]
    c = next(c for c in p["checks"] if c["id"] == "in_flight.requests_continue_across_update")
    assert p["verdict"] == "pass" and c["status"] == "pass" and c["tokens_compared"] == 2 * 16
    assert all(q["tokens"] == 16 for q in p["in_flight"])


@pytest.mark.engine
@pytest.mark.slow
def test_keep_with_the_cache_kept_reports_staleness_and_fails_on_stale_prefix_cache(setup, tmp_path):
    suite, old = setup
    r = _gate("--suite", suite, "--from", old, "--out", tmp_path / "r", "--via", "reload", "--pause", "keep",
              "--keep-cache")
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    p = _paths(tmp_path / "r")["reload/keep/keep-cache"]
    assert p["diagnosis"]["kind"] == "stale_prefix_cache" and "clear_cache=False" in p["diagnosis"]["summary"]
    s = p["staleness"]
    assert s["expected"] and s["tokens_new_weights"] > 0 and s["after_switch_max_abs_diff"] > 0.01
    tokens = [t for q in p["in_flight"] for t in q["per_token"]]
    assert {t["weights"] for t in tokens} == {"old", "new"}
    assert "stale prefix cache" in r.stdout


@pytest.mark.engine
@pytest.mark.slow
def test_an_update_into_only_some_layers_fails_and_is_named(setup, tmp_path):
    suite, old = setup
    r = _gate("--suite", suite, "--from", old, "--out", tmp_path / "r", "--via", "native", "--pause", "wait",
              "--test-skip-weights", "model.layers.1.")
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    p = _paths(tmp_path / "r")["native/wait/clear-cache"]
    assert p["diagnosis"]["kind"] == "partial_update"
    assert "only part of the model" in p["diagnosis"]["summary"]


@pytest.mark.parametrize("args, says", [
    (["--via", "sleep"], "sleep mode needs CUDA"),
    (["--via", "native", "--backend", "nccl"], "moves tensors over CUDA"),
    (["--via", "native", "--pause", "none"], "meta tensors"),
])
def test_paths_this_cpu_build_cannot_run_are_refused_before_anything_runs(setup, tmp_path, args, says):
    suite, old = setup
    r = _gate("--suite", suite, "--from", old, "--out", tmp_path / "r", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not supported by this engine build" in r.stderr and says in r.stderr
    assert not (tmp_path / "r").exists()

"""End to end on the tiny CPU model (marker `engine`): an injected cause is
found and named by the diagnosis; the trainer-side reference scores the
golden; the in-place weight update with a stale prefix cache is caught.

Engine starts: golden 1, failing check 1, diagnosis ablation 1, weight
update 2 (a fresh engine on B, then one engine on A updated in place; one
after the other), determinism 1."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gate.run.tinymodel import build_tiny_model

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def _gate(*args: str, module: str = "gate") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"a": build_tiny_model(root / "a", seed=0), "b": build_tiny_model(root / "b", seed=1)}


@pytest.fixture(scope="session")
def suite(models, tmp_path_factory) -> Path:
    text = (ROOT / "examples" / "suite.yaml").read_text().replace("model: ../.cache/tiny-model",
                                                                   f"model: {models['a']}")
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def golden(suite, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden") / "g"
    r = _gate("record", "--suite", str(suite), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def diagnosed(suite, golden, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("result") / "r"
    r = _gate("check", "--suite", str(suite), "--golden", str(golden), "--out", str(out),
              "--engine-arg", "logprobs_mode=processed_logprobs", "--diagnose", "--diagnose-budget", "240")
    assert r.returncode == 1, r.stderr[-2000:]  # the verdict's code stands; diagnosis only explains it
    assert "  diagnosis: likely cause: logprobs_mode" in r.stdout
    return json.loads((out / "verdict.json").read_text())


def test_diagnose__logprobs_mode_change_is_named_and_restores_parity(diagnosed):
    d = diagnosed["diagnosis"]
    assert d["kind"] == "config"
    assert d["summary"].startswith("likely cause: logprobs_mode raw_logprobs -> processed_logprobs")
    (f,) = d["findings"]
    assert f["restores_parity"] is True and f["setting"] == "logprobs_mode=raw_logprobs"
    assert f["measures_after"]["sampler"]["max_abs_diff"] == 0.0
    assert d["baseline"]["sampler"]["max_abs_diff"] > 0.1
    assert "golden sampler logprobs were raw; under test they are processed" in d["semantics"]["summary"]


def test_diagnose__reports_render_the_diagnosis(diagnosed, tmp_path):
    from gate.core.verdict import write_verdict
    from gate.report.render import render_result

    write_verdict(tmp_path, diagnosed)
    render_result(tmp_path)
    assert "### 🩺 Diagnosis" in (tmp_path / "comment.md").read_text()
    assert "likely cause: logprobs_mode raw_logprobs" in (tmp_path / "report.html").read_text()


def test_hf_reference__float32_trainer_matches_vllm_cpu_to_float32_noise(golden, models, tmp_path):
    from gate.core.rl_metrics import measure
    from gate.core.trace import read_trace
    from gate.run.hf_engine import score_rollouts

    n = score_rollouts(golden, models["a"], tmp_path / "trainer")
    records = list(read_trace(golden).records())
    assert n == len(records) == 18  # the demo suite: 6 prompts, greedy + hot (n=2)
    rl = measure(read_trace(golden), read_trace(tmp_path / "trainer"))
    assert rl["tokens"] == sum(len(r.completion_token_ids) for r in records) > 0
    assert rl["paths"] == {"reference": "decode", "candidate": "hf"}
    # different kernels (vLLM CPU attention, fused norms, compiled graph) vs eager
    # transformers: float32 rounding only, nowhere near a config regression
    assert 0 < rl["max_abs_log_ratio"] < 1e-4
    assert rl["k3_kl"] < 1e-9 and rl["tis_truncated_fraction"] == 0 and rl["clip_fraction"] == 0
    r = _gate("compare", str(golden), str(tmp_path / "trainer"), "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_weight_update__stale_prefix_cache_fails_and_the_reset_path_passes(models, tmp_path):
    suite = tmp_path / "wu.yaml"
    suite.write_text(f"""name: weight-update
model: {models['b']}
engine: {{dtype: float32, seed: 0, max_model_len: 512, enable_prefix_caching: true, block_size: 32}}
prompts:
  - id: sys1
    text: "Reinforcement learning samples rollouts and trains on the logprobs the engine returns. When the engine is bumped"
  - id: sys2
    text: "Teacher forcing scores the same tokens in the same contexts, so versions can be compared. Once a free run"
sampling:
  - {{name: greedy, temperature: 0.0, max_tokens: 8, logprobs: 5}}
""")
    from gate.studies.weight_update import judge, weight_update_check

    v = weight_update_check(suite, models["a"], tmp_path / "r")
    assert v["verdict"] == "fail"
    d = v["diagnosis"]
    assert d["kind"] == "stale_state" and d["findings"][0]["restores_parity"] is True
    assert "stale prefix cache" in d["summary"]
    assert v["measures"]["overall"]["free_run"]["exact_match_rate"] < 1
    assert v["weight_update"]["mechanism"].startswith("collective_rpc")
    # the correct path (reset after the update), from the same engine runs: like with like, so it passes
    ok = judge(tmp_path / "r" / "weight_update", tmp_path / "r-reset", suite, models["a"], reset_in_run=True)
    assert ok["verdict"] == "pass", ok["headline"]
    overall = ok["measures"]["overall"]
    assert overall["sampler"]["path_reference"] == overall["sampler"]["path_candidate"] == "decode"
    assert overall["forced"]["path_reference"] == overall["forced"]["path_candidate"] == "prefill"
    assert overall["sampler"]["max_abs_diff"] == 0.0 and overall["free_run"]["exact_match_rate"] == 1.0


@pytest.mark.slow
def test_determinism__cpu_float32_reruns_are_bitwise_equal(suite, tmp_path):
    r = _gate("determinism", "--suite", str(suite), "--out", str(tmp_path / "det.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "det.json").read_text())
    for cfg in rep["configs"].values():
        assert cfg["rerun"]["forced"]["bitwise_equal"] is True
        assert cfg["batch_invariant"] is False


@pytest.mark.slow
def test_diagnose__changed_engine_default_compiled_to_eager_is_named(suite, tmp_path):
    """A default the user never set moves: torch.compile (vLLM's default) -> eager.
    In bfloat16 on this CPU that moves logprobs by ~0.1; the diagnosis must
    name enforce_eager and show that moving it back restores parity."""
    golden = tmp_path / "g-bf16"
    r = _gate("record", "--suite", str(suite), "--out", str(golden), "--engine-arg", "dtype=bfloat16")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "r"
    r = _gate("check", "--suite", str(suite), "--golden", str(golden), "--out", str(out),
              "--engine-arg", "dtype=bfloat16", "--engine-arg", "enforce_eager=true",
              "--diagnose", "--diagnose-budget", "240")
    assert r.returncode == 1, r.stderr[-2000:]
    d = json.loads((out / "verdict.json").read_text())["diagnosis"]
    assert d["summary"].startswith("likely cause: enforce_eager False -> True"), d["summary"]
    restoring = [f for f in d["findings"] if f["restores_parity"]]
    assert restoring and restoring[0]["setting"] == "enforce_eager=False"
    assert restoring[0]["measures_after"]["forced"]["max_abs_diff"] == 0.0

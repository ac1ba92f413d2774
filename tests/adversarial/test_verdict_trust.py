"""Verdict trust (docs/verdict.md): behind a changed random stream the
decode path is still guarded (the spread of the in-run relation, not only
its centre); thin evidence can fail; a stream change is named at any
position; an engine arg that was asked for but not applied is named. Real
CLI, hand-written traces shaped like a CPU float32 run (the golden's own
decode-vs-prefill noise is exactly 0)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gate.core.trace import Manifest, Record, Scores
from tests._util import run_cli, write_trace

PROMPT = [1, 2, 3]
N = 24                 # completion tokens per free run
HOT = {"temperature": 0.7, "top_p": 0.95, "logprobs": 5, "max_tokens": N, "seed": 7, "n": 1}
TOPK = {"temperature": 1.0, "top_k": 20, "logprobs": 5, "max_tokens": N, "seed": 7, "n": 1}


def _lps(seed: int) -> list[float]:
    """Own prefill logprobs of a free run: spread out, so a slope can be fitted."""
    rng = np.random.default_rng(seed)
    return [float(v) for v in -rng.gamma(1.5, 1.2, N)]


def _ids(seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(1000 + seed).integers(10, 300, N)]


def _golden(config: str, i: int) -> Record:
    lps, ids = _lps(i), _ids(i)
    return Record(config=config, prompt_id=f"p{i}", sample=0, seed=7, prompt_token_ids=PROMPT,
                  completion_token_ids=ids, sampler=Scores("decode", list(lps)),
                  forced=Scores("prefill", [None, -1.0, -1.0] + lps, completion_token_ids=ids))


def _candidate(golden: Record, *, diverge_at: int, shift=lambda pos, k: 0.0, forced_delta: float = 0.0) -> Record:
    """A check's record: its own free run agrees with the golden's up to
    `diverge_at` (then another draw), its sampler logprobs are its own prefill
    scores moved by shift(position, k), and it scored the golden's tokens
    teacher-forced (moved by forced_delta)."""
    i = int(golden.prompt_id[1:])
    g_ids, g_lps = list(golden.completion_token_ids), list(golden.sampler.logprobs)
    o_ids, o_lps = _ids(500 + i), _lps(500 + i)
    ids = g_ids[:diverge_at] + [t + 1 if t + 1 != g else t + 2 for t, g in
                                zip(o_ids[diverge_at:], g_ids[diverge_at:])]
    own = g_lps[:diverge_at] + o_lps[diverge_at:]
    sampler = [v + shift(p, i) for p, v in enumerate(own)]
    forced = [None, -1.0, -1.0] + [v + forced_delta for v in g_lps]
    return Record(config=golden.config, prompt_id=golden.prompt_id, sample=0, seed=7, prompt_token_ids=PROMPT,
                  completion_token_ids=ids, sampler=Scores("decode", sampler),
                  forced=Scores("prefill", forced, completion_token_ids=g_ids),
                  own=Scores("prefill", [None, -1.0, -1.0] + own, completion_token_ids=ids))


def _man(kind: str, sampling: dict, requested: dict | None = None, resolved: dict | None = None) -> Manifest:
    return Manifest(kind=kind, model={}, suite={"sampling": sampling},
                    engine_args={"requested": requested or {}, "resolved": resolved or {}})


def _compare(tmp_path: Path, golden: list[Record], cand: list[Record], sampling: dict, *extra: str,
             cand_man: Manifest | None = None) -> tuple[int, dict, str]:
    write_trace(tmp_path / "ref", golden, _man("golden", sampling))
    write_trace(tmp_path / "cand", cand, cand_man or _man("obtained", sampling))
    proc = run_cli("compare", "ref", "cand", "--out", "res", *extra, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    v = json.loads((tmp_path / "res" / "verdict.json").read_text())
    for c in v["checks"]:  # in every case here: nothing passes below its floor, every check says its evidence
        ev = c["evidence"]
        assert ev["compared"] >= ev["floor"] or c["status"] != "pass", c["message"]
        assert c["status"] != "not_comparable" or c["n_bad"] == 0, c["message"]
    return proc.returncode, v, proc.stdout


def _check(v: dict, cid: str, config: str | None = "hot") -> dict:
    return next(c for c in v["checks"] if c["id"] == cid and c["config"] == config)


def _golden_set(config: str = "hot", n: int = 8) -> list[Record]:
    return [_golden(config, i) for i in range(n)]


def test_trust__the_same_run_with_another_stream_passes_and_names_it(tmp_path):
    golden = _golden_set()
    rc, v, out = _compare(tmp_path, golden, [_candidate(g, diverge_at=0) for g in golden], {"hot": HOT})
    assert rc == 0, out
    assert _check(v, "sampler.spread")["status"] == "pass"
    assert _check(v, "sampler.semantics")["status"] == "pass"
    assert "random stream changed (8/8 free runs diverge at position 0" in " ".join(v["evidence_notes"])


def test_trust__symmetric_decode_noise_behind_a_changed_stream_fails_naming_the_decode_path(tmp_path):
    golden = _golden_set()
    cand = [_candidate(g, diverge_at=0, shift=lambda p, k: 0.03 if (p + k) % 2 else -0.03) for g in golden]
    rc, v, out = _compare(tmp_path, golden, cand, {"hot": HOT})
    assert rc == 1 and v["verdict"] == "fail", out
    spread = _check(v, "sampler.spread")
    assert spread["status"] == "fail" and "decode path drifted from prefill path" in spread["message"]
    assert spread["evidence"]["compared"] == 8 * N
    sem = v["measures"]["per_config"]["hot"]["semantics"]
    assert abs(sem["candidate"]["slope"] - 1) < 0.01 and abs(sem["candidate"]["mean_residual"]) < 1e-3  # centre kept
    assert spread["value"] > 100  # 0.03 over a floor of 1e-4


def test_trust__small_one_sided_noise_from_position_4_fails_too(tmp_path):
    golden = _golden_set()
    cand = [_candidate(g, diverge_at=0, shift=lambda p, k: (0.01 if (p + k) % 2 else -0.01) if p >= 4 else 0.0)
            for g in golden]
    rc, v, _ = _compare(tmp_path, golden, cand, {"hot": HOT})
    assert rc == 1 and _check(v, "sampler.spread")["status"] == "fail"


def test_trust__thin_evidence_beyond_tolerance_fails_with_its_count(tmp_path):
    """One rollout of eight reproduces the golden's tokens (24 of 192), each
    sampler logprob off by 0.05 (500x the bound): too few to pass, enough to fail."""
    golden = _golden_set()
    cand = [_candidate(g, diverge_at=N if i == 0 else 0, shift=(lambda p, k: 0.05) if i == 0 else (lambda p, k: 0.0))
            for i, g in enumerate(golden)]
    rc, v, out = _compare(tmp_path, golden, cand, {"hot": HOT})
    assert rc == 1, out
    close = _check(v, "sampler.logprobs_close")
    assert close["status"] == "fail"
    assert close["n_bad"] == N and close["evidence"]["compared"] == N and close["evidence"]["reference"] == 8 * N
    assert "thin evidence" in close["message"] and "enough to fail" in close["message"]


def test_trust__thin_evidence_within_tolerance_stays_not_comparable(tmp_path):
    golden = _golden_set()
    cand = [_candidate(g, diverge_at=N if i == 0 else 0) for i, g in enumerate(golden)]
    rc, v, _ = _compare(tmp_path, golden, cand, {"hot": HOT})
    assert rc == 0
    assert _check(v, "sampler.logprobs_close")["status"] == "not_comparable"


def test_trust__a_stream_change_from_position_2_on_is_named_as_one(tmp_path):
    golden = _golden_set()
    rc, v, _ = _compare(tmp_path, golden, [_candidate(g, diverge_at=2 + i % 3) for i, g in enumerate(golden)],
                        {"hot": HOT})
    fr = v["measures"]["per_config"]["hot"]["free_run"]
    assert fr["diverged_at_start"] == 0 and fr["stream_changed"] == 8 and fr["stream_first_position"] == 2
    note = " ".join(v["evidence_notes"])
    assert "random stream changed (8/8 free runs diverge from position 2 on" in note
    assert rc == 0


def test_trust__a_divergence_where_the_forced_scores_moved_is_not_called_a_stream_change(tmp_path):
    golden = _golden_set()
    _, v, _ = _compare(tmp_path, golden, [_candidate(g, diverge_at=3, forced_delta=0.2) for g in golden],
                       {"hot": HOT})
    fr = v["measures"]["per_config"]["hot"]["free_run"]
    assert fr["stream_changed"] == 0 and v["verdict"] == "fail"


def test_trust__topk_only_processed_at_temperature_one_fails_in_run_with_no_matched_token(tmp_path):
    """Processed logprobs under top-k 20 at T=1: every sampler logprob is
    lifted by -log(top-20 mass), a few 1e-4 here; slope stays 1."""
    golden = _golden_set("topk")
    rng = np.random.default_rng(3)
    lift = {i: [float(v) for v in rng.uniform(1e-4, 5e-4, N)] for i in range(8)}
    cand = [_candidate(g, diverge_at=0, shift=lambda p, k: lift[k][p]) for g in golden]
    rc, v, out = _compare(tmp_path, golden, cand, {"topk": TOPK})
    assert rc == 1, out
    sem = _check(v, "sampler.semantics", "topk")
    assert sem["status"] == "fail" and v["measures"]["per_config"]["topk"]["sampler"]["tokens"] == 0
    assert v["measures"]["per_config"]["topk"]["semantics"]["candidate_mode"] == "processed"


def test_trust__an_engine_arg_requested_but_not_applied_fails_and_is_named(tmp_path):
    golden = _golden_set()
    cand = [_candidate(g, diverge_at=N) for g in golden]
    man = _man("obtained", {"hot": HOT}, requested={"async_scheduling": True, "dtype": "auto", "seed": 0},
               resolved={"async_scheduling": False, "dtype": "float32", "seed": 0})
    rc, v, out = _compare(tmp_path, golden, cand, {"hot": HOT}, cand_man=man)
    assert rc == 1 and v["verdict"] == "fail", out
    c = _check(v, "engine.requested_applied", None)
    assert c["status"] == "fail" and c["n_bad"] == 1 and c["n_total"] == 3
    assert "async_scheduling: requested true, resolved false: this engine ignored it" in c["message"]
    assert "async_scheduling: requested true, resolved false" in out
    (tmp_path / "warn.yaml").write_text("unapplied_engine_args: warn\n")
    rc, v, _ = _compare(tmp_path, golden, cand, {"hot": HOT}, "--policy", "warn.yaml", "--force", cand_man=man)
    assert rc == 0 and not any(c["id"] == "engine.requested_applied" for c in v["checks"])
    assert any("async_scheduling: requested true, resolved false" in w for w in v["warnings"])


def test_trust__the_report_data_carries_the_relation_and_the_matched_tokens(tmp_path):
    golden = _golden_set()
    _, v, _ = _compare(tmp_path, golden, [_candidate(g, diverge_at=5) for g in golden], {"hot": HOT})
    sem = v["measures"]["per_config"]["hot"]["semantics"]
    assert 0 < len(sem["reference"]["points"]) <= 200 and sem["candidate"]["residual_histogram"]["zero"] == 8 * N
    assert v["sampler_matched"]["hot"]["tokens"] == 8 * 5
    assert all(d == 0 for _, d in v["sampler_matched"]["hot"]["points"])

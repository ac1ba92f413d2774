"""Nothing passes on zero evidence (docs/policy.md, min_evidence):
comparisons that shrink are not comparable, said in words, and never a
silent pass. Real CLI, hand-written traces."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from gate.core.trace import Record, Scores
from tests._util import record, run_cli, write_trace

COMPLETION = tuple(range(10, 30))  # 20 tokens: enough for an in-run fit
PROMPT = (1, 2, 3)


def _golden_like(config: str, pid: str, sample: int = 0, completion=COMPLETION, scale: float = 1.0) -> Record:
    """A golden record: sampler logprobs of its own tokens, and its own
    prefill scores of them (raw: equal)."""
    lps = [-0.1 * (i % 7) - 0.5 for i in range(len(completion))]
    return Record(config=config, prompt_id=pid, sample=sample, prompt_token_ids=list(PROMPT),
                  completion_token_ids=list(completion), seed=0,
                  sampler=Scores("decode", [x * scale for x in lps]),
                  forced=Scores("prefill", [None, -1.0, -1.0] + lps, completion_token_ids=list(completion)))


def _verdict(d: Path) -> dict:
    return json.loads((d / "verdict.json").read_text())


def _reference(tmp_path: Path) -> list[Record]:
    recs = [_golden_like(c, f"p{i}") for c in ("greedy", "hot") for i in range(6)]
    write_trace(tmp_path / "ref", recs)
    return recs


def test_evidence__a_candidate_with_1_of_12_records_is_inconclusive_not_a_pass(tmp_path):
    recs = _reference(tmp_path)
    write_trace(tmp_path / "cand", recs[:1])
    proc = run_cli("compare", "ref", "cand", "--out", "res", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    v = _verdict(tmp_path / "res")
    assert v["verdict"] == "inconclusive" and v["headline"].startswith("INCONCLUSIVE:")
    assert v["configs"]["hot"]["status"] == "inconclusive"  # 0 of its 6 records
    forced = next(c for c in v["checks"] if c["id"] == "forced.logprobs_close" and c["config"] == "greedy")
    assert forced["status"] == "not_comparable"
    assert forced["evidence"] == {"compared": 20, "reference": 120, "floor": 60, "unit": "tokens"}
    assert "INCONCLUSIVE" in (tmp_path / "res" / "comment.md").read_text()


def test_evidence__a_candidate_without_teacher_forced_scores_never_passes_quietly(tmp_path):
    recs = _reference(tmp_path)
    from dataclasses import replace
    write_trace(tmp_path / "cand", [replace(r, forced=None) for r in recs])
    proc = run_cli("compare", "ref", "cand", "--out", "res", cwd=tmp_path)
    v = _verdict(tmp_path / "res")
    nc = [c for c in v["checks"] if c["status"] == "not_comparable" and c["channel"] == "forced"]
    assert len(nc) == 6, "the teacher-forced checks are listed as not comparable, not dropped"
    assert all("records no teacher-forced scores" in c["note"] for c in nc)
    assert "not comparable" in v["headline"]
    assert any("teacher-forced channel not comparable for 'greedy'" in n for n in v["evidence_notes"])
    assert "not comparable: teacher-forced channel" in proc.stdout


def test_evidence__every_rollout_diverging_at_0_with_processed_logprobs_is_never_a_pass(tmp_path):
    """The issue's example: every free run diverges at position 0 and the
    sampler logprobs are divided by 0.7. Without own prefill scores on the
    candidate nothing vouches for the sampler: inconclusive, exit 1."""
    _reference(tmp_path)
    other = tuple(t + 100 for t in COMPLETION)
    cand = []
    for c in ("greedy", "hot"):
        for i in range(6):
            g = _golden_like(c, f"p{i}")
            cand.append(Record(config=c, prompt_id=g.prompt_id, sample=0, prompt_token_ids=list(PROMPT),
                               completion_token_ids=list(other), seed=0,
                               sampler=Scores("decode", [x / 0.7 for x in g.sampler.logprobs]),
                               forced=g.forced))  # teacher-forced scores of the golden's tokens, as check writes
    write_trace(tmp_path / "cand", cand)
    proc = run_cli("compare", "ref", "cand", "--out", "res", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    v = _verdict(tmp_path / "res")
    assert v["verdict"] == "inconclusive"
    assert "no in-run semantics" in v["configs"]["hot"]["reason"]
    note = next(n for n in v["evidence_notes"] if n.startswith("sampler channel not comparable for 'hot'"))
    assert "random stream changed (6/6 free runs diverge at position 0" in note


def test_evidence__fail_on_never_reports_inconclusive_but_exits_0(tmp_path):
    recs = _reference(tmp_path)
    write_trace(tmp_path / "cand", recs[:1])
    proc = run_cli("compare", "ref", "cand", "--out", "res", "--fail-on", "never", cwd=tmp_path)
    assert proc.returncode == 0
    assert _verdict(tmp_path / "res")["verdict"] == "inconclusive"
    assert proc.stdout.startswith("INCONCLUSIVE:")


def test_evidence__legal_infinities_and_nulls_give_a_verdict_and_no_numpy_warnings(tmp_path):
    a = [-0.5, -1.0, None, -2.0]
    b = [-0.5, -math.inf, -1.0, None]
    write_trace(tmp_path / "ref", [record(sampler=a, forced=[None, -1.0, -1.0, -0.5, -1.0, -1.5, -2.0],
                                          completion=(4, 5, 6, 7))])
    write_trace(tmp_path / "cand", [record(sampler=b, forced=[None, -1.0, -1.0, -0.5, -math.inf, -1.5, -1e308],
                                           completion=(4, 5, 6, 7))])
    env = dict(os.environ, PYTHONWARNINGS="error")
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "gate", "compare", "ref", "cand", "--out", "res"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "", proc.stderr
    v = _verdict(tmp_path / "res")
    s = v["measures"]["overall"]["sampler"]
    assert s["excluded"]["null"] == 2 and s["excluded"]["one_sided_inf"] == 1
    assert s["max_abs_diff"] == "Infinity"
    assert (tmp_path / "res" / "report.html").is_file()

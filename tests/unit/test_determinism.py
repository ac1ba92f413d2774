"""Determinism report with a fake engine whose batch composition moves the numbers."""
from __future__ import annotations

from dataclasses import dataclass

from gate.core.trace import Scores
from gate.studies.determinism import compare_scores, measure_determinism


@dataclass
class _Gen:
    token_ids: list
    sampler: Scores


class _BatchSensitiveEngine:
    """Scores are exact alone and shifted by 1e-3 when batched with others."""

    def score(self, seqs, k):
        shift = 1e-3 if len(seqs) > 1 else 0.0
        return [Scores("prefill", [None] + [-1.0 - shift] * (len(p) + len(c) - 1)) for p, c in seqs]

    def generate(self, reqs):
        shift = 1e-3 if len(reqs) > 1 else 0.0
        return [_Gen([5, 6, 7], Scores("decode", [-0.5 - shift] * 3)) for _ in reqs]


def test_compare_scores__bitwise_and_max_diff():
    r = compare_scores([[None, -1.0, -2.0]], [[None, -1.0, -2.5]])
    assert r["bitwise_equal"] is False and r["max_abs_diff"] == 0.5 and r["bitwise_equal_fraction"] == 2 / 3


def test_measure__reruns_equal_but_alone_vs_batch_differs(monkeypatch):
    monkeypatch.delenv("VLLM_BATCH_INVARIANT", raising=False)
    rep = measure_determinism(_BatchSensitiveEngine(), [object(), object()], [([1, 2], [3, 4]), ([1], [2])], 5)
    assert rep["rerun"]["forced"]["bitwise_equal"] is True
    assert rep["alone_vs_batch"]["forced"]["bitwise_equal"] is False
    assert abs(rep["alone_vs_batch"]["forced"]["max_abs_diff"] - 1e-3) < 1e-12
    assert abs(rep["alone_vs_batch"]["sampler"]["max_abs_diff"] - 1e-3) < 1e-12
    assert rep["batch_invariant"] is False and "VLLM_BATCH_INVARIANT not set" in rep["summary"]

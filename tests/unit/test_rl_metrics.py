"""Trainer-side measures: importance ratios between rollout and trainer logprobs."""
from __future__ import annotations

import math

from gate.rl_metrics import measure_records, summary_line
from gate.trace import Record, Scores


def _rec(lps, path, key="p", comp=(5, 6, 7, 8)):
    return Record(config="c", prompt_id=key, sample=0, prompt_token_ids=[1, 2], completion_token_ids=list(comp),
                  sampler=Scores(path, lps))


def test_measure__ratios_clip_and_tis_truncation():
    rollout = [_rec([-1.0, -2.0, -0.5, -3.0], "decode")]
    # log ratios: 0, +1 (rho e ~2.72, truncated), -0.1, +0.1
    trainer = [_rec([-1.0, -1.0, -0.6, -2.9], "hf")]
    m = measure_records(rollout, trainer)
    assert m["tokens"] == 4
    assert math.isclose(m["tis_truncated_fraction"], 0.25)
    assert math.isclose(m["clip_fraction"], 0.25)
    assert math.isclose(m["ratio"]["max"], math.exp(1.0), rel_tol=1e-9)
    assert math.isclose(m["ratio"]["min"], math.exp(-0.1), rel_tol=1e-6)
    d = [0.0, 1.0, -0.1, 0.1]
    assert math.isclose(m["k3_kl"], sum(math.exp(x) - 1 - x for x in d) / 4, rel_tol=1e-9)
    assert math.isclose(m["mult_prob_error"], sum(math.exp(abs(x)) for x in d) / 4, rel_tol=1e-9)
    assert math.isclose(m["tis_mean_weight"], (1 + 2 + math.exp(-0.1) + math.exp(0.1)) / 4, rel_tol=1e-9)
    assert sum(b["count"] for b in m["ratio_histogram_log2"]) == 4
    assert "truncated at C=2: 25.00%" in summary_line(m)


def test_measure__none_without_a_trainer_side_or_with_other_tokens():
    assert measure_records([_rec([-1.0] * 4, "decode")], [_rec([-1.0] * 4, "decode")]) is None
    assert measure_records([_rec([-1.0] * 4, "decode")], [_rec([-1.0] * 4, "hf", comp=(1, 1, 1, 1))]) is None

"""Noise-floor calibration: floors and the suggested thresholds (pure parts)."""
from __future__ import annotations

from gate.calibrate import ATOL_MIN, floors, render_policy, suggest
from gate.policy import parse_policy


def _v(fmax, smax, k3=0.0, top1=1.0, match=1.0, mpe=1.0):
    return {"measures": {"overall": {
        "forced": {"max_abs_diff": fmax, "mean_abs_diff": fmax / 10, "k3_kl": k3, "top1_agreement": top1},
        "sampler": {"max_abs_diff": smax, "k3_kl": k3, "mult_prob_error": mpe},
        "free_run": {"exact_match_rate": match}}}}


def test_floors__worst_of_each_measure():
    f = floors([_v(0.0, 1e-6, top1=1.0), _v(2e-6, 0.0, top1=0.99, match=0.5)])
    assert f["forced.max_abs_diff"] == 2e-6 and f["sampler.max_abs_diff"] == 1e-6
    assert f["forced.top1_agreement"] == 0.99 and f["free_run.exact_match_rate"] == 0.5


def test_suggest__bitwise_floor_gets_the_minimum_atol():
    p = suggest(floors([_v(0.0, 0.0)]))
    assert p["atol"] == ATOL_MIN
    assert p["checks"]["forced.k3_kl"] == float(f"{ATOL_MIN ** 2 / 2:.6g}")
    assert p["checks"]["forced.top1_agreement"] == 0.999


def test_suggest__floor_times_margin_and_k3_times_margin_squared():
    p = suggest(floors([_v(3e-4, 1e-4, k3=1e-7, mpe=1.0002)]), margin=10)
    assert p["atol"] == 3e-3
    assert p["checks"]["sampler.k3_kl"] == 1e-5  # margin^2 * floor beats atol^2/2 = 4.5e-6
    assert p["checks"]["sampler.mult_prob_error"] == 1.003


def test_render_policy__is_a_valid_policy_file():
    import yaml

    fl = floors([_v(0.0, 0.0)])
    text = render_policy(suggest(fl), fl, {"max_num_seqs=1": floors([_v(0.01, 0.02, match=0.5)])}, 3, 10.0, "s.yaml")
    data = yaml.safe_load(text)
    pol = parse_policy(data, "calibrated.yaml")
    assert pol.default.atol == ATOL_MIN
    assert "batch shape max_num_seqs=1" in text

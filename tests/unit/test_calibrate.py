"""Noise-floor calibration: floors and the suggested thresholds (pure parts),
per sampling config, and a suggested policy that passes the runs it came from."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from gate.core.compare import compare_records
from gate.core.errors import InfraError
from gate.core.policy import evaluate, load_policy, parse_policy
from gate.core.thresholds import DEFAULT_POLICY
from gate.studies.calibrate import (
    ATOL_MIN,
    config_floors,
    floors,
    p99_interval,
    render_policy,
    suggest,
    suggest_policy,
    top1_bound,
)
from tests._util import record


def _v(fmax, smax, k3=0.0, top1=1.0, match=1.0, mpe=1.0, tokens=1000):
    return {"measures": {"overall": {
        "forced": {"max_abs_diff": fmax, "mean_abs_diff": fmax / 10, "k3_kl": k3, "top1_agreement": top1,
                   "tokens": tokens},
        "sampler": {"max_abs_diff": smax, "k3_kl": k3, "mult_prob_error": mpe, "tokens": tokens},
        "free_run": {"exact_match_rate": match, "sequences": 10}}}}


def test_floors__worst_of_each_measure_and_fewest_tokens():
    f = floors([_v(0.0, 1e-6, top1=1.0), _v(2e-6, 0.0, top1=0.99, match=0.5, tokens=900)])
    assert f["forced.max_abs_diff"] == 2e-6 and f["sampler.max_abs_diff"] == 1e-6
    assert f["forced.top1_agreement"] == 0.99 and f["free_run.exact_match_rate"] == 0.5
    assert f["forced.tokens"] == 900


def test_suggest__bitwise_floor_gets_the_minimum_atol():
    p = suggest(floors([_v(0.0, 0.0)]))
    assert p["atol"] == ATOL_MIN
    assert p["checks"]["forced.k3_kl"] == float(f"{ATOL_MIN ** 2 / 2:.6g}")
    # 1000 tokens, no disagreement measured: the default's 0.1% = 1 token, half a token below it
    assert p["checks"]["forced.top1_agreement"] == pytest.approx(1 - 1.5 / 1000)


def test_suggest__floor_times_margin_and_k3_times_margin_squared():
    p = suggest(floors([_v(3e-4, 1e-4, k3=1e-7, mpe=1.0002)]), margin=10)
    assert p["atol"] == 3e-3
    assert p["checks"]["sampler.k3_kl"] == 1e-5  # margin^2 * floor beats atol^2/2 = 4.5e-6
    assert p["checks"]["sampler.mult_prob_error"] == 1.003


def test_suggest__upper_bounds_are_rounded_up_never_below_the_floor():
    p = suggest(floors([_v(1.23456e-4, 0.0)]), margin=1)
    assert p["atol"] >= 1.23456e-4 and p["atol"] == 1.24e-4


@pytest.mark.parametrize("tokens, floor, allowed", [
    (20, 1.0, 1),                  # a small config may still disagree once
    (20, 0.95, 4),                 # one measured flip in 20: 1 + 3 sqrt(1)
    (1000, 1.0, 1),
    (24576, 1.0, 25),              # 0.1% of a large config, rounded up
    (24576, 1 - 30 / 24576, 47),   # 30 measured: 30 + ceil(3 sqrt(30))
])
def test_top1_bound__allows_a_whole_number_of_disagreements_and_at_least_one(tokens, floor, allowed):
    b = top1_bound(floor, tokens)
    assert (tokens - allowed) / tokens >= b > (tokens - allowed - 1) / tokens


def test_p99_interval__is_the_histogram_bin_and_says_when_it_is_out_of_range():
    lo, hi = p99_interval(10 ** -5.5)
    assert hi == 10 ** -5.5 and lo == pytest.approx(10 ** -5.55)
    assert p99_interval(0.0) == (0.0, 0.0)
    assert p99_interval(1e-12) == (0.0, 1e-12)
    lo, hi = p99_interval(10 ** 3.05)  # what compare reported for 3.4e38 before it carried p99_bin
    assert lo == 1e3 and math.isinf(hi)


def test_p99_text__takes_the_comparisons_own_bin_and_covers_every_run():
    from gate.studies.calibrate import _p99_span, _p99_text

    spans = [_p99_span({"p99_abs_diff": 2e-6, "p99_bin": [1.78e-6, 2e-6]}), _p99_span({"p99_abs_diff": 0.0})]
    assert _p99_text(spans) == "in [0, 2e-06] (histogram bins)"
    assert _p99_text([_p99_span({"p99_abs_diff": 10 ** 3.05})]).startswith(">= 1e+03")


# ---------------------------------------------------------------- per config, end to end through compare + policy
def _seq(config, pid, n, *, shift=0.0, at=None, flip=(), sample=0):
    """A record with n completion tokens whose forced logprob at position
    `at` is moved by `shift` and whose top-1 ids at positions `flip` change."""
    prompt = [1, 2, 3]
    completion = [10 + i % 7 for i in range(n)]
    forced = [None] + [-1.0] * 2 + [-0.5 - 0.001 * i for i in range(n)]
    tops = [None] + [[5, 6]] * 2 + [[c, 99] for c in completion]
    sampler = [-0.5 - 0.001 * i for i in range(n)]
    if at is not None:
        forced[3 + at] += shift
        sampler[at] += shift
    for f in flip:
        tops[3 + f] = [99, completion[f]]
    return record(config, pid, sample, prompt=prompt, completion=completion, sampler=sampler, forced=forced,
                  forced_top_ids=tops, forced_top_lps=[None] + [[-0.1, -2.0]] * (len(tops) - 1),
                  sampler_top_ids=[[c, 99] for c in completion], sampler_top_lps=[[-0.1, -2.0]] * n)


def _golden():
    return [_seq("big", f"p{i:02d}", 100) for i in range(20)] + [_seq("small", "q0", 20)]


def _rerun(i):
    """Reruns: 'big' drifts at the last bits, 'small' (20 tokens) by more and
    with two top-1 disagreements: pooled over 2,020 tokens that is 0.999, on
    its own 20 tokens the pooled bound allows one."""
    big = [_seq("big", f"p{j:02d}", 100, shift=1e-7 * (i + 1), at=3) for j in range(20)]
    return big + [_seq("small", "q0", 20, shift=3e-5, at=5, flip=(7, 11))]


def _verdicts(policy=DEFAULT_POLICY):
    results = [compare_records(_golden(), _rerun(i), policy.tolerances()) for i in range(2)]
    return results, [{"measures": {"overall": r.overall, "per_config": r.per_config}} for r in results]


def test_calibrate__per_config_policy_passes_the_runs_it_was_calibrated_on(tmp_path):
    _, verdicts = _verdicts()
    overall, per = floors(verdicts), config_floors(verdicts)
    assert set(per) == {"big", "small"} and per["small"]["forced.tokens"] == 20
    policy = suggest_policy(overall, per)
    text = render_policy(policy, overall, {}, 3, 10.0, "s.yaml", per)
    path = tmp_path / "calibrated.yaml"
    path.write_text(text)
    loaded = load_policy(path, DEFAULT_POLICY, {"big", "small"})
    results, _ = _verdicts(loaded)
    for r in results:
        checks = evaluate(loaded, r)
        assert checks and all(c.status == "pass" for c in checks), [c.message for c in checks if c.status != "pass"]
    assert "top-1 bound allows 7 disagreements in 20 tokens" in text  # 2 + ceil(3 sqrt(2))
    # the overall floor alone (what calibrate used to write) fails the small config on its own run
    old = parse_policy(yaml.safe_load(render_policy(suggest(overall), overall, {}, 3, 10.0, "s.yaml")), "old")
    results, _ = _verdicts(old)
    failed = {(c.id, c.config) for c in evaluate(old, results[0]) if c.status == "fail"}
    assert failed == {("forced.top1_agreement", "small")}
    # and per config, the quiet config keeps a sharper bound than the pooled one
    assert policy["per_config"]["big"]["atol"] == ATOL_MIN < policy["per_config"]["small"]["atol"] == policy["atol"]


def test_render_policy__round_trips_through_parse_policy_with_every_value():
    _, verdicts = _verdicts()
    overall, per = floors(verdicts), config_floors(verdicts)
    per["odd: name"] = per["small"]  # any config name survives the YAML
    policy = suggest_policy(overall, per)
    text = render_policy(policy, overall, {"max_num_seqs=1": floors([_v(0.01, 0.02, match=0.5)])}, 3, 10.0,
                         "s.yaml", per)
    parsed = parse_policy(yaml.safe_load(text), "calibrated.yaml", DEFAULT_POLICY, set(per))
    assert parsed.default.atol == policy["atol"]
    for name, rules in policy["per_config"].items():
        got = parsed.rules(name)
        assert got.atol == rules["atol"] and got.rtol == 0.0
        for check, bound in rules["checks"].items():
            assert got.bounds[check] == bound, (name, check)
    assert "batch shape max_num_seqs=1" in text


def test_render_policy__bitwise_floor_is_a_valid_policy_file():
    fl = floors([_v(0.0, 0.0)])
    text = render_policy(suggest(fl), fl, {}, 3, 10.0, "s.yaml")
    pol = parse_policy(yaml.safe_load(text), "calibrated.yaml")
    assert pol.default.atol == ATOL_MIN and pol.per_config == {}


def test_calibrate__unusable_verdict_from_its_own_run_is_an_infra_error(tmp_path, monkeypatch):
    import gate.studies.calibrate as cal

    def fake_run_gate(args, log_path, timeout, what):
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if args[0] == "check":
            (out / "verdict.json").write_text("{}", encoding="utf-8")
        return 0

    monkeypatch.setattr(cal, "_run_gate", fake_run_gate)
    with pytest.raises(InfraError, match=r"^calibrate: run rerun-1 wrote an unusable verdict: .*verdict\.json: "
                                         r"not a parity-gate verdict"):
        cal.calibrate(tmp_path / "suite.yaml", tmp_path / "policy.yaml", runs=2, work=tmp_path / "work")

"""The comparison core, on hand-built records: every measure of docs/design.md
section 3 against values worked out by hand."""
from __future__ import annotations

import math
import weakref

import numpy as np
import pytest

from gate.core.channel import HIST_BINS_PER_DECADE, Channel, Tolerance
from gate.core.compare import compare_records, compare_traces
from gate.core.trace import TraceReader
from tests._util import record, write_trace

EXACT = dict(rel=1e-12, abs=1e-15)

PROMPT = (1, 2, 3)
COMPLETION = (4, 5, 6, 7)
# Binary-exact values, so b - a is exact and the hand computation is too.
A = [-0.5, -1.0, -2.0, -0.25]
D = [0.0, 0.125, 0.0, -0.375]
B = [a + d for a, d in zip(A, D)]
PROMPT_SCORES = [None, -3.0, -4.0]


def _forced(values, prompt_scores=PROMPT_SCORES):
    return list(prompt_scores) + list(values)


def _pair(**kw):
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(A), sampler=A, **kw)
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(B), sampler=B, **kw)
    return ref, cand


# ------------------------------------------------------------------ identical
def test_compare__identical_traces_every_drift_measure_exactly_zero():
    ref, _ = _pair()
    res = compare_records([ref], [ref])
    assert res.records == 1 and res.only_reference == [] and res.only_candidate == []
    for channel in ("forced", "sampler"):
        s = res.overall[channel]
        assert s["tokens"] == 4 and s["mismatched"] == 0
        for key in ("max_abs_diff", "mean_abs_diff", "p99_abs_diff", "k1_kl", "k2", "k3_kl", "chi2",
                    "clip_fraction", "prob_diff_max", "log_ppl_diff_max", "log_ppl_diff_mean"):
            assert s[key] == 0.0, key
        assert s["mult_prob_error"] == 1.0
        assert s["bitwise_equal_fraction"] == 1.0
        assert s["max_location"] is None  # nothing moved, so no location
    assert res.overall["forced"]["prompt_max_abs_diff"] == 0.0
    fr = res.overall["free_run"]
    assert fr["exact_match_rate"] == 1.0 and fr["first_divergence_min"] is None and fr["diverged"] == []
    assert res.worst_tokens == [] and res.warnings == []


def test_compare__identical_traces_through_files(tmp_path):
    recs = [record(prompt_id=f"p{i}", forced=_forced(A), sampler=A, prompt=PROMPT, completion=COMPLETION)
            for i in range(3)]
    write_trace(tmp_path / "a", recs)
    write_trace(tmp_path / "b", recs)
    res = compare_traces(TraceReader(tmp_path / "a"), TraceReader(tmp_path / "b"))
    assert res.records == 3
    assert res.overall["forced"]["max_abs_diff"] == 0.0 and res.overall["forced"]["tokens"] == 12


# ------------------------------------------------------------------ known shift
def test_compare__known_shift_gives_hand_computed_measures():
    ref, cand = _pair()
    res = compare_records([ref], [cand])
    n = 4
    for channel in ("forced", "sampler"):
        s = res.overall[channel]
        assert s["tokens"] == n
        assert s["mismatched"] == 2                                  # |d| > 1e-4 at two tokens
        assert s["bitwise_equal_fraction"] == 0.5
        assert s["max_abs_diff"] == 0.375
        assert s["mean_abs_diff"] == pytest.approx((0.125 + 0.375) / n, **EXACT)
        assert s["mult_prob_error"] == pytest.approx((1 + math.exp(0.125) + 1 + math.exp(0.375)) / n, **EXACT)
        assert s["k1_kl"] == pytest.approx((-0.125 + 0.375) / n, **EXACT)
        assert s["k2"] == pytest.approx((0.125 ** 2 + 0.375 ** 2) / 2 / n, **EXACT)
        assert s["k3_kl"] == pytest.approx(((math.exp(0.125) - 1 - 0.125) + (math.exp(-0.375) - 1 + 0.375)) / n,
                                           **EXACT)
        assert s["chi2"] == pytest.approx((1 + math.exp(0.25) + 1 + math.exp(-0.75)) / n - 1, **EXACT)
        # |rho - 1|: exp(0.125)-1 = 0.133 (inside the PPO clip), 1-exp(-0.375) = 0.313 (outside)
        assert s["clip_fraction"] == 0.25
        assert s["prob_diff_max"] == pytest.approx(
            max(abs(math.exp(-0.875) - math.exp(-1.0)), abs(math.exp(-0.625) - math.exp(-0.25))), **EXACT)
        # one sequence: |mean(a) - mean(b)| = |mean(d)|
        assert s["log_ppl_diff_max"] == pytest.approx(0.25 / n, **EXACT)
        assert s["log_ppl_diff_mean"] == pytest.approx(0.25 / n, **EXACT)


def test_compare__max_location_names_prompt_position_and_token():
    ref = record(prompt_id="fox", config="hot", sample=1, prompt=PROMPT, completion=COMPLETION,
                 forced=_forced(A), sampler=A, completion_tokens=["a", "b", "c", "d"])
    cand = record(prompt_id="fox", config="hot", sample=1, prompt=PROMPT, completion=COMPLETION,
                  forced=_forced(B), sampler=B, completion_tokens=["a", "b", "c", "d"])
    res = compare_records([ref], [cand])
    loc = res.overall["forced"]["max_location"]
    assert loc == {"config": "hot", "prompt_id": "fox", "sample": 1, "position": 3, "token_id": 7,
                   "reference": -0.25, "candidate": -0.625}
    worst = res.worst_tokens[0]
    assert (worst["channel"], worst["position"], worst["token_id"], worst["token"], worst["abs_diff"]) in {
        ("forced", 3, 7, "d", 0.375), ("sampler", 3, 7, "d", 0.375)}
    assert worst["context_before"] == ["a", "b", "c"] and worst["context_after"] == []


def test_compare__negative_shift_k3_never_negative_and_k1_signed():
    ref = record(forced=_forced([-1.0, -1.0, -1.0, -1.0]), prompt=PROMPT, completion=COMPLETION)
    cand = record(forced=_forced([-1.5, -1.5, -1.5, -1.5]), prompt=PROMPT, completion=COMPLETION)
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["k1_kl"] == pytest.approx(0.5, **EXACT)
    assert s["k3_kl"] == pytest.approx(math.exp(-0.5) - 1 + 0.5, **EXACT) and s["k3_kl"] > 0


def test_compare__prompt_positions_reported_not_measured():
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(A, [None, -3.0, -4.0]))
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(A, [None, -3.0, -4.5]))
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["tokens"] == 4 and s["max_abs_diff"] == 0.0
    assert s["prompt_tokens"] == 2 and s["prompt_max_abs_diff"] == 0.5


# ------------------------------------------------------------------ p99
def test_compare__p99_within_documented_histogram_accuracy():
    rng = np.random.default_rng(1)
    n = 5000
    diffs = 10.0 ** rng.uniform(-9, 0, n)
    diffs[:200] = 0.0
    a = -rng.uniform(0.1, 5.0, n)
    b = a + diffs
    ref = record(prompt=[1], completion=list(range(n)), forced=[None] + a.tolist(), sampler=a.tolist())
    cand = record(prompt=[1], completion=list(range(n)), forced=[None] + b.tolist(), sampler=a.tolist())
    s = compare_records([ref], [cand]).overall["forced"]
    actual = np.abs(b - a)
    exact = np.sort(actual)[math.ceil(0.99 * n) - 1]
    # documented: the upper edge of a fixed bin, 20 bins per decade (within ~12%, never below)
    assert exact * (1 - 1e-9) <= s["p99_abs_diff"] <= exact * 10 ** (1 / HIST_BINS_PER_DECADE) * (1 + 1e-9)
    assert s["max_abs_diff"] == actual.max()


def test_compare__p99_zero_when_most_tokens_equal():
    a = [-1.0] * 200
    b = list(a)
    b[0] = -2.0  # 1 of 200 moved: the 99th percentile is still 0
    ref = record(prompt=[1], completion=list(range(200)), forced=[None] + a, sampler=a)
    cand = record(prompt=[1], completion=list(range(200)), forced=[None] + b, sampler=a)
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["p99_abs_diff"] == 0.0 and s["max_abs_diff"] == 1.0


# ------------------------------------------------------------------ free run + sampler channel
def _diverging(gap: float, diverge_at: int = 2):
    """Reference completion 4 5 6 7; candidate switches token at `diverge_at`.
    The reference's top-2 gap at that position is `gap`."""
    cand_c = list(COMPLETION)
    cand_c[diverge_at:] = [9] * (len(cand_c) - diverge_at)
    top_lps = [[-0.1, -3.0]] * 4
    top_lps = [list(t) for t in top_lps]
    top_lps[diverge_at] = [-0.7, -0.7 - gap]
    top_ids = [[t, 9] for t in COMPLETION]
    ref = record(prompt=PROMPT, completion=COMPLETION, sampler=[-0.1, -0.2, -0.7, -0.3],
                 sampler_top_ids=top_ids, sampler_top_lps=top_lps)
    # logprobs after the divergence differ wildly: they must not be measured
    cand = record(prompt=PROMPT, completion=cand_c, sampler=[-0.1, -0.2, -5.0, -6.0],
                  sampler_top_ids=[[t, 4] for t in cand_c], sampler_top_lps=[[-0.1, -3.0]] * 4)
    return ref, cand


def test_compare__first_divergence_after_near_tie():
    ref, cand = _diverging(gap=0.005)
    res = compare_records([ref], [cand])
    fr = res.overall["free_run"]
    assert fr["sequences"] == 1 and fr["exact_matches"] == 0 and fr["exact_match_rate"] == 0.0
    assert fr["first_divergence_min"] == 2
    assert fr["near_tie_divergences"] == 1
    (div,) = fr["diverged"]
    assert div["position"] == 2 and div["near_tie"] is True
    assert div["top2_gap"] == pytest.approx(0.005, **EXACT)
    row = res.per_prompt[0]
    assert row["free_run_match"] is False and row["first_divergence"] == 2


def test_compare__first_divergence_without_near_tie():
    ref, cand = _diverging(gap=0.5, diverge_at=1)
    fr = compare_records([ref], [cand]).overall["free_run"]
    assert fr["first_divergence_min"] == 1 and fr["near_tie_divergences"] == 0
    assert fr["diverged"][0]["near_tie"] is False


def test_compare__near_tie_unknown_without_reference_top_k():
    ref = record(prompt=PROMPT, completion=COMPLETION)
    cand = record(prompt=PROMPT, completion=(4, 5, 9, 9))
    fr = compare_records([ref], [cand]).overall["free_run"]
    assert fr["diverged"][0]["top2_gap"] is None and fr["near_tie_divergences"] == 0


def test_compare__sampler_channel_only_over_matching_prefix():
    ref, cand = _diverging(gap=0.5)
    s = compare_records([ref], [cand]).overall["sampler"]
    assert s["tokens"] == 2                   # positions 0 and 1 only
    assert s["max_abs_diff"] == 0.0 and s["mismatched"] == 0


def test_compare__candidate_shorter_counts_as_divergence_at_its_end():
    ref = record(prompt=PROMPT, completion=COMPLETION, sampler=[-0.1, -0.2, -0.3, -0.4])
    cand = record(prompt=PROMPT, completion=COMPLETION[:2], sampler=[-0.1, -0.2])
    res = compare_records([ref], [cand])
    assert res.overall["free_run"]["first_divergence_min"] == 2
    assert res.overall["sampler"]["tokens"] == 2


def test_compare__forced_channel_unaffected_by_free_run_divergence():
    from dataclasses import replace

    ref, cand = _diverging(gap=0.5)
    # as in `check`: the run scores the golden's completion, not its own free run
    cand = replace(cand, forced=replace(cand.forced, completion_token_ids=list(COMPLETION)))
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["tokens"] == 4 and s["max_abs_diff"] == 0.0


# ------------------------------------------------------------------ top-k
def test_compare__top1_agreement_and_topk_overlap():
    ref_top = [None, [9, 2], [9, 3]] + [[4, 9], [5, 9], [6, 9], [7, 9]]
    cand_top = [None, [9, 2], [3, 9]] + [[4, 9], [9, 5], [6, 8], [7, 9]]
    lp = [None] + [[-0.1, -1.0]] * 6
    ref = record(prompt=PROMPT, completion=COMPLETION, forced_top_ids=ref_top, forced_top_lps=lp,
                 sampler_top_ids=ref_top[3:], sampler_top_lps=lp[3:])
    cand = record(prompt=PROMPT, completion=COMPLETION, forced_top_ids=cand_top, forced_top_lps=lp,
                  sampler_top_ids=cand_top[3:], sampler_top_lps=lp[3:])
    res = compare_records([ref], [cand])
    for channel in ("forced", "sampler"):  # prompt positions are not counted
        s = res.overall[channel]
        assert s["top1_agreement"] == 0.75
        assert s["topk_overlap"] == pytest.approx((1 + 1 + 0.5 + 1) / 4, **EXACT)


def test_compare__topk_overlap_uses_shorter_list():
    ref = record(prompt=[1], completion=[4], forced=[None, -0.1], sampler=[-0.1],
                 forced_top_ids=[None, [4, 8, 9]], forced_top_lps=[None, [-0.1, -2.0, -3.0]])
    cand = record(prompt=[1], completion=[4], forced=[None, -0.1], sampler=[-0.1],
                  forced_top_ids=[None, [4, 9]], forced_top_lps=[None, [-0.1, -2.0]])
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["top1_agreement"] == 1.0 and s["topk_overlap"] == 0.5  # {4, 8} vs {4, 9}


# ------------------------------------------------------------------ -inf
def test_compare__neg_inf_on_both_sides_is_close():
    a = [-0.5, -math.inf, -2.0, -0.25]
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(a), sampler=a)
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(a), sampler=a)
    for channel in ("forced", "sampler"):
        s = compare_records([ref], [cand]).overall[channel]
        assert s["mismatched"] == 0 and s["max_abs_diff"] == 0.0 and s["bitwise_equal_fraction"] == 1.0
        assert s["mult_prob_error"] == 1.0 and s["k3_kl"] == 0.0 and s["clip_fraction"] == 0.0


def test_compare__neg_inf_on_one_side_is_infinite():
    a = [-0.5, -1.0, -2.0, -0.25]
    b = [-0.5, -math.inf, -2.0, -0.25]
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(a), sampler=a)
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(b), sampler=b)
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["mismatched"] == 1
    assert s["max_abs_diff"] == math.inf
    assert s["max_location"]["position"] == 1 and s["max_location"]["candidate"] == -math.inf
    # the moments are over the finite pairs, and the verdict says how many were left out
    assert s["excluded"] == {"null": 0, "one_sided_inf": 1, "both_neg_inf": 0, "moments_over": 3}
    assert s["mean_abs_diff"] == 0.0 and s["mult_prob_error"] == 1.0 and s["k3_kl"] == 0.0
    assert s["k1_kl"] == 0.0 and s["chi2"] == 0.0
    assert s["clip_fraction"] == 0.25
    assert s["p99_abs_diff"] == math.inf, "the open top bin reports the exact max, never a clamp"
    assert s["prob_diff_max"] == pytest.approx(math.exp(-1.0), **EXACT)


def test_compare__neg_inf_tolerated_by_no_tolerance():
    a = [-0.5, -1.0, -2.0, -0.25]
    b = [-0.5, -math.inf, -2.0, -0.25]
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(a))
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(b))
    s = compare_records([ref], [cand], {None: Tolerance(atol=1e9, rtol=1e9)}).overall["forced"]
    assert s["mismatched"] == 1


# ------------------------------------------------------------------ groups
def test_compare__per_config_and_overall():
    greedy_ref = record(config="greedy", prompt=PROMPT, completion=COMPLETION, forced=_forced(A))
    greedy_cand = record(config="greedy", prompt=PROMPT, completion=COMPLETION, forced=_forced(A))
    hot_ref = record(config="hot", prompt=PROMPT, completion=COMPLETION, forced=_forced(A))
    hot_cand = record(config="hot", prompt=PROMPT, completion=COMPLETION, forced=_forced(B))
    res = compare_records([greedy_ref, hot_ref], [greedy_cand, hot_cand])
    assert sorted(res.per_config) == ["greedy", "hot"]
    g, h, o = (res.per_config["greedy"]["forced"], res.per_config["hot"]["forced"], res.overall["forced"])
    assert g["tokens"] == 4 and g["max_abs_diff"] == 0.0 and g["mismatched"] == 0
    assert h["tokens"] == 4 and h["max_abs_diff"] == 0.375 and h["mismatched"] == 2
    assert o["tokens"] == 8 and o["max_abs_diff"] == 0.375 and o["mismatched"] == 2
    assert o["mean_abs_diff"] == pytest.approx(h["mean_abs_diff"] / 2, **EXACT)
    assert o["max_location"]["config"] == "hot"
    assert res.overall["free_run"]["sequences"] == 2


def test_compare__per_config_tolerance():
    hot_ref = record(config="hot", prompt=PROMPT, completion=COMPLETION, forced=_forced(A), sampler=A)
    hot_cand = record(config="hot", prompt=PROMPT, completion=COMPLETION, forced=_forced(B), sampler=B)
    res = compare_records([hot_ref], [hot_cand], {None: Tolerance(1e-4), "hot": Tolerance(atol=0.2)})
    assert res.per_config["hot"]["forced"]["mismatched"] == 1      # 0.375 > 0.2; 0.125 is fine
    assert res.per_config["hot"]["forced"]["tolerance"] == {"atol": 0.2, "rtol": 0.0}
    # overall is the sum of the configs, each judged by its own tolerance
    assert res.overall["forced"]["mismatched"] == 1


def test_compare__rtol_scales_with_reference():
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(A))
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(B))
    # bounds: 0.5*|a| = 0.5 at a=-1.0 (d=0.125: close), 0.125 at a=-0.25 (d=0.375: not)
    s = compare_records([ref], [cand], {None: Tolerance(atol=0.0, rtol=0.5)}).overall["forced"]
    assert s["mismatched"] == 1


def test_compare__records_only_on_one_side_are_reported():
    ref = [record(prompt_id="a"), record(prompt_id="b"), record(prompt_id="c")]
    cand = [record(prompt_id="b"), record(prompt_id="c"), record(prompt_id="d")]
    res = compare_records(ref, cand)
    assert res.records == 2
    assert res.only_reference == [("greedy", "a", 0)]
    assert res.only_candidate == [("greedy", "d", 0)]
    assert res.overall["forced"]["tokens"] == 6


def test_compare__include_restricts_keys():
    ref = [record(prompt_id="a"), record(prompt_id="b")]
    cand = [record(prompt_id="a"), record(prompt_id="b")]
    res = compare_records(ref, cand, include={("greedy", "b", 0)})
    assert res.records == 1 and res.only_reference == [] and res.per_prompt[0]["prompt_id"] == "b"


def test_compare__different_forced_tokens_warn_and_are_not_compared():
    ref = record(prompt=PROMPT, completion=COMPLETION)
    cand = record(prompt=PROMPT, completion=(4, 5, 6, 8))
    res = compare_records([ref], [cand])
    assert res.overall["forced"]["tokens"] == 0 and res.overall["forced"]["reference_tokens"] == 4
    assert any("different tokens" in w for w in res.warnings)


def test_compare__different_scoring_paths_warn():
    from dataclasses import replace

    ref = record(prompt=PROMPT, completion=COMPLETION)
    cand = replace(ref, forced=replace(ref.forced, path="hf"))
    res = compare_records([ref], [cand])
    assert res.overall["forced"]["path_reference"] == "prefill"
    assert res.overall["forced"]["path_candidate"] == "hf"
    assert any("different paths" in w for w in res.warnings)


def test_compare__by_position_buckets():
    n = 20
    a = [-1.0] * n
    b = list(a)
    b[17] = -1.5
    ref = record(prompt=[1], completion=list(range(n)), forced=[None] + a, sampler=a)
    cand = record(prompt=[1], completion=list(range(n)), forced=[None] + b, sampler=a)
    res = compare_records([ref], [cand])
    buckets = res.by_position["forced"]
    assert [(x["start"], x["count"], x["max_abs_diff"]) for x in buckets] == [(0, 8, 0.0), (8, 8, 0.0),
                                                                              (16, 4, 0.5)]


def test_compare__null_logprobs_are_excluded_and_counted_never_nan():
    a = [-0.5, None, -2.0, -0.25]
    b = [-0.5, -1.0, None, -0.30]
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced([-0.5, -1.0, -2.0, -0.25]), sampler=a)
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced([-0.5, -1.0, -2.0, -0.25]), sampler=b)
    s = compare_records([ref], [cand]).overall["sampler"]
    assert s["tokens"] == 2 and s["reference_tokens"] == 4
    assert s["excluded"]["null"] == 2
    assert s["max_abs_diff"] == pytest.approx(0.05, **EXACT)
    for key in ("mean_abs_diff", "k1_kl", "k2", "k3_kl", "chi2", "mult_prob_error"):
        assert s[key] == s[key], key  # not NaN


def test_compare__k3_is_never_negative_near_zero():
    a = [-1.0] * 4
    b = [-1.0 + 1e-9, -1.0 - 1e-9, -1.0 + 3e-10, -1.0]
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(a), sampler=a)
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(b), sampler=b)
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["k3_kl"] >= 0.0


def test_compare__p99_of_huge_diffs_is_reported_honestly_not_clamped():
    a = [-1.0] * 4
    b = [-3.4e38] * 4
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(a), sampler=a)
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(b), sampler=b)
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["p99_abs_diff"] == pytest.approx(3.4e38, rel=1e-6)
    assert s["p99_bin"][0] == 1e3 and s["p99_bin"][1] == s["max_abs_diff"]


def test_compare__tiny_diffs_below_the_bins_report_an_upper_bound():
    a = [-1.0] * 4
    b = [-1.0 + 2.0 ** -52 * 0] * 3 + [-1.0 + 1e-13]
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(a), sampler=a)
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(b), sampler=b)
    s = compare_records([ref], [cand]).overall["forced"]
    assert 0 < s["p99_abs_diff"] <= 1e-12 and s["p99_bin"][0] == 0.0


# ------------------------------------------------------------------ speed without a change of result
def _state(channel: Channel) -> str:
    # repr tells every float apart bit for bit (and NaN from NaN); arrays as lists
    return repr({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in sorted(vars(channel).items())})


@pytest.mark.parametrize("rtol", [0.0, 1e-3])
def test_compare__finite_fast_path_is_bit_for_bit_the_general_path(rtol):
    rng = np.random.default_rng(11)
    tol = Tolerance(1e-4, rtol)
    fast_all, general_all = Channel(tol), Channel(tol)
    for n in [1, 2, 7, 8, 9, 16, 100, 127, 128, 129, 250, 300] * 3:
        a = -rng.exponential(2.0, n)
        a[rng.random(n) < 0.05] = -1e300  # squares and exponentials overflow; sums stay finite
        d = rng.choice([0.0, 0.0, 1e-13, 1e-6, 1e-4, 1e-3, 0.05, 0.4, 3.0], n) * rng.normal(0.0, 1.0, n)
        b = np.minimum(a + d, 0.0)
        ids = rng.integers(0, 1000, n).tolist()
        tops_a = [[int(x) for x in rng.choice(50, 5, replace=False)] for _ in range(n)]
        tops_b = tops_a if rng.random() < 0.5 else [[r[1], r[0], *r[2:]] for r in tops_a]
        loc = {"config": "c", "prompt_id": f"p{n}", "sample": 0}
        # one sequence alone (a last-bit difference in its sums would show) and folded into the running totals
        for fast, general in ((Channel(tol), Channel(tol)), (fast_all, general_all)):
            got = fast.add(a, b, np.arange(n), loc, ids, (tops_a, tops_b))  # every number finite: the fast path
            want = general._add_general(a, b, np.arange(n), loc, ids, (tops_a, tops_b))
            assert repr(got.tolist()) == repr(want.tolist())
            assert _state(fast) == _state(general)
    assert fast_all.sum_abs > 0 and fast_all.mismatched > 0 and fast_all.zero > 0 and fast_all.top1_agree > 0


@pytest.mark.parametrize("rtol", [0.0, 1e-3])
def test_compare__many_sequences_at_once_are_bit_for_bit_one_at_a_time(rtol):
    """add_many folds a batch of sequences with numpy over all of them;
    every measure must stay what `add` gives one sequence at a time,
    nulls, -inf, empty sequences and overflowing values among them."""
    rng = np.random.default_rng(12)
    tol = Tolerance(1e-4, rtol)
    batched, one_by_one = Channel(tol), Channel(tol)
    for batch in range(12):
        seqs, want = [], []
        for j in range(int(rng.integers(1, 40))):
            n = int(rng.choice([0, 1, 7, 8, 9, 63, 128, 129, 250, 300]))
            a = -rng.exponential(2.0, n)
            a[rng.random(n) < 0.02] = -1e300
            d = rng.choice([0.0, 0.0, 1e-13, 1e-6, 1e-4, 1e-3, 0.05, 0.4, 3.0], n) * rng.normal(0.0, 1.0, n)
            b = np.minimum(a + d, 0.0)
            kind = rng.random()
            if n and kind < 0.15:
                a[rng.integers(0, n, 2)] = np.nan  # null
            elif n and kind < 0.3:
                b[rng.integers(0, n, 2)] = -np.inf
                a[rng.integers(0, n, 1)] = -np.inf
            ids = rng.integers(0, 1000, n).tolist()
            tops_a = [[int(x) for x in rng.choice(50, 5, replace=False)] for _ in range(n)]
            tops_b = tops_a if rng.random() < 0.5 else [[r[1], r[0], *r[2:]] for r in tops_a]
            loc = {"config": "c", "prompt_id": f"p{batch}-{j}", "sample": 0}
            seqs.append((a, b, loc, ids, (tops_a, tops_b)))
            want.append(one_by_one.add(a, b, np.arange(n), loc, ids, (tops_a, tops_b)))
        for a, b, _loc, _ids, tops in seqs:  # the top-k rows go in on their own, as compare sends them
            batched.add_tops(a, b, tops)
        got = batched.add_many(np.concatenate([s[0] for s in seqs]), np.concatenate([s[1] for s in seqs]),
                               [s[0].size for s in seqs], [(loc, ids, None) for _a, _b, loc, ids, _t in seqs])
        assert repr(got.tolist()) == repr(np.concatenate(want).tolist())
        assert _state(batched) == _state(one_by_one)
    assert one_by_one.one_sided_inf > 0 and one_by_one.excluded_null > 0 and one_by_one.top1_agree > 0


def test_compare__reads_each_record_while_holding_at_most_two():
    """A parsed record is hundreds of small lists. Holding the last pair while
    both next records are read crossed the garbage collector's threshold on
    every pair: a tenth of the parse time at 1M tokens (bench/RESULTS.md)."""
    made: list[weakref.ref] = []
    held: list[int] = []

    def stream(values):
        rec = None
        for i in range(20):
            rec = None  # this stream's own reference, as the reader drops it
            held.append(sum(r() is not None for r in made))
            rec = record(prompt_id=f"p{i:02d}", prompt=PROMPT, completion=COMPLETION, forced=_forced(values),
                         sampler=values)
            made.append(weakref.ref(rec))
            yield rec

    res = compare_records(stream(A), stream(B))
    assert res.records == 20 and res.overall["forced"]["tokens"] == 80
    assert max(held) <= 2


@pytest.mark.parametrize("ref_prompt, cand_prompt, expected", [
    ([None, -3.0, -4.0], [None, -3.5, -4.0], 0.5),                  # every number finite: the fast path
    ([None, -math.inf, -4.0], [None, -math.inf, -4.25], 0.25),      # -inf on both sides counts 0
    ([None, None, -4.0], [None, -9.0, -4.125], 0.125),              # a null side is left out
    ([None, -math.inf, -4.0], [None, -3.0, -4.0], math.inf),        # -inf on one side is infinite
])
def test_compare__prompt_max_abs_diff_on_both_paths(ref_prompt, cand_prompt, expected):
    ref = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(A, ref_prompt), sampler=A)
    cand = record(prompt=PROMPT, completion=COMPLETION, forced=_forced(A, cand_prompt), sampler=A)
    s = compare_records([ref], [cand]).overall["forced"]
    assert s["prompt_tokens"] == 2 and s["prompt_max_abs_diff"] == expected

"""Raw vs processed sampler logprobs, measured inside each run: a fit of the
sampler's logprob on the run's own prefill logprob of the same token."""
from __future__ import annotations

import numpy as np
import pytest

from gate.core.compare import compare_records
from gate.core.semantics import CENTRE_FLOOR, Relation, add_relation, classify, compare_relations, matters, own_scores
from gate.core.trace import Record, Scores

VOCAB = 40
PARAMS = {"temperature": 0.7, "top_p": 0.95, "logprobs": 5}


def _dist(rng):
    logits = rng.normal(0, 3, VOCAB)
    return logits - np.log(np.exp(logits).sum())


def _processed(lp, t, top_p):
    x = lp / t
    x = x - np.log(np.exp(x).sum())
    order = np.argsort(-x)
    cum = np.cumsum(np.exp(x[order]))
    n = int(np.searchsorted(cum, top_p)) + 1
    kept = np.exp(x[order[:n]]).sum()
    return x - np.log(kept), order[:n].tolist()


def _record(mode: str, seed: int = 0, n: int = 40, params=PARAMS, noise: float = 0.0, own: bool = False,
            config: str = "hot") -> Record:
    """A run's record: tokens sampled from the processed distribution, the
    sampler's logprob raw or processed (plus decode-vs-prefill noise), and
    the run's own prefill scores of those tokens (as `forced` for a golden,
    as `own` beside golden-token scores for a check)."""
    rng = np.random.default_rng(seed)
    prompt = [1, 2, 3]
    comp, samp, scores = [], [], [None, -1.0, -1.0]
    for _ in range(n):
        lp = _dist(rng)
        proc, kept = _processed(lp, params.get("temperature") or 1.0, params.get("top_p", 1.0))
        tok = int(rng.choice(kept))
        comp.append(tok)
        samp.append(float((lp[tok] if mode == "raw" else proc[tok]) + rng.normal(0, noise)))
        scores.append(float(lp[tok]))
    mine = Scores("prefill", scores, completion_token_ids=comp)
    if own:  # a check: forced scores are of the golden's tokens, own scores of the run's
        other = [t + 1 for t in comp]
        return Record(config=config, prompt_id="p", sample=seed, prompt_token_ids=prompt, completion_token_ids=comp,
                      sampler=Scores("decode", samp), forced=Scores("prefill", scores, completion_token_ids=other),
                      own=mine)
    return Record(config=config, prompt_id="p", sample=seed, prompt_token_ids=prompt, completion_token_ids=comp,
                  sampler=Scores("decode", samp), forced=mine)


def _relation(mode, noise=0.0, seeds=range(3), params=PARAMS) -> Relation:
    rel: dict[str, Relation] = {}
    for s in seeds:
        add_relation(rel, _record(mode, s, params=params, noise=noise))
    return rel["hot"]


def _summary(mode, noise=0.0, seeds=range(3), params=PARAMS):
    return _relation(mode, noise, seeds, params).summary()


def test_semantics__raw_fits_slope_one_and_processed_slope_one_over_t():
    raw, proc = _summary("raw"), _summary("processed")
    assert raw["slope"] == pytest.approx(1.0, abs=1e-12) and raw["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert proc["slope"] == pytest.approx(1 / 0.7, rel=0.15)
    assert classify(raw, PARAMS) == "raw" and classify(proc, PARAMS) == "processed"


def test_semantics__gpu_like_noise_stays_raw_and_does_not_move_the_relation():
    """Decode-vs-prefill noise of bf16 on a GPU (mean abs ~0.007, max ~0.04)
    is below the shift floor; the CPU's exact 1e-6 figure is not assumed."""
    a, b = _summary("raw", noise=0.009, seeds=range(0, 4)), _summary("raw", noise=0.009, seeds=range(4, 8))
    assert classify(a, PARAMS) == "raw" and classify(b, PARAMS) == "raw"
    cmp = compare_relations(a, b)
    assert cmp["shift"] <= CENTRE_FLOOR


def test_semantics__raw_to_processed_moves_the_relation_far_beyond_the_bound():
    cmp = compare_relations(_summary("raw"), _summary("processed", seeds=range(3, 6)))
    assert cmp["shift"] > 0.2 and cmp["slope_shift"] > 5 * cmp["slope_noise"]


def test_semantics__top_p_alone_at_temperature_one_is_seen_in_the_mean_residual():
    params = {"temperature": 1.0, "top_p": 0.5}
    raw, proc = _summary("raw", params=params), _summary("processed", params=params)
    assert classify(raw, params) == "raw" and classify(proc, params) == "processed"
    assert proc["mean_residual"] > 0.05


def test_semantics__own_scores_come_from_own_or_from_forced_of_the_same_tokens():
    golden, check = _record("raw"), _record("raw", own=True)
    assert own_scores(golden) is golden.forced
    assert own_scores(check) is check.own
    stale = Record(config="hot", prompt_id="p", sample=0, prompt_token_ids=[1], completion_token_ids=[5],
                   sampler=Scores("decode", [-1.0]), forced=Scores("prefill", [None, -1.0], completion_token_ids=[6]))
    assert own_scores(stale) is None


def test_semantics__needs_no_shared_random_stream():
    """Every free run diverges at position 0 (another seed stream): the
    sampler channel compares nothing, the in-run relation still works."""
    ref = [_record("raw", s) for s in range(3)]
    cand = [_record("processed", s + 100, own=True) for s in range(3)]
    cand = [Record(**{**r.__dict__, "sample": i}) for i, r in enumerate(cand)]
    ref = [Record(**{**r.__dict__, "sample": i}) for i, r in enumerate(ref)]
    res = compare_records(ref, cand, sampling={"hot": PARAMS})
    sem = res.per_config["hot"]["semantics"]
    assert res.per_config["hot"]["sampler"]["tokens"] < 5
    assert sem["reference_mode"] == "raw" and sem["candidate_mode"] == "processed"
    assert sem["comparison"]["shift"] > 0.2


def test_semantics__greedy_does_not_matter_and_few_tokens_claim_nothing():
    assert not matters({"temperature": 0.0}) and not matters({"temperature": 1.0})
    assert matters({"temperature": 1.0, "top_k": 5}) and matters(PARAMS)
    r = Relation()
    r.add(np.array([-1.0, -2.0]), np.array([-1.0, -2.0]))
    assert r.summary()["slope"] is None
    assert classify(r.summary(), PARAMS) == "unknown"


def test_semantics__a_flat_fit_is_named_by_the_direction_it_moved():
    """A peaked model puts most sampled tokens near logprob 0: the candidate's
    own fit is too flat to place, but against an exact raw golden the lift of
    the mean residual names it processed."""
    from gate.core.semantics import judge

    ref = {"tokens": 64, "slope": 1.0, "mean_residual": 0.0, "se_slope": 0.0, "se_mean": 0.0}
    cand = {"tokens": 64, "slope": 1.12, "mean_residual": 0.01, "se_slope": 0.5, "se_mean": 0.01}
    out = judge(ref, cand, PARAMS)
    assert out["reference_mode"] == "raw" and out["candidate_mode"] == "processed"
    assert out["comparison"]["shift"] > 0.02

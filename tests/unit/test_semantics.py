"""Raw vs processed sampler logprobs, recomputed from the teacher-forced top-k."""
from __future__ import annotations

import math

import numpy as np

from gate.semantics import classify_records, processed_estimate
from gate.trace import Record, Scores

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
    return x - np.log(kept), set(order[:n].tolist())


def _record(mode: str, seed: int = 0, n: int = 12) -> Record:
    rng = np.random.default_rng(seed)
    prompt = [1, 2, 3]
    comp, samp, forced, tops_i, tops_l = [], [], [None, -1.0, -1.0], [None, [0], [0]], [None, [-1.0], [-1.0]]
    for _ in range(n):
        lp = _dist(rng)
        proc, kept = _processed(lp, PARAMS["temperature"], PARAMS["top_p"])
        tok = int(sorted(kept)[0])
        comp.append(tok)
        samp.append(float(lp[tok] if mode == "raw" else proc[tok]))
        forced.append(float(lp[tok]))
        order = np.argsort(-lp)[:5]
        tops_i.append(order.tolist())
        tops_l.append(lp[order].tolist())
    return Record(config="hot", prompt_id="p", sample=seed, prompt_token_ids=prompt, completion_token_ids=comp,
                  sampler=Scores("decode", samp), forced=Scores("prefill", forced, tops_i, tops_l, comp))


def test_processed_estimate__exact_with_the_full_distribution():
    rng = np.random.default_rng(1)
    lp = _dist(rng)
    proc, kept = _processed(lp, 0.7, 0.95)
    tok = next(iter(kept))
    est, unc = processed_estimate(float(lp[tok]), [], {"temperature": 0.7, "top_p": 0.95}, full=lp)
    assert math.isclose(est, proc[tok], abs_tol=1e-9) and unc == 0


def test_classify__raw_and_processed_are_told_apart():
    for mode in ("raw", "processed"):
        out = classify_records([_record(mode, s) for s in range(3)], {"hot": PARAMS})
        assert out["hot"]["mode"] == mode, out
        assert out["hot"]["params"] == "temperature 0.7, top_p 0.95"


def test_classify__greedy_and_temperature_one_are_not_classified():
    rec = _record("raw")
    assert classify_records([rec], {"hot": {"temperature": 1.0}}) == {}
    assert classify_records([rec], {"hot": {"temperature": 0.0}}) == {}

"""What do a run's sampler logprobs mean: raw or processed? Measured inside
each run, so no shared random stream is needed (docs/design.md section 3).

vLLM V1 returns logprobs of the raw logits by default (`raw_logprobs`);
with `processed_logprobs` they are of the distribution actually sampled from,
after temperature, top-k and top-p (docs/design.md section 1). Every run also
scores its *own* free-run tokens teacher-forced (prefill, always raw), so
for each sampled token we have x = its raw prefill logprob and y = the
sampler's logprob of the same token in the same context. Then:

    raw:        y = x                       (plus decode-vs-prefill noise)
    processed:  y = x / T - log Z_T(pos) - log(mass kept by top-k/top-p)

A least-squares fit of y on x over all tokens of a config separates the two
even on flat random-weight distributions: slope 1 and mean residual 0 for
raw, slope ~1/T (and a positive offset under top-k/top-p) for processed.
Measured: raw CPU float32 slope 1.0000, rmse 0; raw GPU bf16 slope
0.9984..0.9998, rmse 0.009; processed GPU bf16 at T=0.7 slope 1.4268
(1/T = 1.4286) (docs/design.md section 4.4).

The golden's relation and the run's relation are compared; what counts is
the shift beyond 6 standard errors measured in the two runs themselves,
gated against a small floor (policy). Pure: numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gate.core.measures import as_float_array
from gate.core.rows import SamplingParams
from gate.core.trace import Record, Scores

__all__ = ["Relation", "own_scores", "relation_pairs", "add_relation", "compare_relations", "compare_spread",
           "classify", "judge", "semantics_sentence", "describe", "matters", "NOISE_SIGMAS", "SHIFT_FLOOR",
           "CENTRE_FLOOR", "SPREAD_FLOOR", "SPREAD_RATIO"]

NOISE_SIGMAS = 6.0    # allowed shift = floor + this many combined standard errors
# Labelling one side on its own (raw or processed) needs an absolute band: GPU bf16 raw slopes spread
# 0.9984..0.9998 across runs; T=0.7 moves the slope by 0.43. Only the words use it; the gate does not.
SHIFT_FLOOR = 0.02
# The gate's floor for the centre: below the smallest bias worth seeing on CPU float32, where the
# golden's own decode-vs-prefill noise is exactly 0 (top-k 20 at T=1 moves the mean by 2.6e-4).
CENTRE_FLOOR = 1e-4
# On top of 6 standard errors, the centre may move by a share of the golden's own residual rms: the
# run-to-run scatter of a fit that the standard errors do not see. Measured on an H200 (bf16, rms
# 0.0102): the raw signed mean residual sat at 7e-5 (0.7% of the rms), raw slopes at 0.9984..0.9998
# (a spread of 14% of the rms).
CENTRE_MEAN_SHARE = 0.05
CENTRE_SLOPE_SHARE = 0.15
# The spread: the residual rms and p99 may grow by this factor over the golden's (plus 6 relative
# standard errors of a rms at the two sample sizes). A real bump moved the bf16 rms by ~10% (0.0102 ->
# 0.0113, 0.0136 -> 0.0150); processed logprobs moved it 5-30x (0.077, 0.351).
SPREAD_RATIO = 1.5
# Below this the spread is not noise but float32 rounding (CPU decode vs prefill: <= 1e-6).
SPREAD_FLOOR = 1e-4
P99_MIN_TOKENS = 100  # a p99 of fewer tokens is the max: gated only above this on both sides
POINTS_KEPT = 200     # relation points kept per side for the report's scatter
_BINS_PER_DECADE = 20
_MIN_EXP, _MAX_EXP = -12, 3
MIN_TOKENS = 8        # fewer pairs than this: no relation is claimed


def matters(params: SamplingParams) -> bool:
    """Raw and processed differ only with temperature != 1 (and > 0), top-k or top-p."""
    t = params.get("temperature", 1.0)
    return bool((t is not None and t > 0 and t != 1) or params.get("top_k") not in (None, -1, 0)
                or params.get("top_p") not in (None, 1.0, 1))


def describe(params: SamplingParams) -> str:
    bits = []
    t = params.get("temperature", 1.0)
    if t not in (None, 1.0, 1):
        bits.append(f"temperature {t}")
    if params.get("top_k") not in (None, -1, 0):
        bits.append(f"top_k {params['top_k']}")
    if params.get("top_p") not in (None, 1.0, 1):
        bits.append(f"top_p {params['top_p']}")
    return ", ".join(bits) or "temperature 1"


@dataclass
class Relation:
    """Streaming least-squares fit of y (sampler) on x (own prefill)."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0
    se: float = 0.0       # sum of e = y - x
    see: float = 0.0      # sum of e^2
    max_abs_e: float = 0.0
    zero: int = 0         # residuals exactly 0 (bitwise equal sampler and prefill)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(
        (_MAX_EXP - _MIN_EXP) * _BINS_PER_DECADE + 2, dtype=np.int64))
    # a deterministic, even sample of (x, y) for the report: every `stride`-th pair, thinned as it fills
    pts: list[tuple[float, float]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if x.size == 0:
            return
        e = y - x
        absd = np.abs(e)
        self.zero += int(np.count_nonzero(absd == 0))
        with np.errstate(divide="ignore"):
            idx = np.floor((np.log10(np.maximum(absd, 1e-300)) - _MIN_EXP) * _BINS_PER_DECADE).astype(np.int64) + 1
        idx = np.clip(idx, 0, self.hist.size - 1)
        idx[absd < 10.0 ** _MIN_EXP] = 0
        self.hist += np.bincount(idx, minlength=self.hist.size)
        take = np.arange(x.size)[(np.arange(x.size) + self.seen) % self.stride == 0]
        self.seen += int(x.size)
        self.pts.extend(zip(x[take].tolist(), y[take].tolist()))
        while len(self.pts) > POINTS_KEPT:
            self.pts = self.pts[::2]
            self.stride *= 2
        self.n += int(x.size)
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float(np.dot(x, x))
        self.sxy += float(np.dot(x, y))
        self.syy += float(np.dot(y, y))
        self.se += float(e.sum())
        self.see += float(np.dot(e, e))
        self.max_abs_e = max(self.max_abs_e, float(np.abs(e).max()))

    def quantile(self, q: float) -> float | None:
        """Upper edge of the histogram bin that holds the q-quantile of |y - x|
        (at most 12% above the exact value, never above the max)."""
        if self.n == 0:
            return None
        i = int(np.searchsorted(np.cumsum(self.hist), math.ceil(q * self.n)))
        if i == 0:
            return 0.0 if self.zero >= math.ceil(q * self.n) else min(10.0 ** _MIN_EXP, self.max_abs_e)
        return min(10.0 ** (_MIN_EXP + i / _BINS_PER_DECADE), self.max_abs_e)

    def share_beyond(self, band: float) -> float | None:
        """Share of residuals with |y - x| above `band`, read off the fine bins
        (a bin counts when its lower edge is at or above the band)."""
        if self.n == 0:
            return None
        lower = np.concatenate(([0.0], 10.0 ** (_MIN_EXP + np.arange(self.hist.size - 1) / _BINS_PER_DECADE)))
        return float(self.hist[lower >= band].sum()) / self.n if band > 0 else (self.n - self.zero) / self.n

    def points(self) -> list[list[float]]:
        return [[x, y] for x, y in self.pts]

    def residual_histogram(self) -> dict[str, Any]:
        """Decade bins of |y - x| for display: {"zero", "decades": [{"exp", "count"}]}."""
        decades: dict[int, int] = {}
        for i, c in enumerate(self.hist.tolist()):
            if c and i:
                e = _MIN_EXP + (i - 1) // _BINS_PER_DECADE
                decades[e] = decades.get(e, 0) + c
        small = int(self.hist[0]) - self.zero
        if small:
            decades[_MIN_EXP - 1] = decades.get(_MIN_EXP - 1, 0) + small
        return {"zero": self.zero, "decades": [{"exp": e, "count": c} for e, c in sorted(decades.items())]}

    def summary(self) -> dict[str, Any] | None:
        spread = {"rms_residual": math.sqrt(self.see / self.n) if self.n else None,
                  "p99_abs_residual": self.quantile(0.99)}
        if self.n < MIN_TOKENS:
            return None if self.n == 0 else {"tokens": self.n, "slope": None, "offset": None, "rmse": None,
                                              "mean_residual": self.se / self.n, "max_abs_residual": self.max_abs_e,
                                              "se_slope": None, "se_mean": None, **spread}
        n = self.n
        mx, my = self.sx / n, self.sy / n
        cxx = max(self.sxx / n - mx * mx, 0.0)
        cxy = self.sxy / n - mx * my
        cyy = max(self.syy / n - my * my, 0.0)
        mean_e = self.se / n
        var_e = max(self.see / n - mean_e * mean_e, 0.0)
        se_mean = math.sqrt(var_e / max(n - 1, 1))
        if cxx <= 1e-12 * max(1.0, mx * mx):  # every x the same: no slope to fit
            slope = offset = rmse = se_slope = None
        else:
            slope = cxy / cxx
            offset = my - slope * mx
            resid = max(cyy - slope * cxy, 0.0)
            rmse = math.sqrt(resid)
            se_slope = math.sqrt(resid / max(n - 2, 1) / cxx)
        return {"tokens": n, "slope": slope, "offset": offset, "rmse": rmse, "mean_residual": mean_e,
                "max_abs_residual": self.max_abs_e, "se_slope": se_slope, "se_mean": se_mean, **spread}


def own_scores(rec: Record) -> Scores | None:
    """Prefill scores of the record's own completion tokens: `own` when the run
    wrote it (check), else `forced` when it scored its own tokens (record)."""
    if rec.own is not None:
        return rec.own
    f = rec.forced
    if f is not None and (f.completion_token_ids is None
                          or list(f.completion_token_ids) == list(rec.completion_token_ids)):
        return f
    return None


def relation_pairs(rec: Record) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) for the completion tokens where both numbers are finite."""
    own = own_scores(rec)
    if rec.sampler is None or own is None:
        return np.zeros(0), np.zeros(0)
    p = len(rec.prompt_token_ids)
    xs = own.logprobs[p:p + len(rec.completion_token_ids)]
    ys = rec.sampler.logprobs
    x, y = as_float_array(xs), as_float_array(ys)
    # A logprob below -1e4 is a probability of exactly 0 in any float format:
    # it says nothing about a relation and would overflow the sums of squares.
    ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) < 1e4) & (np.abs(y) < 1e4)
    return x[ok], y[ok]


def classify(summary: dict[str, Any] | None, params: SamplingParams, floor: float = SHIFT_FLOOR) -> str:
    """'raw', 'processed', 'raw (= processed)' or 'unknown', in words for reports.

    For tokens sampled from the processed distribution q, the mean of
    y - x = log q - log p estimates KL(q || p) >= 0: processed lifts it above
    the noise whenever q != p; raw keeps it at 0. The slope tells temperature
    apart (1 raw, about 1/T processed) where the prefill logprobs spread
    enough to fit one; each is judged against its own standard error."""
    if not summary or summary.get("se_mean") is None:
        return "unknown"
    if not matters(params):
        return "raw (= processed: no temperature, top-k or top-p)"
    t = params.get("temperature", 1.0) or 1.0
    mean_e, slope = summary["mean_residual"], summary.get("slope")
    mean_ok = abs(mean_e) <= floor + NOISE_SIGMAS * summary["se_mean"]
    slope_ok = slope is None or abs(slope - 1) <= floor + NOISE_SIGMAS * (summary.get("se_slope") or 0.0)
    if mean_ok and slope_ok:
        return "raw"
    if mean_e > floor + NOISE_SIGMAS * summary["se_mean"]:
        return "processed"
    if slope is not None and not slope_ok and t != 1 and (slope - 1) * (1 / t - 1) > 0:
        return "processed"  # the slope left 1 toward 1/T (it may stop short on a peaked model)
    return "unknown"


def compare_relations(ref: dict[str, Any] | None, cand: dict[str, Any] | None) -> dict[str, Any] | None:
    """How far the candidate's relation's centre moved from the reference's,
    beyond the noise measured in the runs: for the mean residual and (where
    both fits are well conditioned) the slope, the shift minus its noise; the
    check's value is the larger, gated against the policy's floor
    (CENTRE_FLOOR by default).

    The noise of each is 6 combined standard errors plus a share of the
    golden's own residual rms (the run-to-run scatter that a standard error
    does not see). Under "nothing changed" both sides scatter alike, so the
    quieter side's standard error stands for both: a side whose relation
    moved scatters more (log Z varies by position) and must not widen its own
    bound. On CPU float32 the golden's noise is exactly 0, so any bias above
    the floor shows."""
    if not ref or not cand or ref.get("se_mean") is None or cand.get("se_mean") is None:
        return None
    rms = ref.get("rms_residual") or 0.0
    mean_shift = abs(cand["mean_residual"] - ref["mean_residual"])
    mean_noise = NOISE_SIGMAS * math.sqrt(2) * min(ref["se_mean"], cand["se_mean"]) + CENTRE_MEAN_SHARE * rms
    excess = [max(0.0, mean_shift - mean_noise)]
    slope_shift = slope_noise = None
    if ref.get("slope") is not None and cand.get("slope") is not None:
        slope_shift = abs(cand["slope"] - ref["slope"])
        slope_noise = (NOISE_SIGMAS * math.sqrt(2) * min(ref["se_slope"], cand["se_slope"])
                       + CENTRE_SLOPE_SHARE * rms)
        excess.append(max(0.0, slope_shift - slope_noise))
    return {"shift": max(excess), "mean_shift": mean_shift, "mean_noise": mean_noise,
            "slope_shift": slope_shift, "slope_noise": slope_noise}


def compare_spread(ref: Relation, cand: Relation) -> dict[str, Any] | None:
    """How much wider the candidate's decode-vs-prefill residuals scatter
    than the golden's: the ratio of the residual rms and (with enough tokens
    on both sides) of the p99 of |residual|, each over the golden's value (or
    SPREAD_FLOOR where the golden's is below it, as on CPU float32, where it
    is 0). `value` is the larger ratio; `allowed_extra` is 6 relative standard
    errors of a rms at the two sample sizes, added to the policy's ratio
    bound. The share of residuals beyond a band (twice the golden's p99, at
    least the floor) is reported for both sides: at suite sizes its binomial
    noise is too large to gate on beside the p99.

    This is the guard that symmetric decode-path noise cannot slip past: it
    keeps the centre (slope 1, mean 0) and widens the spread."""
    if ref.n < MIN_TOKENS or cand.n < MIN_TOKENS:
        return None
    r_rms, c_rms = math.sqrt(ref.see / ref.n), math.sqrt(cand.see / cand.n)
    rms_ratio = c_rms / max(r_rms, SPREAD_FLOOR)
    p99_ratio = None
    r_p99, c_p99 = ref.quantile(0.99) or 0.0, cand.quantile(0.99) or 0.0
    if ref.n >= P99_MIN_TOKENS and cand.n >= P99_MIN_TOKENS:
        p99_ratio = c_p99 / max(r_p99, SPREAD_FLOOR)
    band = 2 * max(r_p99, SPREAD_FLOOR)
    return {"value": max(rms_ratio, p99_ratio or 0.0), "rms_ratio": rms_ratio, "p99_ratio": p99_ratio,
            "reference_rms": r_rms, "candidate_rms": c_rms, "reference_p99": r_p99, "candidate_p99": c_p99,
            "floor": SPREAD_FLOOR, "allowed_extra": NOISE_SIGMAS * math.sqrt(1 / (2 * ref.n) + 1 / (2 * cand.n)),
            "band": band, "reference_beyond_band": ref.share_beyond(band),
            "candidate_beyond_band": cand.share_beyond(band)}


def judge(ref: dict[str, Any] | None, cand: dict[str, Any] | None, params: SamplingParams,
          floor: float = SHIFT_FLOOR, gate_floor: float = CENTRE_FLOOR) -> dict[str, Any]:
    """Both sides' modes and how far the relation moved. A side is labelled
    on its own first; when the relation moved beyond the floor but both got
    the same label (a fit too flat to place on its own), the direction names
    it: processing lifts the mean residual (KL(q || p) > 0) and pulls the
    slope toward 1/T."""
    ref_mode, cand_mode = classify(ref, params, floor), classify(cand, params, floor)
    comparison = compare_relations(ref, cand)
    if comparison and comparison["shift"] > gate_floor and ref_mode == cand_mode and matters(params):
        t = params.get("temperature", 1.0) or 1.0
        lifted = cand["mean_residual"] - ref["mean_residual"]
        toward = (cand.get("slope") is not None and ref.get("slope") is not None and t != 1
                  and abs(cand["slope"] - 1 / t) < abs(ref["slope"] - 1 / t))
        if ref_mode == "raw" and (lifted > 0 or toward):
            cand_mode = "processed"
        elif ref_mode == "processed" and (lifted < 0 or not toward):
            cand_mode = "raw"
        else:
            cand_mode = f"{cand_mode}, relation changed"
    return {"reference_mode": ref_mode, "candidate_mode": cand_mode, "comparison": comparison}


def add_relation(relations: dict[str, Relation], rec: Record) -> Record:
    """Fold one record into per-config relations (streaming writers)."""
    x, y = relation_pairs(rec)
    if x.size:
        relations.setdefault(rec.config, Relation()).add(x, y)
    return rec


def semantics_sentence(per_config: dict[str, Any]) -> dict[str, Any]:
    """Both sides' semantics per config, and one plain sentence (diagnosis),
    from what the comparison already judged (`measures.per_config[*].semantics`
    of a verdict): nothing is read or fitted twice."""
    lines, changed = [], False
    result: dict[str, Any] = {"golden": {}, "candidate": {}}
    for config in sorted(per_config):
        sem = (per_config[config] or {}).get("semantics") or {}
        if not sem.get("matters"):
            continue
        gm, cm, params = sem.get("reference_mode"), sem.get("candidate_mode"), sem.get("params")
        result["golden"][config] = {"mode": gm, "relation": sem.get("reference"), "params": params}
        result["candidate"][config] = {"mode": cm, "relation": sem.get("candidate"), "params": params}
        if gm != cm:
            changed = True
            lines.append(f"config '{config}' ({params}): golden sampler logprobs were {gm}; under test they are {cm}")
        else:
            lines.append(f"config '{config}' ({params}): both {gm}")
    result.update(changed=changed, summary="; ".join(lines) or None)
    return result

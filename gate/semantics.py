"""What do a run's sampler logprobs mean: raw or processed? Measured inside
each run, so no shared random stream is needed (issue 10, item 1).

vLLM V1 returns logprobs of the raw logits by default (`raw_logprobs`);
with `processed_logprobs` they are of the distribution actually sampled from,
after temperature, top-k and top-p (design.md section 1). Every run also
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
(1/T = 1.4286) (design.md section 4).

The golden's relation and the run's relation are compared; what counts is
the shift beyond 6 standard errors measured in the two runs themselves,
gated against a small floor (policy). Pure: numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from gate.trace import Record, Scores

__all__ = ["Relation", "own_scores", "relation_pairs", "relations_of", "add_relation", "compare_relations", "classify", "judge",
           "semantics_sentence", "describe", "matters", "NOISE_SIGMAS", "SHIFT_FLOOR"]

NOISE_SIGMAS = 6.0    # allowed shift = floor + this many combined standard errors
SHIFT_FLOOR = 0.02    # default floor: GPU bf16 raw slopes spread 0.9984..0.9998; T=0.7 moves the slope by 0.43
MIN_TOKENS = 8        # fewer pairs than this: no relation is claimed


def matters(params: dict[str, Any]) -> bool:
    """Raw and processed differ only with temperature != 1 (and > 0), top-k or top-p."""
    t = params.get("temperature", 1.0)
    return bool((t is not None and t > 0 and t != 1) or params.get("top_k") not in (None, -1, 0)
                or params.get("top_p") not in (None, 1.0, 1))


def describe(params: dict[str, Any]) -> str:
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

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if x.size == 0:
            return
        e = y - x
        self.n += int(x.size)
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float(np.dot(x, x))
        self.sxy += float(np.dot(x, y))
        self.syy += float(np.dot(y, y))
        self.se += float(e.sum())
        self.see += float(np.dot(e, e))
        self.max_abs_e = max(self.max_abs_e, float(np.abs(e).max()))

    def summary(self) -> dict[str, Any] | None:
        if self.n < MIN_TOKENS:
            return None if self.n == 0 else {"tokens": self.n, "slope": None, "offset": None, "rmse": None,
                                              "mean_residual": self.se / self.n, "max_abs_residual": self.max_abs_e,
                                              "se_slope": None, "se_mean": None}
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
                "max_abs_residual": self.max_abs_e, "se_slope": se_slope, "se_mean": se_mean}


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
    x = np.array([np.nan if v is None else v for v in xs], dtype=np.float64)
    y = np.array([np.nan if v is None else v for v in ys], dtype=np.float64)
    # A logprob below -1e4 is a probability of exactly 0 in any float format:
    # it says nothing about a relation and would overflow the sums of squares.
    ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) < 1e4) & (np.abs(y) < 1e4)
    return x[ok], y[ok]


def classify(summary: dict[str, Any] | None, params: dict[str, Any], floor: float = SHIFT_FLOOR) -> str:
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
    """How far the candidate's relation moved from the reference's, beyond
    the noise the runs measured: for the mean residual and (where both fits
    are well conditioned) the slope, the shift minus 6 standard errors; the
    check's value is the larger, gated against the policy's floor.

    Under "nothing changed" both sides scatter alike, so the quieter side's
    standard error stands for both: a side whose relation moved scatters more
    (log Z varies by position) and must not widen its own bound."""
    if not ref or not cand or ref.get("se_mean") is None or cand.get("se_mean") is None:
        return None
    mean_shift = abs(cand["mean_residual"] - ref["mean_residual"])
    mean_noise = NOISE_SIGMAS * math.sqrt(2) * min(ref["se_mean"], cand["se_mean"])
    excess = [max(0.0, mean_shift - mean_noise)]
    slope_shift = slope_noise = None
    if ref.get("slope") is not None and cand.get("slope") is not None:
        slope_shift = abs(cand["slope"] - ref["slope"])
        slope_noise = NOISE_SIGMAS * math.sqrt(2) * min(ref["se_slope"], cand["se_slope"])
        excess.append(max(0.0, slope_shift - slope_noise))
    return {"shift": max(excess), "mean_shift": mean_shift, "mean_noise": mean_noise,
            "slope_shift": slope_shift, "slope_noise": slope_noise}


def judge(ref: dict[str, Any] | None, cand: dict[str, Any] | None, params: dict[str, Any],
          floor: float = SHIFT_FLOOR) -> dict[str, Any]:
    """Both sides' modes and how far the relation moved. A side is labelled
    on its own first; when the relation moved beyond the floor but both got
    the same label (a fit too flat to place on its own), the direction names
    it: processing lifts the mean residual (KL(q || p) > 0) and pulls the
    slope toward 1/T."""
    ref_mode, cand_mode = classify(ref, params, floor), classify(cand, params, floor)
    comparison = compare_relations(ref, cand)
    if comparison and comparison["shift"] > floor and ref_mode == cand_mode and matters(params):
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


def relations_of(records: Iterable[Record]) -> dict[str, Relation]:
    out: dict[str, Relation] = {}
    for rec in records:
        add_relation(out, rec)
    return out


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

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

The golden's relation and the run's relation are compared; the allowed shift
is a floor (policy) plus a multiple of the standard errors measured in the
two runs themselves. Pure: numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from gate.trace import Record, Scores, read_trace

__all__ = ["Relation", "own_scores", "relation_pairs", "relations_of", "compare_relations", "classify",
           "compare_semantics", "describe", "matters", "NOISE_SIGMAS", "SHIFT_FLOOR"]

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
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def classify(summary: dict[str, Any] | None, params: dict[str, Any], floor: float = SHIFT_FLOOR) -> str:
    """'raw', 'processed', 'raw (= processed)' or 'unknown', in words for reports."""
    if not summary or summary.get("slope") is None:
        return "unknown"
    if not matters(params):
        return "raw (= processed: no temperature, top-k or top-p)"
    t = params.get("temperature", 1.0) or 1.0
    slope, mean_e = summary["slope"], summary["mean_residual"]
    allow = floor + NOISE_SIGMAS * max(summary.get("se_slope") or 0.0, summary.get("se_mean") or 0.0)
    if abs(slope - 1) <= allow and abs(mean_e) <= allow:
        return "raw"
    if t != 1 and abs(slope - 1 / t) < abs(slope - 1):
        return "processed"
    if t == 1 and mean_e > allow:  # top-k/top-p renormalisation lifts every kept token
        return "processed"
    return "unknown"


def compare_relations(ref: dict[str, Any] | None, cand: dict[str, Any] | None,
                      floor: float = SHIFT_FLOOR) -> dict[str, Any] | None:
    """How far the candidate's relation moved from the reference's: the larger
    of the slope shift and the mean-residual shift, and a noise allowance from
    the standard errors the runs measured (the policy adds its floor)."""
    if not ref or not cand:
        return None
    # Under "nothing changed" both sides scatter alike, so the quieter side's
    # standard error stands for both; a side whose relation moved scatters
    # more (log Z varies by position) and must not widen its own bound.
    shifts, noise = [], []
    if ref.get("slope") is not None and cand.get("slope") is not None:
        shifts.append(abs(cand["slope"] - ref["slope"]))
        noise.append(math.sqrt(2) * min(ref["se_slope"], cand["se_slope"]))
    if ref.get("se_mean") is not None and cand.get("se_mean") is not None:
        shifts.append(abs(cand["mean_residual"] - ref["mean_residual"]))
        noise.append(math.sqrt(2) * min(ref["se_mean"], cand["se_mean"]))
    if not shifts:
        return None
    allowance = NOISE_SIGMAS * max(noise)
    return {"shift": max(shifts), "slope_shift": shifts[0] if len(shifts) == 2 else None,
            "mean_shift": shifts[-1], "noise_allowance": allowance, "bound": floor + allowance}


def relations_of(records: Iterable[Record]) -> dict[str, Relation]:
    out: dict[str, Relation] = {}
    for rec in records:
        x, y = relation_pairs(rec)
        if x.size:
            out.setdefault(rec.config, Relation()).add(x, y)
    return out


def compare_semantics(golden: Path, candidate: Path) -> dict[str, Any]:
    """Both sides' semantics per config, and one plain sentence (diagnosis)."""
    sides = {}
    sampling: dict[str, Any] = {}
    for name, loc in (("golden", golden), ("candidate", candidate)):
        reader = read_trace(loc)
        sampling = {**(reader.manifest.suite.get("sampling") or {}), **sampling}
        sides[name] = {c: r.summary() for c, r in relations_of(reader.records()).items()}
    lines, changed = [], False
    result: dict[str, Any] = {"golden": {}, "candidate": {}}
    for config in sorted(set(sides["golden"]) | set(sides["candidate"])):
        params = sampling.get(config) or {}
        if not matters(params):
            continue
        g, c = sides["golden"].get(config), sides["candidate"].get(config)
        gm, cm = classify(g, params), classify(c, params)
        result["golden"][config] = {"mode": gm, "relation": g, "params": describe(params)}
        result["candidate"][config] = {"mode": cm, "relation": c, "params": describe(params)}
        if gm != cm:
            changed = True
            lines.append(f"config '{config}' ({describe(params)}): golden sampler logprobs were {gm}; "
                         f"under test they are {cm}")
        else:
            lines.append(f"config '{config}' ({describe(params)}): both {gm}")
    result.update(changed=changed, summary="; ".join(lines) or None)
    return result

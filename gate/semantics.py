"""What do the engine's sampler logprobs mean: raw or processed? (issue 5, item 2)

vLLM V1 returns logprobs of the raw logits by default, before temperature,
top-k and top-p (`logprobs_mode=raw_logprobs`); with `processed_logprobs`
they are of the distribution actually sampled from (design.md section 1).
For a sampling config with temperature != 1 or top-k/top-p the two differ,
and we can tell which one a trace holds by recomputing both from the same
trace's teacher-forced (prefill, always raw) scores of the same tokens:

    raw:        s = lp
    processed:  s = lp / T - log Z_T - log(mass kept by top-k/top-p)

Z_T needs the full distribution; a trace keeps only the top-k, so we bound
the tail (its raw mass is known: 1 - sum of the top-k) and use the middle of
the bounds. When a full-distribution scorer is available (`full` argument,
e.g. the HF trainer reference) it is used instead. Pure: numpy only.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gate.trace import Record, read_trace

__all__ = ["processed_estimate", "classify_records", "classify_trace", "compare_semantics", "RAW_TOL"]

RAW_TOL = 1e-3       # raw sampler vs prefill: 1e-6 on CPU fp32, up to ~0.05 on GPU bf16 (design.md section 4)
PROCESSED_TOL = 5e-2  # the top-k tail estimate is good to a few 1e-2 at worst


def _needs(params: dict[str, Any]) -> bool:
    t = params.get("temperature", 1.0)
    return bool((t not in (None, 1.0, 1) and t > 0) or (params.get("top_k") not in (None, -1, 0))
                or (params.get("top_p") not in (None, 1.0, 1)))


def describe(params: dict[str, Any]) -> str:
    bits = []
    if params.get("temperature", 1.0) not in (None, 1.0, 1):
        bits.append(f"temperature {params['temperature']}")
    if params.get("top_k") not in (None, -1, 0):
        bits.append(f"top_k {params['top_k']}")
    if params.get("top_p") not in (None, 1.0, 1):
        bits.append(f"top_p {params['top_p']}")
    return ", ".join(bits) or "temperature 1"


def processed_estimate(token_lp: float, top_lps: Sequence[float], params: dict[str, Any],
                       full: np.ndarray | None = None) -> tuple[float, float]:
    """(estimate, half-width of its uncertainty) of the processed logprob of a
    token whose raw logprob is `token_lp`, from the raw top-k (or the full
    raw distribution when given)."""
    t = float(params.get("temperature", 1.0) or 1.0)
    if full is not None:
        lps = np.sort(np.asarray(full, dtype=np.float64))[::-1]
        tail_mass = 0.0
    else:
        lps = np.sort(np.asarray(list(top_lps), dtype=np.float64))[::-1]
        tail_mass = max(0.0, 1.0 - float(np.exp(lps).sum()))
    scaled = lps / t
    head = np.exp(scaled - scaled.max())
    # tail under temperature: each tail p_j <= p_k, so p_j^(1/T) <= p_j * p_k^(1/T - 1) (T < 1)
    pk = math.exp(lps[-1]) if lps.size else 0.0
    tail_hi = tail_mass * (pk ** (1 / t - 1) if t < 1 else 1.0) * math.exp(-scaled.max())
    z_lo = float(head.sum())
    z_hi = z_lo + tail_hi
    probs = head / z_lo
    keep = np.ones_like(probs, dtype=bool)
    top_k = params.get("top_k")
    if top_k not in (None, -1, 0) and int(top_k) < probs.size:
        keep[int(top_k):] = False
    top_p = params.get("top_p")
    if top_p not in (None, 1.0, 1):
        cum = np.cumsum(probs)
        n = int(np.searchsorted(cum, float(top_p))) + 1  # smallest prefix reaching top_p
        keep[n:] = False
    kept = float(probs[keep].sum()) if keep.any() else 1.0
    lo = token_lp / t - scaled.max() - math.log(z_hi)
    hi = token_lp / t - scaled.max() - math.log(z_lo)
    if not keep.all():
        # kept mass computed against z_lo; with tail mass it is smaller: widen
        lo -= math.log(kept)
        hi -= math.log(kept * z_lo / z_hi) if z_hi > z_lo else math.log(kept)
    return (lo + hi) / 2, (hi - lo) / 2


def classify_records(records: Sequence[Record] | Any, sampling: dict[str, dict[str, Any]],
                     full: Callable[[Record, int], np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """Per sampling config: is the sampler channel raw or processed? Uses the
    positions where the teacher-forced scores are of the same tokens."""
    acc: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        params = sampling.get(rec.config) or {}
        if not _needs(params) or rec.sampler is None or rec.forced is None or not rec.forced.top_logprobs:
            continue
        forced_ids = list(rec.forced.completion_token_ids or rec.completion_token_ids)
        p = len(rec.prompt_token_ids)
        a = acc.setdefault(rec.config, {"raw": [], "proc": [], "unc": []})
        for i, (x, y) in enumerate(zip(rec.completion_token_ids, forced_ids)):
            if x != y:
                break
            s = rec.sampler.logprobs[i]
            lp = rec.forced.logprobs[p + i]
            tops = rec.forced.top_logprobs[p + i]
            if s is None or lp is None or not tops or not math.isfinite(s):
                continue
            est, unc = processed_estimate(lp, tops, params, full(rec, p + i) if full else None)
            a["raw"].append(abs(s - lp))
            a["proc"].append(abs(s - est))
            a["unc"].append(unc)
    out = {}
    for config, a in acc.items():
        if not a["raw"]:
            continue
        raw, proc = float(np.max(a["raw"])), float(np.max(a["proc"]))
        if raw <= RAW_TOL:
            mode = "raw"
        elif proc <= max(PROCESSED_TOL, 2 * float(np.max(a["unc"]))) or proc < raw / 5:
            mode = "processed"
        else:
            mode = "unknown"
        out[config] = {"mode": mode, "tokens": len(a["raw"]), "max_abs_vs_raw": raw,
                       "max_abs_vs_processed_estimate": proc, "estimate_uncertainty": float(np.max(a["unc"])),
                       "params": describe(sampling.get(config) or {})}
    return out


def classify_trace(location: Path) -> dict[str, dict[str, Any]]:
    reader = read_trace(location)
    return classify_records(reader.records(), reader.manifest.suite.get("sampling") or {})


def compare_semantics(golden: Path, candidate: Path) -> dict[str, Any]:
    """Both sides' semantics, per config, and one plain sentence."""
    g, c = classify_trace(golden), classify_trace(candidate)
    lines = []
    for config in sorted(set(g) | set(c)):
        gm, cm = (g.get(config) or {}).get("mode"), (c.get(config) or {}).get("mode")
        params = (g.get(config) or c.get(config) or {}).get("params")
        if gm and cm and gm != cm:
            lines.append(f"config '{config}' ({params}): golden sampler logprobs were {gm}; under test they are {cm}")
        elif gm and cm:
            lines.append(f"config '{config}' ({params}): both {gm}")
    changed = any((g.get(k) or {}).get("mode") != (c.get(k) or {}).get("mode") for k in set(g) & set(c))
    return {"golden": g, "candidate": c, "changed": changed, "summary": "; ".join(lines) or None}

"""Trainer-side measures between rollout logprobs (the behaviour policy, as
the engine returned them) and the trainer's logprobs of the same tokens
(issue 5, item 1). This is the view an RL objective sees: the importance
ratio rho = pi_trainer / pi_rollout = exp(d), d = trainer - rollout.

| measure | definition |
|---|---|
| k3_kl | mean(rho - 1 - d) (verl k3_kl; NeMo-RL calls < 1e-3 acceptable) |
| mult_prob_error | mean(exp(abs(d))) (NeMo-RL: <= 1.05) |
| clip_fraction | share with abs(rho - 1) > 0.2 (PPO clip) |
| ratio | min, p1, p5, p25, p50, p75, p95, p99, max of rho, and a log2 histogram |
| tis_truncated_fraction | share with rho > C, C = 2 (truncated importance sampling cap) |
| tis_mean_weight | mean(min(rho, C)) |

Pure: numpy only. Hook: verdict["rl"] = measure(reference, candidate)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from gate.compare import CLIP_EPS, merge_records
from gate.trace import Record, TraceReader

__all__ = ["measure", "measure_records", "TRAINER_PATHS", "TIS_CAP"]

TRAINER_PATHS = ("hf", "trainer")
TIS_CAP = 2.0
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def _pairs(reference: Iterable[Record], candidate: Iterable[Record]) -> Iterable[tuple[Record, Record]]:
    for r, c in merge_records(iter(reference), iter(candidate)):
        if r is not None and c is not None:
            yield r, c


def measure_records(reference: Iterable[Record], candidate: Iterable[Record],
                    cap: float = TIS_CAP) -> dict[str, Any] | None:
    """`reference` = rollouts, `candidate` = trainer (or the other way round:
    the side whose sampler path is hf/trainer is taken as the trainer)."""
    ds: list[np.ndarray] = []
    per_config: dict[str, list[np.ndarray]] = {}
    sides = None
    for a, b in _pairs(reference, candidate):
        if a.sampler is None or b.sampler is None:
            continue
        if list(a.completion_token_ids) != list(b.completion_token_ids):
            continue  # the trainer scores the rollout's own tokens; anything else is not an RL ratio
        if sides is None:
            sides = (a.sampler.path, b.sampler.path)
        rollout, trainer = (a, b) if b.sampler.path in TRAINER_PATHS or a.sampler.path not in TRAINER_PATHS \
            else (b, a)
        x = np.array([np.nan if v is None else v for v in rollout.sampler.logprobs], dtype=np.float64)
        y = np.array([np.nan if v is None else v for v in trainer.sampler.logprobs], dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        d = (y - x)[ok]
        ds.append(d)
        per_config.setdefault(a.config, []).append(d)
    if not ds or sides is None or not any(p in TRAINER_PATHS for p in sides):
        return None
    out = _stats(np.concatenate(ds), cap)
    out["paths"] = {"reference": sides[0], "candidate": sides[1]}
    out["per_config"] = {k: _stats(np.concatenate(v), cap) for k, v in sorted(per_config.items())}
    return out


def _stats(d: np.ndarray, cap: float) -> dict[str, Any]:
    if d.size == 0:
        return {"tokens": 0}
    with np.errstate(over="ignore"):
        rho = np.exp(d)
        mpe = float(np.exp(np.abs(d)).mean())
    q = np.quantile(rho, QUANTILES)
    edges = [-np.inf, -1, -0.5, -0.25, -0.1, -0.01, 0.01, 0.1, 0.25, 0.5, 1, np.inf]  # log2(rho)
    counts, _ = np.histogram(np.log2(rho), bins=edges)
    return {
        "tokens": int(d.size),
        "k3_kl": float((rho - 1 - d).mean()),
        "k1_kl": float((-d).mean()),
        "mult_prob_error": mpe,
        "clip_fraction": float((np.abs(rho - 1) > CLIP_EPS).mean()),
        "max_abs_log_ratio": float(np.abs(d).max()),
        "ratio": {f"p{int(round(p * 100))}" if 0 < p < 1 else ("min" if p == 0 else "max"): float(v)
                  for p, v in zip(QUANTILES, q)},
        "ratio_histogram_log2": [{"from": float(lo), "to": float(hi), "count": int(c)}
                                 for lo, hi, c in zip(edges[:-1], edges[1:], counts)],
        "tis_cap": cap,
        "tis_truncated_fraction": float((rho > cap).mean()),
        "tis_mean_weight": float(np.minimum(rho, cap).mean()),
    }


def measure(reference: TraceReader, candidate: TraceReader, cap: float = TIS_CAP) -> dict[str, Any] | None:
    """RL measures when one side is a trainer trace (sampler path hf or
    trainer); None otherwise (vLLM against vLLM needs no ratio view)."""
    return measure_records(reference.records(), candidate.records(), cap)


def summary_line(rl: dict[str, Any]) -> str:
    r = rl["ratio"]
    return (f"trainer vs rollout over {rl['tokens']} tokens: k3 KL {rl['k3_kl']:.3g}, mult-prob error "
            f"{rl['mult_prob_error']:.6g}, clip fraction {rl['clip_fraction']:.3g}, ratio p1..p99 "
            f"{r['p1']:.6g}..{r['p99']:.6g} (min {r['min']:.6g}, max {r['max']:.6g}), "
            f"truncated at C={rl['tis_cap']:g}: {100 * rl['tis_truncated_fraction']:.2f}%")

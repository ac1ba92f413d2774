"""RL measures: the importance ratio an RL objective sees, rho = exp(d).

Two views, one verdict key (`rl`, docs/trainer.md):
- trainer (docs/trainer.md): rollout logprobs (the behaviour policy, as the
  engine returned them) against a trainer's logprobs of the same tokens,
  d = trainer - rollout.
- versions (docs/verdict.md): two engine runs (golden and run) on the same
  tokens, d = candidate - reference, in two channels: teacher-forced (the
  golden's ids in the golden's contexts, scored by both) and matched sampler
  tokens (the free-run prefix where both drew the same tokens).

| measure | definition |
|---|---|
| k3_kl | mean(rho - 1 - d) (verl k3_kl; NeMo-RL calls < 1e-3 acceptable) |
| mult_prob_error | mean(exp(abs(d))) (NeMo-RL: <= 1.05) |
| clip_fraction | share with abs(rho - 1) > 0.2 (PPO clip) |
| ratio | min, p1, p5, p25, p50, p75, p95, p99, max of rho, and a log2 histogram |
| tis_truncated_fraction | share with rho > C, C = 2 (truncated importance sampling cap) |
| tis_mean_weight | mean(min(rho, C)) |

Pure: numpy only, and silent: no numpy warning for any legal trace (-inf on
both sides, logprobs near the float limit). A measure that has no value
(+inf - inf) is None, never NaN."""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from gate.core.channel import CLIP_EPS
from gate.core.compare import merge_records
from gate.core.measures import as_float_array
from gate.core.trace import Record, TraceReader

__all__ = ["measure", "measure_records", "summary_line", "TRAINER_PATHS", "TIS_CAP", "CHANNELS"]

TRAINER_PATHS = ("hf", "trainer")
TIS_CAP = 2.0
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
CHANNELS = ("forced", "sampler")
_LOG2_EDGES = (-np.inf, -1, -0.5, -0.25, -0.1, -0.01, 0.01, 0.1, 0.25, 0.5, 1, np.inf)


def _pairs(reference: Iterable[Record], candidate: Iterable[Record],
           include: set[tuple[str, str, int]] | None) -> Iterable[tuple[Record, Record]]:
    for r, c in merge_records(iter(reference), iter(candidate)):
        if r is not None and c is not None and (include is None or r.key in include):
            yield r, c


_arr = as_float_array  # null as NaN (gate/core/measures.py)


class _Diffs:
    """d = y - x over the pairs where both sides have a finite number; the
    rest are counted by kind (no number, -inf on both sides, -inf on one)."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.excluded = {"null": 0, "both_neg_inf": 0, "one_sided_inf": 0}

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.all():
            null = np.isnan(x) | np.isnan(y)
            both = np.isneginf(x) & np.isneginf(y)
            self.excluded["null"] += int(null.sum())
            self.excluded["both_neg_inf"] += int(both.sum())
            self.excluded["one_sided_inf"] += int((~ok & ~null & ~both).sum())
        with np.errstate(over="ignore"):  # float-limit logprobs: the difference is inf, which is its value
            self.parts.append(y[ok] - x[ok])

    def values(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0)

    def __bool__(self) -> bool:
        return bool(self.parts)


def measure_records(reference: Iterable[Record], candidate: Iterable[Record], cap: float = TIS_CAP,
                    include: set[tuple[str, str, int]] | None = None) -> dict[str, Any] | None:
    """The trainer view when one side's sampler path is hf/trainer (that
    side is the trainer, the other the rollouts); otherwise the versions view
    of two engine runs; None when no token was scored on both sides."""
    trainer: dict[str, _Diffs] = {}
    versions: dict[str, dict[str, _Diffs]] = {ch: {} for ch in CHANNELS}
    sides = None
    for a, b in _pairs(reference, candidate, include):
        if a.sampler is not None and b.sampler is not None:
            if sides is None:
                sides = (a.sampler.path, b.sampler.path)
            ids_a, ids_b = list(a.completion_token_ids), list(b.completion_token_ids)
            if ids_a == ids_b:  # the trainer scores the rollout's own tokens; anything else is not its ratio
                rollout, train = (a, b) if b.sampler.path in TRAINER_PATHS or a.sampler.path not in TRAINER_PATHS \
                    else (b, a)
                trainer.setdefault(a.config, _Diffs()).add(_arr(rollout.sampler.logprobs),
                                                           _arr(train.sampler.logprobs))
            n = min(len(ids_a), len(ids_b))
            first = next((i for i in range(n) if ids_a[i] != ids_b[i]), n)
            if first:
                versions["sampler"].setdefault(a.config, _Diffs()).add(_arr(a.sampler.logprobs[:first]),
                                                                       _arr(b.sampler.logprobs[:first]))
        if a.forced is not None and b.forced is not None:
            ids_a = list(a.forced.completion_token_ids or a.completion_token_ids)
            ids_b = list(b.forced.completion_token_ids or b.completion_token_ids)
            if list(a.prompt_token_ids) == list(b.prompt_token_ids) and ids_a == ids_b:
                p = len(a.prompt_token_ids)
                versions["forced"].setdefault(a.config, _Diffs()).add(_arr(a.forced.logprobs[p:]),
                                                                      _arr(b.forced.logprobs[p:]))
    if sides is not None and any(p in TRAINER_PATHS for p in sides):
        if not trainer:
            return None
        out = _stats(np.concatenate([d.values() for d in trainer.values()]), cap)
        out["view"] = "trainer"
        out["paths"] = {"reference": sides[0], "candidate": sides[1]}
        out["per_config"] = {k: _stats(v.values(), cap) for k, v in sorted(trainer.items())}
        return out
    if not any(versions.values()):
        return None
    configs = sorted(set(versions["forced"]) | set(versions["sampler"]))
    return {"view": "versions", "tis_cap": cap,
            **{ch: _channel(list(versions[ch].values()), cap) for ch in CHANNELS},
            "per_config": {k: {ch: _channel([versions[ch][k]] if k in versions[ch] else [], cap) for ch in CHANNELS}
                           for k in configs}}


def _channel(parts: list[_Diffs], cap: float) -> dict[str, Any] | None:
    if not parts:
        return None
    excluded = {k: sum(p.excluded[k] for p in parts) for k in parts[0].excluded}
    return dict(_stats(np.concatenate([p.values() for p in parts]), cap), excluded=excluded)


def _clean(x: float) -> float | None:
    return None if x != x else x


def _quantiles(rho: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantiles of rho. Next to an inf, interpolation
    has no value (inf - inf, or inf * 0): there the limit stands in, the
    upper neighbour between two order statistics, the statistic itself on one."""
    with np.errstate(invalid="ignore"):
        q = np.quantile(rho, QUANTILES)
    bad = np.flatnonzero(np.isnan(q))
    if bad.size:
        s = np.sort(rho)
        for i in bad:
            at = QUANTILES[i] * (s.size - 1)
            q[i] = s[int(at)] if at == int(at) else s[math.ceil(at)]
    return q


def _stats(d: np.ndarray, cap: float) -> dict[str, Any]:
    if d.size == 0:
        return {"tokens": 0}
    with np.errstate(over="ignore", invalid="ignore"):
        rho = np.exp(d)
        mpe = float(np.exp(np.abs(d)).mean())
        # rho - 1 - d: exactly inf where d is +-inf (inf - inf has no value, but the term grows without bound)
        k3 = float(np.where(np.isinf(d), np.inf, rho - 1 - d).mean())
        k1 = float((-d).mean())  # +inf and -inf together: no value (None)
    q = _quantiles(rho)
    counts, _ = np.histogram(d / math.log(2), bins=_LOG2_EDGES)  # log2(rho), without log2(0)
    return {
        "tokens": int(d.size),
        "k3_kl": _clean(k3),
        "k1_kl": _clean(k1),
        "mult_prob_error": mpe,
        "clip_fraction": float((np.abs(rho - 1) > CLIP_EPS).mean()),
        "max_abs_log_ratio": float(np.abs(d).max()),
        "ratio": {f"p{int(round(p * 100))}" if 0 < p < 1 else ("min" if p == 0 else "max"): float(v)
                  for p, v in zip(QUANTILES, q)},
        "ratio_histogram_log2": [{"from": float(lo), "to": float(hi), "count": int(c)}
                                 for lo, hi, c in zip(_LOG2_EDGES[:-1], _LOG2_EDGES[1:], counts)],
        "tis_cap": cap,
        "tis_truncated_fraction": float((rho > cap).mean()),
        "tis_mean_weight": float(np.minimum(rho, cap).mean()),
    }


def measure(reference: TraceReader, candidate: TraceReader, cap: float = TIS_CAP,
            include: set[tuple[str, str, int]] | None = None) -> dict[str, Any] | None:
    """RL measures between two traces (see measure_records); `include`
    restricts to those record keys, as in compare_traces."""
    return measure_records(reference.records(), candidate.records(), cap, include)


def summary_line(rl: dict[str, Any]) -> str:
    r = rl["ratio"]
    return (f"trainer vs rollout over {rl['tokens']} tokens: k3 KL {rl['k3_kl']:.3g}, mult-prob error "
            f"{rl['mult_prob_error']:.6g}, clip fraction {rl['clip_fraction']:.3g}, ratio p1..p99 "
            f"{r['p1']:.6g}..{r['p99']:.6g} (min {r['min']:.6g}, max {r['max']:.6g}), "
            f"truncated at C={rl['tis_cap']:g}: {100 * rl['tis_truncated_fraction']:.2f}%")

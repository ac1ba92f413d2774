"""What a channel reports (gate/core/channel.py folds the tokens in): its
summary row, the p99 of |d| from the fixed log bins, the drift by position
bucket and the decade histogram for display."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from gate.core.rows import ChannelSummary, Histogram, PositionBucket

if TYPE_CHECKING:
    from gate.core.channel import Tolerance

__all__ = ["ChannelReport", "POSITION_BUCKET", "HIST_BINS_PER_DECADE", "HIST_MIN_EXP", "HIST_MAX_EXP"]

POSITION_BUCKET = 8          # drift-by-position bucket width (tokens)
HIST_BINS_PER_DECADE = 20    # p99 comes from this fixed-bin histogram: within ~12% of the exact value
HIST_MIN_EXP, HIST_MAX_EXP = -12, 3


class ChannelReport:
    """The read side of Channel (a dataclass that inherits it and holds every field named here)."""

    tol: Tolerance
    n: int
    n_finite: int
    expected: int
    candidate_records: int
    excluded_null: int
    one_sided_inf: int
    both_neg_inf: int
    mismatched: int
    bitwise: int
    sum_abs: float
    max_abs: float
    max_loc: Any
    sum_exp_abs: float
    sum_k1: float
    sum_k2: float
    sum_k3: float
    sum_rho2: float
    clipped: int
    prob_diff_max: float
    seq_n: int
    seq_ppl_sum: float
    seq_ppl_max: float
    top_n: int
    top1_agree: int
    topk_overlap_sum: float
    prompt_n: int
    prompt_max_abs: float
    paths: set[tuple[str, str]]
    zero: int
    hist: np.ndarray
    pos_count: np.ndarray
    pos_sum: np.ndarray
    pos_max: np.ndarray

    def percentile_bin(self, q: float) -> tuple[float, float] | None:
        """(lower, upper) bounds of the q-quantile of |d| from the fixed bins;
        the top bin is open-ended, so its upper bound is the exact max."""
        if self.n == 0:
            return None
        rank = math.ceil(q * self.n)
        if rank <= self.zero:
            return 0.0, 0.0
        cum = self.zero + np.cumsum(self.hist)
        i = min(int(np.searchsorted(cum, rank)), self.hist.size - 1)
        lower = 0.0 if i == 0 else 10.0 ** (HIST_MIN_EXP + (i - 1) / HIST_BINS_PER_DECADE)
        upper = self.max_abs if i == self.hist.size - 1 else 10.0 ** (HIST_MIN_EXP + i / HIST_BINS_PER_DECADE)
        return min(lower, self.max_abs), min(upper, self.max_abs)

    def percentile(self, q: float) -> float | None:
        """The upper bound of the bin: conservative, never above the max."""
        b = self.percentile_bin(q)
        return None if b is None else b[1]

    def summary(self) -> ChannelSummary | None:
        if self.n == 0 and self.prompt_n == 0 and self.expected == 0 and self.excluded_null == 0:
            return None
        n = max(self.n, 1)
        ref_paths = sorted({p[0] for p in self.paths})
        cand_paths = sorted({p[1] for p in self.paths})
        nf = max(self.n_finite, 1)
        has = self.n_finite > 0
        return _no_nan({
            "tokens": self.n, "reference_tokens": self.expected, "candidate_records": self.candidate_records,
            "mismatched": self.mismatched,
            "excluded": {"null": self.excluded_null, "one_sided_inf": self.one_sided_inf,
                         "both_neg_inf": self.both_neg_inf, "moments_over": self.n_finite},
            "bitwise_equal_fraction": self.bitwise / n if self.n else None,
            "max_abs_diff": self.max_abs if self.n else None, "max_location": self.max_loc,
            "mean_abs_diff": self.sum_abs / nf if has else None,
            "p99_abs_diff": self.percentile(0.99),
            "p99_bin": list(self.percentile_bin(0.99) or ()) or None,
            "mult_prob_error": self.sum_exp_abs / nf if has else None,
            "k1_kl": self.sum_k1 / nf if has else None,
            "k2": self.sum_k2 / nf if has else None,
            "k3_kl": self.sum_k3 / nf if has else None,
            "chi2": self.sum_rho2 / nf - 1 if has else None,
            "clip_fraction": self.clipped / n if self.n else None,
            "prob_diff_max": self.prob_diff_max if self.n else None,
            "log_ppl_diff_max": self.seq_ppl_max if self.seq_n else None,
            "log_ppl_diff_mean": self.seq_ppl_sum / self.seq_n if self.seq_n else None,
            "top1_agreement": self.top1_agree / self.top_n if self.top_n else None,
            "top1_disagreements": self.top_n - self.top1_agree,
            "topk_overlap": self.topk_overlap_sum / self.top_n if self.top_n else None,
            "prompt_tokens": self.prompt_n,
            "prompt_max_abs_diff": self.prompt_max_abs if self.prompt_n else None,
            "path_reference": ",".join(ref_paths) or None,
            "path_candidate": ",".join(cand_paths) or None,
            "tolerance": {"atol": self.tol.atol, "rtol": self.tol.rtol},
        })

    def by_position(self) -> list[PositionBucket]:
        return [{"start": k * POSITION_BUCKET, "end": (k + 1) * POSITION_BUCKET, "count": int(self.pos_count[k]),
                 "mean_abs_diff": float(self.pos_sum[k] / self.pos_count[k]), "max_abs_diff": float(self.pos_max[k])}
                for k in np.flatnonzero(self.pos_count).tolist()]

    def histogram(self) -> Histogram:
        """Decade bins for display (the fine bins are for p99)."""
        decades: dict[int, int] = {}
        for i, c in enumerate(self.hist.tolist()):
            if c:
                exp = HIST_MIN_EXP - 1 if i == 0 else HIST_MIN_EXP + (i - 1) // HIST_BINS_PER_DECADE
                decades[exp] = decades.get(exp, 0) + c
        return {"zero": self.zero, "decades": [{"exp": e, "count": c} for e, c in sorted(decades.items())]}


def _no_nan(summary: ChannelSummary) -> ChannelSummary:
    """inf - inf (sums of +-1e308 logprobs) has no value: null, never NaN."""
    return cast(ChannelSummary, {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()})

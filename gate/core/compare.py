"""Token-by-token comparison of two trace sets. Pure Python + numpy: no
engine, no I/O beyond reading the two trace files as they stream.

Notation (docs/design.md section 3): a = reference (golden) logprob, b = candidate,
d = b - a, rho = exp(d). Two channels are compared, never across each other:

- forced: teacher-forced scores of the reference's tokens in the reference's
  contexts (completion positions are measured; prompt positions reported);
- sampler: the engine's own logprobs of the sampled tokens, over the prefix
  where both free runs produced the same tokens.
"""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from gate.core.measures import as_float_array, first_divergence
from gate.core.semantics import Relation, compare_spread, describe, judge, matters, relation_pairs
from gate.core.trace import Record, TraceReader

__all__ = ["Tolerance", "ComparisonResult", "compare_traces", "compare_records", "merge_records", "CHANNELS",
           "CLIP_EPS"]

CHANNELS = ("forced", "sampler")
CLIP_EPS = 0.2               # PPO clip range (docs/design.md section 3)
NEAR_TIE_GAP = 1e-2          # top-2 logprob gap below which a greedy divergence is a "near tie"
POSITION_BUCKET = 8          # drift-by-position bucket width (tokens)
HIST_BINS_PER_DECADE = 20    # p99 comes from this fixed-bin histogram: within ~12% of the exact value
HIST_MIN_EXP, HIST_MAX_EXP = -12, 3
WORST_TOKENS = 50
PER_PROMPT_ROWS = 2000       # per-prompt rows kept (the largest drifts); memory stays bounded
DIVERGENCES_KEPT = 50
CONTEXT_TOKENS = 4
MATCHED_POINTS = 256       # sampler differences kept per config for the report's chart


@dataclass(frozen=True)
class Tolerance:
    """A token is close when |b - a| <= atol + rtol * |a| (torch.testing's rule).
    -inf on both sides is close; -inf on one side never is."""

    atol: float = 1e-4
    rtol: float = 0.0


@dataclass
class _Channel:
    """Streaming accumulator of every measure of one channel."""

    tol: Tolerance
    n: int = 0
    n_finite: int = 0        # pairs with a finite number on both sides (the moment measures' count)
    expected: int = 0        # tokens the reference offers in this channel: the evidence denominator
    candidate_records: int = 0  # records in which the candidate has this channel at all
    excluded_null: int = 0   # a side had no logprob (null): not compared
    one_sided_inf: int = 0   # -inf against a finite value: an infinite difference
    both_neg_inf: int = 0    # -inf on both sides: close
    mismatched: int = 0
    bitwise: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    max_loc: dict[str, Any] | None = None
    sum_exp_abs: float = 0.0
    sum_k1: float = 0.0
    sum_k2: float = 0.0
    sum_k3: float = 0.0
    sum_rho2: float = 0.0
    clipped: int = 0
    prob_diff_max: float = 0.0
    seq_n: int = 0
    seq_ppl_sum: float = 0.0
    seq_ppl_max: float = 0.0
    top_n: int = 0
    top1_agree: int = 0
    topk_overlap_sum: float = 0.0
    prompt_n: int = 0
    prompt_max_abs: float = 0.0
    paths: set[tuple[str, str]] = field(default_factory=set)
    zero: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(
        (HIST_MAX_EXP - HIST_MIN_EXP) * HIST_BINS_PER_DECADE + 2, dtype=np.int64))
    pos_count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pos_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pos_max: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, a: np.ndarray, b: np.ndarray, positions: np.ndarray, loc: dict[str, Any],
            token_ids: Sequence[int], tops: tuple[list | None, list | None] | None) -> np.ndarray:
        """Fold in one sequence; returns abs diffs aligned with `a` (0 where a
        side has no number), for worst-token tracking.

        NaN stands for null (no logprob): counted as excluded, not compared.
        -inf on both sides is close (d = 0). -inf on one side only is an
        infinite difference: a mismatch, clipped, and the max; the moment
        measures (mean abs, k1, k2, k3, chi2, mult-prob, log-ppl) are over the
        finite pairs, and the verdict says how many tokens they left out."""
        if a.size == 0:
            return a
        finite = np.isfinite(a)
        finite &= np.isfinite(b)
        if finite.all():
            return self._add_finite(a, b, positions, loc, token_ids, tops)
        return self._add_general(a, b, positions, loc, token_ids, tops)

    def _add_general(self, a: np.ndarray, b: np.ndarray, positions: np.ndarray, loc: dict[str, Any],
                     token_ids: Sequence[int], tops: tuple[list | None, list | None] | None) -> np.ndarray:
        """`add` for any sequence, nulls and -inf included."""
        size = a.size
        token_ids = np.asarray(token_ids, dtype=np.int64)
        known = ~(np.isnan(a) | np.isnan(b))
        full_known = bool(known.all())
        if not full_known:
            self.excluded_null += int(size - np.count_nonzero(known))
            a, b, positions, token_ids = a[known], b[known], positions[known], token_ids[known]
            if tops is not None:
                tops = tuple([row for row, k in zip(side, known) if k] for side in tops)  # type: ignore[assignment]
            if a.size == 0:
                return np.zeros(size)
        all_finite = bool(np.isfinite(a).all() and np.isfinite(b).all())
        if all_finite:  # the common case: no -inf anywhere, fewer passes
            d = b - a
            absd = np.abs(d)
            dp, pair = d, None
        else:
            both_ninf = np.isneginf(a) & np.isneginf(b)
            pair = np.isfinite(a) & np.isfinite(b)
            with np.errstate(invalid="ignore"):
                absd = np.where(pair, np.abs(b - a), np.where(both_ninf, 0.0, np.inf))
            dp = b[pair] - a[pair]
            one_sided = int(a.size - np.count_nonzero(pair) - np.count_nonzero(both_ninf))
            self.one_sided_inf += one_sided
            self.both_neg_inf += int(np.count_nonzero(both_ninf))
        if self.tol.rtol:
            with np.errstate(invalid="ignore"):
                bound = self.tol.atol + self.tol.rtol * np.where(np.isfinite(a), np.abs(a), 0.0)
            self.mismatched += int(np.count_nonzero(~(absd <= bound)))
        else:
            self.mismatched += int(np.count_nonzero(~(absd <= self.tol.atol)))
        self.n += a.size
        self.n_finite += int(dp.size)
        self.bitwise += int(np.count_nonzero(a == b))
        self.sum_abs += float(np.abs(dp).sum())
        i = int(np.argmax(absd))
        if absd[i] > self.max_abs:
            self.max_abs = float(absd[i])
            self.max_loc = dict(loc, position=int(positions[i]), token_id=int(token_ids[i]),
                                reference=float(a[i]), candidate=float(b[i]))
        # Legal logprobs reach -1e308: their squares and exponentials are
        # infinite, and so are those measures (reported as such, no warning).
        with np.errstate(over="ignore", invalid="ignore"):
            rho = np.exp(dp)
            self.sum_exp_abs += float(np.exp(np.abs(dp)).sum())
            self.sum_rho2 += float(np.dot(rho, rho))
            self.sum_k1 -= float(dp.sum())
            self.sum_k2 += float(np.dot(dp, dp) / 2)
            self.sum_k3 += float((np.expm1(dp) - dp).sum())  # expm1: never negative near d = 0
        # a one-sided -inf is a ratio of 0 or infinity: always beyond the clip range
        self.clipped += int(np.count_nonzero(np.abs(rho - 1) > CLIP_EPS)) + (0 if pair is None else one_sided)
        with np.errstate(over="ignore"):
            pd = np.abs(np.exp(b) - np.exp(a))
        self.prob_diff_max = max(self.prob_diff_max, float(pd.max()))
        if dp.size:
            # mean(a) - mean(b) over the same positions is -mean(d): no overflow at -1e308
            ppl = abs(float(np.mean(dp)))
            self.seq_n += 1
            self.seq_ppl_sum += ppl
            self.seq_ppl_max = max(self.seq_ppl_max, ppl)
        self._fold_abs(absd, positions, absd if all_finite else np.where(np.isfinite(absd), absd, 0.0))
        if tops is not None:
            self._add_tops(*tops)
        if full_known:
            return absd
        out = np.zeros(size)
        out[known] = absd
        return out

    def _add_finite(self, a: np.ndarray, b: np.ndarray, positions: np.ndarray, loc: dict[str, Any],
                    token_ids: Sequence[int], tops: tuple[list | None, list | None] | None) -> np.ndarray:
        """`add` where every number on both sides is finite (nearly every
        sequence): the same numpy reductions over the same arrays as
        `_add_general`, without the passes that only matter for null or -inf.
        Each float sum is still one reduction per sequence, added in sequence
        order, so every measure is bit-for-bit what `_add_general` gives
        (tests/unit/test_compare.py holds the two to that)."""
        size = a.size
        d = b - a
        absd = np.abs(d)
        if self.tol.rtol:
            bound = self.tol.atol + self.tol.rtol * np.abs(a)
            self.mismatched += int(np.count_nonzero(absd > bound))
        else:
            self.mismatched += int(np.count_nonzero(absd > self.tol.atol))
        self.n += size
        self.n_finite += size
        self.bitwise += int(np.count_nonzero(a == b))
        self.sum_abs += float(absd.sum())
        i = int(absd.argmax())
        if absd[i] > self.max_abs:
            self.max_abs = float(absd[i])
            self.max_loc = dict(loc, position=int(positions[i]), token_id=int(token_ids[i]),
                                reference=float(a[i]), candidate=float(b[i]))
        with np.errstate(over="ignore", invalid="ignore"):
            total = float(d.sum())
            rho = np.exp(d)
            self.sum_exp_abs += float(np.exp(absd).sum())
            self.sum_rho2 += float(np.dot(rho, rho))
            self.sum_k1 -= total
            self.sum_k2 += float(np.dot(d, d) / 2)
            self.sum_k3 += float((np.expm1(d) - d).sum())
        self.clipped += int(np.count_nonzero(np.abs(rho - 1) > CLIP_EPS))
        with np.errstate(over="ignore"):
            pd = np.abs(np.exp(b) - np.exp(a))
        self.prob_diff_max = max(self.prob_diff_max, float(pd.max()))
        ppl = abs(total / size)  # what np.mean(d) computes: the same sum, divided once
        self.seq_n += 1
        self.seq_ppl_sum += ppl
        self.seq_ppl_max = max(self.seq_ppl_max, ppl)
        self._fold_abs(absd, positions, absd)
        if tops is not None:
            self._add_tops(*tops)
        return absd

    def _fold_abs(self, absd: np.ndarray, positions: np.ndarray, finite_absd: np.ndarray) -> None:
        """|d| into the zero count, the log histogram (p99) and the
        per-position-bucket counts, sums (finite values) and maxima."""
        nz = absd[absd > 0]
        self.zero += int(absd.size - nz.size)
        if nz.size:
            with np.errstate(divide="ignore"):
                idx = np.floor((np.log10(np.minimum(nz, 10.0 ** HIST_MAX_EXP)) - HIST_MIN_EXP)
                               * HIST_BINS_PER_DECADE).astype(np.int64) + 1
            self.hist += np.bincount(np.clip(idx, 0, self.hist.size - 1), minlength=self.hist.size)
        buckets = positions // POSITION_BUCKET
        nb = int(buckets[-1]) + 1  # positions are ascending
        if nb > self.pos_count.size:
            grow = nb - self.pos_count.size
            self.pos_count = np.concatenate([self.pos_count, np.zeros(grow, np.int64)])
            self.pos_sum = np.concatenate([self.pos_sum, np.zeros(grow)])
            self.pos_max = np.concatenate([self.pos_max, np.zeros(grow)])
        self.pos_count[:nb] += np.bincount(buckets, minlength=nb)
        self.pos_sum[:nb] += np.bincount(buckets, weights=finite_absd, minlength=nb)
        np.maximum.at(self.pos_max, buckets, absd)

    def _add_tops(self, ta: Sequence, tb: Sequence) -> None:
        if ta == tb and all(ta):  # identical top-k rows (the common case): a C-speed list compare
            self.top_n += len(ta)
            self.top1_agree += len(ta)
            self.topk_overlap_sum += len(ta)
            return
        try:  # vectorized path: every position has a full top-k row on both sides
            A, B = np.array(ta, dtype=np.int64), np.array(tb, dtype=np.int64)
            if A.ndim != 2 or A.shape != B.shape or A.shape[1] == 0:
                raise ValueError
        except (ValueError, TypeError):
            for ra, rb in zip(ta, tb):
                if not ra or not rb:
                    continue
                self.top_n += 1
                self.top1_agree += ra[0] == rb[0]
                k = min(len(ra), len(rb))
                self.topk_overlap_sum += len(set(ra[:k]) & set(rb[:k])) / k
            return
        self.top_n += A.shape[0]
        self.top1_agree += int(np.count_nonzero(A[:, 0] == B[:, 0]))
        # ids within a row are distinct, so matches per row = size of the intersection
        self.topk_overlap_sum += float((A[:, :, None] == B[:, None, :]).any(axis=2).sum()) / A.shape[1]

    def merge(self, other: "_Channel") -> None:
        """Fold another channel in (overall = the sum of the per-config channels,
        so each token's numbers are computed once)."""
        for name in ("n", "n_finite", "expected", "candidate_records", "excluded_null", "one_sided_inf",
                     "both_neg_inf", "mismatched", "bitwise", "sum_abs", "sum_exp_abs", "sum_k1", "sum_k2", "sum_k3",
                     "sum_rho2", "clipped", "seq_n", "seq_ppl_sum", "top_n", "top1_agree", "topk_overlap_sum",
                     "prompt_n", "zero"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.max_abs > self.max_abs:
            self.max_abs, self.max_loc = other.max_abs, other.max_loc
        self.prob_diff_max = max(self.prob_diff_max, other.prob_diff_max)
        self.seq_ppl_max = max(self.seq_ppl_max, other.seq_ppl_max)
        self.prompt_max_abs = max(self.prompt_max_abs, other.prompt_max_abs)
        self.paths |= other.paths
        self.hist += other.hist
        nb = max(self.pos_count.size, other.pos_count.size)
        for name in ("pos_count", "pos_sum", "pos_max"):
            mine, theirs = (np.pad(getattr(x, name), (0, nb - getattr(x, name).size)) for x in (self, other))
            setattr(self, name, np.maximum(mine, theirs) if name == "pos_max" else mine + theirs)

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

    def summary(self) -> dict[str, Any] | None:
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

    def by_position(self) -> list[dict[str, Any]]:
        return [{"start": k * POSITION_BUCKET, "end": (k + 1) * POSITION_BUCKET, "count": int(self.pos_count[k]),
                 "mean_abs_diff": float(self.pos_sum[k] / self.pos_count[k]), "max_abs_diff": float(self.pos_max[k])}
                for k in np.flatnonzero(self.pos_count).tolist()]

    def histogram(self) -> dict[str, Any]:
        """Decade bins for display (the fine bins are for p99)."""
        decades: dict[int, int] = {}
        for i, c in enumerate(self.hist.tolist()):
            if c:
                exp = HIST_MIN_EXP - 1 if i == 0 else HIST_MIN_EXP + (i - 1) // HIST_BINS_PER_DECADE
                decades[exp] = decades.get(exp, 0) + c
        return {"zero": self.zero, "decades": [{"exp": e, "count": c} for e, c in sorted(decades.items())]}


@dataclass
class _FreeRun:
    sequences: int = 0
    exact: int = 0
    near_ties: int = 0
    at_start: int = 0  # diverged at position 0: the sign of a changed seeded random stream
    # diverged while the teacher-forced scores agree up to and at the divergence: the distribution was the
    # same on both sides, only the draw differed (a changed seeded random stream), at any position
    stream: int = 0
    stream_first_min: int | None = None
    first_min: int | None = None
    diverged: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: "_FreeRun") -> None:
        self.sequences += other.sequences
        self.exact += other.exact
        self.near_ties += other.near_ties
        self.at_start += other.at_start
        self.stream += other.stream
        if other.stream_first_min is not None:
            self.stream_first_min = other.stream_first_min if self.stream_first_min is None else \
                min(self.stream_first_min, other.stream_first_min)
        if other.first_min is not None:
            self.first_min = other.first_min if self.first_min is None else min(self.first_min, other.first_min)
        self.diverged.extend(other.diverged[:max(0, DIVERGENCES_KEPT - len(self.diverged))])

    def summary(self) -> dict[str, Any] | None:
        if not self.sequences:
            return None
        return {"sequences": self.sequences, "exact_matches": self.exact,
                "exact_match_rate": self.exact / self.sequences,
                "first_divergence_min": self.first_min, "near_tie_divergences": self.near_ties,
                "diverged_at_start": self.at_start,
                "stream_changed": self.stream, "stream_first_position": self.stream_first_min,
                "diverged": self.diverged[:DIVERGENCES_KEPT]}


@dataclass
class _Group:
    """Everything measured for one sampling config (or overall)."""

    tol: Tolerance
    forced: _Channel = None  # type: ignore[assignment]
    sampler: _Channel = None  # type: ignore[assignment]
    free_run: _FreeRun = field(default_factory=_FreeRun)
    # in-run relation of each side's sampler logprobs to its own prefill scores
    relation_ref: Relation = field(default_factory=Relation)
    relation_cand: Relation = field(default_factory=Relation)
    params: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.forced = _Channel(self.tol)
        self.sampler = _Channel(self.tol)

    def merge(self, other: "_Group") -> None:
        self.forced.merge(other.forced)
        self.sampler.merge(other.sampler)
        self.free_run.merge(other.free_run)

    def summary(self) -> dict[str, Any]:
        out = {"forced": self.forced.summary(), "sampler": self.sampler.summary(),
               "free_run": self.free_run.summary()}
        if self.params is not None:  # per config only: a relation across configs means nothing
            out["semantics"] = self._semantics()
        return out

    def _semantics(self) -> dict[str, Any] | None:
        ref, cand = self.relation_ref.summary(), self.relation_cand.summary()
        if ref is None and cand is None:
            return None
        params = self.params or {}
        judged = judge(ref, cand, params)
        for side, rel in ((ref, self.relation_ref), (cand, self.relation_cand)):
            if side is not None:
                side.update(points=rel.points(), residual_histogram=rel.residual_histogram())
        return {"matters": matters(params), "params": describe(params), "reference": ref, "candidate": cand,
                "tokens": (cand or {}).get("tokens", 0), "reference_tokens": (ref or {}).get("tokens", 0),
                "spread": compare_spread(self.relation_ref, self.relation_cand), **judged}


@dataclass
class _Sample:
    """A deterministic, even sample of (position, d) pairs for the report:
    every `stride`-th pair, thinned by half whenever it fills."""

    seen: int = 0
    stride: int = 1
    pts: list[list[float]] = field(default_factory=list)

    def add(self, positions: np.ndarray, d: np.ndarray) -> None:
        take = (np.arange(d.size) + self.seen) % self.stride == 0
        self.seen += int(d.size)
        self.pts.extend([int(p), float(v)] for p, v in zip(positions[take].tolist(), d[take].tolist()))
        while len(self.pts) > MATCHED_POINTS:
            self.pts = self.pts[::2]
            self.stride *= 2

    def points(self) -> list[list[float]]:
        return self.pts


@dataclass(frozen=True)
class ComparisonResult:
    overall: dict[str, Any]
    per_config: dict[str, dict[str, Any]]
    worst_tokens: list[dict[str, Any]]
    by_position: dict[str, list[dict[str, Any]]]
    histogram: dict[str, dict[str, Any]]
    per_prompt: list[dict[str, Any]]
    per_prompt_omitted: int
    only_reference: list[tuple[str, str, int]]
    only_candidate: list[tuple[str, str, int]]
    warnings: list[str]
    records: int
    sampler_matched: dict[str, dict[str, Any]] = field(default_factory=dict)


def _no_nan(summary: dict[str, Any]) -> dict[str, Any]:
    """inf - inf (sums of +-1e308 logprobs) has no value: null, never NaN."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}


def _arr(values: Sequence[float | None]) -> np.ndarray:
    """Logprobs as float64; null (no logprob) becomes NaN, which the channel
    counts as excluded (the reader refuses NaN in a trace, so NaN means null)."""
    return as_float_array(values)


def _as_list(xs: Sequence[int]) -> list[int]:
    """Token ids as a list, to compare with == (the reader's are lists already: no copy)."""
    return xs if type(xs) is list else list(xs)


def _prompt_max_abs(pa: np.ndarray, pb: np.ndarray) -> float:
    """Greatest |d| over the scored prompt positions (at least one): -inf on
    both sides counts 0, a null side (NaN) is left out."""
    with np.errstate(invalid="ignore"):
        pd = np.abs(pb - pa)
    pm = float(pd.max())  # an abs is never below 0.0, the floor the general path starts from
    if pm == pm:  # no NaN, so no null side and no -inf on both sides: that is the answer
        return pm
    both = np.isneginf(pa) & np.isneginf(pb)
    pd = np.where(both, 0.0, pd)
    return float(np.max(np.where(np.isnan(pd), 0.0, pd), initial=0.0))


def _tokens(rec: Record, full: bool) -> list[str] | None:
    if rec.completion_tokens is None:
        return None
    if full:
        return list(rec.prompt_tokens or [""] * len(rec.prompt_token_ids)) + list(rec.completion_tokens)
    return list(rec.completion_tokens)


class _Comparator:
    def __init__(self, tolerances: dict[str | None, Tolerance], sampling: dict[str, dict[str, Any]]) -> None:
        self.tolerances = tolerances
        self.sampling = sampling
        self.overall = _Group(tolerances.get(None, Tolerance()))
        self.groups: dict[str, _Group] = {}
        self.worst: list[tuple[float, int, dict[str, Any]]] = []
        self.per_prompt: list[tuple[float, int, dict[str, Any]]] = []
        self.per_prompt_seen = 0
        self.counter = itertools.count()
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self.matched: dict[str, _Sample] = {}  # sampler differences on matched tokens, per config (report)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)

    def group(self, config: str) -> _Group:
        if config not in self.groups:
            self.groups[config] = _Group(self.tolerances.get(config, self.tolerances.get(None, Tolerance())),
                                         params=self.sampling.get(config) or {})
        return self.groups[config]

    def expect(self, ref: Record) -> None:
        """The evidence a reference record offers, whether or not the other
        side can match it: a check that compares far less is not comparable."""
        g = self.group(ref.config)
        if ref.forced is not None:
            g.forced.expected += len(ref.forced.completion_token_ids or ref.completion_token_ids)
        if ref.sampler is not None:
            g.sampler.expected += len(ref.completion_token_ids)
        g.relation_ref.add(*relation_pairs(ref))

    def observe(self, cand: Record) -> None:
        g = self.group(cand.config)
        g.forced.candidate_records += cand.forced is not None
        g.sampler.candidate_records += cand.sampler is not None
        g.relation_cand.add(*relation_pairs(cand))

    def _track_worst(self, channel: str, absd: np.ndarray, top: float, a: np.ndarray, b: np.ndarray,
                     positions: np.ndarray, ids: Sequence[int], rec: Record) -> None:
        """`top` is absd's max (0.0 when empty), which the caller has already."""
        if absd.size == 0 or (len(self.worst) == WORST_TOKENS and top <= self.worst[0][0]):
            return
        k = min(WORST_TOKENS, absd.size)
        cand = np.argpartition(-absd, k - 1)[:k] if absd.size > k else np.arange(absd.size)
        toks = _tokens(rec, full=False)
        for i in cand:
            v = float(absd[i])
            if v <= 0 or (len(self.worst) == WORST_TOKENS and v <= self.worst[0][0]):
                continue
            pos = int(positions[i])
            entry = {"channel": channel, "config": rec.config, "prompt_id": rec.prompt_id, "sample": rec.sample,
                     "position": pos, "token_id": int(ids[i]),
                     "token": toks[pos] if toks and pos < len(toks) else None,
                     "context_before": toks[max(0, pos - CONTEXT_TOKENS):pos] if toks else [],
                     "context_after": toks[pos + 1:pos + 1 + CONTEXT_TOKENS] if toks else [],
                     "reference": float(a[i]), "candidate": float(b[i]), "abs_diff": v}
            item = (v, next(self.counter), entry)
            if len(self.worst) < WORST_TOKENS:
                heapq.heappush(self.worst, item)
            else:
                heapq.heapreplace(self.worst, item)

    def add(self, ref: Record, cand: Record) -> None:
        groups = (self.group(ref.config),)  # overall is merged from the configs at the end
        loc = {"config": ref.config, "prompt_id": ref.prompt_id, "sample": ref.sample}
        row: dict[str, Any] = dict(loc, forced_max_abs_diff=None, sampler_max_abs_diff=None,
                                   free_run_match=None, first_divergence=None)
        forced_close = -1  # leading completion positions whose teacher-forced scores agree (-1: not scored)
        # forced channel: the same (reference) tokens in the same contexts
        if ref.forced is not None and cand.forced is not None:
            ref_ids = _as_list(ref.forced.completion_token_ids or ref.completion_token_ids)
            cand_ids = _as_list(cand.forced.completion_token_ids or cand.completion_token_ids)
            if _as_list(ref.prompt_token_ids) != _as_list(cand.prompt_token_ids) or ref_ids != cand_ids:
                self._warn_once(f"forced-ids:{ref.key}",
                                f"teacher-forced scores of config '{ref.config}' prompt '{ref.prompt_id}' sample "
                                f"{ref.sample} are of different tokens on the two sides; not compared")
            else:
                if ref.forced.path != cand.forced.path:
                    self._warn_once(f"path:{ref.forced.path}:{cand.forced.path}",
                                    f"teacher-forced scores come from different paths ({ref.forced.path} vs "
                                    f"{cand.forced.path}); differences include the path's own numerics")
                p = len(ref.prompt_token_ids)
                a, b = _arr(ref.forced.logprobs[p:]), _arr(cand.forced.logprobs[p:])
                positions = np.arange(a.size)
                ids = ref_ids  # ints the reader checked; an array only where nulls must be dropped
                tops = None
                if ref.forced.top_ids is not None and cand.forced.top_ids is not None:
                    tops = (ref.forced.top_ids[p:], cand.forced.top_ids[p:])
                if p > 1:
                    pm = _prompt_max_abs(_arr(ref.forced.logprobs[1:p]), _arr(cand.forced.logprobs[1:p]))
                for g in groups:
                    g.forced.paths.add((ref.forced.path, cand.forced.path))
                    absd = g.forced.add(a, b, positions, loc, ids, tops)
                    if p > 1:
                        g.forced.prompt_n += p - 1
                        g.forced.prompt_max_abs = max(g.forced.prompt_max_abs, pm)
                top = float(absd.max()) if absd.size else 0.0
                self._track_worst("forced", absd, top, a, b, positions, ids, ref)
                row["forced_max_abs_diff"] = top
                tol = groups[0].forced.tol
                with np.errstate(invalid="ignore"):
                    far = ~(absd <= tol.atol + tol.rtol * np.abs(np.nan_to_num(a, neginf=0.0)))
                forced_close = int(np.argmax(far)) if far.any() else int(absd.size)
        # free run + sampler channel over the matching prefix
        if ref.sampler is not None and cand.sampler is not None:
            ref_c, cand_c = _as_list(ref.completion_token_ids), _as_list(cand.completion_token_ids)
            n = min(len(ref_c), len(cand_c))
            match = ref_c == cand_c
            first = n if match else first_divergence(ref_c, cand_c)
            row["free_run_match"] = match
            row["first_divergence"] = None if match else first
            gap = None
            # a sampled config whose free runs part where both engines give the golden's token the same
            # logprob (teacher-forced, at and before the divergence): the same distribution, another draw
            stream = (not match and first < len(ref_c) and forced_close > first
                      and ((self.sampling.get(ref.config) or {}).get("temperature", 1.0) or 0) > 0)
            if not match:
                gap = self._top2_gap(ref, first)
            for g in groups:
                fr = g.free_run
                fr.sequences += 1
                if match:
                    fr.exact += 1
                else:
                    near = gap is not None and gap < NEAR_TIE_GAP
                    fr.near_ties += near
                    fr.at_start += first == 0
                    fr.first_min = first if fr.first_min is None else min(fr.first_min, first)
                    if stream:
                        fr.stream += 1
                        fr.stream_first_min = first if fr.stream_first_min is None else min(fr.stream_first_min,
                                                                                            first)
                    if len(fr.diverged) < DIVERGENCES_KEPT:
                        fr.diverged.append(dict(loc, position=first, near_tie=near, top2_gap=gap,
                                                stream_changed=stream))
            a, b = _arr(ref.sampler.logprobs[:first]), _arr(cand.sampler.logprobs[:first])
            positions = np.arange(first)
            ids = ref_c[:first]
            tops = None
            if ref.sampler.top_ids is not None and cand.sampler.top_ids is not None:
                tops = (ref.sampler.top_ids[:first], cand.sampler.top_ids[:first])
            for g in groups:
                g.sampler.paths.add((ref.sampler.path, cand.sampler.path))
                absd = g.sampler.add(a, b, positions, loc, ids, tops)
            top = float(absd.max()) if absd.size else 0.0
            self._track_worst("sampler", absd, top, a, b, positions, ids, ref)
            row["sampler_max_abs_diff"] = top
            if first:
                with np.errstate(invalid="ignore"):
                    d = b - a
                ok = np.isfinite(d)
                self.matched.setdefault(ref.config, _Sample()).add(positions[ok], d[ok])
        self._keep_row(row)

    @staticmethod
    def _top2_gap(ref: Record, pos: int) -> float | None:
        src = ref.sampler
        if src is None or src.top_logprobs is None or pos >= len(src.top_logprobs):
            return None
        top = src.top_logprobs[pos]
        if not top or len(top) < 2:
            return None
        return float(top[0]) - float(top[1])

    def _keep_row(self, row: dict[str, Any]) -> None:
        self.per_prompt_seen += 1
        score = max(row["forced_max_abs_diff"] or 0.0, row["sampler_max_abs_diff"] or 0.0)
        item = (score, -next(self.counter), row)
        if len(self.per_prompt) < PER_PROMPT_ROWS:
            heapq.heappush(self.per_prompt, item)
        elif item > self.per_prompt[0]:
            heapq.heapreplace(self.per_prompt, item)

    def result(self, only_ref: list, only_cand: list, records: int) -> ComparisonResult:
        for name in sorted(self.groups):
            self.overall.merge(self.groups[name])
        rows = [r for _, _, r in sorted(self.per_prompt, key=lambda t: (t[2]["config"], t[2]["prompt_id"],
                                                                        t[2]["sample"]))]
        return ComparisonResult(
            overall=self.overall.summary(),
            per_config={name: g.summary() for name, g in sorted(self.groups.items())},
            worst_tokens=[e for _, _, e in sorted(self.worst, key=lambda t: (-t[0], t[1]))],
            by_position={c: getattr(self.overall, c).by_position() for c in CHANNELS},
            histogram={c: getattr(self.overall, c).histogram() for c in CHANNELS},
            per_prompt=rows, per_prompt_omitted=self.per_prompt_seen - len(rows),
            only_reference=only_ref, only_candidate=only_cand, warnings=self.warnings, records=records,
            sampler_matched={name: {"tokens": m.seen, "points": m.points()} for name, m in sorted(self.matched.items())})


def merge_records(ref: Iterator[Record], cand: Iterator[Record]) -> Iterator[tuple[Record | None, Record | None]]:
    """Merge-join two key-sorted record streams (a side is None where only
    the other has the key).

    Each old record is dropped as soon as its side's next one is read, never
    both after both: a record is hundreds of small lists, and holding two
    pairs at once crosses the collector's threshold (700 new containers) on
    every pair, which cost compare a tenth of the parse time. A consumer
    keeps that benefit by dropping its own references before asking for the
    next pair (as compare_records does)."""
    r = next(ref, None)
    c = next(cand, None)
    while r is not None or c is not None:
        if c is None or (r is not None and r.key < c.key):
            yield r, None
            r = next(ref, None)
        elif r is None or c.key < r.key:
            yield None, c
            c = next(cand, None)
        else:
            yield r, c
            r = next(ref, None)
            c = next(cand, None)


def compare_records(reference: Iterable[Record], candidate: Iterable[Record],
                    tolerances: dict[str | None, Tolerance] | None = None,
                    include: set[tuple[str, str, int]] | None = None,
                    sampling: dict[str, dict[str, Any]] | None = None) -> ComparisonResult:
    """Compare two sorted record streams. `tolerances` maps a config name
    (None = default) to its Tolerance; `include` restricts to those keys;
    `sampling` gives each config's params (for the in-run semantics)."""
    comp = _Comparator(tolerances or {None: Tolerance()}, sampling or {})
    only_ref, only_cand = [], []
    records = 0
    for r, c in merge_records(iter(reference), iter(candidate)):
        key = (r or c).key  # type: ignore[union-attr]
        if include is None or key in include:
            if r is not None:
                comp.expect(r)
            if c is not None:
                comp.observe(c)
            if c is None:
                only_ref.append(key)
            elif r is None:
                only_cand.append(key)
            else:
                comp.add(r, c)
                records += 1
        r = c = None  # see merge_records: let each record go before the next one is read
    return comp.result(only_ref, only_cand, records)


def compare_traces(reference: TraceReader, candidate: TraceReader,
                   tolerances: dict[str | None, Tolerance] | None = None,
                   include: set[tuple[str, str, int]] | None = None) -> ComparisonResult:
    sampling = {**(candidate.manifest.suite.get("sampling") or {}),
                **(reference.manifest.suite.get("sampling") or {})}
    return compare_records(reference.records(), candidate.records(), tolerances, include, sampling)

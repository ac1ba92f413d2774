"""The per-token measures of one channel (forced or sampler): a streaming
accumulator that folds in one sequence of reference and candidate logprobs
at a time, so memory does not grow with the trace.

Notation (docs/design.md section 3): a = reference (golden) logprob, b =
candidate, d = b - a, rho = exp(d).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gate.core.channel_report import HIST_BINS_PER_DECADE, HIST_MAX_EXP, HIST_MIN_EXP, POSITION_BUCKET, ChannelReport
from gate.core.rows import Location, MaxLocation

__all__ = ["Tolerance", "Channel", "CLIP_EPS", "POSITION_BUCKET", "HIST_BINS_PER_DECADE", "HIST_MIN_EXP",
           "HIST_MAX_EXP"]

CLIP_EPS = 0.2               # PPO clip range (docs/design.md section 3)


@dataclass(frozen=True)
class Tolerance:
    """A token is close when |b - a| <= atol + rtol * |a| (torch.testing's rule).
    -inf on both sides is close; -inf on one side never is."""

    atol: float = 1e-4
    rtol: float = 0.0


@dataclass
class Channel(ChannelReport):
    """Streaming accumulator of every measure of one channel: the fold side (add, add_many, merge); what it
    reports (summary, p99, position buckets, histogram) is ChannelReport's."""

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
    max_loc: MaxLocation | None = None
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

    def add(self, a: np.ndarray, b: np.ndarray, positions: np.ndarray, loc: Location,
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

    def add_many(self, a: np.ndarray, b: np.ndarray, sizes: Sequence[int],
                 seqs: Sequence[tuple[Location, Sequence[int], tuple[list | None, list | None] | None]]) -> np.ndarray:
        """`add` of many sequences in turn, with the per-token work done once
        over all of them: `a` and `b` are the sequences one after another,
        `sizes` their lengths, `seqs` each one's (loc, token_ids, tops), and
        positions run 0..n-1 in each. Returns what the calls would return,
        one after another.

        Bit for bit what the calls one by one give: counts and maxima do not
        depend on the grouping; each float sum is still one numpy reduction
        per sequence (np.add.reduce and np.dot of the sequence's own slice, as
        `add` does; np.add.reduceat adds in another order), folded in
        sequence order; a sequence with a null or -inf goes through
        `_add_general` in its turn (tests/unit/test_compare.py)."""
        sizes = np.asarray(sizes, dtype=np.int64)
        ends = np.cumsum(sizes)
        finite = np.isfinite(a)
        finite &= np.isfinite(b)
        if finite.all():
            fast = sizes > 0
            fa, fb = a, b
        else:
            fast = np.array([f.size > 0 and bool(f.all()) for f in np.split(finite, ends[:-1])], dtype=bool)
            keep = np.repeat(fast, sizes)
            fa, fb = a[keep], b[keep]
        fsizes = sizes[fast]
        d = fb - fa
        absd = np.abs(d)
        if self.tol.rtol:
            self.mismatched += int(np.count_nonzero(absd > self.tol.atol + self.tol.rtol * np.abs(fa)))
        else:
            self.mismatched += int(np.count_nonzero(absd > self.tol.atol))
        self.n += fa.size
        self.n_finite += fa.size
        self.bitwise += int(np.count_nonzero(fa == fb))
        with np.errstate(over="ignore", invalid="ignore"):
            rho = np.exp(d)
            exp_abs = np.exp(absd)
            k3 = np.expm1(d) - d
            pd = np.abs(np.exp(fb) - np.exp(fa))
        self.clipped += int(np.count_nonzero(np.abs(rho - 1) > CLIP_EPS))
        nb = 0
        if fa.size:  # `_fold_abs` over all: its counts and maxima; each sequence's bucket sums (bincount adds in order)
            buckets = (np.arange(fa.size) - np.repeat(np.cumsum(fsizes) - fsizes, fsizes)) // POSITION_BUCKET
            nb = int(fsizes.max() - 1) // POSITION_BUCKET + 1
            self._grow(nb)
            seq_index = np.repeat(np.arange(fsizes.size), fsizes)
            pos_sums = np.bincount(seq_index * nb + buckets, weights=absd, minlength=fsizes.size * nb).reshape(-1, nb)
            self._fold_counts(absd, buckets, nb)
        out = np.zeros(a.size) if fa is not a else absd
        if fa.size:
            fstarts = np.cumsum(fsizes) - fsizes
            seq_max = np.maximum.reduceat(absd, fstarts).tolist()  # maxima are exact however they are taken
            seq_pd_max = np.maximum.reduceat(pd, fstarts).tolist()
            # each row's slice is summed as a 1-D array of its own would be (pairwise): the test holds it
            rows = np.stack((absd, d, exp_abs, k3))
        reduce, dot = np.add.reduce, np.dot
        all_fast = bool(fast.all())
        k = lo = 0  # the sequence's place among the finite ones, and where its numbers start there
        with np.errstate(over="ignore", invalid="ignore"):
            for (loc, ids, tops), size, end, f in zip(seqs, sizes.tolist(), ends.tolist(), fast.tolist()):
                if not f:
                    if size:
                        out[end - size:end] = self._add_general(a[end - size:end], b[end - size:end],
                                                                np.arange(size), loc, ids, tops)
                    continue
                hi = lo + size
                sum_abs, total, sum_exp_abs, sum_k3 = reduce(rows[:, lo:hi], axis=1).tolist()
                sd, srho = d[lo:hi], rho[lo:hi]
                self.sum_abs += sum_abs
                if seq_max[k] > self.max_abs:
                    i = int(absd[lo:hi].argmax())
                    self.max_abs = seq_max[k]
                    self.max_loc = dict(loc, position=i, token_id=int(ids[i]), reference=float(fa[lo + i]),
                                        candidate=float(fb[lo + i]))
                self.sum_exp_abs += sum_exp_abs
                self.sum_rho2 += float(dot(srho, srho))
                self.sum_k1 -= total
                self.sum_k2 += float(dot(sd, sd) / 2)
                self.sum_k3 += sum_k3
                self.prob_diff_max = max(self.prob_diff_max, seq_pd_max[k])
                ppl = abs(total / size)
                self.seq_n += 1
                self.seq_ppl_sum += ppl
                self.seq_ppl_max = max(self.seq_ppl_max, ppl)
                if not all_fast:
                    self.pos_sum[:nb] += pos_sums[k]
                if tops is not None:
                    self._add_tops(*tops)
                if out is not absd:
                    out[end - size:end] = absd[lo:hi]
                lo = hi
                k += 1
        if all_fast and nb:  # the sequences' bucket sums added one after another (accumulate is sequential)
            self.pos_sum[:nb] = np.add.accumulate(np.vstack((self.pos_sum[:nb], pos_sums)), axis=0)[-1]
        return out

    def add_tops(self, a: np.ndarray, b: np.ndarray, tops: tuple[list | None, list | None]) -> None:
        """The top-k part of `add` on its own, for sequences whose numbers go
        through `add_many` without their rows: rows where a side has no
        logprob (null) are left out, as `add` leaves them out."""
        if not a.size:
            return
        if np.isnan(a).any() or np.isnan(b).any():
            known = ~(np.isnan(a) | np.isnan(b))
            if not known.any():
                return
            tops = tuple([row for row, k in zip(side, known) if k] for side in tops)  # type: ignore[assignment]
        self._add_tops(*tops)

    def _add_general(self, a: np.ndarray, b: np.ndarray, positions: np.ndarray, loc: Location,
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

    def _add_finite(self, a: np.ndarray, b: np.ndarray, positions: np.ndarray, loc: Location,
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
        buckets = positions // POSITION_BUCKET
        nb = int(buckets[-1]) + 1  # positions are ascending
        self._grow(nb)
        self.pos_sum[:nb] += np.bincount(buckets, weights=finite_absd, minlength=nb)
        self._fold_counts(absd, buckets, nb)

    def _grow(self, nb: int) -> None:
        if nb > self.pos_count.size:
            grow = nb - self.pos_count.size
            self.pos_count = np.concatenate([self.pos_count, np.zeros(grow, np.int64)])
            self.pos_sum = np.concatenate([self.pos_sum, np.zeros(grow)])
            self.pos_max = np.concatenate([self.pos_max, np.zeros(grow)])

    def _fold_counts(self, absd: np.ndarray, buckets: np.ndarray, nb: int) -> None:
        """What of `_fold_abs` is counts and maxima: the same however the tokens are grouped."""
        nz = absd[absd > 0]
        self.zero += int(absd.size - nz.size)
        if nz.size:
            with np.errstate(divide="ignore"):
                idx = np.floor((np.log10(np.minimum(nz, 10.0 ** HIST_MAX_EXP)) - HIST_MIN_EXP)
                               * HIST_BINS_PER_DECADE).astype(np.int64) + 1
            self.hist += np.bincount(np.clip(idx, 0, self.hist.size - 1), minlength=self.hist.size)
        self.pos_count[:nb] += np.bincount(buckets, minlength=nb)
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

    def merge(self, other: "Channel") -> None:
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

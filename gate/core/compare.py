"""Token-by-token comparison of two trace sets. Pure Python + numpy: no
engine, no I/O beyond reading the two trace files as they stream.

Notation (docs/design.md section 3): a = reference (golden) logprob, b = candidate,
d = b - a, rho = exp(d). Two channels are compared, never across each other:

- forced: teacher-forced scores of the reference's tokens in the reference's
  contexts (completion positions are measured; prompt positions reported);
- sampler: the engine's own logprobs of the sampled tokens, over the prefix
  where both free runs produced the same tokens.

This module merge-joins the two streams and aggregates per sampling config;
the per-token measures are `channel`, where free runs part is `divergence`,
and the worst tokens and per-prompt rows the report shows are `selection`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from gate.core.channel import Channel, Tolerance
from gate.core.divergence import FreeRun, top2_gap
from gate.core.measures import as_float_array, first_divergence
from gate.core.rows import (
    GroupSummary,
    Histogram,
    Location,
    MatchedSample,
    PositionBucket,
    PromptRow,
    SamplingParams,
    WorstToken,
)
from gate.core.selection import PromptRows, WorstTokens
from gate.core.semantics import Relation, compare_spread, describe, judge, matters, relation_pairs
from gate.core.trace import Record, TraceReader

__all__ = ["ComparisonResult", "compare_traces", "compare_records", "merge_records", "CHANNELS"]

CHANNELS = ("forced", "sampler")
MATCHED_POINTS = 256       # sampler differences kept per config for the report's chart
# Pairs are measured this many completion tokens at a time: numpy's cost per call is spread over many
# sequences, and memory stays flat (a batch is a few dozen records).
BATCH_TOKENS = 8192
BATCH_PAIRS = 256


@dataclass
class _Group:
    """Everything measured for one sampling config (or overall)."""

    tol: Tolerance
    forced: Channel = None  # type: ignore[assignment]
    sampler: Channel = None  # type: ignore[assignment]
    free_run: FreeRun = field(default_factory=FreeRun)
    # in-run relation of each side's sampler logprobs to its own prefill scores
    relation_ref: Relation = field(default_factory=Relation)
    relation_cand: Relation = field(default_factory=Relation)
    params: SamplingParams | None = None

    def __post_init__(self) -> None:
        self.forced = Channel(self.tol)
        self.sampler = Channel(self.tol)

    def merge(self, other: "_Group") -> None:
        self.forced.merge(other.forced)
        self.sampler.merge(other.sampler)
        self.free_run.merge(other.free_run)

    def summary(self) -> GroupSummary:
        out: GroupSummary = {"forced": self.forced.summary(), "sampler": self.sampler.summary(),
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
    overall: GroupSummary
    per_config: dict[str, GroupSummary]
    worst_tokens: list[WorstToken]
    by_position: dict[str, list[PositionBucket]]
    histogram: dict[str, Histogram]
    per_prompt: list[PromptRow]
    per_prompt_omitted: int
    only_reference: list[tuple[str, str, int]]
    only_candidate: list[tuple[str, str, int]]
    warnings: list[str]
    records: int
    sampler_matched: dict[str, MatchedSample] = field(default_factory=dict)


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


def _prompt_maxima(pa: np.ndarray, pb: np.ndarray, sizes: list[int]) -> list[float]:
    """`_prompt_max_abs` of each of many sequences laid one after another
    (0.0 where a sequence has no prompt positions)."""
    out = [0.0] * len(sizes)
    if not pa.size:
        return out
    with np.errstate(invalid="ignore"):
        pd = np.abs(pb - pa)
    ends = np.cumsum(sizes)
    starts = ends - np.asarray(sizes)
    nonempty = np.flatnonzero(np.asarray(sizes) > 0)
    maxima = np.maximum.reduceat(pd, starts[nonempty]).tolist()  # NaN where a null side or -inf on both is there
    for k, m in zip(nonempty.tolist(), maxima):
        lo, hi = int(starts[k]), int(ends[k])
        out[k] = m if m == m else _prompt_max_abs(pa[lo:hi], pb[lo:hi])
    return out


class _Comparator:
    def __init__(self, tolerances: dict[str | None, Tolerance], sampling: dict[str, SamplingParams]) -> None:
        self.tolerances = tolerances
        self.sampling = sampling
        self.overall = _Group(tolerances.get(None, Tolerance()))
        self.groups: dict[str, _Group] = {}
        self.worst = WorstTokens()
        self.per_prompt = PromptRows()
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self.matched: dict[str, _Sample] = {}  # sampler differences on matched tokens, per config (report)
        self.pending: list[tuple[Record, Location, PromptRow, tuple | None, tuple | None]] = []
        self.pending_tokens = 0

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

    def add(self, ref: Record, cand: Record) -> None:
        """Measure a pair. The teacher-forced scores are queued as arrays and
        folded a batch at a time (`flush`), with whatever depends on them or
        on the order of pairs (free runs, worst tokens, per-prompt rows);
        the records themselves are let go at once (see merge_records)."""
        g = self.group(ref.config)  # overall is merged from the configs at the end
        loc: Location = {"config": ref.config, "prompt_id": ref.prompt_id, "sample": ref.sample}
        row: PromptRow = dict(loc, forced_max_abs_diff=None, sampler_max_abs_diff=None,
                              free_run_match=None, first_divergence=None)
        forced = sampler = None
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
                if p:  # position 0 has no logprob: one array of the rest on each side, the prompt's and the completion's
                    ra, rb = _arr(ref.forced.logprobs[1:]), _arr(cand.forced.logprobs[1:])
                    a, b = ra[p - 1:], rb[p - 1:]
                else:
                    a, b = _arr(ref.forced.logprobs), _arr(cand.forced.logprobs)
                if ref.forced.top_ids is not None and cand.forced.top_ids is not None:
                    g.forced.add_tops(a, b, (ref.forced.top_ids[p:], cand.forced.top_ids[p:]))
                g.forced.paths.add((ref.forced.path, cand.forced.path))
                prompt = (ra[:p - 1], rb[:p - 1]) if p > 1 else None
                forced = (a, b, prompt, ref_ids)
                self.pending_tokens += a.size
        # free run + sampler channel over the matching prefix
        if ref.sampler is not None and cand.sampler is not None:
            ref_c, cand_c = _as_list(ref.completion_token_ids), _as_list(cand.completion_token_ids)
            n = min(len(ref_c), len(cand_c))
            match = ref_c == cand_c
            first = n if match else first_divergence(ref_c, cand_c)
            row["free_run_match"] = match
            row["first_divergence"] = None if match else first
            gap = None if match else top2_gap(ref, first)
            a, b = _arr(ref.sampler.logprobs[:first]), _arr(cand.sampler.logprobs[:first])
            positions = np.arange(first)
            ids = ref_c[:first]
            tops = None
            if ref.sampler.top_ids is not None and cand.sampler.top_ids is not None:
                tops = (ref.sampler.top_ids[:first], cand.sampler.top_ids[:first])
            g.sampler.paths.add((ref.sampler.path, cand.sampler.path))
            absd = g.sampler.add(a, b, positions, loc, ids, tops)
            if first:
                with np.errstate(invalid="ignore"):
                    d = b - a
                ok = np.isfinite(d)
                self.matched.setdefault(ref.config, _Sample()).add(positions[ok], d[ok])
            sampler = (match, first, len(ref_c), gap, a, b, absd, ids)
        # what the worst tokens show of a record: its key and its tokens
        slim = Record(config=ref.config, prompt_id=ref.prompt_id, sample=ref.sample,
                      prompt_token_ids=ref.prompt_token_ids, completion_token_ids=ref.completion_token_ids,
                      prompt_tokens=ref.prompt_tokens, completion_tokens=ref.completion_tokens)
        self.pending.append((slim, loc, row, forced, sampler))
        if self.pending_tokens >= BATCH_TOKENS or len(self.pending) >= BATCH_PAIRS:
            self.flush()

    def _forced_batch(self, pairs: list) -> dict[int, tuple[np.ndarray, float, int, float, int]]:
        """The queued teacher-forced scores folded into their channels, each
        config's at once (in order); per pair (|d|, its max, the leading
        positions within tolerance, the prompt positions' max |d| and count)."""
        by_group: dict[str, list[int]] = {}
        for idx, (rec, _loc, _row, forced, _sampler) in enumerate(pairs):
            if forced is not None:
                by_group.setdefault(rec.config, []).append(idx)
        out: dict[int, tuple[np.ndarray, float, int, float, int]] = {}
        for config, idxs in by_group.items():
            channel = self.groups[config].forced
            entries = [pairs[i][3] for i in idxs]
            sizes = np.array([e[0].size for e in entries], dtype=np.int64)
            a = np.concatenate([e[0] for e in entries])
            absd = channel.add_many(a, np.concatenate([e[1] for e in entries]), sizes,
                                    [(pairs[i][1], e[3], None) for i, e in zip(idxs, entries)])
            ends = np.cumsum(sizes)
            starts = ends - sizes
            top = np.zeros(sizes.size)
            nonempty = sizes > 0
            if nonempty.any():
                top[nonempty] = np.maximum.reduceat(absd, starts[nonempty])
            # leading completion positions whose scores agree: up to the first one beyond tolerance
            tol = channel.tol
            with np.errstate(invalid="ignore"):
                if tol.rtol:
                    far = ~(absd <= tol.atol + tol.rtol * np.abs(np.nan_to_num(a, neginf=0.0)))
                else:
                    far = ~(absd <= tol.atol)  # the same: atol + 0 * (a finite number) is atol
            far_at = np.append(np.flatnonzero(far), a.size)
            close = np.minimum(far_at[np.searchsorted(far_at, starts)], ends) - starts
            prompts = [e[2] for e in entries]
            prompt_sizes = [0 if pr is None else pr[0].size for pr in prompts]
            prompt_max = _prompt_maxima(np.concatenate([pr[0] for pr in prompts if pr is not None] or [np.zeros(0)]),
                                        np.concatenate([pr[1] for pr in prompts if pr is not None] or [np.zeros(0)]),
                                        prompt_sizes)
            for k, (i, lo, hi) in enumerate(zip(idxs, starts.tolist(), ends.tolist())):
                out[i] = (absd[lo:hi], float(top[k]), int(close[k]), prompt_max[k], prompt_sizes[k])
        return out

    def flush(self) -> None:
        """Fold the queued pairs, in order."""
        pairs, self.pending, self.pending_tokens = self.pending, [], 0
        if not pairs:
            return
        forced_done = self._forced_batch(pairs)
        for idx, (rec, loc, row, forced, sampler) in enumerate(pairs):
            g = self.groups[rec.config]
            forced_close = -1  # leading completion positions whose teacher-forced scores agree (-1: not scored)
            if forced is not None:
                a, b, _prompt, ids = forced
                absd, top, forced_close, pm, prompt_n = forced_done[idx]
                if prompt_n:
                    g.forced.prompt_n += prompt_n
                    g.forced.prompt_max_abs = max(g.forced.prompt_max_abs, pm)
                self.worst.track("forced", absd, top, a, b, np.arange(absd.size), ids, rec)
                row["forced_max_abs_diff"] = top
            if sampler is not None:
                match, first, n_ref, gap, a, b, absd, ids = sampler
                # a sampled config whose free runs part where both engines give the golden's token the same
                # logprob (teacher-forced, at and before the divergence): the same distribution, another draw
                stream = (not match and first < n_ref and forced_close > first
                          and ((self.sampling.get(rec.config) or {}).get("temperature", 1.0) or 0) > 0)
                g.free_run.add(loc, match, first, gap, stream)
                top = float(absd.max()) if absd.size else 0.0
                self.worst.track("sampler", absd, top, a, b, np.arange(first), ids, rec)
                row["sampler_max_abs_diff"] = top
            self.per_prompt.keep(row)

    def result(self, only_ref: list, only_cand: list, records: int) -> ComparisonResult:
        self.flush()
        for name in sorted(self.groups):
            self.overall.merge(self.groups[name])
        rows = self.per_prompt.rows()
        return ComparisonResult(
            overall=self.overall.summary(),
            per_config={name: g.summary() for name, g in sorted(self.groups.items())},
            worst_tokens=self.worst.entries(),
            by_position={c: getattr(self.overall, c).by_position() for c in CHANNELS},
            histogram={c: getattr(self.overall, c).histogram() for c in CHANNELS},
            per_prompt=rows, per_prompt_omitted=self.per_prompt.seen - len(rows),
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
                    sampling: dict[str, SamplingParams] | None = None) -> ComparisonResult:
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

"""Where two free runs part: the first divergence of each pair, whether
it was a near tie (the reference's top-2 logprobs within NEAR_TIE_GAP) or
a changed random stream (the teacher-forced scores agreed up to it), and
the first few divergences kept for the report."""
from __future__ import annotations

from dataclasses import dataclass, field

from gate.core.rows import Divergence, FreeRunSummary, Location
from gate.core.trace import Record

__all__ = ["FreeRun", "top2_gap", "NEAR_TIE_GAP", "DIVERGENCES_KEPT"]

NEAR_TIE_GAP = 1e-2          # top-2 logprob gap below which a greedy divergence is a "near tie"
DIVERGENCES_KEPT = 50


@dataclass
class FreeRun:
    """Where each pair of free runs parted, folded per config."""

    sequences: int = 0
    exact: int = 0
    near_ties: int = 0
    at_start: int = 0  # diverged at position 0: the sign of a changed seeded random stream
    # diverged while the teacher-forced scores agree up to and at the divergence: the distribution was the
    # same on both sides, only the draw differed (a changed seeded random stream), at any position
    stream: int = 0
    stream_first_min: int | None = None
    first_min: int | None = None
    diverged: list[Divergence] = field(default_factory=list)

    def add(self, loc: Location, match: bool, first: int, gap: float | None, stream: bool) -> None:
        """One pair of free runs: identical (`match`), or parted at `first`
        with the reference's top-2 gap there (`gap`) and whether the
        teacher-forced scores agreed up to it (`stream`)."""
        self.sequences += 1
        if match:
            self.exact += 1
        else:
            near = gap is not None and gap < NEAR_TIE_GAP
            self.near_ties += near
            self.at_start += first == 0
            self.first_min = first if self.first_min is None else min(self.first_min, first)
            if stream:
                self.stream += 1
                self.stream_first_min = first if self.stream_first_min is None else min(self.stream_first_min,
                                                                                        first)
            if len(self.diverged) < DIVERGENCES_KEPT:
                self.diverged.append(dict(loc, position=first, near_tie=near, top2_gap=gap,
                                          stream_changed=stream))

    def merge(self, other: "FreeRun") -> None:
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

    def summary(self) -> FreeRunSummary | None:
        if not self.sequences:
            return None
        return {"sequences": self.sequences, "exact_matches": self.exact,
                "exact_match_rate": self.exact / self.sequences,
                "first_divergence_min": self.first_min, "near_tie_divergences": self.near_ties,
                "diverged_at_start": self.at_start,
                "stream_changed": self.stream, "stream_first_position": self.stream_first_min,
                "diverged": self.diverged[:DIVERGENCES_KEPT]}


def top2_gap(ref: Record, pos: int) -> float | None:
    """The reference sampler's top-1 minus top-2 logprob at `pos` (None where it has no top-2 there)."""
    src = ref.sampler
    if src is None or src.top_logprobs is None or pos >= len(src.top_logprobs):
        return None
    top = src.top_logprobs[pos]
    if not top or len(top) < 2:
        return None
    return float(top[0]) - float(top[1])

"""What the report shows of a comparison beyond its sums: the worst tokens
(with a few tokens of context each) and the per-prompt rows with the largest
drifts, each kept in a bounded heap so memory stays flat."""
from __future__ import annotations

import heapq
import itertools
from typing import Sequence

import numpy as np

from gate.core.rows import PromptRow, WorstToken
from gate.core.trace import Record

__all__ = ["WorstTokens", "PromptRows", "WORST_TOKENS", "PER_PROMPT_ROWS", "CONTEXT_TOKENS"]

WORST_TOKENS = 50
PER_PROMPT_ROWS = 2000       # per-prompt rows kept (the largest drifts); memory stays bounded
CONTEXT_TOKENS = 4


def _tokens(rec: Record, full: bool) -> list[str] | None:
    if rec.completion_tokens is None:
        return None
    if full:
        return list(rec.prompt_tokens or [""] * len(rec.prompt_token_ids)) + list(rec.completion_tokens)
    return list(rec.completion_tokens)


class WorstTokens:
    """The WORST_TOKENS largest |d| over both channels, largest first (ties in the order seen)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, WorstToken]] = []
        self.counter = itertools.count()

    def track(self, channel: str, absd: np.ndarray, top: float, a: np.ndarray, b: np.ndarray,
              positions: np.ndarray, ids: Sequence[int], rec: Record) -> None:
        """`top` is absd's max (0.0 when empty), which the caller has already."""
        worst = self.heap
        if absd.size == 0 or (len(worst) == WORST_TOKENS and top <= worst[0][0]):
            return
        k = min(WORST_TOKENS, absd.size)
        cand = np.argpartition(-absd, k - 1)[:k] if absd.size > k else np.arange(absd.size)
        toks = _tokens(rec, full=False)
        for i in cand:
            v = float(absd[i])
            if v <= 0 or (len(worst) == WORST_TOKENS and v <= worst[0][0]):
                continue
            pos = int(positions[i])
            entry: WorstToken = {
                "channel": channel, "config": rec.config, "prompt_id": rec.prompt_id, "sample": rec.sample,
                "position": pos, "token_id": int(ids[i]),
                "token": toks[pos] if toks and pos < len(toks) else None,
                "context_before": toks[max(0, pos - CONTEXT_TOKENS):pos] if toks else [],
                "context_after": toks[pos + 1:pos + 1 + CONTEXT_TOKENS] if toks else [],
                "reference": float(a[i]), "candidate": float(b[i]), "abs_diff": v}
            item = (v, next(self.counter), entry)
            if len(worst) < WORST_TOKENS:
                heapq.heappush(worst, item)
            else:
                heapq.heapreplace(worst, item)

    def entries(self) -> list[WorstToken]:
        return [e for _, _, e in sorted(self.heap, key=lambda t: (-t[0], t[1]))]


class PromptRows:
    """One row per compared record; the PER_PROMPT_ROWS with the largest drift
    are kept (the earlier one on a tie), and how many were left out."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, PromptRow]] = []
        self.seen = 0
        self.counter = itertools.count()

    def keep(self, row: PromptRow) -> None:
        self.seen += 1
        score = max(row["forced_max_abs_diff"] or 0.0, row["sampler_max_abs_diff"] or 0.0)
        item = (score, -next(self.counter), row)
        if len(self.heap) < PER_PROMPT_ROWS:
            heapq.heappush(self.heap, item)
        elif item > self.heap[0]:
            heapq.heapreplace(self.heap, item)

    def rows(self) -> list[PromptRow]:
        """The kept rows in key order."""
        return [r for _, _, r in sorted(self.heap, key=lambda t: (t[2]["config"], t[2]["prompt_id"],
                                                                  t[2]["sample"]))]

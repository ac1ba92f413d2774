"""The engine calls of record and check with their progress on stderr:
calls done, tokens per second and the time left."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from gate.core.rows import BatchCall, SamplingParams
from gate.run.checkpoint import Checkpoint
from gate.run.replay import run_calls

__all__ = ["Progress", "run_engine"]


class Progress:
    """Engine calls done, tokens per second and the time left, on stderr: one
    line rewritten in place on a terminal, else a line at most every
    `interval` seconds (CI logs), and always one at the end."""

    def __init__(self, quiet: bool, interval: float, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.interval = max(0.0, interval)
        self.start = time.monotonic()
        self.last = float("-inf")
        self.busy = 0.0
        self.ran = 0
        self.tokens = 0

    def __call__(self, done: int, total: int, requests: int, tokens: int, seconds: float) -> None:
        self.ran += 1
        self.tokens += tokens
        self.busy += seconds
        now = time.monotonic()
        if self.quiet or not (self.tty or done == total or now - self.last >= self.interval):
            return
        self.last = now
        rate = self.tokens / self.busy if self.busy > 0 else 0.0
        left = (total - done) * self.busy / self.ran
        line = (f"parity-gate: engine calls {done}/{total} ({100 * done // total}%), {rate:,.0f} tokens/s, "
                f"{'done' if done == total else 'about ' + duration(left) + ' left'}")
        self.stream.write(("\r\033[K" + line + ("\n" if done == total else "")) if self.tty else line + "\n")
        self.stream.flush()


def duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_engine(engine: Any, calls: list[BatchCall], prompts: dict[str, list[int]],
                sampling: dict[str, SamplingParams], forced: dict[tuple, list[int]] | None, checkpoint: Checkpoint,
                args: argparse.Namespace) -> None:
    if checkpoint.resumed:
        print(f"resuming: {checkpoint.resumed} of {len(calls)} engine calls were done by an earlier run",
              file=sys.stderr)
    run_calls(engine, calls, prompts, sampling, forced, checkpoint,
              Progress(args.quiet, args.progress_interval))

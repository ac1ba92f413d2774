"""A cancelled job, caught: SIGTERM or SIGINT (the runner cancels or times
out the job) raise `Cancelled` inside `cancel_on_signals`, so the action and
`publish` can still post a final status on the way out; while that last word
is posted, `ignoring_cancel_signals` lets no second signal cut it short."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

__all__ = ["Cancelled", "cancel_on_signals", "ignoring_cancel_signals"]


class Cancelled(BaseException):
    """SIGTERM or SIGINT while the gate runs or publishes: a cancelled or timed-out job."""


def _raise_cancelled(signum: int, _frame: Any) -> None:
    raise Cancelled(signal.Signals(signum).name)


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """SIGTERM/SIGINT raise `Cancelled` here, so the caller can still post a
    final status (PID 1 in a container ignores SIGTERM unless it handles it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_cancelled) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def ignoring_cancel_signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

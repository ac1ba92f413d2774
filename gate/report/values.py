"""Tolerant readers of a verdict's values, for the renderers (gate/report/view.py,
gate/report/charts.py). A verdict may be hand-edited or from another version, so
every read is total: a missing or mistyped value gives a neutral default,
never an exception, and infinities arrive as the strings write_verdict uses."""
from __future__ import annotations

import math
from typing import Any

from gate.core.measures import NONFINITE as _NONFINITE
from gate.core.measures import report_number


def _float(x: Any) -> float | None:
    """A number from the verdict as a float (inf for "Infinity"), or None for
    anything else. Every chart and ratio reads numbers through this."""
    if isinstance(x, bool):
        return None
    if isinstance(x, float):
        return x
    if isinstance(x, int):
        try:
            return float(x)
        except OverflowError:  # an int beyond the float range
            return math.inf if x > 0 else -math.inf
    return _NONFINITE.get(x) if isinstance(x, str) else None


def _int(x: Any, default: int = 0) -> int:
    """A finite number as an int (charts count and position with these)."""
    f = _float(x)
    return int(f) if f is not None and math.isfinite(f) else default


_num = report_number  # the report's number format lives with the measures (gate/core/measures.py)


def _mapping(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _rows(x: Any) -> list[dict[str, Any]]:
    return [r for r in _list(x) if isinstance(r, dict)]


def _check_of(v: dict[str, Any], check_id: str, config: str) -> dict[str, Any] | None:
    """The check `check_id` for `config`, else its overall one."""
    rows = [c for c in _rows(v.get("checks")) if c.get("id") == check_id]
    return next((c for c in rows if c.get("config") == config), None) or next(
        (c for c in rows if c.get("config") is None), None)


def _fit_words(side: dict[str, Any]) -> str:
    if not side:
        return "n/a"
    parts = [f"slope {_num(side.get('slope'))}", f"offset {_num(side.get('offset'))}",
             f"rms {_num(side.get('rms_residual', side.get('rmse')))}"]
    if side.get("p99_abs_residual") is not None:
        parts.append(f"p99 |residual| {_num(side.get('p99_abs_residual'))}")
    return ", ".join(parts) + f" ({_num(side.get('tokens'))} tokens)"

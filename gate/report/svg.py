"""SVG plot geometry for the HTML report's charts: axes that map data
ranges onto pixels, tick positions, and the colours that tell golden, run
and what is beyond a bound apart."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gate.report.values import _float, _list, _num

__all__ = ["Axes", "f1", "ticks", "pairs", "padded", "REF_COLOR", "CAND_COLOR", "BAD", "NEUTRAL"]

# Golden and run are told apart by colour; red is kept for what is beyond a bound.
REF_COLOR, CAND_COLOR, BAD, NEUTRAL = "#0969da", "#bc4c00", "#cf222e", "#8c959f"


def f1(x: float) -> str:
    return f"{x:.1f}"


@dataclass(frozen=True)
class Axes:
    """A plot area: data ranges mapped onto pixels."""
    x0: float
    x1: float
    y0: float
    y1: float
    left: int = 50
    top: int = 10
    w: int = 250
    h: int = 190

    def px(self, x: float) -> float:
        return self.left + self.w * (x - self.x0) / (self.x1 - self.x0)

    def py(self, y: float) -> float:
        return self.top + self.h - self.h * (y - self.y0) / (self.y1 - self.y0)

    def line(self, slope: float, offset: float, color: str, title: str) -> dict[str, Any] | None:
        """y = slope * x + offset, cut to the plot area (no clipPath: the page has no url() references)."""
        if not (math.isfinite(slope) and math.isfinite(offset)):
            return None
        if slope == 0:
            lo, hi = (self.x0, self.x1) if self.y0 <= offset <= self.y1 else (0.0, 0.0)
        else:
            xa, xb = (self.y0 - offset) / slope, (self.y1 - offset) / slope
            lo, hi = max(self.x0, min(xa, xb)), min(self.x1, max(xa, xb))
        if not lo < hi:
            return None
        return {"kind": "line", "x1": f1(self.px(lo)), "y1": f1(self.py(slope * lo + offset)),
                "x2": f1(self.px(hi)), "y2": f1(self.py(slope * hi + offset)), "stroke": color, "width": 2,
                "title": title}

    def frame(self, xlabel: str, ylabel: str, yticks: list[tuple[float, str]] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"kind": "rect", "x": self.left, "y": self.top, "w": self.w, "h": self.h,
                                      "fill": "none", "stroke": "#d1d9e0"}]
        for x in ticks(self.x0, self.x1):
            out.append({"kind": "text", "x": f1(self.px(x)), "y": self.top + self.h + 14, "anchor": "middle",
                        "text": _num(float(x))})
        for y, label in yticks if yticks is not None else [(t, _num(float(t))) for t in ticks(self.y0, self.y1)]:
            out.append({"kind": "line", "x1": self.left, "y1": f1(self.py(y)), "x2": self.left + self.w,
                        "y2": f1(self.py(y)), "stroke": "#eaeef2", "width": 1})
            out.append({"kind": "text", "x": self.left - 4, "y": f1(self.py(y) + 4), "anchor": "end", "text": label})
        out.append({"kind": "text", "x": self.left + self.w / 2, "y": self.top + self.h + 30, "anchor": "middle",
                    "text": xlabel})
        out.append({"kind": "text", "x": 12, "y": self.top + self.h / 2, "anchor": "middle", "text": ylabel,
                    "rotate": True})
        return out


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return []
    raw = span / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 12) for i in range(int((hi - start) / step + 1e-9) + 1)]


def pairs(x: Any) -> list[tuple[float, float]]:
    """Finite [a, b] pairs from the verdict (anything else is left out)."""
    out = []
    for p in _list(x):
        if isinstance(p, list) and len(p) == 2:
            a, b = _float(p[0]), _float(p[1])
            if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
                out.append((a, b))
    return out


def padded(lo: float, hi: float, least: float = 1e-6) -> tuple[float, float]:
    if hi - lo < least:
        mid = (hi + lo) / 2
        lo, hi = mid - least, mid + least
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad

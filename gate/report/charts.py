"""The report's charts, as data for the templates: inline SVG geometry
(the in-run relation, residual and matched-token charts, drift by position,
histograms, the per-prompt heatmap) and mermaid source for the Markdown
comment. Pure: numbers in, coordinates and labels out; every value is read
through gate/report/values.py, so a hand-edited verdict cannot break a chart."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gate.report.markdown import visible
from gate.report.values import _check_of, _fit_words, _float, _int, _list, _mapping, _num, _rows


def _merge_buckets(rows: Any, max_points: int) -> list[dict[str, Any]]:
    """Merge adjacent position buckets so a chart has at most `max_points`.
    Rows come back with float `max_abs_diff`/`mean_abs_diff` (inf allowed)
    and int `start`/`end`/`count`; a row without a max is dropped."""
    clean = []
    for r in _rows(rows):
        mx = _float(r.get("max_abs_diff"))
        if mx is None or mx != mx:
            continue
        mean = _float(r.get("mean_abs_diff"))
        clean.append(dict(r, max_abs_diff=mx, mean_abs_diff=0.0 if mean is None or mean != mean else mean,
                          start=_int(r.get("start")), end=_int(r.get("end")), count=max(0, _int(r.get("count")))))
    if len(clean) <= max_points:
        return clean
    k = math.ceil(len(clean) / max_points)
    out = []
    for i in range(0, len(clean), k):
        grp = clean[i:i + k]
        count = sum(r["count"] for r in grp)
        mean = (sum(r["mean_abs_diff"] * r["count"] for r in grp if r["count"]) / count) if count else 0.0
        out.append({"start": grp[0]["start"], "end": grp[-1]["end"], "count": count,
                    "mean_abs_diff": mean, "max_abs_diff": max(r["max_abs_diff"] for r in grp)})
    return out


_MERMAID_CAP = 1e4  # mermaid's numbers have no exponent and no infinity: larger values are drawn at the cap


def _plain(x: float) -> str:
    """A decimal without exponent: mermaid's number grammar has none."""
    s = f"{min(max(x, 0.0), _MERMAID_CAP):.10f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


_CHANNEL_TITLE = {"forced": "teacher-forced", "sampler": "sampled-token"}


def _mermaid(by_position: dict[str, Any]) -> list[dict[str, str]]:
    charts = []
    for channel in ("forced", "sampler"):
        rows = _merge_buckets(by_position.get(channel), 40)
        if not rows or max(r["max_abs_diff"] for r in rows) <= 0:
            continue
        labels = ", ".join(f'"{r["start"]}-{r["end"] - 1}"' for r in rows)
        values = ", ".join(_plain(r["max_abs_diff"]) for r in rows)
        capped = any(r["max_abs_diff"] > _MERMAID_CAP for r in rows)
        note = f" (inf and values above {_num(_MERMAID_CAP)} drawn at {_num(_MERMAID_CAP)})" if capped else ""
        charts.append({"channel": _CHANNEL_TITLE[channel],
                       "body": f'xychart-beta\n    title "{_CHANNEL_TITLE[channel]}: max abs diff by token position'
                               f'{note}"\n'
                               f'    x-axis "completion position" [{labels}]\n'
                               f'    y-axis "max abs diff"\n    line [{values}]'})
    return charts


# --------------------------------------------------------------------------- SVG charts (HTML)

def _charts(v: dict[str, Any]) -> dict[str, Any]:
    failing = {c.get("channel") for c in _rows(v.get("checks")) if c.get("status") == "fail"}
    return {"histograms": _histograms(_mapping(v.get("histogram"))),
            "positions": _position_charts(_mapping(v.get("by_position")), failing),
            "heatmap": _heatmap(v.get("per_prompt")),
            "relations": _relations(v),
            "matched": _matched_charts(v),
            "has_matched": isinstance(v.get("sampler_matched"), dict)}


# Golden and run are told apart by colour; red is kept for what is beyond a bound.
_REF_COLOR, _CAND_COLOR, _BAD, _NEUTRAL = "#0969da", "#bc4c00", "#cf222e", "#8c959f"


def _f1(x: float) -> str:
    return f"{x:.1f}"


@dataclass(frozen=True)
class _Axes:
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
        return {"kind": "line", "x1": _f1(self.px(lo)), "y1": _f1(self.py(slope * lo + offset)),
                "x2": _f1(self.px(hi)), "y2": _f1(self.py(slope * hi + offset)), "stroke": color, "width": 2,
                "title": title}

    def frame(self, xlabel: str, ylabel: str, yticks: list[tuple[float, str]] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"kind": "rect", "x": self.left, "y": self.top, "w": self.w, "h": self.h,
                                      "fill": "none", "stroke": "#d1d9e0"}]
        for x in _ticks(self.x0, self.x1):
            out.append({"kind": "text", "x": _f1(self.px(x)), "y": self.top + self.h + 14, "anchor": "middle",
                        "text": _num(float(x))})
        for y, label in yticks if yticks is not None else [(t, _num(float(t))) for t in _ticks(self.y0, self.y1)]:
            out.append({"kind": "line", "x1": self.left, "y1": _f1(self.py(y)), "x2": self.left + self.w,
                        "y2": _f1(self.py(y)), "stroke": "#eaeef2", "width": 1})
            out.append({"kind": "text", "x": self.left - 4, "y": _f1(self.py(y) + 4), "anchor": "end", "text": label})
        out.append({"kind": "text", "x": self.left + self.w / 2, "y": self.top + self.h + 30, "anchor": "middle",
                    "text": xlabel})
        out.append({"kind": "text", "x": 12, "y": self.top + self.h / 2, "anchor": "middle", "text": ylabel,
                    "rotate": True})
        return out


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return []
    raw = span / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 12) for i in range(int((hi - start) / step + 1e-9) + 1)]


def _pairs(x: Any) -> list[tuple[float, float]]:
    """Finite [a, b] pairs from the verdict (anything else is left out)."""
    out = []
    for p in _list(x):
        if isinstance(p, list) and len(p) == 2:
            a, b = _float(p[0]), _float(p[1])
            if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
                out.append((a, b))
    return out


def _padded(lo: float, hi: float, least: float = 1e-6) -> tuple[float, float]:
    if hi - lo < least:
        mid = (hi + lo) / 2
        lo, hi = mid - least, mid + least
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _relations(v: dict[str, Any]) -> list[dict[str, Any]]:
    """Per config, the in-run relation (sampler logprob against the same
    run's prefill logprob of the same tokens) of golden and run overlaid:
    the scatter with both fitted lines and the residual band around y = x,
    the residuals (sampler - prefill) against prefill, where a spread too
    small for the first panel shows, and the residual histogram."""
    out = []
    per_config = _mapping(_mapping(v.get("measures")).get("per_config"))
    labels = ((v.get("reference") or {}).get("label") or "golden", (v.get("candidate") or {}).get("label") or "run")
    for name, m in per_config.items():
        sem = _mapping(_mapping(m).get("semantics"))
        sides = [(labels[0], _REF_COLOR, _mapping(sem.get("reference"))),
                 (labels[1], _CAND_COLOR, _mapping(sem.get("candidate")))]
        pts = [(label, color, side, _pairs(side.get("points"))) for label, color, side in sides]
        if not any(p for *_, p in pts):
            continue
        spread = _mapping(sem.get("spread"))
        band = _float(spread.get("band"))
        band = band if band is not None and math.isfinite(band) and band > 0 else None
        coords = [c for *_, p in pts for xy in p for c in xy]
        lo, hi = _padded(min(coords), max(coords))
        ax = _Axes(lo, hi, lo, hi)
        shapes = ax.frame("own prefill logprob", "sampler logprob")
        if band is not None:
            shapes.append({"kind": "poly", "fill": "#dafbe1", "title": f"band: |sampler - prefill| <= {_num(band)}",
                           "points": " ".join(f"{_f1(ax.px(x))},{_f1(ax.py(y))}" for x, y in
                                              ((lo, lo + band), (hi, hi + band), (hi, hi - band), (lo, lo - band)))})
        diag = ax.line(1.0, 0.0, _NEUTRAL, "y = x (sampler equals prefill)")
        if diag:
            shapes.append(dict(diag, width=1, dash=True))
        res_max = max((abs(y - x) for *_, p in pts for x, y in p), default=0.0)
        r = max(res_max, band or 0.0) * 1.15 or 1e-6
        ax2 = _Axes(lo, hi, -r, r, left=58)
        shapes2 = ax2.frame("own prefill logprob", "sampler − prefill")
        if band is not None and band < r:
            shapes2.append({"kind": "rect", "x": ax2.left, "y": _f1(ax2.py(band)), "w": ax2.w,
                            "h": _f1(ax2.py(-band) - ax2.py(band)), "fill": "#dafbe1", "stroke": "none",
                            "title": f"band: |sampler - prefill| <= {_num(band)}"})
        zero = ax2.line(0.0, 0.0, _NEUTRAL, "residual 0")
        if zero:
            shapes2.append(dict(zero, width=1, dash=True))
        for label, color, side, p in pts:
            slope, offset = _float(side.get("slope")), _float(side.get("offset"))
            if slope is not None and offset is not None:
                title = f"{label} fit: sampler = {_num(slope)} × prefill + {_num(offset)}"
                for a, sl, off in ((ax, slope, offset), (ax2, slope - 1.0, offset)):
                    seg = a.line(sl, off, color, title)
                    if seg:
                        (shapes if a is ax else shapes2).append(seg)
            for x, y in p:
                tip = f"{label}: prefill {_num(x)}, sampler {_num(y)}, difference {_num(y - x)}"
                shapes.append({"kind": "circle", "cx": _f1(ax.px(x)), "cy": _f1(ax.py(y)), "r": 2.2, "fill": color,
                               "title": tip})
                shapes2.append({"kind": "circle", "cx": _f1(ax2.px(x)), "cy": _f1(ax2.py(y - x)), "r": 2.2,
                                "fill": color, "title": tip})
        out.append({"config": str(name), "scatter": shapes, "residuals": shapes2,
                    "hist": _residual_histogram([(label, color, side) for label, color, side, _ in pts], band),
                    "width": ax.left + ax.w + 10, "height": ax.top + ax.h + 36,
                    "width2": ax2.left + ax2.w + 10, "spread": spread, "band": band,
                    "sides": [{"label": label, "color": color, "fit": _fit_words(side), "points": len(p),
                               "beyond": spread.get("reference_beyond_band" if i == 0 else "candidate_beyond_band")}
                              for i, (label, color, side, p) in enumerate(pts)]})
    return out


def _residual_histogram(sides: list[tuple[str, str, dict[str, Any]]], band: float | None) -> dict[str, Any]:
    """|sampler - prefill| by decade, golden and run side by side (log counts)."""
    counts: list[dict[Any, int]] = []
    for _, _, side in sides:
        h = _mapping(side.get("residual_histogram"))
        c: dict[Any, int] = {"zero": max(0, _int(h.get("zero")))}
        for d in _rows(h.get("decades")):
            e = _float(d.get("exp"))
            if e is not None and math.isfinite(e):
                c[int(e)] = c.get(int(e), 0) + max(0, _int(d.get("count")))
        counts.append(c)
    exps = sorted({k for c in counts for k in c if k != "zero"})
    keys: list[Any] = ["zero", *exps]
    top = max((n for c in counts for n in c.values()), default=0)
    w, hpx, pad, left = 34, 150, 16, 30
    bars, labels = [], []
    scale = math.log10(top + 1) if top > 0 else 1.0
    for i, k in enumerate(keys):
        label = "0" if k == "zero" else f"1e{k}"
        labels.append({"x": _f1(left + i * w + w / 2), "text": label})
        for j, (name, color, _) in enumerate(sides):
            n = counts[j].get(k, 0)
            height = 0.0 if n <= 0 else max(2.0, hpx * math.log10(n + 1) / scale)
            bars.append({"kind": "rect", "x": _f1(left + i * w + 3 + j * (w - 6) / 2), "y": _f1(pad + hpx - height),
                         "w": _f1((w - 6) / 2 - 1), "h": _f1(height), "fill": color, "stroke": "none",
                         "title": f"{name}: {n:,} tokens with |sampler - prefill| "
                                  + ("exactly 0" if k == "zero" else f"in [1e{k}, 1e{k + 1})")})
    marker = None
    if band is not None and exps:
        e = math.log10(band)
        i = next((n for n, k in enumerate(exps) if k > e), len(exps)) - 1  # the decade holding the band
        frac = e - exps[i] if i >= 0 else 0.0
        x = left + (1 + max(i, 0)) * w + (min(max(frac, 0.0), 1.0) if i >= 0 else 0.0) * w
        marker = {"x": _f1(x), "label": f"band {_num(band)}"}
    return {"bars": bars, "labels": labels, "width": left + len(keys) * w + 10, "height": pad + hpx + 34,
            "base": pad + hpx, "left": left, "marker": marker, "empty": top == 0}


def _matched_charts(v: dict[str, Any]) -> list[dict[str, Any]]:
    """Per config, sampler logprob differences (run - golden) of the tokens
    both free runs drew alike, by completion position, on a signed log
    scale: the few tokens a changed random stream leaves are drawn too."""
    out = []
    for name, m in _mapping(v.get("sampler_matched")).items():
        m = _mapping(m)
        tokens = _int(m.get("tokens"))
        pts = sorted(_pairs(m.get("points")))
        check = _check_of(v, "sampler.logprobs_close", str(name)) or {}
        bound = _float(check.get("bound"))
        bound = bound if bound is not None and math.isfinite(bound) and bound > 0 else None
        mags = [abs(d) for _, d in pts if d != 0]
        if mags:
            hi = math.ceil(math.log10(max(mags)))
            lo = math.floor(math.log10(min(mags)))
            if bound is not None:
                lo, hi = min(lo, math.floor(math.log10(bound))), max(hi, math.ceil(math.log10(bound)))
            hi = max(hi, lo + 1)
            lo = max(lo, hi - 10)
        else:
            lo, hi = -8, -4
        steps = hi - lo + 1

        def ys(d: float) -> float:
            if d == 0 or abs(d) < 10.0 ** lo:
                return 0.0
            return math.copysign((math.log10(abs(d)) - lo + 1) / steps, d)

        xmax = max((x for x, _ in pts), default=0.0)
        ax = _Axes(-0.5, max(xmax, 1.0) + 0.5, -1.05, 1.05, left=56, w=420, h=170)
        every = max(1, math.ceil(steps / 4))
        yt = [(0.0, "0")] + [(s * ys(10.0 ** e), f"{'+' if s > 0 else '−'}1e{e}")
                             for e in range(hi, lo - 1, -every) for s in (1, -1)]
        shapes = ax.frame("completion position", "run − golden", yticks=yt)
        if bound is not None:
            for sgn in (1, -1):
                seg = ax.line(0.0, ys(sgn * bound), _NEUTRAL, f"tolerance ±{_num(bound)}")
                if seg:
                    shapes.append(dict(seg, width=1, dash=True))
        bad = 0
        for x, d in pts:
            over = bound is not None and abs(d) > bound
            bad += over
            shapes.append({"kind": "circle", "cx": _f1(ax.px(x)), "cy": _f1(ax.py(ys(d))), "r": 2.6,
                           "fill": _BAD if over else (_NEUTRAL if d == 0 else _REF_COLOR),
                           "title": f"position {int(x)}: run − golden {_num(d)}"
                                    + (" (beyond tolerance)" if over else "")})
        out.append({"config": str(name), "tokens": tokens, "shown": len(pts), "bad": bad, "bound": bound,
                    "max": max((abs(d) for _, d in pts), default=None), "shapes": shapes,
                    "width": ax.left + ax.w + 10, "height": ax.top + ax.h + 36, "lo": lo})
    return out


def _histograms(hist: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for channel in ("forced", "sampler"):
        h = hist.get(channel)
        if not isinstance(h, dict):
            continue
        decades = sorted((int(e), max(0, _int(d.get("count")))) for d in _rows(h.get("decades"))
                         if (e := _float(d.get("exp"))) is not None and math.isfinite(e))
        bins = [("0", max(0, _int(h.get("zero"))), False)]
        bins += [(f"1e{e}", count, e >= -4) for e, count in decades]
        top = max((c for _, c, _ in bins), default=0)
        if top <= 0:
            continue
        scale = math.log10(top + 1)
        w, h_px, pad = 36, 160, 30
        bars = []
        for i, (label, count, bad) in enumerate(bins):
            height = 0.0 if count <= 0 else max(2.0, h_px * math.log10(count + 1) / scale)
            bars.append({"x": pad + i * w + 4, "y": pad + h_px - height, "w": w - 8, "h": height,
                         "label": label, "count": count, "lx": pad + i * w + w / 2, "ly": pad + h_px + 16,
                         "cy": pad + h_px - height - 4, "bad": bad})
        out.append({"channel": _CHANNEL_TITLE[channel], "bars": bars,
                    "width": pad * 2 + len(bins) * w, "height": pad + h_px + 30, "base": pad + h_px, "pad": pad})
    return out


def _position_charts(by_position: dict[str, Any], failing: set[Any] | frozenset[Any] = frozenset()
                     ) -> list[dict[str, Any]]:
    """Max and mean abs diff by position, log-scale y (drift spans decades).
    The scale comes from the finite values; inf is drawn on the top edge and
    named in the tooltip, and ticks are placed by exponent, so 1e308 never
    needs 10.0 ** 309."""
    out = []
    for channel in ("forced", "sampler"):
        rows = _merge_buckets(by_position.get(channel), 120)
        if not rows:
            continue
        pos = [x for r in rows for x in (r["max_abs_diff"], r["mean_abs_diff"]) if 0 < x < math.inf]
        lo = math.floor(math.log10(min(pos))) if pos else -8
        hi = math.ceil(math.log10(max(pos))) if pos else 0
        hi = max(hi, lo + 1)
        W, H, L, T = 480, 180, 44, 16

        def y_exp(e: float) -> float:
            return T + H - H * (e - lo) / (hi - lo)

        def y(val: float) -> float:
            if not val > 0:  # zero, or NaN
                return T + H
            return T if val == math.inf else y_exp(math.log10(val))

        def x(i: int) -> float:
            return L + (W * (i + 0.5) / len(rows))

        every = max(1, math.ceil((hi - lo) / 12))  # at most 13 tick labels, however many decades
        ticks = [{"y": y_exp(e), "label": f"1e{e}"} for e in reversed(range(hi, lo - 1, -every))]
        step = max(1, len(rows) // 8)
        xt = [{"x": x(i), "label": str(rows[i]["start"])} for i in range(0, len(rows), step)]
        # red only for a channel whose check failed; nothing drawn for a channel with no drift at all
        flat = all(r["max_abs_diff"] == 0 for r in rows)
        out.append({"channel": _CHANNEL_TITLE[channel], "width": L + W + 10, "height": T + H + 40,
                    "color": _BAD if channel in failing else _REF_COLOR, "flat": flat,
                    "left": L, "top": T, "plot_w": W, "plot_h": H, "yticks": ticks, "xticks": xt,
                    "max_line": " ".join(f"{x(i):.1f},{y(r['max_abs_diff']):.1f}" for i, r in enumerate(rows)),
                    "mean_line": " ".join(f"{x(i):.1f},{y(r['mean_abs_diff']):.1f}" for i, r in enumerate(rows)),
                    "points": [{"x": x(i), "y": y(r["max_abs_diff"]), "start": r["start"], "end": r["end"],
                                "max": r["max_abs_diff"], "mean": r["mean_abs_diff"], "count": r["count"]}
                               for i, r in enumerate(rows)]})
    return out


def _color(d: float) -> str:
    """Green (bitwise) through amber to red (>= 1e-1), by decade of abs diff."""
    if not d > 0:
        return "#2e7d32"
    t = min(1.0, max(0.0, (math.log10(d) + 8) / 7))   # 1e-8 -> 0, 1e-1 -> 1; inf -> 1
    hue = 120 * (1 - t)
    return f"hsl({hue:.0f},70%,{45 - 5 * t:.0f}%)"


def _row_max(row: dict[str, Any]) -> float:
    """A per-prompt row's larger max abs diff (inf allowed; missing or NaN as 0)."""
    vals = [_float(row.get("forced_max_abs_diff")), _float(row.get("sampler_max_abs_diff"))]
    return max((v for v in vals if v is not None and v == v), default=0.0)


def _heatmap(per_prompt: Any, max_cells: int = 400) -> dict[str, Any]:
    """Per config, one cell per (prompt, sample) colored by its max abs diff;
    adjacent prompts are merged (max) when there are more than `max_cells`."""
    per_prompt = _rows(per_prompt)
    by_cfg: dict[str, list[dict[str, Any]]] = {}
    for row in per_prompt:
        by_cfg.setdefault(str(row.get("config")), []).append(row)
    longest = max((len(r) for r in by_cfg.values()), default=0)
    k = max(1, math.ceil(longest / max_cells))
    cell, label_w = 6 if longest > 100 else 12, 140
    rows = []
    for ri, (cfg, items) in enumerate(by_cfg.items()):
        cells = []
        for i in range(0, len(items), k):
            grp = items[i:i + k]
            d = max(_row_max(g) for g in grp)
            first, last = grp[0], grp[-1]
            title = (f"{visible(first.get('prompt_id'), 40)}" + (f" … {visible(last.get('prompt_id'), 40)}" if k > 1 else "")
                     + f": max abs diff {_num(d)}"
                     + ("" if all(g.get("free_run_match", True) for g in grp) else "; free run diverged"))
            cells.append({"x": label_w + (i // k) * cell, "y": 8 + ri * (cell + 14) + 12, "color": _color(d),
                          "title": title, "div": not all(g.get("free_run_match", True) for g in grp)})
        rows.append({"config": cfg, "y": 8 + ri * (cell + 14) + 10, "cells": cells})
    worst = sorted(per_prompt, key=lambda r: -_row_max(r))[:25]
    return {"rows": rows, "cell": cell, "per_cell": k, "label_w": label_w,
            "width": label_w + math.ceil(longest / k) * cell + 10, "height": 16 + len(rows) * (cell + 14),
            "worst": worst, "n": len(per_prompt)}

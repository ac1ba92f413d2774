"""The report's charts, as data for the templates: inline SVG geometry
(drift by position, histograms, the per-prompt heatmap; the in-run relation,
residual and matched-token charts are `report/relation_charts`, the axes
`report/svg`) and mermaid source for the Markdown comment. Pure: numbers
in, coordinates and labels out; every value is read through
gate/report/values.py, so a hand-edited verdict cannot break a chart."""
from __future__ import annotations

import math
from typing import Any

from gate.report.markdown import visible
from gate.report.relation_charts import matched_charts, relation_charts
from gate.report.svg import BAD, REF_COLOR
from gate.report.values import _float, _int, _mapping, _num, _rows


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
            "relations": relation_charts(v),
            "matched": matched_charts(v),
            "has_matched": isinstance(v.get("sampler_matched"), dict)}


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
                    "color": BAD if channel in failing else REF_COLOR, "flat": flat,
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

"""The in-run relation charts of the HTML report: per config, each side's
sampler logprobs against its own prefill scores (scatter, fitted lines,
residual band), the residual histogram, and the matched sampled tokens'
differences by position."""
from __future__ import annotations

import math
from typing import Any

from gate.report.svg import BAD, CAND_COLOR, NEUTRAL, REF_COLOR, Axes, f1, padded, pairs
from gate.report.values import _check_of, _fit_words, _float, _int, _mapping, _num, _rows

__all__ = ["relation_charts", "matched_charts"]


def relation_charts(v: dict[str, Any]) -> list[dict[str, Any]]:
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
        sides = [(labels[0], REF_COLOR, _mapping(sem.get("reference"))),
                 (labels[1], CAND_COLOR, _mapping(sem.get("candidate")))]
        pts = [(label, color, side, pairs(side.get("points"))) for label, color, side in sides]
        if not any(p for *_, p in pts):
            continue
        spread = _mapping(sem.get("spread"))
        band = _float(spread.get("band"))
        band = band if band is not None and math.isfinite(band) and band > 0 else None
        coords = [c for *_, p in pts for xy in p for c in xy]
        lo, hi = padded(min(coords), max(coords))
        ax = Axes(lo, hi, lo, hi)
        shapes = ax.frame("own prefill logprob", "sampler logprob")
        if band is not None:
            shapes.append({"kind": "poly", "fill": "#dafbe1", "title": f"band: |sampler - prefill| <= {_num(band)}",
                           "points": " ".join(f"{f1(ax.px(x))},{f1(ax.py(y))}" for x, y in
                                              ((lo, lo + band), (hi, hi + band), (hi, hi - band), (lo, lo - band)))})
        diag = ax.line(1.0, 0.0, NEUTRAL, "y = x (sampler equals prefill)")
        if diag:
            shapes.append(dict(diag, width=1, dash=True))
        res_max = max((abs(y - x) for *_, p in pts for x, y in p), default=0.0)
        r = max(res_max, band or 0.0) * 1.15 or 1e-6
        ax2 = Axes(lo, hi, -r, r, left=58)
        shapes2 = ax2.frame("own prefill logprob", "sampler − prefill")
        if band is not None and band < r:
            shapes2.append({"kind": "rect", "x": ax2.left, "y": f1(ax2.py(band)), "w": ax2.w,
                            "h": f1(ax2.py(-band) - ax2.py(band)), "fill": "#dafbe1", "stroke": "none",
                            "title": f"band: |sampler - prefill| <= {_num(band)}"})
        zero = ax2.line(0.0, 0.0, NEUTRAL, "residual 0")
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
                shapes.append({"kind": "circle", "cx": f1(ax.px(x)), "cy": f1(ax.py(y)), "r": 2.2, "fill": color,
                               "title": tip})
                shapes2.append({"kind": "circle", "cx": f1(ax2.px(x)), "cy": f1(ax2.py(y - x)), "r": 2.2,
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
        labels.append({"x": f1(left + i * w + w / 2), "text": label})
        for j, (name, color, _) in enumerate(sides):
            n = counts[j].get(k, 0)
            height = 0.0 if n <= 0 else max(2.0, hpx * math.log10(n + 1) / scale)
            bars.append({"kind": "rect", "x": f1(left + i * w + 3 + j * (w - 6) / 2), "y": f1(pad + hpx - height),
                         "w": f1((w - 6) / 2 - 1), "h": f1(height), "fill": color, "stroke": "none",
                         "title": f"{name}: {n:,} tokens with |sampler - prefill| "
                                  + ("exactly 0" if k == "zero" else f"in [1e{k}, 1e{k + 1})")})
    marker = None
    if band is not None and exps:
        e = math.log10(band)
        i = next((n for n, k in enumerate(exps) if k > e), len(exps)) - 1  # the decade holding the band
        frac = e - exps[i] if i >= 0 else 0.0
        x = left + (1 + max(i, 0)) * w + (min(max(frac, 0.0), 1.0) if i >= 0 else 0.0) * w
        marker = {"x": f1(x), "label": f"band {_num(band)}"}
    return {"bars": bars, "labels": labels, "width": left + len(keys) * w + 10, "height": pad + hpx + 34,
            "base": pad + hpx, "left": left, "marker": marker, "empty": top == 0}


def matched_charts(v: dict[str, Any]) -> list[dict[str, Any]]:
    """Per config, sampler logprob differences (run - golden) of the tokens
    both free runs drew alike, by completion position, on a signed log
    scale: the few tokens a changed random stream leaves are drawn too."""
    out = []
    for name, m in _mapping(v.get("sampler_matched")).items():
        m = _mapping(m)
        tokens = _int(m.get("tokens"))
        pts = sorted(pairs(m.get("points")))
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
        ax = Axes(-0.5, max(xmax, 1.0) + 0.5, -1.05, 1.05, left=56, w=420, h=170)
        every = max(1, math.ceil(steps / 4))
        yt = [(0.0, "0")] + [(s * ys(10.0 ** e), f"{'+' if s > 0 else '−'}1e{e}")
                             for e in range(hi, lo - 1, -every) for s in (1, -1)]
        shapes = ax.frame("completion position", "run − golden", yticks=yt)
        if bound is not None:
            for sgn in (1, -1):
                seg = ax.line(0.0, ys(sgn * bound), NEUTRAL, f"tolerance ±{_num(bound)}")
                if seg:
                    shapes.append(dict(seg, width=1, dash=True))
        bad = 0
        for x, d in pts:
            over = bound is not None and abs(d) > bound
            bad += over
            shapes.append({"kind": "circle", "cx": f1(ax.px(x)), "cy": f1(ax.py(ys(d))), "r": 2.6,
                           "fill": BAD if over else (NEUTRAL if d == 0 else REF_COLOR),
                           "title": f"position {int(x)}: run − golden {_num(d)}"
                                    + (" (beyond tolerance)" if over else "")})
        out.append({"config": str(name), "tokens": tokens, "shown": len(pts), "bad": bad, "bound": bound,
                    "max": max((abs(d) for _, d in pts), default=None), "shapes": shapes,
                    "width": ax.left + ax.w + 10, "height": ax.top + ax.h + 36, "lo": lo})
    return out

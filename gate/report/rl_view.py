"""The importance-ratio view of a verdict (docs/trainer.md): columns of
measures and one plain sentence of what the drift means for PPO/GRPO."""
from __future__ import annotations

from typing import Any

from gate.core.measures import MEASURES
from gate.report.values import _float, _int, _mapping, _num

__all__ = ["rl_view", "share"]


def share(x: Any) -> str:
    f = _float(x)
    return "n/a" if f is None or f != f else f"{100 * f:.2f}%"


_RL_ROWS = (
    ("tokens", "tokens"),
    ("ratio_mid", "ratio ρ, 1st–99th percentile"),
    ("ratio_range", "ratio ρ, min – max"),
    ("clip_fraction", "outside PPO's clip range (|ρ − 1| > 0.2)"),
    ("tis_truncated_fraction", "above the TIS cap (ρ > C)"),
    ("tis_mean_weight", "TIS mean weight min(ρ, C)"),
    ("k3_kl", MEASURES["k3_kl"].label),
    ("mult_prob_error", MEASURES["mult_prob_error"].label),
    ("max_abs_log_ratio", "max |log ρ|"),
)


def _rho(x: Any) -> str:
    """A ratio near 1 with the digits that show how near (0.9999987, not 1)."""
    f = _float(x)
    if f is not None and 0 < abs(f - 1) < 1e-3:
        return f"{f:.7g}"
    return _num(x)


def _rl_cell(stats: dict[str, Any], key: str) -> str:
    r = _mapping(stats.get("ratio"))
    if key == "ratio_mid":
        return f"{_rho(r.get('p1'))} – {_rho(r.get('p99'))}"
    if key == "ratio_range":
        return f"{_rho(r.get('min'))} – {_rho(r.get('max'))}"
    if key in ("clip_fraction", "tis_truncated_fraction"):
        return share(stats.get(key))
    if key == "tokens":
        excluded = _mapping(stats.get("excluded"))
        extra = sum(_int(excluded.get(k)) for k in ("null", "one_sided_inf"))
        return _num(stats.get("tokens")) + (f" (+{extra:,} without a finite ratio)" if extra else "")
    return _num(stats.get(key))


def rl_view(rl: Any, mode: str) -> dict[str, Any] | None:
    """The importance-ratio view (docs/trainer.md): columns of measures and
    one plain sentence of what the drift means for PPO/GRPO."""
    if not isinstance(rl, dict):
        return None
    trainer = rl.get("view") == "trainer" or (rl.get("view") is None and "ratio" in rl)
    if trainer:
        paths = _mapping(rl.get("paths"))
        cols = [(f"trainer vs rollout ({paths.get('candidate', 'trainer')} vs {paths.get('reference', 'decode')})",
                 rl)]
    else:
        cols = [(title, _mapping(rl.get(ch))) for ch, title in (("forced", "teacher-forced"),
                                                                ("sampler", "matched sampled tokens"))]
    cols = [(t, c) for t, c in cols if _int(c.get("tokens"))]
    if not cols:
        return None
    rows = [{"label": label, "cells": [_rl_cell(c, key) for _, c in cols]} for key, label in _RL_ROWS]
    cap = _num(_float(rl.get("tis_cap")) or _float(cols[0][1].get("tis_cap")) or 2.0)
    return {"trainer": trainer, "columns": [t for t, _ in cols], "rows": rows, "cap": cap,
            "sentence": _rl_sentence(cols, trainer, cap)}


def _rl_sentence(cols: list[tuple[str, dict[str, Any]]], trainer: bool, cap: str) -> str:
    def size(c: tuple[str, dict[str, Any]]) -> float:
        f = _float(c[1].get("max_abs_log_ratio"))
        return -1.0 if f is None or f != f else f
    title, s = max(cols, key=size)
    r = _mapping(s.get("ratio"))
    clip, trunc = _float(s.get("clip_fraction")) or 0.0, _float(s.get("tis_truncated_fraction")) or 0.0
    who = "the trainer's importance ratios against these rollouts" if trainer else \
        "importance ratios computed by a trainer that agreed with the golden engine"
    if size((title, s)) == 0:
        return (f"The ratio is exactly 1 on every compared token ({', '.join(t for t, _ in cols)}): "
                f"for PPO/GRPO, {who} are not moved at all.")
    spread = (f"ρ spans {_rho(r.get('p1'))} to {_rho(r.get('p99'))} (1st to 99th percentile; "
              f"extremes {_rho(r.get('min'))} and {_rho(r.get('max'))}) on the {title}")
    if clip == 0 and trunc == 0:
        return (f"For PPO/GRPO: {spread}, inside the clip range 0.8 to 1.2 everywhere, so {who} "
                f"move by at most that much and no clipped update changes.")
    return (f"For PPO/GRPO: {spread}; {share(clip)} of these tokens fall outside the clip range 0.8 to 1.2 "
            f"and {share(trunc)} exceed the TIS cap {cap}, so {who} would be clipped or truncated there "
            f"by this change alone.")

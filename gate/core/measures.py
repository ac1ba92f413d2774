"""The measures in one place: each one's name (the key in verdict.json), the
label a report shows, its unit, which direction is better, and how its value is
written. Also the small helpers every reader of logprobs shares: null as NaN,
the first position where two token streams differ, and the two number formats
(`short` for one-line messages, `report_number` for the rendered report).
Pure: numpy only (docs/design.md section 3 says why each measure exists)."""
from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = ["Measure", "MEASURES", "CHANNEL_MEASURES", "measure", "higher_is_better", "short", "report_number", "NONFINITE",
           "as_float_array", "first_divergence"]

# verdict.json has no infinities: write_verdict spells them as these strings.
NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def short(x: float | None) -> str:
    """A number in a one-line message: three significant digits, an exponent
    outside [1e-3, 1e4); None is "n/a"."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def report_number(x: Any) -> str:
    """A value in the rendered report. Total: any value gives a short string
    (None "n/a", booleans yes/no, ints with thousands separators, the verdict's
    "Infinity" strings as inf); inf and huge values never raise."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        if abs(x) < 10 ** 30:
            return f"{x:,}"
        try:
            x = float(x)
        except OverflowError:  # an int beyond the float range
            x = math.inf if x > 0 else -math.inf
    if isinstance(x, str) and x in NONFINITE:
        x = NONFINITE[x]
    if not isinstance(x, float):
        return str(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.4g}"
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant.removesuffix('.0')}e{exp}"


@dataclass(frozen=True)
class Measure:
    """One measure of a channel's summary. `direction`: "lower" or "higher" is
    better, or None for a count (how much evidence, not how good)."""
    name: str
    label: str
    unit: str
    direction: str | None
    scope: str = "channel"  # "channel": a row of each channel's table; else "free_run" or "semantics"
    fmt: Callable[[Any], str] = report_number


_ALL = (
    Measure("tokens", "tokens compared", "tokens", None),
    Measure("sequences", "sequences compared", "sequences", None, "free_run"),
    Measure("mismatched", "tokens beyond tolerance", "tokens", "lower"),
    Measure("bitwise_equal_fraction", "bitwise equal", "fraction", "higher"),
    Measure("max_abs_diff", "max abs diff", "nats", "lower"),
    Measure("mean_abs_diff", "mean abs diff", "nats", "lower"),
    Measure("p99_abs_diff", "p99 abs diff", "nats", "lower"),
    Measure("mult_prob_error", "mult-prob error", "ratio", "lower"),
    Measure("k1_kl", "k1 KL", "nats", "lower"),
    Measure("k2", "k2", "nats", "lower"),
    Measure("k3_kl", "k3 KL", "nats", "lower"),
    Measure("chi2", "chi2", "ratio", "lower"),
    Measure("clip_fraction", "clip fraction", "fraction", "lower"),
    Measure("prob_diff_max", "max prob diff", "probability", "lower"),
    Measure("log_ppl_diff_max", "max log-ppl diff", "nats", "lower"),
    Measure("top1_agreement", "top-1 agreement", "fraction", "higher"),
    Measure("topk_overlap", "top-k overlap", "fraction", "higher"),
    Measure("exact_match_rate", "exact match rate", "fraction", "higher", "free_run"),
    Measure("relation_shift", "sampler relation shift", "nats", "lower", "semantics"),
    Measure("spread_ratio", "decode-vs-prefill spread ratio", "ratio", "lower", "semantics"),
)
MEASURES: dict[str, Measure] = {m.name: m for m in _ALL}
CHANNEL_MEASURES = tuple(m for m in _ALL if m.scope == "channel")  # in the order a report shows them


def measure(name: str) -> Measure:
    """The measure named `name` (a channel prefix such as "forced." is ignored)."""
    return MEASURES[name.rsplit(".", 1)[-1]]


def higher_is_better(name: str) -> bool:
    """True for rates (agreement, overlap, match): their worst value is the lowest."""
    m = MEASURES.get(name.rsplit(".", 1)[-1])
    return m is not None and m.direction == "higher"


def as_float_array(values: Iterable[float | None]) -> np.ndarray:
    """Logprobs as float64; null (no logprob) becomes NaN. The trace reader
    refuses NaN in a trace, so NaN here always means null."""
    if isinstance(values, np.ndarray):
        return np.array(values, dtype=np.float64)
    if not isinstance(values, (list, tuple)):
        values = list(values)
    try:
        # array('d') converts each number as numpy would (float(x)), in half numpy's time for a list
        return np.array(array("d", values))
    except TypeError:  # a None (no logprob) among them
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def first_divergence(a: Sequence[Any], b: Sequence[Any]) -> int:
    """The first position where two token streams differ; the shorter one's
    length when one is a prefix of the other."""
    return next((i for i, (p, q) in enumerate(zip(a, b)) if p != q), min(len(a), len(b)))

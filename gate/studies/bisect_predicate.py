"""What counts as moved in a bisect probe (`--on`): the verdict failed, it
changed at all, or a measure crossed a bound; and what moved, in words."""
from __future__ import annotations

import re
from typing import Any

from gate.core.errors import BadInput
from gate.core.rows import Verdict

__all__ = ["Predicate"]

_MEASURE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+|inf)\s*$")


class Predicate:
    """Reads a verdict; says 'pass', 'changed' (moved, but passes) or 'fail',
    and whether that counts as moved under --on."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self.measure: tuple[str, str, float] | None = None
        if self.text not in ("fail", "any-change"):
            m = _MEASURE.match(self.text)
            if not m:
                raise BadInput(f"--on {text!r}: not a predicate",
                               "use 'fail', 'any-change' or MEASURE>VALUE, e.g. 'sampler.max_abs_diff>1e-6'")
            self.measure = (m.group(1), m.group(2), float(m.group(3)))

    def judge(self, verdict: Verdict, args_bisect: bool) -> tuple[str, bool, list[str]]:
        what = _what_moved(verdict, args_bisect)
        status = "fail" if verdict.get("verdict") == "fail" else ("changed" if what else "pass")
        if self.text == "fail":
            return status, status == "fail", what
        if self.text == "any-change":
            return status, status != "pass", what
        name, op, bound = self.measure  # type: ignore[misc]
        value = _measure(verdict, name)
        moved = value is not None and {">": value > bound, ">=": value >= bound, "<": value < bound,
                                       "<=": value <= bound}[op]
        if moved:
            what = [f"{name} = {value:.3g} ({op} {bound:g})"] + what
        return status, moved, what


def _measure(verdict: Verdict, name: str) -> float | None:
    node: Any = (verdict.get("measures") or {}).get("overall") or {}
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _what_moved(verdict: Verdict, args_bisect: bool) -> list[str]:
    what = [c.get("message", c.get("id", "?")) for c in verdict.get("checks", []) if c.get("status") == "fail"]
    overall = (verdict.get("measures") or {}).get("overall") or {}
    fr = overall.get("free_run") or {}
    if fr.get("stream_changed"):
        what.append(f"seeded random stream changed ({fr['stream_changed']} of {fr.get('sequences')} sequences, "
                    f"first at position {fr.get('stream_first_position')})")
    for channel in ("forced", "sampler"):
        frac = (overall.get(channel) or {}).get("bitwise_equal_fraction")
        if isinstance(frac, (int, float)) and frac < 1.0:
            what.append(f"{channel} logprobs not bitwise equal ({frac:.2%} equal, max abs diff "
                        f"{overall[channel].get('max_abs_diff', 0):.3g})")
    if not args_bisect:   # in an args bisect the engine args differ on purpose
        for d in verdict.get("environment_diff", []):
            if d.get("differs") and d.get("group") == "engine":
                what.append(f"resolved engine config {d['key']}: {d.get('reference')!r} -> {d.get('candidate')!r}")
    return what

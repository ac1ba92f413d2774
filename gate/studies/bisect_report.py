"""A bisect's result in words (the headline) and as comment.md and
report.html in its output folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["headline", "render"]


def headline(doc: dict[str, Any]) -> str:
    if doc["mode"] == "args":
        moving = doc.get("moving_args") or []
        if not moving:
            return "the bad args move the verdict, but no single changed arg does (an interaction)"
        what = "; ".join((next(p for p in doc["probes"] if p["name"] == moving[0]).get("what") or [])[:2])
        return f"arg(s) that move the verdict: {', '.join(moving)}" + (f": {what}" if what else "")
    first = doc.get("first_bad")
    if not first:
        return f"nothing moved at {doc['bad']} (--on {doc['on']})"
    p = next(p for p in doc["probes"] if p["name"] == first)
    unchanged = [q["name"] for q in doc["probes"] if q.get("moved") is False and q["name"] != doc["good"]]
    tail = f"; {', '.join(unchanged)} unchanged" if unchanged else ""
    return (f"first drifting release: {first} ({'; '.join(p.get('what', [])[:2]) or p['status']}){tail}; "
            f"last good {doc.get('last_good')}")


_CELL = {"pass": "✅", "good": "✅", "changed": "🟡", "fail": "❌", "skipped": "⚠️", "not probed": "·"}


def render(out: Path, doc: dict[str, Any]) -> None:
    from gate.core.fsutil import atomic_write_text
    from gate.report.templating import template_env
    text = headline(doc)
    moved = bool(doc.get("first_bad")) or bool(doc.get("moving_args"))
    atomic_write_text(out / "comment.md", template_env("md").get_template("bisect.md.j2").render(
        doc=doc, headline=text, cells=_CELL))
    atomic_write_text(out / "report.html", template_env("html").get_template("bisect.html.j2").render(
        doc=doc, headline=text, moved=moved))

"""Escaping for untrusted text (token strings, prompt ids, config names) in
GitHub-flavoured Markdown. Prompts and completions come from users and models:
rendered into a comment they must not inject HTML, ping people, link issues, or
break out of a table, a code span or a <details> block.

Two contexts, two filters:
- `md_inline`: Markdown text (paragraphs, table cells). HTML-significant
  characters become entities, Markdown punctuation is backslash-escaped.
- `md_html`: text inside a raw HTML block such as <summary>, where Markdown is
  not parsed (a backslash would show) but entities are.
Both make whitespace and invisible characters visible and cap the length, so a
100 kB token cannot blow the comment limit.
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["visible", "md_inline", "md_html", "md_code_block", "shorten"]

# U+200B zero-width space, as an entity so it shows in the raw Markdown:
# "@&#8203;user" renders "@user" but GitHub's mention and issue-reference
# matchers no longer see a name right after the sign.
_ZWSP = "&#8203;"
_WHITESPACE = {"\n": "↵", "\r": "␍", "\t": "→"}
# One pass, one table: each character is replaced at most once, so no escape
# can be re-interpreted by a later one. Only characters that are special in
# the middle of a line are escaped everywhere; _LINE_START covers the rest.
_MD_INLINE = {c: "\\" + c for c in "\\`*_{}[]|~"}
_MD_INLINE.update({"&": "&amp;", "<": "&lt;", ">": "&gt;", "@": "@" + _ZWSP, "#": "\\#" + _ZWSP})
# Text placed at the start of a line must not open a list, heading, quote,
# setext underline or ordered list: escape that first character.
_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)](\s|$)))")
_MD_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;", "`": "&#96;",
            "@": "@" + _ZWSP, "#": "#" + _ZWSP}


def shorten(text: str, limit: int) -> str:
    """Cut `text` to about `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit:,} chars)"


def visible(text: object, limit: int = 60, spaces: bool = False) -> str:
    """Plain text with control, format and (optionally) space characters made
    visible, capped at `limit` characters. Not yet escaped for any markup.
    Control bytes read `\\x19`, U+FFFD (a partial character) `\\ufffd`."""
    s = shorten(str(text), limit)
    out = []
    for ch in s:
        if ch in _WHITESPACE:
            out.append(_WHITESPACE[ch])
        elif ch == " " and spaces:
            out.append("␣")
        elif ch == "\ufffd":
            # a token holding part of a UTF-8 character, decoded on its own: say so, never draw the glyph
            out.append("\\ufffd")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs"):
            # control bytes as \x19 (how a byte reads), bidi overrides and zero-width characters as their
            # code point
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def md_inline(text: object, limit: int = 60, spaces: bool = False) -> str:
    """Escape `text` for Markdown inline context (paragraph or table cell)."""
    s = "".join(_MD_INLINE.get(ch, ch) for ch in visible(text, limit, spaces))
    m = _LINE_START.match(s)
    if m and m.group(2).isdigit():   # "1. item" -> "1\. item"
        end = m.end()
        return s[:end] + "\\" + s[end:]
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), s, count=1)


def md_html(text: object, limit: int = 60, spaces: bool = False) -> str:
    """Escape `text` for a raw HTML block in Markdown (e.g. <summary>)."""
    return "".join(_MD_HTML.get(ch, ch) for ch in visible(text, limit, spaces))


def md_code_block(text: str) -> str:
    """A fenced code block that `text` cannot close: the fence is longer than
    any backtick run inside."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"

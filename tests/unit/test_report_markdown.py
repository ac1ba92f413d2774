"""gate._markdown: untrusted text in GitHub-flavoured Markdown."""
from __future__ import annotations

import pytest

from gate._markdown import md_code_block, md_html, md_inline, visible


@pytest.mark.parametrize("text", ["@octocat", "@github/security-team", "hi @everyone"])
def test_md_inline__breaks_mentions(text: str) -> None:
    out = md_inline(text)
    assert "@&#8203;" in out and "@o" not in out and "@g" not in out and "@e" not in out


def test_md_inline__escapes_html_pipes_backticks_and_links() -> None:
    out = md_inline('<img src=x onerror="a()"> | `x` [l](javascript:x) </details> #12 &#64;', limit=200)
    assert "<" not in out and ">" not in out
    assert out.count("\\|") == 1 and out.count("\\`") == 2 and "\\[l\\]" in out
    assert "\\#&#8203;12" in out and "&amp;\\#&#8203;64;" in out   # no entity smuggling, no issue link


@pytest.mark.parametrize("text, start", [("- item", "\\- "), ("1. item", "1\\. "), ("+ x", "\\+ "), ("=== x", "\\=")])
def test_md_inline__text_at_line_start_opens_no_block(text: str, start: str) -> None:
    assert md_inline(text).startswith(start)


def test_md_inline__keeps_ordinary_numbers_readable() -> None:
    assert md_inline("0.32.0 -> 0.33.0 (x)") == "0.32.0 -&gt; 0.33.0 (x)"


def test_visible__shows_whitespace_and_invisible_characters_and_caps_length() -> None:
    assert visible("a\nb\tc\r", 60) == "a↵b→c␍"
    assert visible(" the", spaces=True) == "␣the"
    assert visible("x\u202ey\u200b") == "x\\u202ey\\u200b"
    assert visible("A" * 100_000, 40) == "A" * 40 + "…(+99,960 chars)"


def test_md_html__escapes_for_raw_html_blocks() -> None:
    out = md_html('</summary><b>"@x"</b> `c`')
    assert out == "&lt;/summary&gt;&lt;b&gt;&quot;@&#8203;x&quot;&lt;/b&gt; &#96;c&#96;"


def test_md_code_block__fence_outlasts_backticks_inside() -> None:
    block = md_code_block("run ```` this")
    assert block.startswith("`````\n") and block.endswith("\n`````")

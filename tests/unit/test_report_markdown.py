"""gate.report.markdown: untrusted text in GitHub-flavoured Markdown."""
from __future__ import annotations

import pytest

from gate.core.tokentext import is_byte_level, readable, readable_join
from gate.report.markdown import md_code_block, md_html, md_inline, visible


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


def test_visible__control_bytes_read_as_byte_escapes_and_no_replacement_glyph() -> None:
    assert visible("a\x19b\x00\x7f") == "a\\x19b\\x00\\x7f"
    assert visible("x\ufffdy") == "x\\ufffdy" and "\ufffd" not in md_inline("\ufffd") + md_html("\ufffd")


# ----------------------------------------------------------------- token text (gate.core.tokentext)

def _bl(data: bytes) -> str:
    """GPT-2 byte-level spelling of `data` (written out independently)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra, table = 0, {}
    for b in range(256):
        table[b] = chr(b) if b in keep else chr(256 + extra)
        extra += b not in keep
    return "".join(table[b] for b in data)


@pytest.mark.parametrize("data, text", [
    (b" the", " the"), (b"\n\n", "\n\n"), (b"\x19", "\x19"), ("你好".encode(), "你好"),
    ("é".encode()[:1], "\\xc3"),                  # half a character: the byte, never U+FFFD
    (b"\xff\xfe", "\\xff\\xfe"),
])
def test_readable__decodes_byte_level_tokens(data: bytes, text: str) -> None:
    assert readable(_bl(data), True) == text
    assert "\ufffd" not in visible(readable(_bl(data), True))


def test_readable__decides_from_the_string_when_the_spelling_is_unknown() -> None:
    assert readable("Ġthe") == " the" and readable("ĊĊ") == "\n\n"
    assert readable(_bl("é".encode())) == "é"           # "Ã©": UTF-8 spelled byte by byte
    assert readable("café") == "café" and readable("plain") == "plain" and readable(" the") == " the"
    assert readable("<script>") == "<script>" and readable("Ġthe", False) == "Ġthe"


def test_readable_join__a_character_split_across_tokens_reads_whole() -> None:
    half = "é".encode()
    assert readable_join([_bl(b"caf"), _bl(half[:1]), _bl(half[1:])], True) == "café"


def test_is_byte_level__needs_every_token_in_the_alphabet_and_one_shifted() -> None:
    assert is_byte_level(["Ġthe", "cat", "Ċ"]) and not is_byte_level(["cat", "dog"])
    assert not is_byte_level(["Ġthe", " the"]) and not is_byte_level([])


def test_md_html__escapes_for_raw_html_blocks() -> None:
    out = md_html('</summary><b>"@x"</b> `c`')
    assert out == "&lt;/summary&gt;&lt;b&gt;&quot;@&#8203;x&quot;&lt;/b&gt; &#96;c&#96;"


def test_md_code_block__fence_outlasts_backticks_inside() -> None:
    block = md_code_block("run ```` this")
    assert block.startswith("`````\n") and block.endswith("\n`````")

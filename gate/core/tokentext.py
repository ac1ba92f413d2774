"""Token strings as a person can read them.

Traces store each token's text, so reports need no tokenizer. That text comes
in two spellings:
- byte-level (GPT-2, Llama 3, Qwen): each byte of the token is one printable
  character of a 256-character alphabet, so " the" is "Ġthe" and a newline
  "Ċ" (a tokenizer's `convert_ids_to_tokens`, vLLM's top-logprob strings, a
  trainer dump);
- decoded (`tokenizer.decode([id])`): real text, except that a token holding
  part of a UTF-8 character decodes to U+FFFD and a control byte to itself.

`readable` turns either into real text: byte-level strings are mapped back to
their bytes and decoded, and bytes that do not form UTF-8 on their own (part
of a character) become `\\xNN`. Control characters and U+FFFD are made visible
later, where every untrusted string goes (`gate.report.markdown.visible`). The
result is still untrusted text: escape it like any other.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["readable", "readable_join", "is_byte_level"]


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: printable Latin-1 bytes stand for
    themselves, the other 68 are shifted to U+0100..U+0143."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return {c: b for b, c in chars.items()}


_CHAR_TO_BYTE = _byte_alphabet()
_SHIFTED = frozenset(c for c, b in _CHAR_TO_BYTE.items() if ord(c) != b)   # Ġ, Ċ, ĉ, ...


def _in_alphabet(text: str) -> bool:
    return all(c in _CHAR_TO_BYTE for c in text)


def is_byte_level(texts: Iterable[str]) -> bool:
    """Whether these token strings (of one trace) are byte-level spellings:
    every one is inside the byte alphabet and at least one uses a shifted
    character (a space, newline or control byte: nearly every text has one)."""
    shifted = False
    for t in texts:
        if not _in_alphabet(t):
            return False
        shifted = shifted or any(c in _SHIFTED for c in t)
    return shifted


def _decode(text: str) -> str:
    return bytes(_CHAR_TO_BYTE[c] for c in text).decode("utf-8", errors="backslashreplace")


def readable(text: str, byte_level: bool | None = None) -> str:
    """`text` as real text. `byte_level`: True or False when the trace's
    spelling is known (is_byte_level over its tokens), None to decide from
    this string alone: it is byte-level when it uses a shifted character, or
    when its non-ASCII characters spell UTF-8 ("Ã©" for "é"); plain Latin-1
    text such as "café" is left alone."""
    if not text or byte_level is False or not _in_alphabet(text):
        return text
    if byte_level or any(c in _SHIFTED for c in text):
        return _decode(text)
    if text.isascii():
        return text
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in text).decode("utf-8")
    except UnicodeDecodeError:
        return text


def readable_join(tokens: Iterable[str], byte_level: bool | None = None) -> str:
    """Consecutive tokens as one text. Byte-level tokens are joined before
    decoding, so a character split across two tokens reads whole."""
    tokens = [str(t) for t in tokens]
    return readable("".join(tokens), byte_level)

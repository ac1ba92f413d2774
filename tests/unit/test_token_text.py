"""Token text in traces never holds U+FFFD (docs/trace-format.md): a token that
is part of a UTF-8 character is spelled from its bytes."""
from __future__ import annotations

import pytest

from gate.run.engine import _token_text


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from gate.run.tinymodel import build_tiny_model

    return AutoTokenizer.from_pretrained(str(build_tiny_model(tmp_path_factory.mktemp("tok") / "m", seed=0)))


def test_token_text__no_token_of_the_tiny_tokenizer_is_a_replacement_character(tokenizer):
    texts = [_token_text(tokenizer, i) for i in range(tokenizer.vocab_size)]
    assert not [t for t in texts if "\ufffd" in t]
    partial = [i for i in range(tokenizer.vocab_size) if "\ufffd" in tokenizer.decode([i])]
    assert partial, "the tiny tokenizer has byte tokens that are part of a character"
    for i in partial:
        assert texts[i].startswith("\\x"), (i, texts[i])


def test_token_text__whole_tokens_keep_their_decoded_text(tokenizer):
    ids = tokenizer.encode(" the quick brown fox", add_special_tokens=False)
    assert "".join(_token_text(tokenizer, i) for i in ids) == " the quick brown fox"


class _SentencePieceLike:
    """A SentencePiece byte-fallback token: decode gives U+FFFD, the piece is <0xE2>."""

    def decode(self, ids):
        return "\ufffd"

    def convert_ids_to_tokens(self, token_id):
        return "<0xE2>"


def test_token_text__a_sentencepiece_byte_token_is_its_byte():
    assert _token_text(_SentencePieceLike(), 7) == "\\xe2"

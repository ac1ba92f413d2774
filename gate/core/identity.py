"""Model identity: a hash of the model files on disk (config, weights,
tokenizer), before any override. dtype and hf_overrides are engine args,
not identity (docs/design.md section 7)."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate.core.errors import BadInput

__all__ = ["ContextLength", "model_identity", "model_max_len", "model_vocab_size", "same_model"]

_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
              "special_tokens_map.json", "added_tokens.json", "vocab.txt")
_CHUNK = 1 << 20


def _hash_files(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def model_identity(model_dir: Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not config.is_file():
        raise BadInput(f"model folder {model_dir} has no config.json", "point 'model' at a Hugging Face model folder")
    # Regular files only: a FIFO named like a weight file would block the hash forever.
    weights = [p for pattern in _WEIGHTS for p in model_dir.glob(pattern) if p.is_file()]
    if not weights:
        raise BadInput(f"model folder {model_dir} has no weight files ({', '.join(_WEIGHTS)})",
                       "point 'model' at a complete model folder")
    tokenizer = [model_dir / n for n in _TOKENIZER if (model_dir / n).is_file()]
    ident = {
        "config_sha256": _hash_files([config], model_dir),
        "weights_sha256": _hash_files(weights, model_dir),
        "tokenizer_sha256": _hash_files(tokenizer, model_dir) if tokenizer else None,
    }
    combined = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return {"id": combined[:16], "name": model_dir.name, **ident}


_PARTS = {"config_sha256": "config.json", "weights_sha256": "weight files", "tokenizer_sha256": "tokenizer files"}


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in _PARTS)


def model_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Which files of two model identities differ: 'config.json', 'weight
    files', 'tokenizer files' (a golden whose tokenizer moved reads other
    text from the same ids)."""
    return [name for key, name in _PARTS.items() if a.get(key) != b.get(key)]


_CONFIG_LIMIT = 16 * 1024 * 1024  # a config.json is a few KiB; the cap only stops /dev/zero and the like

# vLLM derives the context length from the smallest of these config.json keys
# (vllm/transformers_utils/model_arch_config_convertor.py), then the
# tokenizer's model_max_length if smaller.
_MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                 "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")


def _read_json(path: Path) -> Any:
    """A small JSON file: a regular file only (a FIFO would block the read),
    at most _CONFIG_LIMIT bytes."""
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
        if regular:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            with os.fdopen(fd, "rb") as fh:
                regular = stat.S_ISREG(os.fstat(fd).st_mode)  # swapped since the stat?
                data = fh.read(_CONFIG_LIMIT + 1) if regular else b""
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})", "check the model folder and its permissions") \
            from None
    if not regular:
        raise BadInput(f"{path} is not a regular file", "repair or re-export the model")
    if len(data) > _CONFIG_LIMIT:
        raise BadInput(f"{path} is over the {_CONFIG_LIMIT >> 20} MiB limit for a model config",
                       "repair or re-export the model")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadInput(f"{path} is not valid JSON", "repair or re-export the model") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _sub(cfg: Any, key: str) -> dict[str, Any]:
    sub = cfg.get(key) if isinstance(cfg, dict) else None
    return sub if isinstance(sub, dict) else {}


def model_vocab_size(model_dir: Path) -> int | None:
    cfg = _read_json(Path(model_dir) / "config.json")
    if not isinstance(cfg, dict):
        return None
    vocab = cfg.get("vocab_size") or _sub(cfg, "text_config").get("vocab_size")
    return int(vocab) if _is_int(vocab) else None


@dataclass(frozen=True)
class ContextLength:
    """How many positions (prompt + completion) the model takes, and where that number came from."""

    tokens: int
    source: str


def _rope_factor(cfg: dict[str, Any]) -> bool:
    """Whether RoPE scaling names a factor (vLLM may multiply the length by it)."""
    for key in ("rope_scaling", "rope_parameters"):
        value = cfg.get(key)
        params = [value] if isinstance(value, dict) else []
        params += [v for v in (value.values() if isinstance(value, dict) else []) if isinstance(v, dict)]
        if any(p.get("factor") is not None for p in params):
            return True
    return False


def model_max_len(model_dir: Path) -> ContextLength | None:
    """The model's context length as vLLM derives it (the smallest of the
    usual config.json keys, text_config first; the tokenizer's
    model_max_length if smaller), read without importing torch, vllm or
    transformers.

    None where it cannot be told for sure (no such key, or a RoPE scaling
    factor, which vLLM folds in by rules of its own): vLLM judges at run time."""
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    cfg = _read_json(path)
    if not isinstance(cfg, dict):
        return None
    text = _sub(cfg, "text_config") or cfg
    if _rope_factor(text) or _rope_factor(cfg):
        return None
    found = [(text[k], f"{path} {k}") for k in _MAX_LEN_KEYS if _is_int(text.get(k)) and text[k] > 0]
    if not found:
        return None
    tokenizer = model_dir / "tokenizer_config.json"
    if tokenizer.is_file():
        limit = _read_json(tokenizer)
        if isinstance(limit, dict) and _is_int(limit.get("model_max_length")) and limit["model_max_length"] > 0:
            found.append((limit["model_max_length"], f"{tokenizer} model_max_length"))
    tokens, source = min(found)
    return ContextLength(tokens, source)

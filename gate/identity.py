"""Model identity: a hash of the model files on disk (config, weights,
tokenizer), before any override. dtype and hf_overrides are engine args,
not identity (design.md section 7)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gate.errors import BadInput

__all__ = ["model_identity", "model_vocab_size", "same_model"]

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
    weights = [p for pattern in _WEIGHTS for p in model_dir.glob(pattern)]
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


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("config_sha256", "weights_sha256", "tokenizer_sha256"))


def model_vocab_size(model_dir: Path) -> int | None:
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise BadInput(f"{model_dir}/config.json is not valid JSON", "repair or re-export the model") from None
    vocab = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    return int(vocab) if isinstance(vocab, int) else None

"""Prompt lengths against the context: each prompt, and each prompt plus
the largest max_tokens, must fit max_model_len, checked before the engine
starts wherever the lengths are known."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from gate.core.identity import ContextLength, model_max_len
from gate.run.problems import is_int
from gate.run.sampling import SamplingConfig

__all__ = ["context_length", "length_problems"]


def context_length(model: Path, engine: Mapping[str, Any], source: str) -> ContextLength | None:
    """The positions a request may fill: engine.max_model_len when it is
    given (`source` says where), else what vLLM derives from the model's
    config.json. None when unknown: vLLM then judges at run time."""
    value = engine.get("max_model_len")
    if value is not None:  # anything but a plain positive int ("4k", -1: auto) is vLLM's to read
        return ContextLength(value, source) if is_int(value) and value > 0 else None
    return model_max_len(model)


def length_problems(prompts: Iterable[tuple[str, str, int]], sampling: Sequence[SamplingConfig],
                     context: ContextLength) -> list[str]:
    """(where, prompt id, length) triples against the context. A prompt must
    leave room for the one output token vLLM needs; teacher-forced scoring
    sends prompt + completion as one prompt, so prompt + max_tokens must
    leave that room too."""
    size, src = context.tokens, context.source
    longest = max(sampling, key=lambda c: int(c.params["max_tokens"]), default=None)
    out = []
    for where, pid, n in prompts:
        if n >= size:
            out.append(f"{where}: prompt {pid!r} has {n} token ids, over the {size - 1} a prompt may fill "
                       f"(max_model_len {size} from {src}, less one for the output)")
        elif longest is not None and n + int(longest.params["max_tokens"]) >= size:
            m = int(longest.params["max_tokens"])
            out.append(f"{where}: prompt {pid!r} has {n} token ids; with max_tokens {m} of sampling config "
                       f"{longest.name!r} that is {n + m}, over the {size - 1} a prompt and its completion may "
                       f"fill (max_model_len {size} from {src}, less one for the scoring step)")
    return out

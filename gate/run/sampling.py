"""The suite's sampling configs: their keys, types and defaults, and the
ranges vLLM would refuse only after the engine started."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gate.core.rows import SamplingParams
from gate.run.problems import Problems, line_of, surrogate

__all__ = ["SamplingConfig", "parse_sampling", "SAMPLING_DEFAULTS", "MAX_LOGPROBS", "SEED_LIMIT"]

SAMPLING_DEFAULTS: SamplingParams = {
    "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16, "seed": 0, "n": 1, "logprobs": 5,
    "min_tokens": 0, "ignore_eos": False,
}
_SAMPLING_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": (int, float), "top_p": (int, float), "top_k": (int,), "max_tokens": (int,), "seed": (int,),
    "n": (int,), "logprobs": (int,), "min_tokens": (int,), "ignore_eos": (bool,),
}
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
SEED_LIMIT = 2**63  # per-request seeds are signed 64-bit on the engine's side


@dataclass(frozen=True)
class SamplingConfig:
    name: str
    params: SamplingParams  # SAMPLING_DEFAULTS filled in: the hash is stable under defaults
    where: str = field(default="", compare=False)  # ":LINE" in the suite, for messages

    @property
    def n(self) -> int:
        return int(self.params["n"])

    @property
    def logprobs(self) -> int:
        return int(self.params["logprobs"])

    def seeds(self) -> list[int]:
        """`n: k` with `seed: s` expands into k requests with seeds s, s+1, ..."""
        return [int(self.params["seed"]) + i for i in range(self.n)]


def _range_problems(p: SamplingParams) -> list[str]:
    """Values vLLM would refuse only after the engine started (or take and
    misbehave on), checked in well under a second."""
    out = []
    for key in ("temperature", "top_p"):
        v = p[key]
        if math.isnan(v):
            out.append(f"{key} is NaN; write a number")
        elif math.isinf(v):
            out.append(f"{key} is {'-' if v < 0 else ''}.inf; write a finite number")
    if not out:
        if p["temperature"] < 0:
            out.append("temperature must be >= 0")
        if not 0 < p["top_p"] <= 1:
            out.append("top_p must be in (0, 1]")
    if p["top_k"] < -1:
        out.append("top_k must be -1, 0 (off) or positive")
    if p["max_tokens"] < 1:
        out.append("max_tokens must be >= 1")
    if p["min_tokens"] < 0:
        out.append("min_tokens must be >= 0")
    elif p["max_tokens"] >= 1 and p["min_tokens"] > p["max_tokens"]:
        out.append(f"min_tokens {p['min_tokens']} must be <= max_tokens {p['max_tokens']}")
    if p["n"] < 1:
        out.append("n must be >= 1")
    if not 0 <= p["logprobs"] <= MAX_LOGPROBS:
        out.append(f"logprobs (top-k recorded) must be in 0..{MAX_LOGPROBS}")
    if p["seed"] < 0:
        out.append("seed must be >= 0")
    elif p["seed"] + max(p["n"], 1) - 1 >= SEED_LIMIT:
        out.append(f"seed must be below 2**63 for every sample (samples take seeds s..s+n-1), got seed {p['seed']}"
                   + (f" with n {p['n']}" if p["n"] > 1 else ""))
    return out


def parse_sampling(item: Any, where: str, problems: Problems) -> SamplingConfig | None:
    if not isinstance(item, dict):
        problems.add(where, f"sampling config must be a mapping, got {type(item).__name__}")
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name:
        problems.add(where, "sampling config needs a non-empty string 'name'")
        return None
    bad = surrogate(name)
    if bad:
        problems.add(where, f"sampling config name {name!r} holds {bad}")
        return None
    params = dict(SAMPLING_DEFAULTS)
    ok = True
    for key, value in item.items():
        if key == "name":
            continue
        kw = where.rsplit(":", 1)[0] + line_of(item, key) if line_of(item, key) else where
        if key not in _SAMPLING_TYPES:
            problems.add(kw, f"sampling config {name!r}: unknown key {key!r} "
                             f"(allowed: name, {', '.join(_SAMPLING_TYPES)})")
            ok = False
            continue
        types = _SAMPLING_TYPES[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            problems.add(kw, f"sampling config {name!r}: {key} must be "
                             f"{'a number' if float in types else types[0].__name__}, got {value!r}")
            ok = False
            continue
        params[key] = float(value) if float in types else value
    if ok:
        for msg in _range_problems(params):
            problems.add(where, f"sampling config {name!r}: {msg}")
            ok = False
    return SamplingConfig(name=name, params=params, where=where) if ok else None

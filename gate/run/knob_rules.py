"""Whether a workload can exercise one engine knob (`judge`).

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
  and 1, top-k, top-p, or min_tokens masking the stop tokens)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from gate.run.workload import BATCH_INVARIANT, EVERY_TOKEN, UNSET, Finding, Limits, Workload

__all__ = ["judge"]


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
    elif knob in EVERY_TOKEN:
        ok, why = True, "every token passes through it"
    else:
        return Finding(knob, None, "no rule for this knob: not judged", change, on)
    return Finding(knob, ok, why, change, on)

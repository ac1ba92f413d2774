"""The engine-run pipeline shared by every command that runs vLLM (record,
check, weight-update, determinism): engine args, the batch plan (calls of
at most --call-size requests), its exact replay call by call into a
checkpoint (gate/run/checkpoint.py), records and the manifest. Commands and
feature modules call this; it calls the engine adapters (gate/run/engine.py,
the only import of vllm; gate/run/hf_engine.py)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from gate import __version__
from gate.core.errors import BadInput
from gate.core.rows import BatchCall, SamplingParams
from gate.core.semantics import Relation
from gate.core.trace import Manifest, Record
from gate.run.checkpoint import Checkpoint, scores_from_json, scores_to_json
from gate.run.engine import Engine, Request
from gate.run.hf_engine import HFEngine
from gate.run.suite import Suite, parse_engine_arg, prompt_hash, workload_hash

__all__ = ["engine_overrides", "tokenize_prompts", "prompt_where", "check_vocab", "plan", "arg_lines",
           "start_engine", "close_engine", "run_calls", "run_plan", "build_records", "build_manifest", "replay_engine_args",
           "rel_path", "Progress", "SCHEDULER_KEYS", "DEFAULT_CALL_SIZE", "seeded_prefill_split",
           "check_seeded_prefills"]

log = logging.getLogger(__name__)
SCHEDULER_KEYS = ("max_num_seqs", "max_num_batched_tokens")
# Requests per generate() call in a new golden's plan: the gate holds one
# call's outputs at a time, and a killed run loses at most one call.
DEFAULT_CALL_SIZE = 256


def replay_engine_args(suite_engine: dict[str, Any], overrides: dict[str, Any],
                       golden: Manifest) -> dict[str, Any]:
    """The suite's engine args and the overrides, plus the golden's batch
    shape (scheduler args) unless the user moves it on purpose."""
    engine_args = dict(suite_engine, **overrides)
    for key, value in ((golden.batch_plan or {}).get("scheduler") or {}).items():
        if value is not None and key not in engine_args:
            engine_args[key] = value
    return engine_args


def rel_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def engine_overrides(items: list[str]) -> dict[str, Any]:
    overrides = dict(parse_engine_arg(i) for i in items)
    # The suite comes from the base branch; command-line args may come from a
    # PR's own workflow file. Running a model's own Python code is the base
    # branch's decision alone.
    if overrides.get("trust_remote_code"):
        raise BadInput("--engine-arg trust_remote_code: cannot be enabled from the command line",
                       "set 'trust_remote_code: true' under 'engine:' in the suite (taken from the base branch)")
    return overrides


def tokenize_prompts(suite: Suite, engine: Any | None, vocab: int | None) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for p in suite.prompts:
        if p.token_ids is not None:
            ids[p.id] = list(p.token_ids)
        else:
            assert engine is not None
            ids[p.id] = engine.tokenize(p.text)
            if not ids[p.id]:
                raise BadInput(f"{prompt_where(suite, p)} tokenizes to nothing",
                               "give the prompt some text")
        check_vocab(ids[p.id], vocab, prompt_where(suite, p))
    return ids


def prompt_where(suite: Suite, p: Any) -> str:
    """suite.yaml:LINE: prompt 'id', or prompts.jsonl:LINE: prompt 'id' for a prompts_file prompt."""
    where = f"{suite.path}{p.where}" if not p.where or p.where.startswith(":") else p.where
    return f"{where}: prompt {p.id!r}"


def check_vocab(ids: list[int] | tuple[int, ...], vocab: int | None, where: str) -> None:
    if vocab is None:
        return
    bad = next((t for t in ids if t >= vocab or t < 0), None)
    if bad is not None:
        raise BadInput(f"{where}: token id {bad} is beyond the model's vocabulary (size {vocab})",
                       f"use ids in 0..{vocab - 1}, or check that the suite points at the right model")


def plan(suite_prompts: dict[str, list[int]], sampling: dict[str, SamplingParams],
         order: list[str], call_size: int | None = None) -> list[BatchCall]:
    """The batch plan: the free-run generate() calls of every config, then its
    scoring calls, each with its requests in (prompt, sample) order and at
    most `call_size` requests (None: one call per config and kind)."""
    calls: list[BatchCall] = []
    for kind in ("free", "score"):
        for name in order:
            n = int(sampling[name]["n"])
            keys = [[name, pid, i] for pid in sorted(suite_prompts) for i in range(n)]
            step = call_size or max(1, len(keys))
            for at in range(0, len(keys), step):
                calls.append({"kind": kind, "config": name, "requests": keys[at:at + step]})
    return calls


def arg_lines(suite: Suite, overrides: dict[str, Any]) -> dict[str, str]:
    """Where each engine arg came from, for messages: suite file:line or --engine-arg."""
    return dict(suite.engine_lines, **{k: f"--engine-arg {k}" for k in overrides})


def start_engine(model: Path, engine_args: dict[str, Any], lines: dict[str, str], kind: str = "vllm",
                 preflight: Callable[[dict[str, Any]], None] | None = None):
    """`preflight(limits)`: a check on the scheduler limits vLLM resolved,
    run before the vLLM engine loads anything (gate/run/engine.py)."""
    # Both adapters import vllm / torch only when the engine starts.
    engine = HFEngine(model, dtype="float32") if kind == "hf" else Engine(model, engine_args)
    t = time.monotonic()
    if kind == "hf" or preflight is None:
        engine.start(lines)
    else:
        engine.start(lines, preflight)
    log.info("engine started in %.1fs", time.monotonic() - t)
    return engine



def close_engine(engine: Any) -> None:
    """Shut `engine` down, if one started."""
    if engine is not None:
        engine.close()

# vLLM samples greedily below this temperature (vllm/sampling_params.py
# _SAMPLING_EPS): no seeded generator, nothing to rewind.
_GREEDY_BELOW = 1e-5


def seeded_prefill_split(calls: Sequence[BatchCall], prompts: Mapping[str, Sequence[int]],
                         sampling: Mapping[str, Mapping[str, Any]],
                         limits: Mapping[str, Any]) -> tuple[tuple, int, int] | None:
    """The first free-run request of a seeded (non-greedy) config whose
    prefill vLLM's CPU build must split, as (key, prompt tokens, the fewest
    tokens its prefill can need), or None. vLLM rewinds the seeded generator
    of a request whose prefill it split, and torch's CPU generator has no
    offset to rewind: the run fails, every time.

    Known before the engine starts only where no schedule can avoid it: the
    prefill needs more tokens than one step's budget (max_num_batched_tokens,
    or long_prefill_token_threshold) even after the most a prefix cache could
    hold of it (its full blocks but the last token, when an earlier request
    of the plan shares its first block). Splits that depend on which
    requests share a step are met while the engine runs (EngineLimit)."""
    if not (limits.get("cpu") and limits.get("chunked_prefill")):
        return None
    budget = int(limits["max_num_batched_tokens"])
    threshold = int(limits.get("long_prefill_token_threshold") or 0)
    if threshold > 0:
        budget = min(budget, threshold)
    block = int(limits.get("block_size") or 0) if limits.get("prefix_caching") else 0
    seen: set[tuple[int, ...]] = set()
    for call in calls:
        params = sampling[call["config"]]
        seeded = call["kind"] == "free" and float(params.get("temperature", 1.0)) >= _GREEDY_BELOW
        for key in call["requests"]:
            ids = prompts[key[1]]
            first = tuple(ids[:block]) if block and len(ids) > block else None
            cached = block * ((len(ids) - 1) // block) if first is not None and first in seen else 0
            if seeded and len(ids) - cached > budget:
                return tuple(key), len(ids), len(ids) - cached
            if first is not None:
                seen.add(first)
    return None


def check_seeded_prefills(calls: Sequence[BatchCall], prompts: Mapping[str, Sequence[int]],
                          sampling: Mapping[str, Mapping[str, Any]], limits: Mapping[str, Any],
                          where: Callable[[str], str]) -> None:
    """Refuse, before any engine call, a plan whose seeded prefill the CPU
    build must split (`seeded_prefill_split`). `where(prompt_id)` says where
    the prompt is written."""
    found = seeded_prefill_split(calls, prompts, sampling, limits)
    if found is None:
        return
    key, tokens, need = found
    budget = int(limits["max_num_batched_tokens"])
    threshold = int(limits.get("long_prefill_token_threshold") or 0)
    step = f"max_num_batched_tokens {budget}" + (f" and long_prefill_token_threshold {threshold}"
                                                 if 0 < threshold < budget else "")
    temperature = sampling[key[0]].get("temperature")
    raise BadInput(
        f"{where(key[1])} has {tokens} token ids, more than one engine step holds ({step}), and sampling config "
        f"{key[0]!r} is seeded (temperature {temperature}): vLLM's CPU build splits that prefill and cannot rewind "
        "a seeded CPU generator ('CPU Generator does not use offset')",
        f"set engine.max_num_batched_tokens: {max(need, tokens)} or more (or --engine-arg "
        f"max_num_batched_tokens={max(need, tokens)}), or engine.enable_chunked_prefill: false with "
        f"max_num_batched_tokens >= max_model_len ({limits.get('max_model_len')}); or shorten the prompt")


class Progress(Protocol):
    def __call__(self, done: int, total: int, requests: int, tokens: int, seconds: float) -> None: ...


def _execute(engine: Any, call: BatchCall, prompts: dict[str, list[int]], sampling: dict[str, SamplingParams],
             completion_of: Callable[[tuple], list[int]]) -> tuple[list[dict[str, Any]], int]:
    """One batch-plan call -> its fragments (see gate/run/checkpoint.py) and the
    number of tokens it processed."""
    keys = [tuple(k) for k in call["requests"]]
    params = sampling[call["config"]]
    if call["kind"] == "free":
        reqs = [Request(key=k, prompt_token_ids=prompts[k[1]], params=dict(params, seed=int(params["seed"]) + k[2]))
                for k in keys]
        gens = engine.generate(reqs)
        frags = [{"key": list(g.key), "gen": {"completion_token_ids": list(g.token_ids),
                                              "finish_reason": g.finish_reason,
                                              "sampler": scores_to_json(g.sampler)}} for g in gens]
        return frags, sum(len(prompts[k[1]]) for k in keys) + sum(len(g.token_ids) for g in gens)
    # "score": the golden's tokens in check, the run's own in record; "own":
    # the run's own tokens in check (in-run semantics, gate/core/semantics.py)
    seqs = [(prompts[k[1]], completion_of(k)) for k in keys]
    channel = "own" if call["kind"] == "own" else "forced"
    scores = engine.score(seqs, int(params["logprobs"]))
    return ([{"key": list(k), channel: scores_to_json(sc)} for k, sc in zip(keys, scores)],
            sum(len(p) + len(c) for p, c in seqs))


def run_calls(engine: Any, calls: list[BatchCall], prompts: dict[str, list[int]],
              sampling: dict[str, SamplingParams], forced_ids: dict[tuple, list[int]] | None,
              checkpoint: Checkpoint, progress: Progress | None = None) -> None:
    """Replay the plan into `checkpoint`, skipping the calls it already holds.
    Scoring calls score `forced_ids` (check: the golden's tokens) or, when
    None (record), the run's own free-run tokens; "own" calls always score the
    run's own tokens. Free-run tokens are read back from the checkpoint, one
    call's worth at a time."""
    free_of = {tuple(k): i for i, c in enumerate(calls) if c["kind"] == "free" for k in c["requests"]}
    loaded: dict[str, Any] = {"call": None, "ids": {}}

    def own_tokens(k: tuple) -> list[int]:
        if loaded["call"] != free_of[k]:
            loaded["call"], loaded["ids"] = free_of[k], checkpoint.completions(free_of[k])
        return loaded["ids"][k]

    total = len(calls)
    for i, call in enumerate(calls):
        if checkpoint.done(i):
            continue
        scored = (lambda k: forced_ids[k]) if call["kind"] == "score" and forced_ids is not None else own_tokens
        t = time.monotonic()
        frags, tokens = _execute(engine, call, prompts, sampling, scored)
        checkpoint.save(i, frags)
        seconds = time.monotonic() - t
        log.info("%s call %d/%d for config %s: %d requests in %.2fs", call["kind"], i + 1, total, call["config"],
                 len(frags), seconds)
        if progress is not None:
            progress(i + 1, total, len(frags), tokens, seconds)


def run_plan(engine: Any, calls: list[BatchCall], prompts: dict[str, list[int]],
             sampling: dict[str, SamplingParams], forced_ids: dict[tuple, list[int]] | None) -> dict[tuple, dict]:
    """`run_calls` held in memory, for the small workloads of weight-update:
    key -> {"gen", "forced", "own"} fragments."""
    state: dict[tuple, dict[str, Any]] = {}
    for call in calls:
        frags, _ = _execute(engine, call, prompts, sampling,
                            (lambda k: forced_ids[k]) if call["kind"] == "score" and forced_ids is not None
                            else (lambda k: state[k]["gen"]["completion_token_ids"]))
        for f in frags:
            state.setdefault(tuple(f["key"]), {}).update((n, v) for n, v in f.items() if n != "key")
    return state


def build_records(engine: Any, joined: Iterable[tuple[tuple, dict[str, Any]]] | dict[tuple, dict],
                  prompts: dict[str, list[int]], sampling: dict[str, SamplingParams]) -> Iterator[Record]:
    """Records from per-key fragments (`Checkpoint.fragments()`, or
    `run_plan`'s state), in key order."""
    items = sorted(joined.items()) if isinstance(joined, dict) else joined
    for key, s in items:
        g = s.get("gen") or {}
        completion = g.get("completion_token_ids") or []
        yield Record(config=key[0], prompt_id=key[1], sample=key[2],
                     seed=int(sampling[key[0]]["seed"]) + key[2], prompt_token_ids=prompts[key[1]],
                     completion_token_ids=completion, sampler=scores_from_json(g.get("sampler")),
                     forced=scores_from_json(s.get("forced")), own=scores_from_json(s.get("own")),
                     prompt_tokens=engine.decode_tokens(prompts[key[1]]),
                     completion_tokens=engine.decode_tokens(completion), finish_reason=g.get("finish_reason"))


def build_manifest(kind: str, engine: Any, suite: Suite, requested: dict[str, Any], model_id: dict[str, Any],
              prompts: dict[str, list[int]], texts: dict[str, str | None], sampling: dict[str, SamplingParams],
              calls: list[BatchCall], relations: Mapping[str, Relation] | None = None,
              shard: dict[str, Any] | None = None) -> Manifest:
    """The trace header. `relations`: the run's sampler relation per config
    (gate/core/semantics.py, folded in while the records are written); `shard`
    marks one shard of a run (gate/run/shards.py)."""
    resolved = engine.resolved()
    return Manifest(
        kind=kind, environment=engine.fingerprint(),
        engine_args={"requested": requested, "resolved": resolved},
        model=dict(model_id, path=rel_path(suite.model)),
        suite={"name": suite.name, "path": rel_path(suite.path), "workload_sha256": workload_hash(prompts, sampling),
               "sampling": sampling,
               "prompts": {pid: {"sha256": prompt_hash(prompts[pid]), "text": texts.get(pid)}
                           for pid in sorted(prompts)}},
        batch_plan={"scheduler": {k: resolved.get(k) for k in SCHEDULER_KEYS}, "calls": calls},
        tool={"name": "parity-gate", "version": __version__},
        extra={"capabilities": engine.capabilities(),
               "scoring_paths": {"sampler": "decode", "forced": "prefill", "own": "prefill"},
               # how this run's sampler logprobs relate to its own prefill scores (semantics.py)
               "sampler_relation": {c: r.summary() for c, r in sorted((relations or {}).items())},
               **({"shard": shard} if shard else {})})

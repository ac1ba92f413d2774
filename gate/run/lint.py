"""`parity-gate suite lint SUITE`: for each engine knob the suite sets, and
those users commonly change, can the suite exercise it, and why not
(gate/run/knob_rules.py has the rules). No engine starts: text prompts are
tokenized with the model's own tokenizer, as `record` does; with --golden,
the golden's token ids, batch plan and resolved sizes are used instead,
and the notes that `check` would add are printed too."""
from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path
from typing import Any

from gate.core.errors import EXIT_PASS, EXIT_REGRESSION, BadInput, InfraError
from gate.core.trace import read_trace, trace_path
from gate.run.exercise import changed_knobs, golden_notes, golden_resolved, limits, local_platform
from gate.run.knob_rules import judge
from gate.run.replay import DEFAULT_CALL_SIZE, engine_overrides, plan, prompt_where, replay_engine_args
from gate.run.suite import Suite, check_prompt_lengths, load_suite
from gate.run.workload import COMMON_KNOBS, Finding, Limits, Workload

__all__ = ["add_arguments", "run", "EXIT_UNTESTED"]

EXIT_UNTESTED = EXIT_REGRESSION

_EXIT_CODES = """\
exit codes:
  0  every knob the suite sets (under 'engine:' or with --engine-arg), and
     every knob that changed against --golden, can be exercised
  1  at least one of them cannot: a check would pass without testing it
     (knobs the suite leaves alone are listed for information only)
  2  bad input: the suite, an --engine-arg or the golden
  3  the tokenizer cannot be loaded (transformers missing)"""


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    sub = parser.add_subparsers(dest="suite_command", metavar="SUBCOMMAND", parser_class=type(parser))
    sub.required = True
    lint = sub.add_parser(
        "lint", help="say which engine knobs the suite can exercise, and why not (no engine)",
        description=textwrap.fill(
            "For each engine knob the suite sets, and those users commonly change (prefix caching, chunked "
            "prefill, batch budget, max_num_seqs, VLLM_BATCH_INVARIANT, async scheduling, logprobs_mode): can "
            "the suite's prompts and batch plan exercise it, and why not. No engine starts "
            "(docs/suite-format.md, 'What a suite exercises').", 79),
        epilog=_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    lint.add_argument("suite", type=Path, metavar="SUITE", help="suite YAML file")
    lint.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                      help="an engine arg the check would set (VALUE parsed as YAML); repeatable")
    lint.add_argument("--golden", type=Path,
                      help="judge against this golden: its token ids, batch plan and resolved block size, and "
                           "the knobs that changed since it was recorded")
    lint.add_argument("--call-size", type=int, default=DEFAULT_CALL_SIZE, metavar="N",
                      help=f"requests per engine call, as 'record --call-size' (default {DEFAULT_CALL_SIZE}); "
                           "ignored with --golden, whose plan is used")


def run(args: argparse.Namespace) -> int:
    return lint(args)


def _tokenize(suite: Suite, engine_args: dict[str, Any]) -> dict[str, list[int]]:
    """The suite's prompts as token ids, text prompts through the model's
    tokenizer as vLLM loads it (`engine.tokenizer` when set), so lengths
    match what `record` will store."""
    ids = {p.id: list(p.token_ids) for p in suite.prompts if p.token_ids is not None}
    texts = [p for p in suite.prompts if p.token_ids is None]
    if not texts:
        return ids
    try:
        # transformers comes with vLLM and is heavy to import: only for text prompts
        from transformers import AutoTokenizer
    except ImportError:
        raise InfraError("text prompts need the model's tokenizer, and transformers is not installed",
                         "pip install 'parity-gate[cpu]' or 'parity-gate[gpu]', or give the prompts as "
                         "token_ids") from None
    source = engine_args.get("tokenizer") or suite.model
    try:
        tok = AutoTokenizer.from_pretrained(str(source),
                                            trust_remote_code=bool(suite.engine.get("trust_remote_code")))
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError and its own errors
        raise BadInput(f"cannot load the tokenizer of {source}: {type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:300]}", "check the model folder's tokenizer files") from None
    for p in texts:
        ids[p.id] = list(tok.encode(p.text))
        if not ids[p.id]:
            raise BadInput(f"{prompt_where(suite, p)} tokenizes to nothing", "give the prompt some text")
    return ids


def _golden(path: Path) -> tuple[Any, dict[str, list[int]], dict[tuple, list[int]]]:
    reader = read_trace(path)
    manifest = reader.manifest
    if manifest.kind != "golden":
        raise BadInput(f"{trace_path(path)}: trace kind is {manifest.kind!r}, not a golden",
                       "pass a folder written by 'parity-gate record'")
    prompts: dict[str, list[int]] = {}
    completions: dict[tuple, list[int]] = {}
    for rec in reader.records():
        prompts[rec.prompt_id] = list(rec.prompt_token_ids)
        completions[rec.key] = list(rec.completion_token_ids)
    return manifest, prompts, completions


def _value(knob: str, set_here: dict[str, Any], where: dict[str, str], env: Any) -> str:
    if knob in set_here:
        return f"{_plain(set_here[knob])} at {where.get(knob, 'the engine args')}"
    if knob == "VLLM_BATCH_INVARIANT" and env.get(knob) is not None:
        return f"{env[knob]} in the environment"
    return "not set"


def _plain(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _limits_line(lim: Limits) -> str:
    return (f"block {lim.block_size} tokens ({lim.source['block_size']}), batch budget "
            f"{lim.max_num_batched_tokens} tokens ({lim.source['max_num_batched_tokens']}), up to "
            f"{lim.max_num_seqs} sequences ({lim.source['max_num_seqs']})")


def _status(f: Finding) -> str:
    return {True: "exercised", False: "UNTESTED", None: "not judged"}[f.exercised]


def lint(args: argparse.Namespace, env: Any = None) -> int:
    env = os.environ if env is None else env
    suite = load_suite(args.suite)
    overrides = engine_overrides(args.engine_arg)
    if args.call_size < 1:
        raise BadInput(f"--call-size {args.call_size} is below 1", f"use a positive number (default "
                                                                   f"{DEFAULT_CALL_SIZE})")
    platform = local_platform()
    changed: dict[str, tuple[Any, Any]] = {}
    resolved: dict[str, Any] | None = None
    if args.golden is not None:
        manifest, prompts, completions = _golden(args.golden)
        requested = replay_engine_args(suite.engine, overrides, manifest)
        resolved = golden_resolved(manifest)
        changed = changed_knobs(manifest.engine_args.get("requested") or {}, resolved,
                                (manifest.environment or {}).get("env") or {}, requested, env)
        calls = (manifest.batch_plan or {}).get("calls") or []
        sampling = manifest.suite.get("sampling") or {}
    else:
        requested = dict(suite.engine, **overrides)
        prompts, completions = _tokenize(suite, requested), {}
        check_prompt_lengths(suite, prompts, requested)
        sampling = {s.name: s.params for s in suite.sampling}
        calls = plan(prompts, sampling, [s.name for s in suite.sampling], args.call_size)
    work = Workload(calls=calls, prompts=prompts, sampling=sampling, completions=completions)
    set_here = {**suite.engine, **overrides}
    lim = limits(set_here, resolved, platform)  # what the suite sets, then what the golden resolved
    where = dict(suite.engine_lines, **{k: "--engine-arg" for k in overrides})
    knobs = list(dict.fromkeys([*set_here, *changed, *COMMON_KNOBS]))
    findings = [judge(k, work, lim, change=changed.get(k)) for k in knobs]

    free = sum(len(c["requests"]) for c in calls if c.get("kind") == "free")
    print(f"suite {suite.name!r} ({args.suite}): {len(prompts)} prompts, {len(sampling)} sampling configs, "
          f"{free} free-run requests in {len(calls)} engine calls"
          + (f", from golden {args.golden}" if args.golden is not None else ""))
    print(f"  {_limits_line(lim)}")
    for f in findings:
        how = (f"changed {_plain(f.change[0])} -> {_plain(f.change[1])}" if f.change is not None
               else _value(f.knob, set_here, where, env))
        print(f"  {_status(f):<10} {f.knob} ({how}): {f.why}")
    relevant = [f for f in findings if (f.knob in set_here or f.change is not None) and f.exercised is False]
    if args.golden is not None:
        for line in golden_notes(manifest, requested, env, calls, prompts, completions, platform):
            print(f"  check would note: {line}")
    if relevant:
        print(f"{len(relevant)} knob{'s' if len(relevant) > 1 else ''} this suite sets or changes cannot be "
              f"exercised: {', '.join(f.knob for f in relevant)} (exit {EXIT_UNTESTED})")
        return EXIT_UNTESTED
    print("every knob this suite sets" + (" or changes" if changed else "") + " can be exercised")
    return EXIT_PASS

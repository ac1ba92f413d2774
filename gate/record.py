"""`record`: the suite run on vLLM and written as a golden (gate/commands.py
holds its arguments, with check's). Everything is validated before the
engine starts; the golden is staged beside --out and renamed into place, so
a partial golden never replaces a good one, and a killed run resumes from its
saved engine calls (gate/run/checkpoint.py). Also the golden of a record's
shards merged into one (`merge` of `record --shard I/N` results)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gate.core.errors import EXIT_PASS, BadInput, InfraError, command_line
from gate.core.fsutil import file_sha256
from gate.core.identity import model_identity, model_vocab_size
from gate.core.trace import read_trace
from gate.run.checkpoint import Checkpoint, check_checkpoint_folder, run_identity
from gate.run.outdir import Stage, failed_run, resumable, suite_inputs, write_records, writing
from gate.run.progress import run_engine
from gate.run.replay import (
    DEFAULT_CALL_SIZE,
    arg_lines,
    build_manifest,
    build_records,
    check_seeded_prefills,
    check_vocab,
    close_engine,
    engine_overrides,
    plan,
    prompt_where,
    start_engine,
    tokenize_prompts,
)
from gate.run.shards import merged_manifest, merged_records, parse_shard, shard_calls, shard_info
from gate.run.suite import Suite, check_prompt_lengths, load_suite, validate_with_vllm, workload_hash

__all__ = ["record", "merge_golden"]


def record(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, args.strict_paths)
    overrides = engine_overrides(args.engine_arg)
    engine_args = dict(suite.engine, **overrides)
    shard = parse_shard(args.shard) if args.shard else None
    if args.call_size < 1:
        raise BadInput(f"--call-size {args.call_size} is below 1",
                       f"use a positive number (default {DEFAULT_CALL_SIZE})")
    out: Path = args.out
    previous: set[tuple] | None = None
    if out.is_dir() and not out.is_symlink() and any(out.iterdir()) and (out / "traces.jsonl").is_file() \
            and not args.force:
        if not args.update:
            raise BadInput(f"--out {out} already holds a golden",
                           "pass --update to re-record it, or choose another folder")
        previous = {r.key for r in read_trace(out).records()}
    model_id = model_identity(suite.model)
    vocab = model_vocab_size(suite.model)
    for p in suite.prompts:
        if p.token_ids is not None:
            check_vocab(p.token_ids, vocab, prompt_where(suite, p))
    sampling = {s.name: s.params for s in suite.sampling}
    order = [s.name for s in suite.sampling]
    # The plan needs only the prompt ids: a --shard that can't be cut fails before the engine starts.
    calls = shard_calls(plan({p.id: [] for p in suite.prompts}, sampling, order, args.call_size), shard,
                        "the suite's batch plan")
    mine = {k[1] for c in calls for k in c["requests"]}
    # A seeded prefill the CPU build must split fails every time: refused
    # before the engine starts when every prompt is token ids, else as soon
    # as the engine has tokenized them, before its first call.
    by_id = {p.id: p for p in suite.prompts}
    known = {p.id: list(p.token_ids) for p in suite.prompts if p.token_ids is not None}

    def refuse_splits(limits: dict[str, Any], prompt_ids: dict[str, list[int]] = known) -> None:
        check_seeded_prefills(calls, prompt_ids, sampling, limits, lambda pid: prompt_where(suite, by_id[pid]))
    check_checkpoint_folder(out)
    stage = Stage(out, force=args.force or (previous is None and failed_run(out)), replace=previous is not None,
                   inputs=suite_inputs(suite))
    checkpoint = None
    engine = None
    try:
        validate_with_vllm(suite)  # vLLM's own SamplingParams rules, before its engine starts
        with writing(out):
            engine = start_engine(suite.model, engine_args, arg_lines(suite, overrides),
                                  preflight=refuse_splits if len(known) == len(by_id) else None)
            prompts = tokenize_prompts(suite, engine, vocab)
            check_prompt_lengths(suite, prompts, engine_args)
            if len(known) != len(by_id):
                refuse_splits(engine.limits(), prompts)
            prompts = {pid: ids for pid, ids in prompts.items() if pid in mine}
            texts = {p.id: p.text for p in suite.prompts}
            checkpoint = Checkpoint(out, run_identity(command="record", workload=workload_hash(prompts, sampling),
                                                      engine_args=engine_args, model=model_id, shard=shard),
                                    calls, resume=not args.no_resume)
            run_engine(engine, calls, prompts, sampling, None, checkpoint, args)
            info = shard_info(shard, suite_sha256=file_sha256(suite.path)) if shard else None
            manifest, count = write_records(
                stage, build_records(engine, checkpoint.fragments(), prompts, sampling),
                lambda relations: build_manifest("golden", engine, suite, engine_args, model_id, prompts, texts,
                                                 sampling, calls, relations, info))
            stage.commit()
    except InfraError as exc:
        resumable(exc, checkpoint)
        # A partial golden is worse than none: --out gets error.json only (the
        # engine's calls stay in the checkpoint), and --update keeps the golden.
        if previous is None:
            stage.save_error(exc, "record")
        else:
            stage.discard()
        raise
    except BaseException as exc:
        stage.discard()  # a partial golden is worse than none; the engine's calls stay in the checkpoint
        resumable(exc, checkpoint)
        raise
    finally:
        close_engine(engine)
    checkpoint.remove()
    keys = {tuple(k) for c in calls for k in c["requests"]}
    what = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    if previous is None and shard:
        print(f"recorded {count} golden records{what}: {len(calls)} of the plan's engine calls, {len(prompts)} "
              f"prompts, into {out}")
    elif previous is None:
        print(f"recorded {count} golden records ({len(prompts)} prompts x {len(sampling)} configs) into {out}")
    else:
        created, updated, unused = keys - previous, keys & previous, previous - keys
        print(f"re-recorded golden {out}{what}: {len(created)} created, {len(updated)} updated, "
              f"{len(unused)} unused (dropped)")
    print(f"  model {model_id['id']} ({model_id['name']}), workload {manifest.suite['workload_sha256']}, "
          f"vllm {manifest.environment.get('vllm_version')}")
    print(f"  next: {command_line('check', '--suite', args.suite, '--golden', out, '--out', 'RESULT_DIR')}")
    return EXIT_PASS


def merge_golden(args: argparse.Namespace, suite: Suite, shards: list) -> int:
    prompts = {r.prompt_id: list(r.prompt_token_ids) for r in merged_records(shards)}
    sampling = shards[0].manifest.suite.get("sampling") or {}
    whole = dict(shards[0].manifest.suite, workload_sha256=workload_hash(prompts, sampling),
                 prompts={pid: info for s in shards for pid, info in (s.manifest.suite.get("prompts") or {}).items()})
    stage = Stage(args.out, force=args.force, inputs=[suite.path, *args.results])
    try:
        with writing(args.out):
            _, count = write_records(stage, merged_records(shards),
                                      lambda relations: merged_manifest(shards, relations, whole))
            stage.commit()
    except BaseException:
        stage.discard()
        raise
    print(f"merged {len(shards)} golden shards into {args.out}: {count} records ({len(prompts)} prompts x "
          f"{len(sampling)} configs), workload {whole['workload_sha256']}")
    print(f"  next: {command_line('check', '--suite', args.suite, '--golden', args.out, '--out', 'RESULT_DIR')}")
    return EXIT_PASS

"""`check`, `compare` and `merge`, and the options of these and of `record`
(gate/record.py): the data flow of docs/design.md section 2, suite ->
engine -> traces -> comparison -> verdict -> report -> exit code. The
engine work itself is gate/run/replay.py's (the batch plan, its replay,
records, the manifest), saved call by call in gate/run/checkpoint.py;
shards and their merge are gate/run/shards.py's.

Everything is validated before the engine starts; outputs are staged in a
temp folder beside --out and renamed into place, so bad input leaves nothing
behind, a crash leaves only what it could save (with error.json), and a
killed run resumes from its saved engine calls."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from gate.core.compare import compare_traces
from gate.core.errors import BadInput, InfraError, StaleGolden, command_line
from gate.core.fsutil import file_sha256
from gate.core.identity import model_identity, same_model
from gate.core.policy import Policy, evaluate, layered_policy
from gate.core.rl_metrics import measure as rl_measure
from gate.core.rows import Verdict
from gate.core.trace import Manifest, read_trace, trace_path
from gate.core.update_rows import WeightUpdateResult
from gate.core.verdict import add_update_paths, build_verdict, read_verdict, text_summary, write_verdict
from gate.record import merge_golden, record
from gate.report.render import render_result
from gate.run.checkpoint import Checkpoint, check_checkpoint_folder, checkpoint_folder, run_identity
from gate.run.exercise import golden_notes, local_platform
from gate.run.golden import Golden, Workload, golden_where, match_workload, read_golden
from gate.run.outdir import Stage, failed_run, resumable, suite_inputs, write_records, writing
from gate.run.progress import run_engine
from gate.run.replay import (
    DEFAULT_CALL_SIZE,
    arg_lines,
    build_manifest,
    build_records,
    check_seeded_prefills,
    close_engine,
    engine_overrides,
    rel_path,
    replay_engine_args,
    start_engine,
)
from gate.run.shards import merged_manifest, merged_records, parse_shard, read_shards, shard_calls, shard_info
from gate.run.suite import Suite, WeightUpdateSpec, check_prompt_lengths, confine, load_suite, validate_with_vllm
from gate.studies.diagnose import diagnose_result_dir
from gate.studies.weight_update_inflight import inflight_check, suite_update_paths

__all__ = ["add_arguments", "run", "check", "compare", "merge"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- arguments
def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name in ("record", "check"):
        parser.add_argument("--suite", required=True, type=Path, help="suite YAML file")
        parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                            help="override a suite engine arg (VALUE parsed as YAML); repeatable")
    if name == "record":
        parser.add_argument("--out", required=True, type=Path, help="golden folder to write")
        parser.add_argument("--update", action="store_true", help="re-record into an existing golden")
        parser.add_argument("--force", action="store_true", help="replace a non-empty --out that is not a golden")
    if name == "check":
        parser.add_argument("--golden", required=True, type=Path, help="golden folder from 'parity-gate record'")
    if name == "compare":
        parser.add_argument("reference", type=Path, help="reference trace folder or file (A)")
        parser.add_argument("candidate", type=Path, help="trace folder or file under test (B)")
    if name == "check":
        parser.add_argument("--engine", choices=("vllm", "hf"), default="vllm",
                            help="engine under test; 'hf' scores the golden with transformers in float32 "
                                 "(trainer-side reference, teacher-forced only)")
        parser.add_argument("--diagnose", action="store_true",
                            help="on failure, rerun ablations to name the likely cause (docs/diagnosis.md)")
        parser.add_argument("--diagnose-budget", type=float, default=300.0, metavar="SECONDS",
                            help="time budget for --diagnose (default 300)")
        parser.add_argument("--weight-update", choices=("auto", "off"), default="auto",
                            help="auto (default): after the comparison, run the update paths the suite's "
                                 "weight_update: section declares, one check each (docs/weight-update.md); off: skip")
    if name in ("record", "check"):
        parser.add_argument("--shard", metavar="I/N",
                            help="run shard I of N: whole calls of the batch plan, dealt round robin "
                                 "(merge the shards' results with 'parity-gate merge'; docs/scale.md)")
        parser.add_argument("--no-resume", action="store_true",
                            help="start over instead of continuing an unfinished run into the same --out")
        parser.add_argument("--quiet", action="store_true", help="no progress output")
        parser.add_argument("--progress-interval", type=_seconds, default=30.0, metavar="SECONDS",
                            help="without a terminal, print a progress line at most this often (default 30)")
    if name in ("record", "check", "merge"):
        parser.add_argument("--strict-paths", action="store_true",
                            help="refuse a suite, prompts_file or --policy whose real path (symlinks followed) is "
                                 "outside the workspace (GITHUB_WORKSPACE, else the current folder)")
    if name == "record":
        parser.add_argument("--call-size", type=int, default=DEFAULT_CALL_SIZE, metavar="N",
                            help=f"requests per generate() call in the batch plan (default {DEFAULT_CALL_SIZE}); "
                                 "check replays it")
    if name == "merge":
        parser.add_argument("results", type=Path, nargs="+", metavar="RESULT",
                            help="the result folders of 'parity-gate check --shard I/N', one per shard")
        parser.add_argument("--suite", required=True, type=Path, help="the suite YAML the shards ran")
        parser.add_argument("--golden", type=Path,
                            help="the golden a check's shards ran against (none for a record's shards)")
    if name in ("check", "compare", "merge"):
        parser.add_argument("--out", required=True, type=Path, help="result folder to write")
        parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
        parser.add_argument("--policy", type=Path, help="policy YAML overriding the suite's thresholds")
        parser.add_argument("--fail-on", choices=("regression", "never"),
                            help="'never' reports a regression but exits 0")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is below 0")
    return value


def run(args: argparse.Namespace) -> int:
    return {"record": record, "check": check, "compare": compare, "merge": merge}[args.command](args)


def _engine_flags(items: list[str]) -> list[str]:
    out: list[str] = []
    for i in items:
        out += ["--engine-arg", i]
    return out


# ---------------------------------------------------------------- check
def _finish(stage: Stage, verdict: Verdict, out: Path) -> int:
    write_verdict(stage.dir, verdict)
    render_result(stage.dir)
    stage.commit()
    print(text_summary(verdict, out))
    return int(verdict["exit_code"])


def _judge(stage: Stage, args: argparse.Namespace, suite: Suite, golden: Golden, workload: Workload,
           policy: Policy, candidate: tuple[str, Manifest], repro: str, untested: list[str] | None = None,
           update: WeightUpdateResult | None = None) -> int:
    """Compare the staged traces with the golden, then the verdict, the
    report and the exit code: the tail of `check`, and of `merge`.
    `untested`: knobs the workload cannot exercise (gate/run/exercise.py);
    `update`: the suite's weight-update paths, run (weight_update.json)."""
    with writing(args.out):
        result = compare_traces(read_trace(golden.path), read_trace(stage.dir), policy.tolerances(),
                                include=workload.include)
        checks = evaluate(policy, result, ("golden", "run"))
        verdict = build_verdict(
            mode="check", reference=("golden", rel_path(golden.path), golden.manifest),
            candidate=(candidate[0], rel_path(args.out), candidate[1]), result=result, checks=checks, policy=policy,
            prompts_new=workload.new, prompts_unused=workload.unused, warnings=list(untested or []), reproduce=repro,
            files={"traces": "traces.jsonl", "verdict": "verdict.json"})
        # the RL view of the same tokens: what the drift does to importance ratios (docs/trainer.md)
        verdict["rl"] = rl_measure(read_trace(golden.path), read_trace(stage.dir), include=workload.include)
        if update is not None:
            verdict = add_update_paths(verdict, update)
        return _finish(stage, verdict, args.out)


def _run_update_paths(spec: WeightUpdateSpec, suite: Suite, args: argparse.Namespace, out: Path
                      ) -> WeightUpdateResult:
    print(f"parity-gate: running the suite's {len(spec.paths)} weight-update paths "
          f"({', '.join(p.name for p in spec.paths)})", file=sys.stderr)
    return inflight_check(suite.path, spec.source, out, [], [], True, spec.backend, args.engine_arg, spec.max_tokens,
                          spec.switch_at, spec.atol, new_weights=spec.load,
                          paths=[{"via": p.via, "pause": p.pause, "clear_cache": p.clear_cache} for p in spec.paths])


def check(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, args.strict_paths)
    overrides = engine_overrides(args.engine_arg)
    shard = parse_shard(args.shard) if args.shard else None
    model_id = model_identity(suite.model)
    golden = read_golden(suite, args.golden, args.suite, model_id)
    if args.policy is not None and args.strict_paths:
        confine(args.policy, "--policy")
    policy = layered_policy(suite.policy, str(suite.path), args.policy, args.fail_on, {s.name for s in suite.sampling})
    calls = shard_calls(golden.manifest.batch_plan["calls"], shard, f"{trace_path(args.golden)}'s batch plan")
    mine = {tuple(k) for c in calls for k in c["requests"]}
    workload = match_workload(suite, golden.manifest, args.golden, args.suite, [k for k in golden.completions if k in mine])
    sampling = golden.manifest.suite.get("sampling") or {}
    # Replay the batch shape the golden ran with, unless the user moves it on purpose.
    engine_args = replay_engine_args(suite.engine, overrides, golden.manifest)
    check_prompt_lengths(suite, golden.prompts, engine_args)
    # Knobs this run changes or turns on that its workload cannot exercise: said now, and in the verdict.
    untested = golden_notes(golden.manifest, engine_args, os.environ, calls, golden.prompts, golden.completions,
                            local_platform())
    update_spec = suite_update_paths(suite, args.weight_update, shard, args.engine, untested)
    for line in untested:
        log.warning("%s", line)
    golden_sha = file_sha256(trace_path(args.golden))
    check_checkpoint_folder(args.out)
    # A run that stopped after its engine work may have left its traces and
    # error.json in --out: the same command resumes, so it may replace them.
    stage = Stage(args.out, force=args.force or checkpoint_folder(args.out).is_dir() or failed_run(args.out),
                   inputs=[*suite_inputs(suite), args.golden, *([args.policy] if args.policy else [])])
    stage_name = "engine start"
    engine = checkpoint = None
    try:
        validate_with_vllm(suite)  # vLLM's own SamplingParams rules, before its engine starts
        with writing(args.out):
            if args.engine == "hf":  # teacher-forced only: it cannot sample
                calls = [c for c in calls if c["kind"] == "score"]
            # The golden's plan, replayed exactly; then one more prefill call per
            # free-run call scoring the run's own tokens, after every replayed
            # call so it cannot change their batches or cache state.
            calls = [*calls, *({"kind": "own", "config": c["config"], "requests": c["requests"]}
                               for c in calls if c["kind"] == "free")]
            checkpoint = Checkpoint(args.out, run_identity(command="check", golden=golden_sha, engine=args.engine,
                                                           engine_args=engine_args, model=model_id, shard=shard),
                                    calls, resume=not args.no_resume)
            engine = start_engine(suite.model, engine_args, arg_lines(suite, overrides), args.engine,
                                  preflight=lambda limits: check_seeded_prefills(
                                      calls, golden.prompts, sampling, limits, lambda pid: golden_where(
                                          suite, args.golden, pid)))
            stage_name = "replay"
            run_engine(engine, calls, golden.prompts, sampling, golden.completions, checkpoint, args)
            stage_name = "writing traces"
            texts = {k: v.get("text") for k, v in (golden.manifest.suite.get("prompts") or {}).items()}
            info = shard_info(shard, golden_sha256=golden_sha, suite_sha256=file_sha256(suite.path)) \
                if shard else None
            manifest, _ = write_records(
                stage, build_records(engine, checkpoint.fragments(), golden.prompts, sampling),
                lambda relations: build_manifest("obtained", engine, suite, engine_args, model_id, golden.prompts,
                                                 texts, sampling, calls, relations, info))
    except InfraError as exc:
        close_engine(engine)
        resumable(exc, checkpoint)
        stage.save_error(exc, stage_name)
        raise
    except BaseException as exc:
        close_engine(engine)
        stage.discard()
        resumable(exc, checkpoint)
        raise
    # The engine's work is on disk (staged) from here on: a failure below keeps
    # traces.jsonl and error.json. With --diagnose the engine goes first, so
    # that its GPU memory is free for the ablations; otherwise it goes with
    # the process, as any vLLM program's does (an explicit shutdown here
    # cost a second of every check).
    try:
        update = None
        if args.diagnose or update_spec is not None:
            close_engine(engine)  # its memory is free for the engines below
        if update_spec is not None:
            stage_name = "weight-update paths"
            update = _run_update_paths(update_spec, suite, args, stage.dir / "weight-update")
        repro = command_line("check", "--suite", args.suite, "--golden", args.golden, "--out", args.out,
                     *_engine_flags(args.engine_arg), *(["--engine", "hf"] if args.engine == "hf" else []),
                     *(["--shard", args.shard] if shard else []),
                     *(["--policy", args.policy] if args.policy else []),
                     *(["--weight-update", "off"] if args.weight_update == "off" else []))
        code = _judge(stage, args, suite, golden, workload, policy, ("run", manifest), repro, untested, update)
    except BaseException as exc:
        if stage.dir is not None:
            stage.keep_traces(exc, "compare")
        raise
    checkpoint.remove()
    verdict = read_verdict(args.out)
    if args.diagnose and verdict["verdict"] != "pass":
        diagnosis = diagnose_result_dir(args.suite, args.golden, args.out, args.engine_arg, args.diagnose_budget,
                                        args.policy)
        print(f"  diagnosis: {diagnosis['summary']}")
    return code


def merge(args: argparse.Namespace) -> int:
    """The shards of one run -> what the unsharded run would have written:
    every shard's records under one header. A check's shards (`check --shard
    I/N`) are then compared with the golden, as `check` would: one verdict,
    one report. A record's shards become one golden (gate/run/shards.py)."""
    suite = load_suite(args.suite, args.strict_paths, need_model=False)  # the shards ran the model
    suite_sha = file_sha256(suite.path)
    first = read_trace(args.results[0]).manifest
    if not isinstance(first.extra.get("shard"), dict):
        raise BadInput(f"{trace_path(args.results[0])}: not a shard (its {first.kind} trace has no shard header)",
                       "pass only the output folders of 'parity-gate check --shard I/N' (or 'record --shard I/N')")
    if first.kind == "golden":
        if args.golden is not None:
            raise BadInput(f"--golden {args.golden} given, but {args.results[0]} is a shard of a record",
                           "merge a record's shards without --golden; --golden is for a check's shards")
        return merge_golden(args, suite, read_shards(args.results, {"suite_sha256": suite_sha}, "golden"))
    if args.golden is None:
        raise BadInput("merging a check's shards needs --golden", "pass the golden the shards were checked against")
    golden = read_golden(suite, args.golden, args.suite, model_id=None)
    shards = read_shards(args.results, {"golden_sha256": file_sha256(trace_path(args.golden)),
                                        "suite_sha256": suite_sha}, "obtained")
    for shard in shards:
        if not same_model(shard.manifest.model, golden.manifest.model):
            raise StaleGolden(f"{shard.path} ran model {shard.manifest.model.get('id')}, the golden is of model "
                              f"{golden.manifest.model.get('id')}", "merge the shards of one check of this golden")
    if args.policy is not None and args.strict_paths:
        confine(args.policy, "--policy")
    policy = layered_policy(suite.policy, str(suite.path), args.policy, args.fail_on, {s.name for s in suite.sampling})
    workload = match_workload(suite, golden.manifest, args.golden, args.suite, list(golden.completions))
    stage = Stage(args.out, force=args.force, inputs=[suite.path, args.golden, *args.results,
                                                       *([args.policy] if args.policy else [])])
    try:
        with writing(args.out):
            manifest, _ = write_records(stage, merged_records(shards),
                                         lambda relations: merged_manifest(shards, relations))
            repro = command_line("merge", *args.results, "--suite", args.suite, "--golden", args.golden, "--out", args.out,
                         *(["--policy", args.policy] if args.policy else []))
            ran = shards[0].manifest
            untested = golden_notes(golden.manifest, ran.engine_args.get("requested") or {},
                                    (ran.environment or {}).get("env") or {}, golden.manifest.batch_plan["calls"],
                                    golden.prompts, golden.completions, local_platform())
            return _judge(stage, args, suite, golden, workload, policy,
                          (f"run ({len(shards)} shards merged)", manifest), repro, untested)
    except BaseException:
        stage.discard()
        raise


# ---------------------------------------------------------------- compare
def compare(args: argparse.Namespace) -> int:
    ref = read_trace(args.reference)
    cand = read_trace(args.candidate)
    warnings = []
    rm, cm = ref.manifest.model, cand.manifest.model
    if rm.get("weights_sha256") and cm.get("weights_sha256"):
        if not same_model(rm, cm):
            raise StaleGolden(f"{ref.path} is from model {rm.get('id')} ({rm.get('name')}), {cand.path} from model "
                              f"{cm.get('id')} ({cm.get('name')})",
                              "compare traces of the same model files")
    else:
        side = ref.path if not rm.get("weights_sha256") else cand.path
        warnings.append(f"{side} carries no model identity; the comparison assumes both sides used the same model")
    rw, cw = ref.manifest.suite.get("workload_sha256"), cand.manifest.suite.get("workload_sha256")
    if rw and cw and rw != cw:
        warnings.append(f"workloads differ ({rw} vs {cw}); only records with the same key are compared")
    configs = set((ref.manifest.suite.get("sampling") or {})) | set((cand.manifest.suite.get("sampling") or {}))
    policy = layered_policy(None, "", args.policy, args.fail_on, configs or None)  # type: ignore[arg-type]
    stage = Stage(args.out, force=args.force,
                   inputs=[args.reference, args.candidate, *([args.policy] if args.policy else [])])
    try:
        with writing(args.out):
            result = compare_traces(ref, cand, policy.tolerances())
            checks = evaluate(policy, result, ("A", "B"))
            repro = command_line("compare", args.reference, args.candidate, "--out", args.out,
                         *(["--policy", args.policy] if args.policy else []))
            verdict = build_verdict(
                mode="compare", reference=("A", rel_path(args.reference), ref.manifest),
                candidate=("B", rel_path(args.candidate), cand.manifest), result=result, checks=checks, policy=policy,
                prompts_new=[], prompts_unused=[], warnings=warnings, reproduce=repro,
                files={"verdict": "verdict.json"})
            verdict["rl"] = rl_measure(read_trace(args.reference), read_trace(args.candidate))
            return _finish(stage, verdict, args.out)
    except BaseException:
        stage.discard()
        raise

"""`record`, `check` and `compare`: the data flow of design.md section 2,
suite -> engine -> traces -> comparison -> verdict -> report -> exit code.

Everything is validated before the engine starts; outputs are staged in a
temp folder beside --out and renamed into place, so bad input leaves nothing
behind and a crash leaves only what it could save (with error.json)."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from gate._fsutil import StagedDir, atomic_write_text, disk_error
from gate.compare import compare_traces
from gate.diagnose import diagnose_result_dir
from gate.errors import EXIT_PASS, BadInput, GateError, InfraError, StaleGolden
from gate.identity import model_identity, model_vocab_size, same_model
from gate.policy import DEFAULT_POLICY, Policy, evaluate, load_policy, parse_policy
from gate.replay import (arg_lines, build_manifest, build_records, check_vocab, engine_overrides, plan,
                         prompt_where, rel_path, replay_engine_args, run_plan, start_engine, tokenize_prompts)
from gate.report import render_result
from gate.rl_metrics import measure as rl_measure
from gate.suite import Suite, check_prompt_lengths, load_suite, prompt_hash, validate_with_vllm
from gate.trace import Manifest, TraceWriter, read_trace, trace_path
from gate.verdict import build_verdict, text_summary, write_verdict

__all__ = ["add_arguments", "run", "record", "check", "compare"]

log = logging.getLogger(__name__)
ERROR_FILE = "error.json"


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
    if name in ("check", "compare"):
        parser.add_argument("--out", required=True, type=Path, help="result folder to write")
        parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
        parser.add_argument("--policy", type=Path, help="policy YAML overriding the suite's thresholds")
        parser.add_argument("--fail-on", choices=("regression", "never"),
                            help="'never' reports a regression but exits 0")


def run(args: argparse.Namespace) -> int:
    if args.command == "record":
        return record(args)
    if args.command == "check":
        return check(args)
    return compare(args)


# ---------------------------------------------------------------- helpers
class _Stage(StagedDir):
    """--out is staged, then renamed into place (gate/_fsutil.StagedDir knows
    what it may replace); an infrastructure failure keeps what was written,
    plus error.json."""

    def save_error(self, exc: GateError, stage: str) -> None:
        """Keep what was written, plus error.json, and put it in place."""
        atomic_write_text(self.dir / ERROR_FILE, json.dumps(
            {"error": exc.what, "hint": exc.hint, "kind": exc.kind, "stage": stage, "exit_code": exc.exit_code},
            indent=1) + "\n")
        self.commit()

    def keep_traces(self, exc: BaseException, stage: str) -> None:
        """The engine's traces are already in the stage: whatever fails after
        them must not lose them. Best effort: the original error wins."""
        err = exc if isinstance(exc, GateError) else InfraError(
            "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}",
            "the traces of the engine run are saved; re-run 'parity-gate compare' on them")
        try:
            self.save_error(err, stage)
        except Exception:  # noqa: BLE001 - never mask the error that brought us here
            log.warning("could not save the traces after a failure", exc_info=True)
            self.discard()


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """OSError from a full disk or a read-only mount -> one bad-input line."""
    try:
        yield
    except OSError as exc:
        err = disk_error(exc, f"--out {out}")
        if err is None:
            raise
        raise err from None


def _cmd(*parts: Any) -> str:
    return "parity-gate " + " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def _engine_flags(items: list[str]) -> list[str]:
    out: list[str] = []
    for i in items:
        out += ["--engine-arg", i]
    return out


def _suite_inputs(suite: Suite) -> list[Path]:
    """What a run reads: --out may be none of these, contain none, lie in none."""
    return [suite.path, suite.model]


def record(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    overrides = engine_overrides(args.engine_arg)
    engine_args = dict(suite.engine, **overrides)
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
    stage = _Stage(out, force=args.force, replace=previous is not None, inputs=_suite_inputs(suite))
    try:
        validate_with_vllm(suite)  # vLLM's own SamplingParams rules, before its engine starts
        with _writing(out):
            engine = start_engine(suite.model, engine_args, arg_lines(suite, overrides))
            prompts = tokenize_prompts(suite, engine, vocab)
            check_prompt_lengths(suite, prompts, engine_args)
            texts = {p.id: p.text for p in suite.prompts}
            calls = plan(prompts, sampling, [s.name for s in suite.sampling])
            state = run_plan(engine, calls, prompts, sampling, None)
            records = list(build_records(engine, state, prompts, sampling))
            manifest = build_manifest("golden", engine, suite, engine_args, model_id, prompts, texts, sampling,
                                      calls, records)
            with TraceWriter(stage.dir, manifest) as writer:
                for rec in records:
                    writer.write(rec)
            stage.commit()
    except BaseException:
        stage.discard()  # a partial golden is worse than none
        raise
    keys = set(state)
    if previous is None:
        print(f"recorded {writer.count} golden records ({len(prompts)} prompts x {len(sampling)} configs) "
              f"into {out}")
    else:
        created, updated, unused = keys - previous, keys & previous, previous - keys
        print(f"re-recorded golden {out}: {len(created)} created, {len(updated)} updated, "
              f"{len(unused)} unused (dropped)")
    print(f"  model {model_id['id']} ({model_id['name']}), workload {manifest.suite['workload_sha256']}, "
          f"vllm {manifest.environment.get('vllm_version')}")
    print(f"  next: {_cmd('check', '--suite', args.suite, '--golden', out, '--out', 'RESULT_DIR')}")
    return EXIT_PASS


# ---------------------------------------------------------------- check
@dataclass(frozen=True)
class _Workload:
    include: set[tuple]
    new: list[str]
    unused: list[str]


def _match_workload(suite: Suite, golden: Manifest, golden_path: Path, args: argparse.Namespace,
                    keys: list[tuple]) -> _Workload:
    rerecord = _cmd("record", "--suite", args.suite, "--out", golden_path, "--update")
    g_sampling: dict[str, dict] = golden.suite.get("sampling") or {}
    g_prompts: dict[str, dict] = golden.suite.get("prompts") or {}
    s_sampling = suite.sampling_by_name
    for name, params in g_sampling.items():
        if name in s_sampling and s_sampling[name].params != params:
            changed = sorted(k for k in set(params) | set(s_sampling[name].params)
                             if params.get(k) != s_sampling[name].params.get(k))
            raise StaleGolden(f"sampling config {name!r} changed since the golden was recorded ({', '.join(changed)})",
                              f"re-record: {rerecord}")
    for p in suite.prompts:
        g = g_prompts.get(p.id)
        if g is None:
            continue
        if p.text is not None and g.get("text") is not None and p.text != g["text"]:
            raise StaleGolden(f"prompt {p.id!r} text changed since the golden was recorded",
                              f"re-record: {rerecord}")
        if p.token_ids is not None and prompt_hash(list(p.token_ids)) != g.get("sha256"):
            raise StaleGolden(f"prompt {p.id!r} token ids changed since the golden was recorded",
                              f"re-record: {rerecord}")
        if (p.text is None) != (g.get("text") is None):
            raise StaleGolden(f"prompt {p.id!r} switched between text and token_ids since the golden was "
                              "recorded", f"re-record: {rerecord}")
    suite_ids = {p.id for p in suite.prompts}
    include = {k for k in keys if k[0] in s_sampling and k[1] in suite_ids}
    new = sorted(f"prompt {i}" for i in suite_ids - set(g_prompts)) + sorted(
        f"config {n}" for n in set(s_sampling) - set(g_sampling))
    unused = sorted(f"prompt {i}" for i in set(g_prompts) - suite_ids) + sorted(
        f"config {n}" for n in set(g_sampling) - set(s_sampling))
    return _Workload(include=include, new=new, unused=unused)


def _policy(suite_policy: Any, suite_path: str, policy_file: Path | None, fail_on: str | None,
            configs: set[str]) -> Policy:
    policy = parse_policy(suite_policy, suite_path, DEFAULT_POLICY, configs) if suite_policy is not None \
        else DEFAULT_POLICY
    if policy_file is not None:
        policy = load_policy(policy_file, policy, configs)
    if fail_on is not None:
        policy = Policy(policy.default, policy.per_config, fail_on)
    return policy


def _finish(stage: _Stage, verdict: dict[str, Any], out: Path) -> int:
    write_verdict(stage.dir, verdict)
    render_result(stage.dir)
    stage.commit()
    print(text_summary(verdict, out))
    return int(verdict["exit_code"])


def check(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    overrides = engine_overrides(args.engine_arg)
    golden_reader = read_trace(args.golden)
    golden = golden_reader.manifest
    if golden.kind != "golden":
        raise BadInput(f"{trace_path(args.golden)}: trace kind is {golden.kind!r}, not a golden",
                       "pass a folder written by 'parity-gate record'")
    model_id = model_identity(suite.model)
    if not same_model(golden.model, model_id):
        raise StaleGolden(f"golden was recorded from model {golden.model.get('id')} ({golden.model.get('name')}), "
                          f"the suite's model is {model_id['id']} ({model_id['name']})",
                          f"point the suite at the golden's model, or re-record: "
                          f"{_cmd('record', '--suite', args.suite, '--out', args.golden, '--update')}")
    policy = _policy(suite.policy, str(suite.path), args.policy, args.fail_on, {s.name for s in suite.sampling})
    vocab = model_vocab_size(suite.model)
    # Load the golden's requests once (ids only): the replay needs them.
    g_prompts: dict[str, list[int]] = {}
    g_completion: dict[tuple, list[int]] = {}
    for rec in golden_reader.records():
        g_prompts[rec.prompt_id] = list(rec.prompt_token_ids)
        g_completion[rec.key] = list(rec.completion_token_ids)
        check_vocab(list(rec.prompt_token_ids) + list(rec.completion_token_ids), vocab,
                     f"{trace_path(args.golden)} record {rec.key}")
    workload = _match_workload(suite, golden, args.golden, args, list(g_completion))
    sampling = golden.suite.get("sampling") or {}
    calls = (golden.batch_plan or {}).get("calls")
    if not calls:
        raise BadInput(f"{trace_path(args.golden)}: golden has no batch plan", "re-record it with parity-gate record")
    # Replay the batch shape the golden ran with, unless the user moves it on purpose.
    engine_args = replay_engine_args(suite.engine, overrides, golden)
    check_prompt_lengths(suite, g_prompts, engine_args)
    stage = _Stage(args.out, force=args.force,
                   inputs=[*_suite_inputs(suite), args.golden, *([args.policy] if args.policy else [])])
    stage_name = "engine start"
    engine = None
    try:
        validate_with_vllm(suite)  # vLLM's own SamplingParams rules, before its engine starts
        with _writing(args.out):
            engine = start_engine(suite.model, engine_args, arg_lines(suite, overrides), args.engine)
            if args.engine == "hf":  # teacher-forced only: it cannot sample
                calls = [c for c in calls if c["kind"] == "score"]
            # The golden's plan, replayed exactly; then one more prefill call per
            # config scoring the run's own free-run tokens, after every replayed
            # call so it cannot change their batches or cache state.
            calls = [*calls, *({"kind": "own", "config": c["config"], "requests": c["requests"]}
                               for c in calls if c["kind"] == "free")]
            stage_name = "replay"
            state = run_plan(engine, calls, g_prompts, sampling, g_completion)
            records = list(build_records(engine, state, g_prompts, sampling))
            manifest = build_manifest("obtained", engine, suite, engine_args, model_id, g_prompts,
                                 (golden.suite.get("prompts") and {k: v.get("text") for k, v in
                                                                   golden.suite["prompts"].items()}) or {},
                                 sampling, calls, records)
            stage_name = "writing traces"
            with TraceWriter(stage.dir, manifest) as writer:
                for rec in records:
                    writer.write(rec)
    except InfraError as exc:
        _close(engine)
        stage.save_error(exc, stage_name)
        raise
    except BaseException:
        _close(engine)
        stage.discard()
        raise
    # The engine's work is on disk (staged) from here on: a failure below keeps
    # traces.jsonl and error.json. The engine goes first, so that its GPU
    # memory is free for the ablations of --diagnose.
    _close(engine)
    try:
        with _writing(args.out):
            result = compare_traces(read_trace(args.golden), read_trace(stage.dir), policy.tolerances(),
                                    include=workload.include)
            checks = evaluate(policy, result, ("golden", "run"))
            repro = _cmd("check", "--suite", args.suite, "--golden", args.golden, "--out", args.out,
                         *_engine_flags(args.engine_arg), *(["--engine", "hf"] if args.engine == "hf" else []),
                         *(["--policy", args.policy] if args.policy else []))
            verdict = build_verdict(
                mode="check", reference=("golden", rel_path(args.golden), golden),
                candidate=("run", rel_path(args.out), manifest), result=result, checks=checks, policy=policy,
                prompts_new=workload.new, prompts_unused=workload.unused, warnings=[], reproduce=repro,
                files={"traces": "traces.jsonl", "verdict": "verdict.json"})
            code = _finish(stage, verdict, args.out)
    except BaseException as exc:
        if stage.dir is not None:
            stage.keep_traces(exc, "compare")
        raise
    if args.diagnose and verdict["verdict"] != "pass":
        diagnosis = diagnose_result_dir(args.suite, args.golden, args.out, args.engine_arg, args.diagnose_budget,
                                        args.policy)
        print(f"  diagnosis: {diagnosis['summary']}")
    return code


def _close(engine: Any) -> None:
    if engine is not None:
        engine.close()


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
    policy = _policy(None, "", args.policy, args.fail_on, configs or None)  # type: ignore[arg-type]
    stage = _Stage(args.out, force=args.force,
                   inputs=[args.reference, args.candidate, *([args.policy] if args.policy else [])])
    try:
        with _writing(args.out):
            result = compare_traces(ref, cand, policy.tolerances())
            checks = evaluate(policy, result, ("A", "B"))
            repro = _cmd("compare", args.reference, args.candidate, "--out", args.out,
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

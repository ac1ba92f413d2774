"""`parity-gate action`: the container entrypoint of action.yml.

action.yml runs it in three phases (`--phase`), each its own container of
the one image: `pending` (token, no GPU: posts `pending`, then parses the
inputs, so a bad one ends in an `error` status), `compute` (GPU, engine,
model code, and no token at all: runs `check`, and the bisect, into the
result folder), and `publish` (token, no GPU, no engine run: publishes that
folder with the compute phase's exit code, which the runner passes in). So
the write token never enters the container that runs the code under test
(docs/github.md, "The write token and the code under test").

`--phase all` (the default) does the three in one process, for a container
run by hand. It reads the token once and removes every token variable from the process
environment, before anything else runs: `check` runs the code under test (a
new vLLM, perhaps a model's own code, diagnosis subprocesses) in this process
and its children, and none of them may see a write token. Then posts a
`pending` status, and only then parses the other inputs, so a bad one (say
`comment: sometimes`) ends in an `error` status naming it, not in a check
that stays "Expected". Then runs `check` (or takes a precomputed result from
`result-dir`) and publishes. A crash, a cancel (SIGTERM/SIGINT, while
checking or publishing), a check that exits 2 or 3, or a verdict the schema
refuses leaves an `error` status, so a required check never hangs pending.
Publishing problems are warnings: the exit code is the check's.

The inputs are parsed in gate/github/action_inputs.py, the bisect section
written in gate/github/action_bisect.py; this module runs the phases, and
runs `check` and `bisect` through the CLI in this process."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable, Mapping

import requests

from gate import cli
from gate.core.errors import EXIT_BAD_INPUT, EXIT_INFRA, BadInput, GateError, InfraError
from gate.core.fsutil import atomic_write_text
from gate.core.verdict import VERDICT_FILE
from gate.github.action_bisect import Bisect, append_bisect, bisect_section, recorded, recording
from gate.github.action_inputs import (
    ActionSettings,
    check_argv,
    input_status_context,
    input_token,
    is_token_variable,
    withhold_tokens,
)
from gate.github.api import GitHubAPI
from gate.github.cancel import Cancelled, cancel_on_signals
from gate.github.context import ORIGIN_FILE, GitHubContext, ResultOrigin, context_from_env
from gate.github.outcome import Outcome, error_outcome, invalid_outcome, load_outcome
from gate.github.publish import Runtime, check_runner_files
from gate.github.publisher import Publisher, PublishOptions
from gate.studies import bisect as bisect_study

__all__ = ["add_arguments", "run", "run_action", "run_from_env", "run_pending", "run_compute", "run_publish", "PHASES"]

log = logging.getLogger(__name__)

PHASES = ("all", "pending", "compute", "publish")


def _default_check(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse usage errors exit through SystemExit
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT


def _default_bisect(argv: list[str]) -> tuple[int, str]:
    """`parity-gate bisect ARGV` in this process: (exit code, the error's
    one line, or "" when it ran)."""
    try:
        return bisect_study.run(cli.build_parser("bisect").parse_args(argv)), ""
    except GateError as exc:
        return exc.exit_code, exc.line()
    except SystemExit as exc:
        return EXIT_BAD_INPUT, f"bisect arguments refused (exit {exc.code})"
    except Exception as exc:  # noqa: BLE001 - a bisect never changes the check's outcome
        log.error("the bisect crashed", exc_info=True)
        return EXIT_INFRA, f"the bisect crashed: {type(exc).__name__}: {exc}"


def _pending(env: Mapping[str, str], rt: Runtime, *, post: bool = True) -> tuple[ActionSettings, GitHubAPI]:
    """`pending` first (unless `post` is false), then the inputs parsed, so
    that a bad one ends in an `error` status on the head sha naming it."""
    token = input_token(env)
    ctx = context_from_env(rt.env, token=token)  # a broken event payload: no commit to post on
    try:
        _, context = input_status_context(env)
        context_error = None
    except BadInput as exc:  # the error goes on the default context: the best guess at the required one
        context, context_error = "parity-gate", exc
    api = rt.api(ctx)
    early = Publisher(ctx, api, PublishOptions(status_context=context, comment="never", check_run=False),
                      rt.stdout)
    try:
        with cancel_on_signals():
            if post:
                early.post_pending()
            if context_error is not None:
                raise context_error
            settings = ActionSettings.from_env(env)
            check_runner_files(ctx)
    except BadInput as exc:
        early.post_error(exc.what, EXIT_BAD_INPUT)
        raise
    except Cancelled as exc:
        early.post_cancelled(f"cancelled ({exc})")
        raise InfraError(f"cancelled by {exc}") from None
    return settings, api


def run_from_env(env: Mapping[str, str], rt: Runtime, check: Callable[[list[str]], int] = _default_check) -> int:
    """The action from its inputs (`--phase all`): `pending` first, then the
    inputs parsed, then check and publish. `env` holds the inputs and the
    token (the environment the process started with); `rt.env`, the
    environment the check will see, need not."""
    settings, api = _pending(env, rt)
    return run_action(settings, rt, check, api=api, pending_posted=True)


def run_pending(env: Mapping[str, str], rt: Runtime) -> int:
    """`--phase pending`: post `pending`, check the inputs (a bad one: an
    `error` status and BadInput, exit 2). Runs nothing else."""
    _pending(env, rt)
    return 0


def run_compute(env: Mapping[str, str], check: Callable[[list[str]], int] = _default_check,
                bisect: Bisect = _default_bisect) -> int:
    """`--phase compute`: the check (and, on a failure with bisect:
    on-failure, the bisect) into the result folder; the check's exit code.
    Nothing is posted and no runner file is written: this phase runs the
    code under test, and action.yml gives it neither a token nor
    GITHUB_OUTPUT or GITHUB_STEP_SUMMARY. A bad input is BadInput (exit 2);
    a cancel or a crash is InfraError (exit 3)."""
    settings = ActionSettings.from_env(env)
    tokens = sorted(k for k, v in env.items() if is_token_variable(k) and v.strip())
    if tokens:  # names only, never a value
        raise BadInput(f"a GitHub token reached the compute phase ({', '.join(tokens)})",
                       "pass the compute container no token variable (docker-args included); "
                       "the publish phase posts the result")
    if settings.result_dir:
        return 0  # a precomputed result: nothing to compute
    ctx = context_from_env(env, token="")
    result_dir = Path(settings.out).resolve()
    try:
        with cancel_on_signals():
            argv = check_argv(settings, result_dir)
            log.info("running parity-gate %s", " ".join(argv))
            try:
                code = check(argv)
            except Cancelled:
                raise
            except Exception as exc:
                log.error("parity-gate check crashed", exc_info=True)
                raise InfraError(f"check crashed: {type(exc).__name__}: {exc}") from exc
            if result_dir.is_dir():
                atomic_write_text(result_dir / ORIGIN_FILE, ResultOrigin.from_context(ctx).to_json())
            if settings.bisect == "on-failure" and code == 1:
                try:
                    load_outcome(result_dir, settings.fail_on)  # a verdict the schema refuses is not bisected
                except BadInput:
                    pass
                else:
                    bisect_section(settings, result_dir, recording(bisect, result_dir))
    except Cancelled as exc:
        raise InfraError(f"cancelled by {exc}") from None
    return code


def run_publish(env: Mapping[str, str], rt: Runtime, check_exit_code: int | None) -> int:
    """`--phase publish`: the compute phase's result folder published with
    its exit code (from the runner, which saw the compute container exit),
    the bisect section written again from its recorded answer. No check
    runs here. Exit code: the outcome's, as `--phase all` gives."""
    settings, api = _pending(env, rt, post=False)
    if settings.result_dir:
        return run_action(settings, rt, api=api, pending_posted=True)
    if check_exit_code is None:
        raise BadInput("--phase publish: --check-exit-code is missing",
                       "pass the compute phase's exit code, or set INPUT_RESULT_DIR to publish a result")
    result_dir = Path(settings.out).resolve()
    return run_action(settings, rt, lambda argv: check_exit_code, api=api, pending_posted=True,
                      bisect=recorded(result_dir))


def run_action(settings: ActionSettings, rt: Runtime,
               check: Callable[[list[str]], int] = _default_check, *,
               api: GitHubAPI | None = None, pending_posted: bool = False,
               bisect: Bisect = _default_bisect) -> int:
    """The token comes from `settings` alone: the caller has already removed
    it from the environment (`run` does, with `withhold_tokens`)."""
    ctx = context_from_env(rt.env, token=settings.github_token)
    options = PublishOptions(status_context=settings.status_context, comment=settings.comment,
                             check_run=settings.check_run, comment_author=settings.comment_author)
    publisher = Publisher(ctx, api or rt.api(ctx), options, rt.stdout)
    try:
        with cancel_on_signals():
            return _check_and_publish(settings, ctx, publisher, check, pending_posted, bisect)
    except Cancelled as exc:
        # While checking or publishing: an `error`, unless the final status is already up.
        publisher.post_cancelled(f"cancelled ({exc})")
        raise InfraError(f"cancelled by {exc}") from None


def _check_and_publish(settings: ActionSettings, ctx: GitHubContext, publisher: Publisher,
                       check: Callable[[list[str]], int], pending_posted: bool,
                       bisect: Bisect = _default_bisect) -> int:
    if not pending_posted:
        publisher.post_pending()
        try:
            check_runner_files(ctx)
        except BadInput as exc:
            publisher.post_error(exc.what, EXIT_BAD_INPUT)
            raise

    result_dir = Path(settings.result_dir or settings.out).resolve()
    try:
        if settings.result_dir:
            code = None  # precomputed: the verdict says
        else:
            log.info("running parity-gate %s", " ".join(check_argv(settings, result_dir)))
            code = check(check_argv(settings, result_dir))
    except Cancelled:
        raise
    except BaseException as exc:
        log.error("parity-gate check crashed", exc_info=True)
        publisher.post_error(f"check crashed: {type(exc).__name__}")
        raise InfraError(f"check crashed: {type(exc).__name__}: {exc}") from exc

    if result_dir.is_dir():
        # Lets a publish on workflow_run (fork PRs) find the PR and check the sha.
        atomic_write_text(result_dir / ORIGIN_FILE, ResultOrigin.from_context(ctx).to_json())
    invalid: BadInput | None = None
    outcome: Outcome
    if code is None or (code in (0, 1) and os.path.lexists(result_dir / VERDICT_FILE)):
        try:
            outcome = load_outcome(result_dir, settings.fail_on)
        except BadInput as exc:
            outcome = invalid_outcome(exc, result_dir)
            # precomputed: name the input that pointed here
            invalid = exc if code is not None else BadInput(f"INPUT_RESULT_DIR={settings.result_dir}: {exc.what}",
                                                            exc.hint)
    else:
        outcome = error_outcome(code if code in (EXIT_BAD_INPUT, EXIT_INFRA) else EXIT_INFRA,
                                f"parity-gate check exited {code}; see the job log",
                                result_dir if result_dir.is_dir() else None)
    if (settings.bisect == "on-failure" and code == 1 and invalid is None and outcome.verdict is not None
            and not settings.result_dir):
        try:
            section = bisect_section(settings, result_dir, bisect)
            append_bisect(result_dir, section)
            outcome = dataclasses.replace(outcome, extra=section)
        except Exception:  # noqa: BLE001 - the bisect is extra: the check's outcome is published regardless
            log.warning("the bisect section could not be written", exc_info=True)
    publisher.publish(outcome)
    if invalid is not None:
        raise invalid  # after the `error` status, so the check does not hang pending
    return outcome.exit_code


def add_arguments(parser: argparse.ArgumentParser, name: str = "action") -> None:
    parser.add_argument("--phase", choices=PHASES, default="all",
                        help="all (default): pending, check and publish in one process; pending: post "
                             "pending and check the inputs; compute: the check, with no token; publish: post "
                             "the result of a compute phase (action.yml runs the three in separate containers)")
    parser.add_argument("--check-exit-code", type=int, choices=(0, 1, 2, 3), default=None,
                        help="with --phase publish: the compute phase's exit code")
    parser.epilog = ("Takes its inputs from INPUT_* variables (action.yml): suite, golden, out, "
                     "result-dir, comment, status-context, engine-args, fail-on, check-run, comment-author, bisect, "
                     "github-token; and PARITY_GATE_GOLDEN_SHA, the commit the suite and golden came from.")


def run(args: argparse.Namespace, check: Callable[[list[str]], int] = _default_check) -> int:
    phase = getattr(args, "phase", None) or "all"
    started_with = dict(os.environ)
    # Before any engine, thread or child starts: from here on only this
    # process's memory holds the token (`started_with`, then the settings,
    # whose repr hides it), never an environment a child inherits.
    removed = withhold_tokens(os.environ)
    if removed:
        log.info("removed %s from the environment of the check", ", ".join(removed))
    if phase == "compute":
        # The environment as it started: a token that reached this phase is refused, not used.
        return run_compute(started_with, check)
    with requests.Session() as session:
        rt = Runtime.real(session)
        if phase == "pending":
            return run_pending(started_with, rt)
        if phase == "publish":
            return run_publish(started_with, rt, getattr(args, "check_exit_code", None))
        return run_from_env(started_with, rt, check)

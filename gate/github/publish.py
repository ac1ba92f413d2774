"""`parity-gate publish RESULT_DIR`: post a result to GitHub.

Sticky PR comment (found again by a hidden marker and its author, the
token's own identity, on every page; updated in place, one per status
context), commit status on the head sha, a check run with the Markdown
summary where the token may create one, the job summary, step outputs and
annotations. A token that may not write (a fork PR) gets one warning that
explains the two-workflow pattern; the report stays on disk.

A result folder may come from a fork (an artifact, on workflow_run): only
its schema-checked verdict.json is read. The comment and summary are always
rendered here from it, never taken from Markdown files in the folder; a
verdict the schema refuses is published as an `error` status.

A result computed by a workflow a fork controls (`pull_request` from a fork,
or `workflow_run` of one) is published under "<context> (fork, unverified)":
it can say anything, so it never speaks for the required context. Every
comment and summary ends with the commit the result was computed for and the
commit its suite and golden came from.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, TextIO

import requests

from gate.core.errors import EXIT_BAD_INPUT, EXIT_INFRA, BadInput, InfraError
from gate.core.verdict import VERDICT_FILE
from gate.github.api import GitHubAPI
from gate.github.cancel import Cancelled, cancel_on_signals
from gate.github.context import GitHubContext, ResultOrigin, context_from_env
from gate.github.outcome import error_outcome, invalid_outcome, load_outcome
from gate.github.publisher import COMMENT_MODES, Publisher, PublishOptions
from gate.github.retry import RetryPolicy
from gate.github.workflow_commands import check_runner_file

__all__ = ["add_arguments", "run", "Runtime", "publish_command", "verify_origin", "check_runner_files"]



# --- runtime ---------------------------------------------------------------
@dataclass(frozen=True)
class Runtime:
    """Everything publish/action take from the outside world; tests pass their own."""

    env: Mapping[str, str]
    session: requests.Session
    stdout: TextIO
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def real(cls, session: requests.Session) -> "Runtime":
        return cls(env=dict(os.environ), session=session, stdout=sys.stdout)

    def api(self, ctx: GitHubContext) -> GitHubAPI:
        return GitHubAPI(self.session, ctx.api_url, ctx.token, retry=self.retry,
                         sleep=self.sleep, clock=self.clock)

def verify_origin(ctx: GitHubContext, result_dir: Path, api: GitHubAPI) -> GitHubContext:
    """Tie an artifact's github.json to the run that published it. On
    workflow_run the head sha comes from GitHub, not from the artifact; the
    artifact's PR number is trusted only if that PR's head is that sha."""
    origin = ResultOrigin.read(result_dir)
    if origin is None:
        return ctx
    if ctx.event_name != "workflow_run":
        return ctx.with_origin(origin)
    if origin.head_sha and ctx.head_sha and origin.head_sha != ctx.head_sha:
        raise BadInput(f"{result_dir}/github.json: head sha {origin.head_sha} does not match "
                       f"workflow_run.head_sha {ctx.head_sha}", "the artifact belongs to another commit; do not publish it")
    if ctx.pr_number and origin.pr_number and ctx.pr_number != origin.pr_number:
        raise BadInput(f"{result_dir}/github.json: PR #{origin.pr_number} does not match "
                       f"workflow_run's PR #{ctx.pr_number}")
    if ctx.pr_number is None and origin.pr_number is not None and ctx.token and ctx.repository:
        pull = api.pull(ctx.repository, origin.pr_number)
        if (pull.get("head") or {}).get("sha") != ctx.head_sha:
            raise BadInput(f"{result_dir}/github.json: PR #{origin.pr_number} has head "
                           f"{(pull.get('head') or {}).get('sha')}, not workflow_run.head_sha {ctx.head_sha}",
                           "the PR moved on or the artifact is forged; the next gate run publishes")
        return ctx.with_origin(origin)
    # Only where the suite and golden came from: a 40-hex sha, shown in the footer.
    return replace(ctx, golden_sha=ctx.golden_sha or origin.golden_sha)


# --- CLI -------------------------------------------------------------------
def add_publish_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status-context", default="parity-gate",
                        help="commit status context and comment identity (default: parity-gate)")
    parser.add_argument("--comment", choices=COMMENT_MODES, default="always",
                        help="PR comment: always, on-fail (still updates an existing one), never")
    parser.add_argument("--fail-on", choices=("regression", "never"), default=None,
                        help="exit 1 on a regression, or never (default: the verdict's exit_code)")
    parser.add_argument("--target-url", default=None, help="status/check link (default: the workflow run)")
    parser.add_argument("--no-check-run", action="store_true", help="do not create a check run")
    parser.add_argument("--comment-author", default=None, metavar="LOGIN",
                        help="the login the token comments as (default: asked of GitHub: GET /user, else the "
                             "GraphQL viewer, e.g. my-app[bot] for a GitHub App's token)")


def add_arguments(parser: argparse.ArgumentParser, name: str = "publish") -> None:
    parser.add_argument("result_dir", metavar="RESULT_DIR", help="a result dir written by check or compare")
    add_publish_options(parser)
    parser.add_argument("--exit-code", type=int, choices=(EXIT_BAD_INPUT, EXIT_INFRA), default=None,
                        help="publish an error: the check exited with this code and wrote no verdict")
    parser.add_argument("--reason", default="the check did not finish", help="with --exit-code: why")
    parser.add_argument("--sha", default=None, help="commit to post on (default: from the event)")
    parser.add_argument("--pr", type=int, default=None, help="pull request number (default: from the event)")


def options_from_args(args: argparse.Namespace) -> PublishOptions:
    return PublishOptions(status_context=args.status_context, comment=args.comment,
                          check_run=not args.no_check_run, target_url=args.target_url,
                          comment_author=args.comment_author or None)


def check_runner_files(ctx: GitHubContext) -> None:
    """A folder or FIFO as GITHUB_OUTPUT/GITHUB_STEP_SUMMARY is refused before
    anything is posted or written."""
    check_runner_file(ctx.output_path, "GITHUB_OUTPUT")
    check_runner_file(ctx.step_summary_path, "GITHUB_STEP_SUMMARY")


def publish_command(args: argparse.Namespace, rt: Runtime) -> int:
    result_dir = Path(args.result_dir)
    if not result_dir.is_dir():
        raise BadInput(f"{result_dir}: no such result directory")
    ctx = context_from_env(rt.env)
    check_runner_files(ctx)
    if args.sha or args.pr:
        ctx = replace(ctx, head_sha=args.sha or ctx.head_sha, pr_number=args.pr or ctx.pr_number)
    invalid: BadInput | None = None
    if args.exit_code is not None and not (result_dir / VERDICT_FILE).is_file():
        outcome = error_outcome(args.exit_code, args.reason, result_dir)
    else:
        try:
            outcome = load_outcome(result_dir, args.fail_on)
        except BadInput as exc:
            # An `error` status, so a forged or broken result never leaves the check pending.
            invalid, outcome = exc, invalid_outcome(exc, result_dir)
    api = rt.api(ctx)
    publisher: Publisher | None = None
    try:
        with cancel_on_signals():
            ctx = verify_origin(ctx, result_dir, api)
            publisher = Publisher(ctx, api, options_from_args(args), rt.stdout)
            report = publisher.publish(outcome)
    except Cancelled as exc:
        # Not pending for ever: the plan job's (or action's) pending status
        # gets its `error`, unless the final status is already up.
        (publisher or Publisher(ctx, api, options_from_args(args), rt.stdout)).post_cancelled(
            f"cancelled ({exc}) while publishing")
        raise InfraError(f"cancelled by {exc} while publishing") from None
    if invalid is not None:
        raise invalid
    if not report.posted:
        why = "; ".join(report.skipped + report.denied + report.failed) or "nothing to post"
        raise InfraError(f"publish could post nothing to GitHub ({why}); outputs and summary were written",
                         "set GITHUB_TOKEN with statuses and pull-requests write permission")
    return outcome.exit_code


def run(args: argparse.Namespace) -> int:
    with requests.Session() as session:
        return publish_command(args, Runtime.real(session))

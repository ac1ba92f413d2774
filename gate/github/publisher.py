"""What one publish posts for one status context: the commit status, the
sticky PR comment (found again by its hidden marker and its author, the
token's own identity, on every page, and updated in place), a check run with
the Markdown summary, and on the runner the job summary, step outputs and
annotations. Every remote call is best effort: a failure is collected and
warned about once, and a token that may not write (a fork PR) gets one
warning that explains the two-workflow pattern."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, TextIO

from gate.core.errors import EXIT_INFRA, EXIT_REGRESSION
from gate.github.api import ApiError, GitHubAPI, PermissionDenied
from gate.github.cancel import ignoring_cancel_signals
from gate.github.context import GitHubContext, unverified_context
from gate.github.outcome import (
    Outcome,
    comment_body,
    comment_marker,
    error_outcome,
    one_line,
    provenance,
    summary_markdown,
)
from gate.github.retry import QUICK_RETRY
from gate.github.workflow_commands import annotation, append_step_summary, emit_annotations, write_outputs

__all__ = ["PublishOptions", "PublishReport", "Publisher", "check_run_external_id", "COMMENT_MODES",
           "DESCRIPTION_LIMIT"]

log = logging.getLogger(__name__)

CHECK_TEXT_LIMIT = 65535
DESCRIPTION_LIMIT = 140
COMMENT_MODES = ("always", "on-fail", "never")
FINAL_STATES = ("success", "failure", "error")
FORK_HINT = ("this token may not write to the repository, as for a pull request from a fork "
             "(read-only GITHUB_TOKEN) or a token without statuses/pull-requests write permission. "
             "Use the two-workflow pattern: the gate job uploads the result directory as an artifact, "
             "and a workflow on workflow_run (examples/workflows/publish.yml, see docs/github.md) "
             "downloads it and runs 'parity-gate publish'")


@dataclass(frozen=True)
class PublishOptions:
    status_context: str = "parity-gate"
    comment: str = "always"           # always | on-fail | never
    check_run: bool = True
    target_url: str | None = None     # default: the run that computed the result
    annotations: bool = True
    # Who writes the sticky comment. Default: the token's own login, asked
    # of GitHub (GET /user, else the GraphQL viewer: github-actions[bot] for
    # GITHUB_TOKEN, <app-slug>[bot] for a GitHub App's token).
    comment_author: str | None = None


@dataclass(frozen=True)
class PublishReport:
    posted: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

class Publisher:
    """Posts outcomes for one context. Every remote call is best effort:
    failures are collected, warned about once, and never raised."""

    def __init__(self, ctx: GitHubContext, api: GitHubAPI, options: PublishOptions, out: TextIO) -> None:
        self.ctx = ctx
        self.api = api
        self.out = out
        self.footer = provenance(ctx, options.status_context)
        if ctx.unverified:
            # The fork rule, in the one place every post goes through.
            unverified = unverified_context(options.status_context)
            out.write(annotation("notice", f"this result comes from a workflow run of a fork: it is published as "
                                           f"'{unverified}', never as the required '{options.status_context}' "
                                           "(docs/github.md, pull requests from forks)", "parity-gate"))
            options = replace(options, status_context=unverified)
        self.options = options
        self._posted: list[str] = []
        self._denied: list[str] = []
        self._failed: list[str] = []
        self._skipped: list[str] = []
        self._warned_permission = False
        self._skipped_no_token = False
        self._warnings = 0  # annotations this step already holds (GitHub shows 10 a level)
        self._result_dir: Path | None = None
        self.final_state: str | None = None  # the last success/failure/error status GitHub accepted

    @property
    def target_url(self) -> str | None:
        """The status, check run and comment link: the run that computed the
        result (on workflow_run, the gate run, not this publish run)."""
        return self.options.target_url or self.ctx.gate_run_url

    def report(self) -> PublishReport:
        return PublishReport(tuple(self._posted), tuple(self._denied), tuple(self._failed), tuple(self._skipped))

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        self._warnings += 1
        self.out.write(annotation("warning", message, "parity-gate"))
        self.out.flush()

    def _call(self, what: str, fn: Callable[[], Any], *, quiet_denied: bool = False) -> Any:
        if not self.ctx.token:
            if not self._skipped_no_token:
                self._skipped_no_token = True
                # A notice, not a warning: computing with no token and
                # publishing from another job is the recommended split.
                log.info("no GitHub token: nothing is posted to GitHub")
                self.out.write(annotation("notice", "no GitHub token (github-token input or GITHUB_TOKEN): nothing "
                                                    "is posted to GitHub; publish the result from a later step or "
                                                    "job (docs/github.md)", "parity-gate"))
                self.out.flush()
            self._skipped.append(f"{what}: no token")
            return None
        try:
            result = fn()
        except PermissionDenied as exc:
            self._denied.append(what)
            if quiet_denied:
                self._skipped.append(f"{what}: not permitted (HTTP {exc.status})")
                log.info("%s: not permitted for this token (HTTP %s); skipped", what, exc.status)
            elif not self._warned_permission:
                self._warned_permission = True
                self._warn(f"GitHub refused to {what} (HTTP {exc.status}): {FORK_HINT}. "
                           f"The report is on disk{' in ' + str(self._result_dir) if self._result_dir else ''}.")
            return None
        except ApiError as exc:
            self._failed.append(what)
            self._warn(f"could not {what}: {exc.line()}")
            return None
        self._posted.append(what)
        return result

    # --- pieces -----------------------------------------------------------
    def post_status(self, state: str, description: str) -> None:
        if not self.ctx.head_sha or not self.ctx.repository:
            self._skipped.append("post the commit status: no head sha")
            return
        posted = self._call("post the commit status", lambda: self.api.create_status(
            self.ctx.repository, self.ctx.head_sha, state=state, context=self.options.status_context,
            description=one_line(description, DESCRIPTION_LIMIT), target_url=self.target_url))
        if posted is not None and state in FINAL_STATES:
            self.final_state = state

    def post_pending(self) -> PublishReport:
        self.post_status("pending", "parity-gate is running")
        return self.report()

    def post_error(self, reason: str, exit_code: int = EXIT_INFRA) -> PublishReport:
        """The status a crash, timeout or cancel leaves, so a required check never hangs."""
        self.post_status("error", error_outcome(exit_code, reason).headline)
        return self.report()

    def post_cancelled(self, why: str) -> None:
        """On the way out of a cancelled job (SIGTERM, SIGINT): an `error`
        status unless a final one is already up, with two quick tries (the
        runner kills the process seconds later) and the signals that would
        interrupt it ignored meanwhile."""
        if self.final_state is not None:
            log.info("%s: the %s status is already posted; leaving it", why, self.final_state)
            return
        with ignoring_cancel_signals():
            api, self.api = self.api, self.api.with_retry(QUICK_RETRY)
            try:
                self.post_error(f"{why}: the job was cancelled or timed out")
            finally:
                self.api = api

    def _find_comment(self, marker: str) -> dict[str, Any] | None:
        """Our sticky comment: the marker alone is not enough, since anyone
        who can comment can write it; the author must be the token's own."""
        login = self.options.comment_author or self.api.token_login()
        for comment in self.api.issue_comments(self.ctx.repository, self.ctx.pr_number):
            if (comment.get("user") or {}).get("login") == login and marker in (comment.get("body") or ""):
                return comment
        return None

    def upsert_comment(self, outcome: Outcome) -> None:
        mode = self.options.comment
        if mode == "never":
            return
        if not self.ctx.pr_number or not self.ctx.repository:
            self._skipped.append("comment: no pull request")
            return
        context = self.options.status_context
        body = comment_body(outcome, context, self.target_url, self.footer)
        marker = comment_marker(context)

        def update_existing(done: str) -> str | None:
            existing = self._find_comment(marker)
            if existing is None:
                return None
            if existing.get("body") != body:
                self.api.update_comment(self.ctx.repository, existing["id"], body)
            return done

        def create() -> str:
            self.api.create_comment(self.ctx.repository, self.ctx.pr_number, body)
            return "created"

        def upsert() -> str:
            done = update_existing("updated")
            if done is not None:
                return done
            # on-fail: no comment on a clean pass, but an existing one is
            # still updated above, so a stale FAIL never stays up.
            if mode == "on-fail" and outcome.passed:
                return "none"
            # A failed POST may have landed before the error: look again
            # before each retry, so there are never two sticky comments.
            return self.api.create_once("create the pull request comment", create,
                                        lambda: update_existing("created"))

        done = self._call("write the pull request comment", upsert)
        if done == "none":
            self._posted.pop()
            self._skipped.append("comment: passed (on-fail)")

    def create_check_run(self, outcome: Outcome, summary: str) -> None:
        if not self.options.check_run or outcome.state == "pending":
            return
        if not self.ctx.head_sha or not self.ctx.repository:
            return
        conclusion = {"success": "success", "failure": "failure"}.get(outcome.state, "failure")
        payload: dict[str, Any] = {
            "name": f"{self.options.status_context} report",
            "head_sha": self.ctx.head_sha,
            "status": "completed",
            "conclusion": conclusion,
            "output": {"title": one_line(outcome.headline, 200),
                       "summary": summary if len(summary) <= CHECK_TEXT_LIMIT
                       else summary[: CHECK_TEXT_LIMIT - 40] + "\n\n*(truncated)*\n"},
        }
        if self.target_url:
            payload["details_url"] = self.target_url
        # Ours, found again by name, head sha and this id: a retry after a
        # lost answer, or a later run on the same commit, updates it.
        payload["external_id"] = check_run_external_id(self.options.status_context)
        repo, sha = self.ctx.repository, self.ctx.head_sha

        def find() -> dict[str, Any] | None:
            return next((run for run in self.api.check_runs(repo, sha, payload["name"])
                         if run.get("external_id") == payload["external_id"]), None)

        def upsert() -> dict[str, Any]:
            existing = find()
            if existing is not None:
                update = {k: v for k, v in payload.items() if k != "head_sha"}
                return self.api.update_check_run(repo, existing["id"], update)
            return self.api.create_once("create the check run",
                                        lambda: self.api.create_check_run(repo, payload), find)

        # A PAT or a token without checks: write gets 403 here: a note, not the fork warning.
        self._call("create the check run", upsert, quiet_denied=True)

    def write_local(self, outcome: Outcome, summary: str) -> None:
        """Job summary and step outputs: no network, never denied."""
        append_step_summary(self.ctx.step_summary_path, summary,
                            "\n\n*(summary truncated at the 1 MiB step-summary limit)*\n")
        rd = outcome.result_dir
        outputs = {"verdict": (outcome.verdict or {}).get("verdict") or "error",
                   "exit-code": str(outcome.exit_code), "headline": outcome.headline}
        if rd is not None:
            outputs["result-dir"] = str(rd)
            for key, name in (("verdict-path", "verdict.json"), ("report-path", "report.html"),
                              ("comment-path", "comment.md"), ("summary-path", "summary.md")):
                if (rd / name).is_file():
                    outputs[key] = str(rd / name)
        write_outputs(self.ctx.output_path, outputs)

    def write_annotations(self, outcome: Outcome) -> None:
        """Last, after every warning of this step's own: GitHub shows 10 of
        a level per step, and the closing "N more" note must be one of them."""
        if not self.options.annotations:
            return
        items: list[tuple[str, str, str]] = []
        if outcome.verdict is None:
            items.append(("error", "parity-gate", outcome.headline))
        else:
            for check in outcome.verdict.get("checks") or []:
                if check.get("status") == "fail":
                    level = "error" if outcome.exit_code == EXIT_REGRESSION else "warning"
                    items.append((level, f"parity-gate: {check.get('title') or check.get('id')}",
                                  str(check.get("message") or check.get("id"))))
            items += [("warning", "parity-gate", str(w)) for w in outcome.verdict.get("warnings") or []]
        emit_annotations(self.out, items, used={"warning": self._warnings})

    def publish(self, outcome: Outcome) -> PublishReport:
        self._result_dir = outcome.result_dir
        summary = summary_markdown(outcome, self.target_url, self.footer)
        self.write_local(outcome, summary)
        self.post_status(outcome.state, outcome.headline)
        self.upsert_comment(outcome)
        self.create_check_run(outcome, summary)
        self.write_annotations(outcome)
        return self.report()


def check_run_external_id(context: str) -> str:
    """The `external_id` of the check run of a status context: one per
    context and commit, whichever run made it."""
    return "parity-gate:" + hashlib.sha256(context.encode("utf-8")).hexdigest()[:16]

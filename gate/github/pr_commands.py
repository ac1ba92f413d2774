"""`/parity-gate accept|diagnose|bisect` in a pull request comment
(docs/github.md, "Commands in PR comments").

Split like the rest of the gate, so no write token is ever near the engine
(examples/workflows/pr-commands.yml):

- `parity-gate pr-command plan` (a hosted job, with the token) reads the
  `issue_comment` event, acknowledges the command with an 👀 reaction, asks
  GitHub whether the commenter may write to the repository, finds the PR's
  latest gate result (the run the required status links to, whose head sha
  must be the PR's), downloads its artifact, and decides what the GPU job
  runs. A refusal is answered in the sticky comment, never silently.
- the GPU job runs `record`, `diagnose` or `bisect` with no token at all.
- `parity-gate pr-command answer` (a hosted job, with the token) reads what
  the GPU job wrote: for `accept`, commits the new golden's files to the PR
  branch through the contents API (same-repository PRs) or points at the
  artifact (forks); for `diagnose` and `bisect`, says what they found
  (gate/github/pr_answers.py). The answer goes into the sticky comment,
  and a 👍 or 😕 on the command.

Only results the required status context links to are used: on a fork's PR
that status comes from the trusted path (gate-trusted.yml), never from a
workflow the fork controls.
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, TextIO

import requests

from gate.core.errors import EXIT_PASS, BadInput, InfraError
from gate.core.verdict import read_verdict
from gate.github.api import ApiError, GitHubAPI, PermissionDenied
from gate.github.context import ResultOrigin, context_from_env, read_event
from gate.github.outcome import comment_marker, one_line
from gate.github.pr_answers import accepted, bisected, diagnosed
from gate.github.pr_comment import (
    ARTIFACT_LIMIT,
    PLAN_FILE,
    PREFIX,
    REPLY_LIMIT,
    RESULT_ARTIFACT,
    WRITE_ROLES,
    Command,
    CommentEvent,
    Options,
    Plan,
    Refusal,
    code_span,
    comment_event,
    parse_command,
    unpack_artifact,
    usage,
    who,
    with_reply,
)
from gate.github.publish import Runtime, check_runner_files
from gate.github.workflow_commands import annotation, write_outputs
from gate.report.markdown import md_inline
from gate.studies.releases import release_pair

__all__ = ["Desk", "add_arguments", "pr_command", "run"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the desk
class Desk:
    """Answers one command: every remote call goes through `api`, every
    answer into the PR's sticky comment."""

    def __init__(self, api: GitHubAPI, repository: str, server_url: str, options: Options, out: TextIO,
                 run_url: str | None = None) -> None:
        self.api = api
        self.repo = repository
        self.server_url = server_url.rstrip("/")
        self.options = options
        self.out = out
        self.run_url = run_url

    # --- answering -------------------------------------------------------
    def react(self, comment_id: int, content: str) -> None:
        try:
            self.api.add_reaction(self.repo, comment_id, content)
        except ApiError as exc:  # a reaction is a courtesy; the reply says the same
            log.warning("could not react %s to comment %d: %s", content, comment_id, exc.what)

    def reply(self, number: int, text: str) -> None:
        """`text` as the last section of the sticky comment of `number` (the
        one with the context's marker, written by the token's own identity),
        created when there is none."""
        marker = comment_marker(self.options.status_context)
        if len(text) > REPLY_LIMIT:
            text = text[: REPLY_LIMIT - 20] + "\n\n*(cut)*\n"
        if self.run_url:
            text = text.rstrip("\n") + f"\n\n<sub>[command run]({self.run_url})</sub>\n"
        login = self.options.comment_author or self.api.token_login()

        def find() -> dict[str, Any] | None:
            return next((c for c in self.api.issue_comments(self.repo, number)
                         if (c.get("user") or {}).get("login") == login and marker in (c.get("body") or "")), None)

        def update(existing: dict[str, Any]) -> dict[str, Any]:
            return self.api.update_comment(self.repo, existing["id"], with_reply(existing.get("body"), marker, text))

        existing = find()
        if existing is not None:
            update(existing)
            return

        def lookup() -> dict[str, Any] | None:
            found = find()
            return update(found) if found is not None else None

        self.api.create_once("create the pull request comment",
                             lambda: self.api.create_comment(self.repo, number, with_reply(None, marker, text)),
                             lookup)

    def refuse(self, ev_number: int, comment_id: int, command: str, why: str) -> None:
        self.react(comment_id, "confused")
        self.reply(ev_number, f"**`{PREFIX} {md_inline(command, 30).replace('`', '')}`**: not run. {why}")
        self.out.write(annotation("notice", f"{PREFIX} {command}: not run: {one_line(why, 600)}", "parity-gate"))

    def _last_word(self, number: int, comment_id: int, command: str, exc: ApiError) -> None:
        """GitHub failed half way: say so where that still works (the call
        that failed may have been the reply itself)."""
        try:
            self.refuse(number, comment_id, command, f"GitHub failed while it ran: {md_inline(exc.what, 300)}. "
                                                     "Comment again later.")
        except ApiError as again:
            log.warning("could not answer on #%d either: %s", number, again.what)

    # --- plan ------------------------------------------------------------
    def plan(self, ev: CommentEvent, work: Path) -> Plan | None:
        """None when nothing runs (no command, an edit, or a refusal, which
        is answered here); else the plan, with the result artifact unpacked
        into WORK/result."""
        if ev.action != "created":
            log.info("comment %s, not created: commands run from new comments only", ev.action or "(no action)")
            return None
        cmd = parse_command(ev.body)
        if cmd is None:
            log.info("comment %d holds no %s command", ev.comment_id, PREFIX)
            return None
        self.react(ev.comment_id, "eyes")
        shown = " ".join((cmd.name, *cmd.args)).strip() or "(nothing)"
        try:
            return self._plan(ev, cmd, work)
        except Refusal as refusal:
            self.refuse(ev.number, ev.comment_id, shown, refusal.reply)
            return None
        except ApiError as exc:
            self._last_word(ev.number, ev.comment_id, shown, exc)
            raise

    def _plan(self, ev: CommentEvent, cmd: Command, work: Path) -> Plan:
        me = self.options.comment_author or self.api.token_login()
        if ev.author_is_bot or ev.author == me:
            raise Refusal(f"The comment is by {who(ev.author)}, a bot; commands are run for people only.")
        if not ev.on_pull_request:
            raise Refusal(f"#{ev.number} is an issue; commands work in pull request comments only.")
        if not cmd.known:
            what = (f"{code_span(' '.join((cmd.name, *cmd.args)))} is not a command" if cmd.name
                    else "No command was given")
            raise Refusal(f"{what}. The commands (no arguments):\n\n{usage()}")
        try:
            role = self.api.collaborator_role(self.repo, ev.author)
        except ApiError as exc:
            if exc.status != 404:
                raise
            role = "none"
        if role not in WRITE_ROLES:
            raise Refusal(f"{who(ev.author)} has the role `{md_inline(role, 20)}` on this repository; "
                          f"`{PREFIX} {cmd.name}` needs write, maintain or admin (it runs on the GPU runner"
                          f"{' and commits to the branch' if cmd.name == 'accept' else ''}). Ask a maintainer "
                          "to comment it.")
        pull = self.api.pull(self.repo, ev.number)
        head = pull.get("head") or {}
        head_sha, head_ref = head.get("sha"), head.get("ref")
        if not (isinstance(head_sha, str) and re.fullmatch(r"[0-9a-f]{40}", head_sha) and isinstance(head_ref, str)):
            raise InfraError(f"GitHub GET /repos/{self.repo}/pulls/{ev.number}: no head sha or ref in the answer")
        # Fail closed: a head repository GitHub does not name (a deleted fork) is a fork's.
        fork = ((head.get("repo") or {}).get("full_name") if isinstance(head.get("repo"), Mapping) else None) \
            != self.repo
        run_id, run_url = self._failing_run(cmd.name, head_sha)
        result = work / "result"
        self._download(run_id, result)
        try:
            verdict = read_verdict(result)
            origin = ResultOrigin.read(result)
        except BadInput as exc:
            raise Refusal(f"The result of [run {run_id}]({run_url}) cannot be read: "
                          f"{md_inline(exc.what, 300)}. Re-run the gate.") from None
        if origin is None or origin.head_sha != head_sha:
            raise Refusal(f"The result of [run {run_id}]({run_url}) was computed for "
                          f"{(origin.head_sha if origin else None) or 'an unknown commit'}, not for the PR's head "
                          f"{head_sha}. Wait for the gate on the head commit, then comment again.")
        if verdict.get("verdict") == "pass":
            raise Refusal(f"The result of [run {run_id}]({run_url}) passes: nothing to {cmd.name}.")
        good, bad, why = release_pair(verdict)
        if cmd.name == "accept" and bad is None:
            raise Refusal(f"The run names no vLLM release to record on ({md_inline(why, 200)}).")
        if cmd.name == "bisect" and why:
            raise Refusal(f"Nothing to bisect: {md_inline(why, 300)}. `{PREFIX} diagnose` moves the engine args "
                          "back one at a time instead.")
        plan = Plan(cmd.name, self.repo, ev.number, ev.comment_id, ev.author, head_sha, head_ref, fork, run_id,
                    run_url, one_line(str(verdict.get("headline") or "FAIL"), 300), good, bad,
                    self.options.status_context, self.options.golden_path, self.options.suite_path)
        plan.write(work)
        doing = {"accept": f"re-recording the golden on vLLM {bad}",
                 "diagnose": "rerunning the ablations of the failing check",
                 "bisect": f"bisecting vLLM {good} → {bad}"}[cmd.name]
        self.reply(ev.number, f"**`{PREFIX} {cmd.name}`** by {who(ev.author)}: {doing} (the result of "
                              f"[run {run_id}]({run_url}) on {head_sha[:12]}). The answer comes here.")
        return plan

    def _failing_run(self, command: str, head_sha: str) -> tuple[int, str]:
        """The run the required status on the head commit links to, when that
        status says the check failed."""
        context = self.options.status_context
        data = self.api.combined_status(self.repo, head_sha)
        status = next((s for s in (data or {}).get("statuses") or [] if s.get("context") == context), None)
        if status is None:
            raise Refusal(f"There is no `{md_inline(context, 100)}` status on the PR's head {head_sha} yet. "
                          "Wait for the gate, then comment again.")
        state = status.get("state")
        desc = md_inline(str(status.get("description") or ""), 140)
        if state == "pending":
            raise Refusal(f"The gate is still running on {head_sha} ({desc}). Comment again when it has failed.")
        if state == "success":
            raise Refusal(f"The gate passed on {head_sha}: nothing to {command}.")
        if state != "failure":
            raise Refusal(f"The gate ended in `{md_inline(state, 20)}` on {head_sha}, without a verdict ({desc}): "
                          f"nothing to {command}. Fix what the run's log says and re-run it.")
        url = str(status.get("target_url") or "")
        m = re.fullmatch(rf"{re.escape(self.server_url)}/{re.escape(self.repo)}/actions/runs/(\d+)"
                         r"(?:/attempts/\d+)?", url)
        if not m:
            raise Refusal(f"The failing `{md_inline(context, 100)}` status on {head_sha} links to no workflow run "
                          f"of this repository ({md_inline(url or 'no link', 120)}), so its result cannot be found.")
        return int(m[1]), url

    def _download(self, run_id: int, dest: Path) -> None:
        name = self.options.artifact_name
        found = [a for a in self.api.run_artifacts(self.repo, run_id, name) if a.get("name") == name]
        live = [a for a in found if not a.get("expired")]
        if not live:
            gone = "has expired" if found else "does not exist"
            raise Refusal(f"The artifact `{md_inline(name, 60)}` of run {run_id} {gone}. Re-run the gate, then "
                          "comment again.")
        try:
            data = self.api.download_artifact(self.repo, int(live[-1]["id"]), ARTIFACT_LIMIT)
        except ApiError as exc:
            if exc.status == 410:
                raise Refusal(f"The artifact `{md_inline(name, 60)}` of run {run_id} has expired. Re-run the gate, "
                              "then comment again.") from None
            raise
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        unpack_artifact(data, dest)

    # --- answer ----------------------------------------------------------
    def answer(self, plan: Plan, work: Path, exit_code: int, artifact_url: str | None) -> int:
        """Say what the GPU job's run of the command gave; for accept, commit
        the golden first. Returns the exit code: 0 answered, 3 when the
        command itself failed (answered too)."""
        try:
            if plan.command == "accept":
                text = accepted(self.api, plan, work, exit_code, artifact_url, self.run_url)
            elif plan.command == "diagnose":
                text = diagnosed(work, exit_code)
            else:
                text = bisected(plan, work, exit_code)
        except Refusal as refusal:
            self.refuse(plan.pr_number, plan.comment_id, plan.command, refusal.reply)
            return refusal.exit_code
        except ApiError as exc:
            self._last_word(plan.pr_number, plan.comment_id, plan.command, exc)
            raise
        self.react(plan.comment_id, "+1")
        self.reply(plan.pr_number, f"**`{PREFIX} {plan.command}`** by {who(plan.commenter)}: {text}")
        return EXIT_PASS


# ---------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser, name: str = "pr-command") -> None:
    sub = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    plan = sub.add_parser("plan", help="read the issue_comment event, answer refusals, decide what the GPU job runs")
    plan.add_argument("--event", default=None, metavar="PATH", help="the event payload (default: GITHUB_EVENT_PATH)")
    plan.add_argument("--out", required=True, type=Path, help="folder for plan.json and the PR's result")
    plan.add_argument("--suite", default=Options.suite_path, help="the suite's path in the repository")
    plan.add_argument("--golden", default=Options.golden_path, help="the golden's path in the repository")
    plan.add_argument("--artifact-name", default=RESULT_ARTIFACT, help="the gate run's result artifact")
    answer = sub.add_parser("answer", help="commit an accepted golden, and answer in the sticky comment")
    answer.add_argument("--plan", required=True, type=Path, help="the folder 'pr-command plan --out' wrote")
    answer.add_argument("--work", required=True, type=Path,
                        help="what the GPU job wrote: the golden (accept), the result (diagnose), the bisect folder")
    answer.add_argument("--exit-code", required=True, type=int, help="the GPU job's command's exit code")
    answer.add_argument("--artifact-url", default=None, help="accept from a fork: where the new golden is")
    for p in (plan, answer):
        p.add_argument("--status-context", default="parity-gate", help="the required status context")
        p.add_argument("--comment-author", default=None, metavar="LOGIN",
                       help="the login the token comments as (default: asked of GitHub)")


def pr_command(args: argparse.Namespace, rt: Runtime) -> int:
    ctx = context_from_env(rt.env)
    check_runner_files(ctx)
    if not ctx.token:
        raise BadInput("GITHUB_TOKEN is not set: pr-command answers on the pull request",
                       "run it in the hosted job with pull-requests: write (examples/workflows/pr-commands.yml)")
    if not ctx.repository:
        raise BadInput("GITHUB_REPOSITORY is not set", "run it inside a GitHub Actions job")
    api = rt.api(ctx)
    if args.step == "plan":
        options = Options(args.status_context, args.golden, args.suite, args.artifact_name, args.comment_author)
    else:
        plan = Plan.read(args.plan)
        if plan.repository != ctx.repository:
            raise BadInput(f"{args.plan}/{PLAN_FILE}: planned for {plan.repository}, this is {ctx.repository}")
        options = Options(plan.status_context, plan.golden_path, plan.suite_path,
                          comment_author=args.comment_author)
    desk = Desk(api, ctx.repository, ctx.server_url, options, rt.stdout, ctx.run_url)
    try:
        if args.step == "answer":
            return desk.answer(plan, Path(args.work), args.exit_code, args.artifact_url)
        event_path = args.event or rt.env.get("GITHUB_EVENT_PATH")
        ev = comment_event(ctx.event_name or ("issue_comment" if args.event else None), read_event(event_path),
                           event_path or "GITHUB_EVENT_PATH")
        args.out.mkdir(parents=True, exist_ok=True)
        planned = desk.plan(ev, args.out)
    except PermissionDenied as exc:
        raise InfraError(f"{exc.what}", "the job needs pull-requests: write (reactions, the sticky comment) and, "
                                        "for accept, contents: write") from None
    outputs = {"run": "false"}
    if planned is not None:
        outputs = {"run": "true", "command": planned.command, "pr": str(planned.pr_number),
                   "head-sha": planned.head_sha, "head-ref": planned.head_ref, "fork": str(planned.fork).lower(),
                   "vllm": planned.run_release or "", "golden-vllm": planned.golden_release or ""}
    write_outputs(ctx.output_path, outputs)
    return EXIT_PASS


def run(args: argparse.Namespace) -> int:
    with requests.Session() as session:
        return pr_command(args, Runtime.real(session))

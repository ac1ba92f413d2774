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
Publishing problems are warnings: the exit code is the check's."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, MutableMapping, Sequence

import requests

from gate import cli
from gate.core.errors import EXIT_BAD_INPUT, EXIT_INFRA, BadInput, InfraError
from gate.core.fsutil import atomic_write_text
from gate.core.verdict import VERDICT_FILE
from gate.github.api import GitHubAPI
from gate.github.cancel import Cancelled, cancel_on_signals
from gate.github.context import ORIGIN_FILE, GitHubContext, ResultOrigin, context_from_env
from gate.github.outcome import Outcome, error_outcome, invalid_outcome, load_outcome
from gate.github.publish import Runtime, check_runner_files
from gate.github.publisher import COMMENT_MODES, Publisher, PublishOptions
from gate.run.shards import parse_shard

__all__ = ["ActionSettings", "add_arguments", "run", "run_action", "run_from_env", "run_pending", "run_compute",
           "run_publish", "check_argv", "withhold_tokens", "TOKEN_VARIABLES", "PHASES"]

log = logging.getLogger(__name__)

FAIL_ON = ("regression", "never")
WEIGHT_UPDATE_MODES = ("auto", "off")  # check --weight-update
BISECT = ("off", "on-failure")
PHASES = ("all", "pending", "compute", "publish")
# RESULT/bisect/ANSWER: the compute phase's bisect exit code and error line,
# from which the publish phase writes the bisect section again.
BISECT_ANSWER = "action-answer.json"
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")

# Credentials a runner or a workflow may put in the environment that let
# their holder write to GitHub (statuses, comments, caches, artifacts, OIDC).
TOKEN_VARIABLES = ("INPUT_GITHUB_TOKEN", "INPUT_GITHUB-TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "GITHUB_PAT",
                   "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN", "ACTIONS_RUNTIME_TOKEN",
                   "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL")
# ... and any name under these prefixes that says TOKEN (INPUT_*: an input a
# workflow adds). HF_TOKEN and the like stay: the model may need them.
_TOKEN_PREFIXES = ("INPUT_", "GITHUB_", "GH_", "ACTIONS_", "RUNNER_")


def _is_token_variable(name: str) -> bool:
    upper = name.upper()
    return upper in TOKEN_VARIABLES or (upper.startswith(_TOKEN_PREFIXES) and "TOKEN" in upper)


def withhold_tokens(environ: MutableMapping[str, str]) -> list[str]:
    """Remove every GitHub token variable from `environ` (os.environ: also
    from the C environment that child processes inherit). Returns the names
    removed, never their values."""
    names = sorted(k for k in environ if _is_token_variable(k))
    for name in names:
        del environ[name]
    return names


def _input(env: Mapping[str, str], name: str) -> tuple[str, str]:
    """(variable name, value) of an action input. Docker actions keep the
    hyphen (INPUT_GITHUB-TOKEN); action.yml passes INPUT_GITHUB_TOKEN."""
    for key in (f"INPUT_{name.upper()}", f"INPUT_{name.upper().replace('-', '_')}"):
        if key in env:
            return key, env[key].strip()
    return f"INPUT_{name.upper().replace('-', '_')}", ""


def _token(env: Mapping[str, str]) -> str:
    """The github-token input, else GITHUB_TOKEN."""
    return _input(env, "github-token")[1] or env.get("GITHUB_TOKEN", "").strip()


def _status_context(env: Mapping[str, str]) -> tuple[str, str]:
    """(status-context input name, value); BadInput for one GitHub would refuse."""
    key, context = _input(env, "status-context")
    context = context or "parity-gate"
    if len(context) > 255 or "\n" in context:
        raise BadInput(f"{key}: a status context is one line of at most 255 characters")
    return key, context


@dataclass(frozen=True)
class ActionSettings:
    suite: str
    golden: str
    out: str = "parity-gate-result"
    result_dir: str | None = None        # a precomputed result: skip the check
    comment: str = "always"
    status_context: str = "parity-gate"
    engine_args: tuple[str, ...] = ()
    fail_on: str = "regression"
    weight_update: str = "auto"          # check --weight-update: the suite's declared update paths
    check_run: bool = True
    shard: str | None = None             # check --shard I/N (merge the shards' results in a later job)
    strict_paths: bool = False           # check --strict-paths: suite and golden read from the workspace
    comment_author: str | None = None    # default: the token's own login
    bisect: str = "off"                  # on-failure: a failing check bisects golden release -> release under test
    # The github-token input, else GITHUB_TOKEN: read here once, because
    # `run` then removes both from the environment.
    github_token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ActionSettings":
        def get(name: str, default: str = "") -> tuple[str, str]:
            key, value = _input(env, name)
            return key, value or default

        def choice(name: str, allowed: Sequence[str], default: str) -> str:
            key, value = get(name, default)
            if value not in allowed:
                raise BadInput(f"{key}={value!r}: must be one of {', '.join(allowed)}")
            return value

        _, result_dir = get("result-dir")
        suite_key, suite = get("suite")
        golden_key, golden = get("golden")
        if not result_dir:
            for key, value in ((suite_key, suite), (golden_key, golden)):
                if not value:
                    raise BadInput(f"{key} is empty", "set the action's suite and golden inputs")
        engine_key, engine_raw = get("engine-args")
        try:
            engine_args = tuple(shlex.split(engine_raw))
        except ValueError as exc:
            raise BadInput(f"{engine_key}: {exc}") from None
        for arg in engine_args:
            if "=" not in arg or arg.startswith("="):
                raise BadInput(f"{engine_key}: {arg!r} is not KEY=VALUE",
                               "engine-args takes KEY=VALUE pairs, e.g. 'enforce_eager=true max_num_seqs=64'")
        check_key, check_run = get("check-run", "true")
        if check_run.lower() not in _TRUE + _FALSE:
            raise BadInput(f"{check_key}={check_run!r}: must be true or false")
        shard_key, shard = get("shard")
        if shard:
            try:
                parse_shard(shard)
            except BadInput as exc:
                raise BadInput(f"{shard_key}={shard!r}: {exc.what}", exc.hint) from None
        strict_key, strict = get("strict-paths", "false")
        if strict.lower() not in _TRUE + _FALSE:
            raise BadInput(f"{strict_key}={strict!r}: must be true or false")
        _, context = _status_context(env)
        return cls(
            suite=suite, golden=golden, out=get("out", "parity-gate-result")[1],
            result_dir=result_dir or None,
            comment=choice("comment", COMMENT_MODES, "always"),
            status_context=context, engine_args=engine_args,
            fail_on=choice("fail-on", FAIL_ON, "regression"),
            weight_update=choice("weight-update", WEIGHT_UPDATE_MODES, "auto"),
            check_run=check_run.lower() in _TRUE,
            shard=shard or None, strict_paths=strict.lower() in _TRUE,
            comment_author=get("comment-author")[1] or None,
            bisect=choice("bisect", BISECT, "off"),
            github_token=_token(env),
        )


def check_argv(s: ActionSettings, out: Path) -> list[str]:
    argv = ["check", "--suite", s.suite, "--golden", s.golden, "--out", str(out), "--force",
            "--fail-on", s.fail_on]
    for arg in s.engine_args:
        argv += ["--engine-arg", arg]
    if s.shard:
        argv += ["--shard", s.shard]
    if s.strict_paths:
        argv.append("--strict-paths")
    if s.weight_update != "auto":
        argv += ["--weight-update", s.weight_update]
    return argv


def _default_check(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse usage errors exit through SystemExit
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT


def _default_bisect(argv: list[str]) -> tuple[int, str]:
    """`parity-gate bisect ARGV` in this process: (exit code, the error's
    one line, or "" when it ran)."""
    from gate.core.errors import GateError
    from gate.studies import bisect
    try:
        return bisect.run(cli.build_parser("bisect").parse_args(argv)), ""
    except GateError as exc:
        return exc.exit_code, exc.line()
    except SystemExit as exc:
        return EXIT_BAD_INPUT, f"bisect arguments refused (exit {exc.code})"
    except Exception as exc:  # noqa: BLE001 - a bisect never changes the check's outcome
        log.error("the bisect crashed", exc_info=True)
        return EXIT_INFRA, f"the bisect crashed: {type(exc).__name__}: {exc}"


def bisect_section(settings: ActionSettings, result_dir: Path,
                   bisect: Callable[[list[str]], tuple[int, str]] = _default_bisect) -> str:
    """After a failing check (bisect: on-failure): bisect between the golden's
    engine release and the release under test, into RESULT/bisect, and say
    the answer (or why there is none) in a few Markdown lines. Never raises:
    the check's verdict and exit code stay what they were."""
    import json

    from packaging.version import Version

    from gate.studies.releases import release_pair
    try:
        verdict = json.loads((result_dir / VERDICT_FILE).read_text())
    except (OSError, ValueError) as exc:
        return _bisect_md(f"not run: the verdict cannot be read ({type(exc).__name__})")
    # from manifests the PR's code wrote: only a plain PEP 440 version reaches the comment
    good, bad, why = release_pair(verdict)
    if good is None or bad is None:
        return _bisect_md(f"not run: {why}")
    if settings.shard:
        return _bisect_md("not run: this is one shard's check; bisect from the merged result with `parity-gate bisect`")
    if why:
        hint = " (`parity-gate bisect --good-args ... --bad-args ...` names an arg)" if Version(good) == Version(bad) else ""
        return _bisect_md(f"not run: {why}{hint}")
    out = result_dir / "bisect"
    argv = ["bisect", "--suite", settings.suite, "--golden", settings.golden, "--good", good, "--bad", bad,
            "--on", "fail", "--out", str(out), *sum((["--engine-arg", a] for a in settings.engine_args), [])]
    log.info("running parity-gate %s", " ".join(argv))
    code, error = bisect(argv)
    try:
        doc = json.loads((out / "bisect.json").read_text())
    except (OSError, ValueError):
        doc = {}
    if code == 1 and doc.get("first_bad"):
        first = doc["first_bad"]
        notes = doc.get("release_notes")
        unchanged = [p["name"] for p in doc.get("probes", []) if p.get("moved") is False]
        line = f"first drifting release: **{first}**" + (f" ([release notes]({notes}))" if notes else "")
        if unchanged:
            line += f"; {', '.join(unchanged)} unchanged"
        what = [w for p in doc.get("probes", []) if p.get("name") == first for w in p.get("what", [])][:2]
        from gate.report.markdown import md_inline
        tail = f"\n\n{md_inline('; '.join(what), limit=300)}" if what else ""
        return _bisect_md(line + tail + f"\n\nThe bisect's report: `{out.name}/` in the result folder.")
    if code == 0:
        return _bisect_md(f"nothing fails at {bad} when the bisect checks it again (a flaky check?); "
                          f"see `{out.name}/` in the result folder")
    return _bisect_md(f"could not run (exit {code}): {_short(error or 'see the job log')}; the verdict above stands")


def _short(text: str) -> str:
    from gate.report.markdown import md_inline
    return md_inline(text, limit=300)


def _bisect_md(text: str) -> str:
    if not text.startswith("first drifting"):
        text = "bisect " + text
    return f"\n### Release bisect\n\n{text}\n"


def _append_bisect(result_dir: Path, section: str) -> None:
    for name in ("comment.md", "summary.md"):
        path = result_dir / name
        if path.is_file():
            atomic_write_text(path, path.read_text().rstrip("\n") + "\n" + section)


def _pending(env: Mapping[str, str], rt: Runtime, *, post: bool = True) -> tuple[ActionSettings, GitHubAPI]:
    """`pending` first (unless `post` is false), then the inputs parsed, so
    that a bad one ends in an `error` status on the head sha naming it."""
    token = _token(env)
    ctx = context_from_env(rt.env, token=token)  # a broken event payload: no commit to post on
    try:
        _, context = _status_context(env)
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
                bisect: Callable[[list[str]], tuple[int, str]] = _default_bisect) -> int:
    """`--phase compute`: the check (and, on a failure with bisect:
    on-failure, the bisect) into the result folder; the check's exit code.
    Nothing is posted and no runner file is written: this phase runs the
    code under test, and action.yml gives it neither a token nor
    GITHUB_OUTPUT or GITHUB_STEP_SUMMARY. A bad input is BadInput (exit 2);
    a cancel or a crash is InfraError (exit 3)."""
    settings = ActionSettings.from_env(env)
    tokens = sorted(k for k, v in env.items() if _is_token_variable(k) and v.strip())
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
                    bisect_section(settings, result_dir, _recording(bisect, result_dir))
    except Cancelled as exc:
        raise InfraError(f"cancelled by {exc}") from None
    return code


def _recording(bisect: Callable[[list[str]], tuple[int, str]],
               result_dir: Path) -> Callable[[list[str]], tuple[int, str]]:
    """The bisect, its answer kept in RESULT/bisect for the publish phase."""
    def run_and_record(argv: list[str]) -> tuple[int, str]:
        code, error = bisect(argv)
        out = result_dir / "bisect"
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / BISECT_ANSWER, json.dumps({"exit_code": code, "error": error}) + "\n")
        return code, error
    return run_and_record


def _recorded(result_dir: Path) -> Callable[[list[str]], tuple[int, str]]:
    """The compute phase's bisect answer, read back. The result folder is
    the compute container's: only an int and one line are taken from it,
    and the section is written here, as `bisect_section` writes it."""
    def answer(argv: list[str]) -> tuple[int, str]:
        try:
            doc = json.loads((result_dir / "bisect" / BISECT_ANSWER).read_text())
            code, error = doc["exit_code"], doc["error"]
        except (OSError, ValueError, KeyError, TypeError):
            return EXIT_INFRA, "the compute phase left no bisect answer"
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(error, str):
            return EXIT_INFRA, "the compute phase's bisect answer is malformed"
        return code, error
    return answer


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
                      bisect=_recorded(result_dir))


def run_action(settings: ActionSettings, rt: Runtime,
               check: Callable[[list[str]], int] = _default_check, *,
               api: GitHubAPI | None = None, pending_posted: bool = False,
               bisect: Callable[[list[str]], tuple[int, str]] = _default_bisect) -> int:
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
                       bisect: Callable[[list[str]], tuple[int, str]] = _default_bisect) -> int:
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
            _append_bisect(result_dir, section)
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

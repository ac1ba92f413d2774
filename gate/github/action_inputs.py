"""The action's inputs (action.yml's INPUT_* variables), parsed once into
a frozen `ActionSettings` that names the bad input when a value is wrong and
hides the token from its repr; the `check` command line they make; and the
GitHub token variables, withheld from every process that runs the code under
test (docs/github.md, "The write token and the code under test")."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, MutableMapping, Sequence

from gate.core.errors import BadInput
from gate.github.publisher import COMMENT_MODES
from gate.run.shards import parse_shard

__all__ = ["ActionSettings", "check_argv", "withhold_tokens", "is_token_variable", "input_token",
           "input_status_context", "TOKEN_VARIABLES", "FAIL_ON", "WEIGHT_UPDATE_MODES", "BISECT"]

FAIL_ON = ("regression", "never")
WEIGHT_UPDATE_MODES = ("auto", "off")  # check --weight-update
BISECT = ("off", "on-failure")
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


def is_token_variable(name: str) -> bool:
    upper = name.upper()
    return upper in TOKEN_VARIABLES or (upper.startswith(_TOKEN_PREFIXES) and "TOKEN" in upper)


def withhold_tokens(environ: MutableMapping[str, str]) -> list[str]:
    """Remove every GitHub token variable from `environ` (os.environ: also
    from the C environment that child processes inherit). Returns the names
    removed, never their values."""
    names = sorted(k for k in environ if is_token_variable(k))
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


def input_token(env: Mapping[str, str]) -> str:
    """The github-token input, else GITHUB_TOKEN."""
    return _input(env, "github-token")[1] or env.get("GITHUB_TOKEN", "").strip()


def input_status_context(env: Mapping[str, str]) -> tuple[str, str]:
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
        _, context = input_status_context(env)
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
            github_token=input_token(env),
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

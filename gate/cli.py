"""The `parity-gate` command. The only place that turns typed errors into one
line on stderr plus an exit code (docs/errors.md); everything below raises.
What `--help` says is ABOUT, EXAMPLES and EXIT_CODES below, not this."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Callable, Sequence

from gate import __version__
from gate.core.errors import EXIT_BAD_INPUT, EXIT_INFRA, GateError

# subcommand -> module. Each module exposes `add_arguments(parser)` and
# `run(args) -> int`; importing lazily keeps `--help` and the pure commands
# free of vLLM and torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "record": ("gate.commands", "run the suite on vLLM and write golden traces"),
    "check": ("gate.commands", "run the vLLM under test and compare against a golden"),
    "compare": ("gate.commands", "compare two trace sets offline (no engine)"),
    "suite": ("gate.run.lint", "'suite lint SUITE': which engine knobs the suite can exercise, and why not (no engine)"),
    "merge": ("gate.commands", "merge the results of 'check --shard I/N' into one verdict and report"),
    "report": ("gate.report.render", "re-render comment.md, report.html and summary.md from a result dir"),
    "publish": ("gate.github.publish", "post a result to GitHub: sticky comment, commit status, outputs"),
    "pin": ("gate.github.pins", "the vLLM release the project pins (requirements, pyproject, uv.lock, Dockerfile)"),
    "action": ("gate.action", "container entrypoint: check, then publish, from the action's inputs"),
    "pr-command": ("gate.github.pr_commands", "'/parity-gate accept|diagnose|bisect' in a PR comment: plan, then answer"),
    "calibrate": ("gate.studies.calibrate", "measure the noise floor and write suggested thresholds"),
    "diagnose": ("gate.studies.diagnose", "rerun ablations on a failing result and name the likely cause"),
    "determinism": ("gate.studies.determinism", "same requests twice, alone vs in a batch: bitwise equal?"),
    "weight-update": ("gate.studies.weight_update", "update weights in place and compare with a fresh engine"),
    "hf-score": ("gate.run.hf_engine", "score rollouts with transformers in float32 (trainer-side reference)"),
    "tiny-model": ("gate.run.tinymodel", "build the small random-weight test/demo model"),
    "bisect": ("gate.studies.bisect", "name the first engine release (or engine arg) that moves the verdict"),
}

ABOUT = """\
Gate a vLLM upgrade (or any change to the inference stack) on the logprobs an
RL trainer uses. 'record' runs a pinned suite of prompts and sampling configs
on vLLM and stores golden traces: token ids, sampled-token logprobs and
teacher-forced scores. 'check' runs the vLLM under test on the same suite,
replaying the golden's batch plan, compares token by token, names what moved
and by how much, writes a verdict and reports, and exits 0 (pass) or 1
(regression). 'publish' posts the result to a pull request."""

# One runnable example per subcommand, shown in `parity-gate --help` and in
# each subcommand's own --help.
EXAMPLES: dict[str, str] = {
    "record": "parity-gate record --suite suite.yaml --out golden",
    "check": "parity-gate check --suite suite.yaml --golden golden --out result",
    "compare": "parity-gate compare golden trainer-dump --out result",
    "suite": "parity-gate suite lint suite.yaml",
    "merge": "parity-gate merge result-1 result-2 --suite suite.yaml --golden golden --out result",
    "report": "parity-gate report result",
    "publish": "parity-gate publish result --comment on-fail",
    "pin": "parity-gate pin --base origin/main >> \"$GITHUB_OUTPUT\"",
    "action": "parity-gate action   (inside the GitHub Action; reads INPUT_* variables)",
    "pr-command": "parity-gate pr-command plan --out command   (in an issue_comment workflow)",
    "calibrate": "parity-gate calibrate --suite suite.yaml --out policy.yaml",
    "diagnose": "parity-gate diagnose --suite suite.yaml --golden golden --result result",
    "determinism": "parity-gate determinism --suite suite.yaml --out determinism",
    "weight-update": "parity-gate weight-update --suite suite.yaml --from new-weights --out update",
    "hf-score": "parity-gate hf-score --rollouts golden --model model --out trainer-dump",
    "tiny-model": "parity-gate tiny-model --out tiny-model",
    "bisect": "parity-gate bisect --suite suite.yaml --good 0.30.0 --bad 0.32.0 --out bisect",
}

EXIT_CODES = """\
exit codes:
  0  pass
  1  regression found (suite lint: a knob the suite cannot exercise)
  2  bad input or usage, found before anything runs
  3  infrastructure failure (engine, GitHub), after saving what can be saved"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        sys.stderr.write(f"parity-gate: error: {_one_line(message)} (hint: run '{self.prog} --help')\n")
        sys.exit(EXIT_BAD_INPUT)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Only the chosen command's module is imported and asked for its options."""
    examples = "\n".join(f"  {EXAMPLES[name]}" for name in COMMANDS)
    parser = _Parser(prog="parity-gate", description=ABOUT, formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=f"examples:\n{examples}\n\n{EXIT_CODES}\n\ndocs: README.md and docs/ in the project")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--version", action="version", version=f"parity-gate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == command:
            _module(module).add_arguments(p, name)
    return parser


def _module(name: str):
    return importlib.import_module(name)


def _configure_logging(verbose: bool) -> None:
    """The gate's own warnings go to stderr. Third-party loggers (vLLM logs
    at import, before it configures itself) stay quiet unless -v."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("parity-gate: %(message)s"))
    if verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        return
    gate_log = logging.getLogger("gate")
    gate_log.setLevel(logging.WARNING)
    gate_log.addHandler(handler)
    gate_log.propagate = False
    logging.getLogger().addHandler(logging.NullHandler())


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so every `finally` runs."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


def _one_line(text: str) -> str:
    """The message as one printable line: control characters, line and
    paragraph separators and lone surrogates (a newline in a path, say) are
    written as escapes, like repr() writes them; everything else, non-ASCII
    text included, stays as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    _configure_logging(args.verbose)
    run: Callable[[argparse.Namespace], int] = _module(COMMANDS[args.command][0]).run
    # A runner's cancel sends SIGTERM: unwind like Ctrl-C, so staged folders
    # are removed (or, after an engine run, its traces kept) on the way out.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except GateError as exc:
        sys.stderr.write(f"parity-gate: {exc.kind}: {_one_line(exc.line())}\n")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        # record/check add how much engine work is saved for a resume
        saved = getattr(exc, "resume", None)
        sys.stderr.write(f"parity-gate: interrupted{' (SIGTERM)' if isinstance(exc, _Terminated) else ''}"
                         f"{'; ' + _one_line(saved) if saved else ''}\n")
        return EXIT_INFRA
    except Exception as exc:  # noqa: BLE001 - a bug must still end in one line and a documented code
        if args.verbose:
            raise
        sys.stderr.write(f"parity-gate: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                         "(hint: re-run with -v for the traceback and report it)\n")
        return EXIT_INFRA
    finally:
        signal.signal(signal.SIGTERM, previous)

"""Typed errors. The library raises these; only the CLI turns them into one
line plus a hint and an exit code (see docs/errors.md)."""
from __future__ import annotations

import shlex
from typing import Any

__all__ = ["GateError", "BadInput", "StaleGolden", "InfraError", "EngineLimit", "EXIT_PASS", "EXIT_REGRESSION",
           "EXIT_BAD_INPUT", "EXIT_INFRA", "command_line"]

EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_INFRA = 3


class GateError(Exception):
    """Base: `what` is one line (what, where); `hint` says how to fix it."""

    exit_code = EXIT_INFRA
    kind = "error"
    # Whether running the same command again can get further (a killed run,
    # a lost machine): only then does the CLI offer to resume.
    resumable = True

    def __init__(self, what: str, hint: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.hint = hint

    def line(self) -> str:
        return f"{self.what} (hint: {self.hint})" if self.hint else self.what


class BadInput(GateError):
    """Bad input or usage, found before anything runs: exit 2."""

    exit_code = EXIT_BAD_INPUT
    kind = "bad input"


class StaleGolden(BadInput):
    """The golden was made from another model or workload: exit 2."""

    kind = "stale golden"


class InfraError(GateError):
    """Engine, filesystem or GitHub failure: exit 3 (after saving what can be saved)."""

    exit_code = EXIT_INFRA
    kind = "infrastructure failure"


class EngineLimit(InfraError):
    """A limit of this vLLM build that the run met while the engine ran (one
    that could not be known before it started): exit 3. It is deterministic,
    so the same command meets it again; the hint names the setting to change."""

    kind = "engine limitation"
    resumable = False


def command_line(*parts: Any) -> str:
    """`parity-gate PART ...`, shell-quoted, for the commands hints name
    (empty and None parts dropped)."""
    return "parity-gate " + " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")

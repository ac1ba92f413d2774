from __future__ import annotations

# --- parity-gate report (issue 3): begin ----------------------------------
# A source checkout that is not pip-installed has no `gate.templates` package
# (pyproject maps top-level templates/ to it only when building). Map it the
# same way here so tests render from a plain checkout; an installed or
# editable install is used as is, and tests/unit/test_report_wheel.py checks
# the real wheel.
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest


def _map_templates_package() -> None:
    try:
        importlib.import_module("gate.templates")
        return
    except ModuleNotFoundError:
        pass
    root = Path(__file__).resolve().parent.parent
    spec = importlib.machinery.PathFinder.find_spec("templates", [str(root)])
    if spec is not None:
        sys.modules["gate.templates"] = importlib.util.module_from_spec(spec)


_map_templates_package()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-snapshots", action="store_true", default=False,
                     help="rewrite tests/snapshots/* from the current output (also: PARITY_GATE_UPDATE_SNAPSHOTS=1)")
# --- parity-gate report (issue 3): end ------------------------------------

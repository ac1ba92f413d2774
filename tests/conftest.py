from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-snapshots", action="store_true", default=False,
                     help="rewrite tests/snapshots/* from the current output (also: PARITY_GATE_UPDATE_SNAPSHOTS=1)")

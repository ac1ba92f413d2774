from __future__ import annotations

import pytest
import requests

from tests.fake_github import FakeGitHub


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-snapshots", action="store_true", default=False,
                     help="rewrite tests/snapshots/* from the current output (also: PARITY_GATE_UPDATE_SNAPSHOTS=1)")


@pytest.fixture
def gh(request):
    """The fake GitHub REST server on loopback, accepting the test module's TOKEN."""
    with FakeGitHub(token=request.module.TOKEN) as fake:
        yield fake


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s

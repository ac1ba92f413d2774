"""The pure parts of `parity-gate bisect`: search, release order, predicates (no engine)."""
from __future__ import annotations

import pytest

from gate.studies.bisect import _search
from gate.studies.bisect_predicate import Predicate
from gate.studies.releases import order_releases


@pytest.mark.parametrize("marks,expected", [
    ("GGGB", 3), ("GBBB", 1), ("GGBB", 2), ("GB", 1), ("GSSB", 3), ("GSBB", 2), ("GBSB", 1)])
def test_search_finds_the_first_moved_and_skips(marks, expected):
    probed = []

    def probe(i):
        probed.append(i)
        return {"G": False, "B": True, "S": None}[marks[i]]
    first, last_good = _search(list(marks), probe)
    assert first == expected
    assert marks[last_good] == "G" or all(marks[j] == "S" for j in range(last_good + 1, first))
    assert len(probed) == len(set(probed))


def test_order_is_pep440_and_drops_prereleases():
    assert order_releases(["0.10.0", "0.9.1", "0.10.0rc1", "0.2.0"], pre=False) == ["0.2.0", "0.9.1", "0.10.0"]
    assert order_releases(["0.10.0", "0.10.0rc1"], pre=True) == ["0.10.0rc1", "0.10.0"]


def test_predicates_read_the_verdict():
    verdict = {"verdict": "pass", "checks": [], "environment_diff": [],
               "measures": {"overall": {"sampler": {"max_abs_diff": 2e-6, "bitwise_equal_fraction": 0.5},
                                        "free_run": {"stream_changed": 0}}}}
    assert Predicate("fail").judge(verdict, False)[:2] == ("changed", False)
    assert Predicate("any-change").judge(verdict, False)[:2] == ("changed", True)
    assert Predicate("sampler.max_abs_diff>1e-6").judge(verdict, False)[1] is True
    assert Predicate("sampler.max_abs_diff>1e-5").judge(verdict, False)[1] is False
    assert Predicate("forced.max_abs_diff>0").judge(verdict, False)[1] is False  # absent: not moved

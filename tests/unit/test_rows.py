"""The TypedDicts of core/rows name exactly the keys the code writes: a key
added to a summary without its type (or the other way) fails here."""
from __future__ import annotations

import numpy as np

from gate.core.channel import Channel, Tolerance
from gate.core.rows import ChannelSummary, Excluded, GroupSummary, Tolerances


def _channel() -> Channel:
    ch = Channel(Tolerance(1e-4))
    ch.add(np.array([-0.5, -1.0, -2.0]), np.array([-0.5, -1.1, -2.0]), np.arange(3),
           {"config": "greedy", "prompt_id": "p0", "sample": 0}, [7, 8, 9], None)
    return ch


def test_a_channel_summary_has_exactly_the_typed_keys():
    s = _channel().summary()
    assert set(s) == set(ChannelSummary.__annotations__)
    assert set(s["excluded"]) == set(Excluded.__annotations__)
    assert set(s["tolerance"]) == set(Tolerances.__annotations__)
    assert s["tokens"] == 3 and s["mismatched"] == 1


def test_a_group_summary_has_the_typed_keys():
    from gate.core.compare import _Group

    g = _Group(Tolerance(1e-4))
    s = g.summary()
    assert set(s) == GroupSummary.__required_keys__
    assert s["free_run"] is None  # no free run yet
    g.params = {"temperature": 0.0}
    assert set(g.summary()) == GroupSummary.__required_keys__ | GroupSummary.__optional_keys__


def test_a_check_row_is_a_check_result_as_a_dict():
    # verdict.json's check rows are dataclasses.asdict(CheckResult): the two declarations name the same keys
    import dataclasses

    from gate.core.checks import CheckResult
    from gate.core.rows import CheckRow

    assert [f.name for f in dataclasses.fields(CheckResult)] == list(CheckRow.__annotations__)

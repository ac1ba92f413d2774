"""Shards: the split by prompt id, the plan restricted to a shard, and every
refusal of a merge (gate/run/shards.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gate.core.errors import BadInput
from gate.core.trace import Manifest, Record, TraceWriter
from gate.run.replay import plan
from gate.run.shards import merged_records, parse_shard, read_shards, shard_calls, shard_info, units

SAMPLING = {"greedy": {"n": 1, "seed": 0}, "hot": {"n": 2, "seed": 7}}
IDS = [f"p{i:02d}" for i in range(11)]


@pytest.mark.parametrize("text", ["", "1", "0/2", "3/2", "a/b", "1/0", "-1/2", "1/2/3"])
def test_parse_shard__refuses_what_is_not_i_of_n(text):
    with pytest.raises(BadInput, match="is not I/N with 1 <= I <= N"):
        parse_shard(text)


def test_parse_shard__reads_i_of_n():
    assert parse_shard("2/4") == (2, 4) and parse_shard("1/1") == (1, 1)


def test_units__a_free_call_with_the_scoring_calls_of_the_same_requests():
    calls = plan({pid: [1] for pid in IDS[:4]}, SAMPLING, ["greedy", "hot"], call_size=2)
    # free: greedy 2 calls, hot 4 calls; score: the same again
    assert units(calls) == [[0, 6], [1, 7], [2, 8], [3, 9], [4, 10], [5, 11]]
    own = [*calls, *({"kind": "own", "config": c["config"], "requests": c["requests"]} for c in calls[:6])]
    assert units(own) == [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 16], [5, 11, 17]]
    # calls that share any request are one unit, whatever their order
    odd = [{"kind": "free", "config": "g", "requests": [["g", "a", 0], ["g", "b", 0]]},
           {"kind": "score", "config": "g", "requests": [["g", "b", 0]]},
           {"kind": "score", "config": "g", "requests": [["g", "c", 0]]},
           {"kind": "free", "config": "g", "requests": [["g", "c", 0]]},
           {"kind": "score", "config": "g", "requests": [["g", "a", 0]]}]
    assert units(odd) == [[0, 1, 4], [2, 3]]


def test_shard_calls__whole_calls_dealt_round_robin_disjoint_and_covering():
    calls = plan({pid: [1] for pid in IDS[:5]}, SAMPLING, ["greedy", "hot"], call_size=4)
    parts = [shard_calls(calls, (i, 3), "plan") for i in (1, 2, 3)]
    assert sorted(id(c) for p in parts for c in p) == sorted(id(c) for c in calls)  # each call exactly once
    for p in parts:  # whole calls, in plan order
        assert [calls.index(c) for c in p] == sorted(calls.index(c) for c in p)
    keys = [tuple(k) for p in parts for c in p if c["kind"] == "free" for k in c["requests"]]
    assert len(keys) == len(set(keys)) == 5 + 10
    assert shard_calls(calls, None, "plan") is calls


def test_shard_calls__refuses_more_shards_than_units():
    calls = plan({pid: [1] for pid in IDS[:3]}, SAMPLING, ["greedy", "hot"])  # one call per config and kind
    assert len(shard_calls(calls, (2, 2), "plan")) == 2
    with pytest.raises(BadInput, match=r"--shard 1/3: golden's plan holds 2 independent calls \(a free-run call "
                                       r"and its scoring calls\), fewer than 3 shards"):
        shard_calls(calls, (1, 3), "golden's plan")


def test_plan__call_size_splits_each_config_in_order():
    calls = plan({pid: [1] for pid in IDS[:5]}, SAMPLING, ["hot", "greedy"], call_size=4)
    assert [(c["kind"], c["config"], len(c["requests"])) for c in calls] == [
        ("free", "hot", 4), ("free", "hot", 4), ("free", "hot", 2), ("free", "greedy", 4), ("free", "greedy", 1),
        ("score", "hot", 4), ("score", "hot", 4), ("score", "hot", 2), ("score", "greedy", 4), ("score", "greedy", 1)]
    whole = plan({pid: [1] for pid in IDS[:5]}, SAMPLING, ["hot", "greedy"])
    assert [len(c["requests"]) for c in whole] == [10, 5, 10, 5]  # no call size: one call per config and kind
    assert [k for c in calls for k in c["requests"]] == [k for c in whole for k in c["requests"]]


def _shard(folder: Path, index: int, count: int, prompts: list[str], kind: str = "obtained",
           golden: str = "g" * 64, suite: str = "s" * 64, vllm: str = "0.32.0") -> Path:
    man = Manifest(kind=kind, environment={"vllm_version": vllm}, suite={"sampling": {}, "workload_sha256": "w"},
                   batch_plan={"calls": [{"kind": "free", "config": "greedy", "requests": [["greedy", p, 0]
                                                                                          for p in prompts]}]},
                   extra={"shard": shard_info((index, count), golden_sha256=golden, suite_sha256=suite)})
    with TraceWriter(folder, man) as w:
        for p in prompts:
            w.write(Record(config="greedy", prompt_id=p, sample=0, prompt_token_ids=[1], completion_token_ids=[2]))
    return folder


EXPECT = {"golden_sha256": "g" * 64, "suite_sha256": "s" * 64}


def test_read_shards__orders_by_index_and_merged_records_are_sorted(tmp_path):
    b = _shard(tmp_path / "b", 2, 2, ["p1", "p3"])
    a = _shard(tmp_path / "a", 1, 2, ["p0", "p2"])
    shards = read_shards([b, a], EXPECT, "obtained")
    assert [s.manifest.extra["shard"]["index"] for s in shards] == [1, 2]
    assert [r.prompt_id for r in merged_records(shards)] == ["p0", "p1", "p2", "p3"]


@pytest.mark.parametrize("case, message", [
    ("count", r"shards of different shard counts: .* is 1/2, .* is 2/3"),
    ("twice", r"shard 1/2 given twice"),
    ("missing", r"shard 2/2 missing \(1 of 2 given\)"),
    ("golden", r"\(shard 2/2\) was run against another golden than this merge's \(shard: hhhhhhhhhhhh, --golden: gggggggggggg\)"),
    ("suite", r"\(shard 2/2\) was run against another suite"),
    ("vllm", r"shards 1/2 \(.*\) and 2/2 \(.*\) differ in environment.vllm_version: '0.32.0' vs '0.33.0'"),
    ("kind", r"not a shard of a check"),
    ("overlap", r"record \('greedy', 'p0', 0\) appears in two shards \(.*a and .*b\)"),
])
def test_read_shards__refuses(tmp_path, case, message):
    a = _shard(tmp_path / "a", 1, 2, ["p0"])
    second = {
        "count": lambda: _shard(tmp_path / "b", 2, 3, ["p1"]),
        "twice": lambda: _shard(tmp_path / "b", 1, 2, ["p1"]),
        "missing": None,
        "golden": lambda: _shard(tmp_path / "b", 2, 2, ["p1"], golden="h" * 64),
        "suite": lambda: _shard(tmp_path / "b", 2, 2, ["p1"], suite="t" * 64),
        "vllm": lambda: _shard(tmp_path / "b", 2, 2, ["p1"], vllm="0.33.0"),
        "kind": lambda: _shard(tmp_path / "b", 2, 2, ["p1"], kind="golden"),
        "overlap": lambda: _shard(tmp_path / "b", 2, 2, ["p0"]),
    }[case]
    results = [a] if second is None else [a, second()]
    with pytest.raises(BadInput, match=message):
        list(merged_records(read_shards(results, EXPECT, "obtained")))

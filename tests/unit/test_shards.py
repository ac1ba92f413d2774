"""Shards: the split by prompt id, the plan restricted to a shard, and every
refusal of a merge (gate/shards.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gate.errors import BadInput
from gate.replay import plan
from gate.shards import merged_records, parse_shard, read_shards, restrict, shard_info, shard_prompts
from gate.trace import Manifest, Record, TraceWriter

SAMPLING = {"greedy": {"n": 1, "seed": 0}, "hot": {"n": 2, "seed": 7}}
IDS = [f"p{i:02d}" for i in range(11)]


@pytest.mark.parametrize("text", ["", "1", "0/2", "3/2", "a/b", "1/0", "-1/2", "1/2/3"])
def test_parse_shard__refuses_what_is_not_i_of_n(text):
    with pytest.raises(BadInput, match="is not I/N with 1 <= I <= N"):
        parse_shard(text)


def test_parse_shard__reads_i_of_n():
    assert parse_shard("2/4") == (2, 4) and parse_shard("1/1") == (1, 1)


def test_shard_prompts__disjoint_cover_balanced_and_independent_of_order():
    parts = [shard_prompts(IDS, (i, 3)) for i in (1, 2, 3)]
    assert set().union(*parts) == set(IDS) and sum(map(len, parts)) == len(IDS)
    assert sorted(map(len, parts)) == [3, 4, 4]
    assert shard_prompts(list(reversed(IDS)), (2, 3)) == parts[1]
    assert shard_prompts(IDS, None) == set(IDS)


def test_restrict__keeps_call_order_and_drops_empty_calls():
    calls = plan({pid: [1] for pid in IDS[:4]}, SAMPLING, ["greedy", "hot"], call_size=2)
    mine = shard_prompts(IDS[:4], (2, 2))  # p01, p03
    sub = restrict(calls, mine)
    assert all(k[1] in mine for c in sub for k in c["requests"])
    assert [(c["kind"], c["config"], len(c["requests"])) for c in sub] == [
        ("free", "greedy", 1), ("free", "greedy", 1), ("free", "hot", 2), ("free", "hot", 2),
        ("score", "greedy", 1), ("score", "greedy", 1), ("score", "hot", 2), ("score", "hot", 2)]


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
    ("golden", r"\(shard 2/2\) was run against another golden than this merge's \(hhhhhhhhhhhh vs gggggggggggg\)"),
    ("suite", r"\(shard 2/2\) was run against another suite"),
    ("vllm", r"shards 1/2 \(.*\) and 2/2 \(.*\) differ in environment.vllm_version: '0.32.0' vs '0.33.0'"),
    ("kind", r"not a shard of a check"),
    ("overlap", r"record \('greedy', 'p0', 0\) appears in two shards"),
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

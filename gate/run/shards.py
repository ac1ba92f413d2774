"""Shards: one suite split across runners (`--shard I/N`), and the merge of
their results into the one result an unsharded run would have written.

The batch plan (gate/replay.plan: calls of at most --call-size requests in
sorted prompt-id order) is cut into units, a free-run call with the scoring
calls of the same requests, and the units are dealt round robin. A shard
runs whole calls only, the very batches of the plan: on a GPU, replaying a
call with fewer requests changes the numerics (bf16 decode logprobs moved by
up to 0.03 on an H200 when shards replayed their prompts' slice of each
call), so a prompt-level split would false-alarm. Its trace header says
which shard it is and of what (`extra.shard`): the golden's and the suite's
hashes. `merge` refuses shards of different suites, goldens,
engines or shard counts, a repeated shard and a missing one, then joins the
shards' records in key order under one header, whose batch plan is the
shards' calls in shard order."""
from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any, Iterator, Mapping

from gate.core.errors import BadInput
from gate.core.rows import BatchCall
from gate.core.trace import Manifest, Record, TraceReader, read_trace, trace_path

__all__ = ["parse_shard", "units", "shard_calls", "shard_info", "read_shards", "merged_manifest",
           "merged_records", "MERGE_KEYS"]

# What every shard of one run must share (environment keys, then manifest parts).
MERGE_KEYS = ("vllm_version", "vllm_commit", "torch_version", "cuda_version", "device_name", "env")


def parse_shard(text: str) -> tuple[int, int]:
    """--shard I/N: shard I (1-based) of N."""
    i, sep, n = str(text).partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit() or not 1 <= int(i) <= int(n):
        raise BadInput(f"--shard {text!r} is not I/N with 1 <= I <= N", "e.g. --shard 2/4 runs the second of 4 shards")
    return int(i), int(n)


def units(calls: list[BatchCall]) -> list[list[int]]:
    """The plan's calls grouped into units that share no request: a free-run
    call with the scoring calls of the same requests. In plan order."""
    parent = list(range(len(calls)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple, int] = {}
    for i, call in enumerate(calls):
        for k in call["requests"]:
            j = owner.setdefault(tuple(k), i)
            if root(j) != root(i):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(calls)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())


def shard_calls(calls: list[BatchCall], shard: tuple[int, int] | None, where: str) -> list[BatchCall]:
    """Shard I of N: the plan's units dealt round robin, whole. A shard runs
    exactly the calls, with exactly the batches, that the plan holds, so
    its outputs are those of the unsharded run (on a GPU too, where a
    smaller batch changes the numerics)."""
    if shard is None:
        return calls
    i, n = shard
    groups = units(calls)
    if len(groups) < n:
        raise BadInput(f"--shard {i}/{n}: {where} holds {len(groups)} independent call"
                       f"{'s' if len(groups) != 1 else ''} (a free-run call and its scoring calls), fewer than "
                       f"{n} shards", "use fewer shards, or record the golden with a smaller --call-size "
                                      "(calls of at most that many requests)")
    mine = sorted(c for g in groups[i - 1::n] for c in g)
    return [calls[c] for c in mine]


def shard_info(shard: tuple[int, int], **of: str) -> dict[str, Any]:
    return {"index": shard[0], "count": shard[1], "of": dict(of)}


def _where(reader: TraceReader) -> str:
    return str(reader.path.parent if reader.path.name == "traces.jsonl" else reader.path)


def read_shards(results: list[Path], expect: dict[str, str], kind: str) -> list[TraceReader]:
    """The shards (of a check: kind "obtained"; of a record: "golden"), in
    shard order, after every refusal of the module doc. `expect`: what the
    merge itself was given (golden and suite hashes)."""
    readers = []
    command = "check" if kind == "obtained" else "record"
    for r in results:
        reader = read_trace(r)
        info = reader.manifest.extra.get("shard")
        if reader.manifest.kind != kind or not isinstance(info, dict):
            raise BadInput(f"{trace_path(r)}: not a shard of a {command}",
                           f"pass only the output folders of 'parity-gate {command} --shard I/N'")
        readers.append(reader)
    infos = [(x, x.manifest.extra["shard"]) for x in readers]
    counts = sorted({info["count"] for _, info in infos})
    if len(counts) > 1:
        raise BadInput("shards of different shard counts: " + ", ".join(
            f"{_where(x)} is {info['index']}/{info['count']}" for x, info in infos),
            "merge the shards of one run (one --shard I/N with the same N)")
    n = counts[0]
    seen: dict[int, TraceReader] = {}
    for x, info in infos:
        if info["index"] in seen:
            raise BadInput(f"shard {info['index']}/{n} given twice ({_where(seen[info['index']])} and {_where(x)})",
                           "pass each shard's result folder once")
        seen[info["index"]] = x
    missing = [f"{i}/{n}" for i in range(1, n + 1) if i not in seen]
    if missing:
        raise BadInput(f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing "
                       f"({len(seen)} of {n} given)", "wait for every shard's job, and pass all N result folders")
    for x, info in infos:
        for key, value in expect.items():
            got = (info.get("of") or {}).get(key)
            if got != value:
                what = {"golden_sha256": "golden", "suite_sha256": "suite"}.get(key, key)
                flag = "--golden" if what == "golden" else "--suite"
                raise BadInput(f"{_where(x)} (shard {info['index']}/{n}) was run against another {what} than this "
                               f"merge's (shard: {(got or 'none')[:12]}, {flag}: {value[:12]})",
                               "merge shards of one run, with the same --suite and --golden they ran with")
    first = seen[1]
    for x, info in infos:
        _same_run(first, x, n)
    return [seen[i] for i in range(1, n + 1)]


def _same_run(a: TraceReader, b: TraceReader, n: int) -> None:
    ma, mb = a.manifest, b.manifest
    pairs = [(f"environment.{k}", ma.environment.get(k), mb.environment.get(k)) for k in MERGE_KEYS]
    pairs += [("tool.version", ma.tool.get("version"), mb.tool.get("version")),
              ("engine_args.resolved", ma.engine_args.get("resolved"), mb.engine_args.get("resolved")),
              ("suite.sampling", ma.suite.get("sampling"), mb.suite.get("sampling"))]
    if ma.kind == "obtained":  # a check's shards replay one golden: one workload; a record's each have their own
        pairs.append(("suite.workload_sha256", ma.suite.get("workload_sha256"), mb.suite.get("workload_sha256")))
    for name, va, vb in pairs:
        if va != vb:
            shown = (lambda v: repr(v) if len(repr(v)) < 60 else repr(v)[:57] + "...")
            raise BadInput(f"shards {ma.extra['shard']['index']}/{n} ({_where(a)}) and {mb.extra['shard']['index']}/"
                           f"{n} ({_where(b)}) differ in {name}: {shown(va)} vs {shown(vb)}",
                           "run every shard with the same image, engine args and hardware, then merge")


def merged_manifest(shards: list[TraceReader], relations: Mapping[str, Any],
                    suite: dict[str, Any] | None = None) -> Manifest:
    """Shard 1's header with every shard's calls (in shard order), the
    sampler relation of all records (`relations`, per config) and (a
    record's shards) the whole suite."""
    first = shards[0].manifest
    calls = [c for s in shards for c in (s.manifest.batch_plan or {}).get("calls") or []]
    extra = {k: v for k, v in first.extra.items() if k != "shard"}
    extra["sampler_relation"] = {c: r.summary() for c, r in sorted(relations.items())}
    extra["merged_shards"] = {"count": len(shards), "of": first.extra["shard"].get("of")}
    return Manifest(kind=first.kind, environment=first.environment, engine_args=first.engine_args,
                    model=first.model, suite=suite or first.suite,
                    batch_plan=dict(first.batch_plan or {}, calls=calls), tool=first.tool, extra=extra)


def _tagged(reader: TraceReader) -> Iterator[tuple[Record, str]]:
    for rec in reader.records():
        yield rec, _where(reader)


def merged_records(shards: list[TraceReader]) -> Iterator[Record]:
    """Every shard's records in key order (shards hold disjoint requests)."""
    last: tuple[Record, str] | None = None
    for rec, where in heapq.merge(*(_tagged(s) for s in shards), key=lambda t: t[0].key):
        if last is not None and rec.key == last[0].key:
            raise BadInput(f"record {rec.key} appears in two shards ({last[1]} and {where})",
                           "merge the shards of one run")
        last = (rec, where)
        yield rec

"""Trace format v1: exact float round trip, and every way a trace file can be
broken is refused with a BadInput that names the file and line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gate.core.errors import BadInput
from gate.core.trace import FORMAT, MAJOR, TRACE_FILE, Manifest, Record, TraceReader, TraceWriter, read_trace
from tests._util import manifest, record, write_trace


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _valid(tmp_path, n=3):
    return write_trace(tmp_path / "t", [record(prompt_id=f"p{i}") for i in range(n)])


def _read_all(location):
    return list(TraceReader(location).records())


def _edit_header(path, edit) -> None:
    """Rewrite the header line of a valid trace through `edit(header_dict)`."""
    lines = _lines(path)
    header = json.loads(lines[0])
    edit(header)
    path.write_text(json.dumps(header) + "\n" + "".join(lines[1:]), encoding="utf-8")


# ------------------------------------------------------------------ round trip
def _special_float32() -> np.ndarray:
    rng = np.random.default_rng(0)
    normal = (-rng.exponential(3.0, 2000)).astype(np.float32)
    # random bit patterns cover every exponent, including subnormals
    bits = rng.integers(0, 2 ** 31 - 1, 2000, dtype=np.uint32) | np.uint32(0x80000000)
    random_bits = bits.view(np.float32)
    random_bits = random_bits[np.isfinite(random_bits)]
    special = np.array([-0.0, 0.0, -np.inf, -1e-45, -1.4e-45, -1.17549435e-38, -1.1754942e-38,
                        -np.finfo(np.float32).max, -np.finfo(np.float32).tiny,
                        -np.finfo(np.float32).smallest_subnormal, np.nextafter(np.float32(0), np.float32(-1))],
                       dtype=np.float32)
    return np.concatenate([special, normal, random_bits])


def test_trace__float32_round_trip_is_bit_exact(tmp_path):
    values = _special_float32()
    assert np.any((values != 0) & (np.abs(values) < np.finfo(np.float32).tiny)), "needs subnormals"
    assert np.any(np.signbit(values) & (values == 0)), "needs -0.0"
    assert np.any(np.isneginf(values)), "needs -inf"
    lps = [float(v) for v in values]
    n = len(lps)
    completion = list(range(n))
    top_ids = [[i, i + 1] for i in range(n)]
    top_lps = [[float(v), float(v)] for v in values]
    rec = record(prompt=[7], completion=completion, sampler=lps, forced=[None] + lps,
                 sampler_top_ids=top_ids, sampler_top_lps=top_lps)
    path = write_trace(tmp_path / "t", [rec])

    (back,) = _read_all(path)
    got = np.array(back.sampler.logprobs, dtype=np.float32)
    assert np.array_equal(got.view(np.uint32), values.view(np.uint32))
    got_forced = np.array(back.forced.logprobs[1:], dtype=np.float32)
    assert back.forced.logprobs[0] is None
    assert np.array_equal(got_forced.view(np.uint32), values.view(np.uint32))
    got_top = np.array([t[0] for t in back.sampler.top_logprobs], dtype=np.float32)
    assert np.array_equal(got_top.view(np.uint32), values.view(np.uint32))
    assert back.completion_token_ids == completion
    assert back.sampler.top_ids == top_ids


def test_trace__header_and_end_marker(tmp_path):
    path = write_trace(tmp_path / "t", [record(prompt_id="a"), record(prompt_id="b")],
                       Manifest(kind="golden", model={"id": "m"}))
    assert path == tmp_path / "t" / TRACE_FILE
    lines = _lines(path)
    header = json.loads(lines[0])
    assert header["format"] == FORMAT and header["version"] == MAJOR
    assert json.loads(lines[-1]) == {"end": True, "records": 2}
    reader = read_trace(tmp_path / "t")
    assert reader.manifest.kind == "golden" and reader.manifest.model == {"id": "m"}
    assert [r.prompt_id for r in reader.records()] == ["a", "b"]


def test_trace__accepts_file_path_as_location(tmp_path):
    path = _valid(tmp_path)
    assert len(_read_all(path)) == 3


# ------------------------------------------------------------------ bad floats
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_trace__writer_rejects_nan_and_pos_inf(tmp_path, bad):
    out = tmp_path / "t"
    with pytest.raises(BadInput, match="is not a valid logprob"):
        with TraceWriter(out, manifest()) as w:
            w.write(record(sampler=[-0.1, bad, -0.2]))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_trace__writer_rejects_nan_in_top_logprobs(tmp_path):
    with pytest.raises(BadInput, match="record .*: NaN is not a valid logprob"):
        with TraceWriter(tmp_path / "t", manifest()) as w:
            w.write(record(sampler_top_ids=[[1], [2], [3]], sampler_top_lps=[[-0.1], [math.nan], [-0.3]]))


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_trace__reader_rejects_nan_and_pos_inf(tmp_path, literal):
    path = _valid(tmp_path)
    lines = _lines(path)
    lines[2] = lines[2].replace("-0.5", literal, 1)
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:3: {literal} is not a valid logprob"):
        _read_all(path)


def test_trace__reader_accepts_neg_inf(tmp_path):
    path = write_trace(tmp_path / "t", [record(sampler=[-math.inf, -0.5, -0.5])])
    (back,) = _read_all(path)
    assert back.sampler.logprobs[0] == -math.inf


# ------------------------------------------------------------------ damaged files
def test_trace__truncated_line(tmp_path):
    path = _valid(tmp_path)
    lines = _lines(path)
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2], encoding="utf-8")
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:3: truncated or malformed JSON"):
        _read_all(path)


def test_trace__missing_end_marker_at_line_boundary(tmp_path):
    path = _valid(tmp_path)
    path.write_text("".join(_lines(path)[:-1]), encoding="utf-8")
    reader = TraceReader(path)  # the header is fine; the damage shows while streaming
    with pytest.raises(BadInput, match="no end marker after 3 records"):
        list(reader.records())


def test_trace__data_after_end_marker(tmp_path):
    path = _valid(tmp_path)
    lines = _lines(path)
    path.write_text("".join(lines) + lines[1], encoding="utf-8")
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:{len(lines) + 1}: data after the end marker"):
        _read_all(path)


def test_trace__end_marker_count_mismatch(tmp_path):
    path = _valid(tmp_path)
    lines = _lines(path)
    path.write_text("".join(lines[:1] + lines[2:]), encoding="utf-8")  # drop one record, keep the marker
    with pytest.raises(BadInput, match="end marker says 3 records, file has 2"):
        _read_all(path)


def test_trace__unknown_major_version(tmp_path):
    path = _valid(tmp_path)
    _edit_header(path, lambda h: h.update(version=MAJOR + 1))
    with pytest.raises(BadInput, match=rf"trace format version {MAJOR + 1} is not supported"):
        TraceReader(path)


def test_trace__newer_minor_version_is_read(tmp_path):
    path = _valid(tmp_path)
    _edit_header(path, lambda h: h.update(minor=99))
    assert len(_read_all(path)) == 3


@pytest.mark.parametrize("content", [
    b'{"some": "json"}\n',
    b"model: not a trace\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage",
    b"[1, 2, 3]\n",
])
def test_trace__not_a_trace_file(tmp_path, content):
    path = tmp_path / TRACE_FILE
    path.write_bytes(content)
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:1: "):
        TraceReader(tmp_path)


def test_trace__non_utf8_record_line(tmp_path):
    path = _valid(tmp_path)
    raw = path.read_bytes().split(b"\n")
    raw[2] = raw[2][:20] + b"\xff\xfe" + raw[2][20:]
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:3: not UTF-8 text"):
        _read_all(path)


def test_trace__empty_file(tmp_path):
    (tmp_path / TRACE_FILE).write_bytes(b"")
    with pytest.raises(BadInput, match="trace file is empty"):
        TraceReader(tmp_path)


def test_trace__missing_file(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        TraceReader(tmp_path / "nope")


def test_trace__folder_without_traces(tmp_path):
    with pytest.raises(BadInput, match=f"{TRACE_FILE} does not exist"):
        TraceReader(tmp_path)


@pytest.mark.parametrize("order", [["p1", "p0"], ["p0", "p0"]], ids=["out_of_order", "duplicate"])
def test_trace__reader_rejects_out_of_order_or_duplicate(tmp_path, order):
    path = write_trace(tmp_path / "t", [record(prompt_id="p0"), record(prompt_id="p1")])
    lines = _lines(path)
    recs = {json.loads(line)["prompt_id"]: line for line in lines[1:-1]}
    body = [recs[p] for p in order]
    path.write_text(lines[0] + "".join(body) + lines[-1], encoding="utf-8")
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:3: record .* is out of order or duplicated"):
        _read_all(path)


@pytest.mark.parametrize("channel,field,value,message", [
    ("sampler", "logprobs", [-0.1, -0.2], "decode scores have 2 logprobs for 3 tokens"),
    ("forced", "logprobs", [None, -0.1], "prefill scores have 2 logprobs for 6 tokens"),
    ("sampler", "top_ids", [[1]], "decode top-k lists do not match the 3 tokens"),
])
def test_trace__reader_rejects_length_mismatch(tmp_path, channel, field, value, message):
    path = write_trace(tmp_path / "t", [record(sampler_top_ids=[[1], [2], [3]],
                                               sampler_top_lps=[[-0.1], [-0.2], [-0.3]])])
    lines = _lines(path)
    obj = json.loads(lines[1])
    obj[channel][field] = value
    path.write_text(lines[0] + json.dumps(obj) + "\n" + lines[2], encoding="utf-8")
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:2: {message}"):
        _read_all(path)


def test_trace__writer_rejects_length_mismatch(tmp_path):
    with pytest.raises(BadInput, match="decode scores have 2 logprobs for 3 tokens"):
        with TraceWriter(tmp_path / "t", manifest()) as w:
            w.write(record(sampler=[-0.1, -0.2]))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_trace__record_missing_field(tmp_path):
    path = _valid(tmp_path)
    lines = _lines(path)
    obj = json.loads(lines[1])
    del obj["prompt_id"]
    path.write_text(lines[0] + json.dumps(obj) + "\n" + "".join(lines[2:]), encoding="utf-8")
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:2: record has no 'prompt_id'"):
        _read_all(path)


def test_trace__unknown_manifest_key_is_refused(tmp_path):
    path = _valid(tmp_path)
    _edit_header(path, lambda h: h["manifest"].update(from_the_future={}))
    with pytest.raises(BadInput, match=r"traces.jsonl:1: header.manifest has unknown keys \[.from_the_future.\]"):
        TraceReader(path)


# ------------------------------------------------------------------ writer
def test_trace__atomic_write_leaves_nothing_when_writer_raises(tmp_path):
    out = tmp_path / "golden"
    with pytest.raises(RuntimeError, match="boom"):
        with TraceWriter(out, manifest()) as w:
            w.write(record(prompt_id="a"))
            raise RuntimeError("boom")
    assert not (out / TRACE_FILE).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_trace__atomic_write_keeps_previous_file_when_writer_raises(tmp_path):
    path = write_trace(tmp_path / "t", [record(prompt_id="old")])
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with TraceWriter(tmp_path / "t", manifest()) as w:
            w.write(record(prompt_id="new"))
            raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [TRACE_FILE]


@pytest.mark.parametrize("keys", [[("b", "p", 0), ("a", "p", 0)], [("a", "p1", 0), ("a", "p0", 0)],
                                  [("a", "p", 1), ("a", "p", 0)], [("a", "p", 0), ("a", "p", 0)]],
                         ids=["config", "prompt", "sample", "duplicate"])
def test_trace__writer_refuses_out_of_order(tmp_path, keys):
    with pytest.raises(BadInput, match="written after"):
        with TraceWriter(tmp_path / "t", manifest()) as w:
            for c, p, s in keys:
                w.write(record(config=c, prompt_id=p, sample=s))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_trace__writer_rejects_unknown_scoring_path(tmp_path):
    from gate.core.trace import Record, Scores

    rec = Record("c", "p", 0, [1], [2], sampler=Scores("telepathy", [-0.1]))
    with pytest.raises(BadInput, match="unknown scoring path 'telepathy'"):
        with TraceWriter(tmp_path / "t", manifest()) as w:
            w.write(rec)


def test_trace__trainer_dump_with_empty_identity_round_trips(tmp_path):
    """The documented writer API: a trainer fills only what it has."""
    from gate.core.trace import Record, Scores

    rec = Record(config="rollout", prompt_id="q1", sample=0, prompt_token_ids=[1, 2],
                 completion_token_ids=[3, 4], sampler=Scores("trainer", [-0.25, -1.5]))
    path = write_trace(tmp_path / "trainer.jsonl", [rec], Manifest(kind="trainer"))
    assert path == tmp_path / "trainer.jsonl"
    (back,) = _read_all(path)
    assert back.sampler.path == "trainer" and back.forced is None
    assert list(back.sampler.logprobs) == [-0.25, -1.5]


def test_trace__failed_write_leaves_no_folder_it_created(tmp_path):
    from gate.core.trace import Manifest, Record, Scores, TraceWriter

    out = tmp_path / "new" / "golden"
    with pytest.raises(RuntimeError):
        with TraceWriter(out, Manifest(kind="trainer")) as w:
            w.write(Record(config="c", prompt_id="p", sample=0, prompt_token_ids=[1], completion_token_ids=[2],
                           sampler=Scores("trainer", [-0.5])))
            raise RuntimeError("trainer crashed mid-dump")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ format 1.1: own scores, versions
def _own(prompt=(1, 2, 3), completion=(4, 5, 6), **kw):
    from gate.core.trace import Scores

    return Scores("prefill", [None] + [-0.25] * (len(prompt) + len(completion) - 1), **kw)


def test_trace__header_says_minor_1(tmp_path):
    from gate.core.trace import MINOR

    header = json.loads(_lines(_valid(tmp_path))[0])
    assert MINOR == 1 and header["minor"] == 1


def test_trace__own_scores_round_trip(tmp_path):
    from dataclasses import replace

    top = [None] + [[7, 8]] * 5
    rec = replace(record(), own=_own(top_ids=top, top_logprobs=[None] + [[-0.25, -2.0]] * 5))
    (back,) = _read_all(write_trace(tmp_path / "t", [rec]))
    assert back.own == rec.own and back.forced == rec.forced


def test_trace__own_is_written_only_when_present(tmp_path):
    path = write_trace(tmp_path / "t", [record()])
    assert "own" not in json.loads(_lines(path)[1])
    (back,) = _read_all(path)
    assert back.own is None


def test_trace__own_is_as_long_as_prompt_plus_own_completion(tmp_path):
    from dataclasses import replace

    with pytest.raises(BadInput, match=r"record \('greedy', 'p0', 0\): prefill scores have 5 logprobs for 6 tokens"):
        with TraceWriter(tmp_path / "t", manifest()) as w:
            w.write(replace(record(), own=_own(completion=(4, 5))))
    assert not (tmp_path / "t").exists()


def test_trace__forced_may_be_absent(tmp_path):
    from dataclasses import replace

    (back,) = _read_all(write_trace(tmp_path / "t", [replace(record(), forced=None)]))
    assert back.forced is None and back.sampler is not None


def _edit_record(path, edit) -> None:
    lines = _lines(path)
    obj = json.loads(lines[1])
    edit(obj)
    path.write_text(lines[0] + json.dumps(obj) + "\n" + "".join(lines[2:]), encoding="utf-8")


def test_trace__newer_minor_keeps_reading_past_added_keys(tmp_path):
    """Minor versions only add optional keys: a 1.1 reader reads a 1.7 file."""
    path = write_trace(tmp_path / "t", [record()], manifest(model={"id": "m"}))
    _edit_header(path, lambda h: (h.update(minor=7, written_by="future"), h["manifest"].update(lineage={"a": 1})))
    _edit_record(path, lambda o: (o.update(energy_j=3.5), o["sampler"].update(entropy=[0.1, 0.2, 0.3])))
    reader = TraceReader(path)
    (back,) = reader.records()
    assert reader.manifest.model == {"id": "m"} and back == record()


@pytest.mark.parametrize("where", ["header", "manifest", "record", "scores"])
def test_trace__unknown_key_in_a_file_of_our_minor_is_refused(tmp_path, where):
    path = _valid(tmp_path)
    if where in ("header", "manifest"):
        _edit_header(path, lambda h: (h if where == "header" else h["manifest"]).update(typo=1))
        line, key = 1, "header" if where == "header" else "header.manifest"
    else:
        _edit_record(path, lambda o: (o if where == "record" else o["forced"]).update(typo=1))
        line, key = 2, "record" if where == "record" else "record.forced"
    with pytest.raises(BadInput, match=rf"{TRACE_FILE}:{line}: {key} has unknown keys \['typo'\]") as exc:
        _read_all(path)
    assert "minor" in exc.value.hint


# ------------------------------------------------------------------ the writer refuses what a reader would
def test_trace__writer_refuses_a_lone_surrogate(tmp_path):
    with pytest.raises(BadInput, match=r"record \('greedy', '\\ud800', 0\).prompt_id is not valid Unicode"):
        with TraceWriter(tmp_path / "t", manifest()) as w:
            w.write(record(prompt_id="\ud800"))
    assert not (tmp_path / "t").exists()


def test_trace__writer_refuses_values_json_cannot_hold(tmp_path):
    rec = record(completion=[np.int64(4), 5, 6])
    with pytest.raises(BadInput, match="cannot be written as JSON .*int64") as exc:
        with TraceWriter(tmp_path / "t", manifest()) as w:
            w.write(rec)
    assert ".tolist()" in exc.value.hint


def test_trace__writer_takes_numpy_floats_as_floats(tmp_path):
    lps = [np.float64(-0.5), np.float64(-1.25), np.float64(-2.0)]
    (back,) = _read_all(write_trace(tmp_path / "t", [record(sampler=lps)]))
    assert back.sampler.logprobs == [-0.5, -1.25, -2.0]


def test_trace__writer_refuses_nan_in_the_manifest(tmp_path):
    with pytest.raises(BadInput, match="trace header: manifest holds NaN"):
        with TraceWriter(tmp_path / "t", Manifest(kind="trainer", extra={"loss": math.nan})):
            pass
    assert not (tmp_path / "t").exists()


def test_trace__reader_refuses_a_fifo_without_blocking(tmp_path):
    import os

    (tmp_path / "t").mkdir()
    os.mkfifo(tmp_path / "t" / TRACE_FILE)
    with pytest.raises(BadInput, match=rf"trace file .*{TRACE_FILE} is a FIFO \(named pipe\), not a regular file"):
        TraceReader(tmp_path / "t")


def test_trace_writer__a_header_made_at_close_gives_the_same_bytes_and_nothing_on_failure(tmp_path):
    recs = [Record(config="c", prompt_id=f"p{i}", sample=0, prompt_token_ids=[1, 2], completion_token_ids=[3])
            for i in range(3)]
    seen: list[int] = []
    with TraceWriter(tmp_path / "eager", Manifest(kind="golden", extra={"n": 3})) as w:
        for r in recs:
            w.write(r)
    with TraceWriter(tmp_path / "late", lambda: Manifest(kind="golden", extra={"n": len(seen)})) as w:
        for r in recs:
            w.write(r)
            seen.append(1)
        assert not (tmp_path / "late" / "traces.jsonl").exists()  # nothing in place before the header
    assert (tmp_path / "late" / "traces.jsonl").read_bytes() == (tmp_path / "eager" / "traces.jsonl").read_bytes()
    with pytest.raises(RuntimeError):
        with TraceWriter(tmp_path / "failed", lambda: Manifest(kind="golden")) as w:
            w.write(recs[0])
            raise RuntimeError("engine died")
    assert not (tmp_path / "failed" / "traces.jsonl").exists()
    assert [p.name for p in (tmp_path / "failed").iterdir()] == []  # the records' temp file is gone too

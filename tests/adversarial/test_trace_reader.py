"""Hostile trace files (docs/trace-format.md), through the real
CLI: `compare` of a good reference against a damaged candidate. Each bad
case exits 2 with one line naming file:line (and the JSON path inside the
line), writes nothing, and leaves both inputs byte-identical. The legal
edge values (-Infinity, null, -1e308, a newer minor version) end in a
verdict instead."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from tests._util import record, write_trace
from tests.adversarial.test_suite_inputs import cli, refused, snapshot

CAND = "cand/traces.jsonl"


def _good() -> list:
    top = dict(sampler_top_ids=[[4, 9], [5, 9], [6, 9]], sampler_top_lps=[[-0.5, -1.5]] * 3,
               forced_top_ids=[None] + [[7, 8]] * 5, forced_top_lps=[None] + [[-1.0, -2.0]] * 5)
    return [record(prompt_id="p0", **top), record(prompt_id="p1", **top)]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    write_trace(tmp_path / "ref", _good())
    write_trace(tmp_path / "cand", _good())
    return tmp_path


def _edit(proj: Path, record_edit: Callable[[dict], Any] | None = None, *,
          header_edit: Callable[[dict], Any] | None = None, raw: Callable[[str], str] | None = None) -> None:
    """Rewrite the candidate's first record (line 2) or its header (line 1)."""
    path = proj / CAND
    lines = path.read_text(encoding="utf-8").splitlines()
    if header_edit:
        header = json.loads(lines[0])
        header_edit(header)
        lines[0] = json.dumps(header)
    obj = json.loads(lines[1])
    if record_edit:
        record_edit(obj)
    lines[1] = json.dumps(obj)  # ", " and ": " separators, which the raw edits below spell out
    if raw:
        edited = raw(lines[1])
        assert edited != lines[1], "the raw edit found nothing to change"
        lines[1] = edited
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _inputs(proj: Path) -> dict:
    return {side: snapshot(proj / side) for side in ("ref", "cand")}


def _compare(proj: Path):
    """Run compare; the inputs are byte-identical afterwards, and a refused
    run leaves nothing behind."""
    before, listing = _inputs(proj), sorted(p.name for p in proj.iterdir())
    proc = cli("compare", "ref", "cand", "--out", "res", cwd=proj)
    assert _inputs(proj) == before
    if proc.returncode == 2:
        assert sorted(p.name for p in proj.iterdir()) == listing
    return proc


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """An edit that sets obj[a][b][i]... ('sampler.top_ids.0') to value."""
    def edit(obj: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for p in parents:
            obj = obj[p]
        obj[last] = value
    return edit


# ------------------------------------------------------------------ types and ranges the schema states
@pytest.mark.parametrize("field, value, message", [
    ("sample", -1, "record.sample must be >= 0, got -1"),
    ("completion_token_ids.0", "a", "record.completion_token_ids[0] must be an integer, got the string 'a'"),
    ("completion_token_ids.1", 1.5, "record.completion_token_ids[1] must be an integer, got the number 1.5"),
    ("completion_token_ids.2", -3, "record.completion_token_ids[2] must be >= 0, got -3"),
    ("prompt_token_ids.0", True, "record.prompt_token_ids[0] must be an integer, got true"),
    ("prompt_token_ids.1", "7", "record.prompt_token_ids[1] must be an integer, got the string '7'"),
    ("prompt_token_ids.2", 2 ** 63, "record.prompt_token_ids[2] must be <= 9223372036854775807"),
    ("forced.completion_token_ids.0", "x", "record.forced.completion_token_ids[0] must be an integer"),
    ("sampler.top_ids", ["ab", "cd", "ef"], "record.sampler.top_ids[0] must be an array or null, got the string"),
    ("sampler.top_ids.1", {"id": 5}, "record.sampler.top_ids[1] must be an array or null, got an object"),
    ("sampler.top_ids.1.0", {"id": 5}, "record.sampler.top_ids[1][0] must be an integer, got an object"),
    ("forced.top_ids.2.1", -9, "record.forced.top_ids[2][1] must be >= 0, got -9"),
    ("sampler.logprobs.1", "abc", "record.sampler.logprobs[1] must be a number or null, got the string 'abc'"),
    ("sampler.logprobs.1", [[-0.5]], "record.sampler.logprobs[1] must be a number or null, got an array"),
    ("forced.logprobs.3", {"lp": -1}, "record.forced.logprobs[3] must be a number or null, got an object"),
    ("forced.logprobs.3", False, "record.forced.logprobs[3] must be a number or null, got false"),
    ("sampler.top_logprobs.0.1", None, "record.sampler.top_logprobs[0][1] must be a number, got null"),
    ("sampler.path", "guess", "record.sampler.path must be one of 'decode', 'prefill'"),
    ("seed", 0.5, "record.seed must be an integer or null, got the number 0.5"),
    ("completion_tokens", "abc", "record.completion_tokens must be an array or null, got the string 'abc'"),
])
def test_trace_reader__value_outside_the_schema_is_one_line_naming_file_line_and_path(proj, field, value, message):
    _edit(proj, _set(field, value))
    refused(_compare(proj), f"{CAND}:2: {message}", "(hint: re-record the traces)")


def test_trace_reader__missing_key_is_named(proj):
    _edit(proj, lambda o: o.pop("prompt_token_ids"))
    refused(_compare(proj), f"{CAND}:2: record has no 'prompt_token_ids'")


# ------------------------------------------------------------------ +inf in any spelling
@pytest.mark.parametrize("literal, where", [
    ("1e400", "record.sampler.logprobs[0]"),
    ("1E+309", "record.sampler.logprobs[0]"),
])
def test_trace_reader__number_too_large_for_a_float_is_refused_as_pos_inf(proj, literal, where):
    _edit(proj, raw=lambda line: line.replace('"logprobs": [-0.5', f'"logprobs": [{literal}', 1))
    refused(_compare(proj), f"{CAND}:2: {where} is +inf (a number too large for a float, such as 1e400")


def test_trace_reader__pos_inf_among_top_logprobs_is_refused(proj):
    _edit(proj, raw=lambda line: line.replace('"top_logprobs": [[-0.5, -1.5]', '"top_logprobs": [[-0.5, 1e999]', 1))
    refused(_compare(proj), f"{CAND}:2: record.sampler.top_logprobs[0][1] is +inf")


def test_trace_reader__integer_beyond_the_float_range_is_not_a_logprob(proj):
    _edit(proj, raw=lambda line: line.replace('"logprobs": [-0.5', '"logprobs": [-' + "9" * 400, 1))
    refused(_compare(proj), f"{CAND}:2: record.sampler.logprobs[0] must be a number or null, got a 400-digit integer")


# ------------------------------------------------------------------ what a schema cannot state
@pytest.mark.parametrize("field, value, message", [
    ("sampler.top_ids.0", [4, 9, 11], "decode top_ids row 0 holds 3 ids but top_logprobs row 0 holds 2 logprobs"),
    ("forced.top_logprobs.4", [-1.0], "prefill top_ids row 4 holds 2 ids but top_logprobs row 4 holds 1 logprobs"),
    ("sampler.top_logprobs", None, "decode top-k lists do not match the 3 tokens"),
    ("sampler.logprobs", [-0.5, -0.5], "decode scores have 2 logprobs for 3 tokens"),
])
def test_trace_reader__lengths_that_must_agree(proj, field, value, message):
    _edit(proj, _set(field, value))
    refused(_compare(proj), f"{CAND}:2: {message}")


# ------------------------------------------------------------------ structure: nesting and text
def test_trace_reader__deeply_nested_json_is_bad_input_not_a_crash(proj):
    deep = "[" * 100_000 + "]" * 100_000
    _edit(proj, raw=lambda line: line.replace('"finish_reason": null', f'"finish_reason": {deep}', 1))
    refused(_compare(proj), f"{CAND}:2: JSON nested too deeply to be a trace line")


@pytest.mark.parametrize("old, new, path", [
    ('"prompt_id": "p0"', '"prompt_id": "\\ud800"', "record.prompt_id"),
    ('"config": "greedy"', '"config": "gr\\udfffx"', "record.config"),
    ('"seed": 0', '"seed": 0, "completion_tokens": ["a", "\\udc80", "c"]', "record.completion_tokens[1]"),
])
def test_trace_reader__lone_surrogate_is_refused(proj, old, new, path):
    _edit(proj, raw=lambda line: line.replace(old, new, 1))
    refused(_compare(proj), f"{CAND}:2: {path} is not valid Unicode (a lone surrogate escape such as \\ud800)")


def test_trace_reader__surrogate_pair_is_ordinary_text(proj):
    pair = '"completion_tokens": ["\\ud83d\\ude00", "b", "c"]'
    _edit(proj, raw=lambda line: line.replace('"seed": 0', f'"seed": 0, {pair}'))
    assert _compare(proj).returncode == 0


def test_trace_reader__lone_surrogate_in_the_manifest_is_refused(proj):
    path = proj / CAND
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    edited = lines[0].replace('"model":{}', '"model":{"name":"m\\ud800"}', 1)
    assert edited != lines[0]
    lines[0] = edited
    path.write_text("".join(lines), encoding="utf-8")
    refused(_compare(proj), f"{CAND}:1: header.manifest.model.name is not valid Unicode")


# ------------------------------------------------------------------ the manifest's shape
@pytest.mark.parametrize("edit, message", [
    (lambda m: m["suite"].update(sampling=["greedy"]),
     "header.manifest.suite.sampling must be an object, got an array"),
    (lambda m: m["suite"].update(prompts="p0"), "header.manifest.suite.prompts must be an object, got the string"),
    (lambda m: m["suite"].update(prompts={"p0": ["abc"]}), "header.manifest.suite.prompts.p0 must be an object"),
    (lambda m: m["suite"].update(sampling={"greedy": {"max_tokens": "ten"}}),
     "header.manifest.suite.sampling.greedy.max_tokens must be an integer, got the string 'ten'"),
    (lambda m: m.update(batch_plan={"calls": [{"kind": "free", "config": "greedy",
                                               "requests": [["greedy", "p0", "0"]]}]}),
     "header.manifest.batch_plan.calls[0].requests[0][2] must be an integer"),
    (lambda m: m.update(model=[]), "header.manifest.model must be an object, got an array"),
])
def test_trace_reader__manifest_of_the_wrong_shape_is_refused(proj, edit, message):
    _edit(proj, header_edit=lambda h: edit(h["manifest"]))
    refused(_compare(proj), f"{CAND}:1: {message}")


# ------------------------------------------------------------------ files that are not files
@pytest.mark.parametrize("kind", ["fifo in a trace folder", "fifo as the file", "device"])
def test_trace_reader__not_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    write_trace(tmp_path / "ref", _good())
    if kind == "device":
        cand, expect = "/dev/zero", "trace file /dev/zero is a character device, not a regular file"
    else:
        (tmp_path / "cand").mkdir()
        os.mkfifo(tmp_path / "cand" / "traces.jsonl")
        cand = "cand" if kind == "fifo in a trace folder" else "cand/traces.jsonl"
        expect = "trace file cand/traces.jsonl is a FIFO (named pipe), not a regular file"
    before = snapshot(tmp_path)
    proc = cli("compare", "ref", cand, "--out", "res", cwd=tmp_path, timeout=30)
    refused(proc, expect)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ format versions
def test_trace_reader__newer_minor_with_added_keys_is_compared(proj):
    _edit(proj, lambda o: (o.update(energy_j=1.5), o["forced"].update(entropy=[0.0] * 6)),
          header_edit=lambda h: (h.update(minor=9), h["manifest"].update(lineage={"run": 7})))
    proc = _compare(proj)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((proj / "res" / "verdict.json").read_text())["verdict"] == "pass"


def test_trace_reader__added_key_without_a_newer_minor_is_refused(proj):
    _edit(proj, header_edit=lambda h: h["manifest"].update(lineage={"run": 7}))
    line = refused(_compare(proj), f"{CAND}:1: header.manifest has unknown keys ['lineage']")
    assert "newer 'minor'" in line


def test_trace_reader__minor_of_the_wrong_type_is_refused(proj):
    _edit(proj, header_edit=lambda h: h.update(minor="2"))
    refused(_compare(proj), f"{CAND}:1: header.minor must be an integer, got the string '2'")


# ------------------------------------------------------------------ legal edge values end in a verdict
def _verdict(proj: Path, *expect: int) -> dict:
    proc = _compare(proj)
    assert proc.returncode in expect, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    for name in ("verdict.json", "comment.md", "report.html", "summary.md"):
        assert (proj / "res" / name).is_file(), name
    return json.loads((proj / "res" / "verdict.json").read_text())


def test_trace_reader__one_sided_neg_inf_is_a_regression_with_a_report(proj):
    _edit(proj, raw=lambda line: line.replace('"logprobs": [-0.5', '"logprobs": [-Infinity', 1))
    v = _verdict(proj, 1)
    assert v["verdict"] == "fail"
    assert "abs diff **inf**" in (proj / "res" / "comment.md").read_text()


def test_trace_reader__neg_1e400_reads_as_neg_inf(proj):
    _edit(proj, raw=lambda line: line.replace('"logprobs": [-0.5', '"logprobs": [-1e400', 1))
    assert _verdict(proj, 1)["verdict"] == "fail"


def test_trace_reader__null_sampler_logprob_is_legal(proj):
    _edit(proj, _set("sampler.logprobs.1", None))
    assert _verdict(proj, 0, 1)["verdict"] in ("pass", "fail", "inconclusive")


def test_trace_reader__identical_traces_at_neg_1e308_pass(tmp_path):
    rec = record(sampler=[-1e308] * 3, forced=[None] + [-1e308] * 5)
    write_trace(tmp_path / "ref", [rec])
    write_trace(tmp_path / "cand", [rec])
    assert _verdict(tmp_path, 0)["verdict"] == "pass"

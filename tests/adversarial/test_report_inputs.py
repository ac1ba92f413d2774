"""`report` on verdicts it did not write itself (docs/verdict.md): a verdict.json with wrong field types, JSON that Python cannot hold, a
FIFO or a device in its place. Each is one bad-input line (exit 2), nothing
is written and verdict.json is byte-identical afterwards. And every number
the report formats is total: inf, -inf, 1e308 and the "Infinity" strings
verdict.json uses for them render, never raise.

The verdicts are made by the real code path (`compare` on hand-written
traces), then forged by hand."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.core.errors import BadInput
from gate.core.verdict import read_verdict
from gate.report import render as report
from gate.report import values as _values
from gate.report import view
from tests._util import record, run_cli, write_trace
from tests.adversarial.test_suite_inputs import refused, snapshot

VERDICT_SCHEMA = json.loads(resources.files("gate.schemas").joinpath("verdict.schema.json").read_text())


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Verdicts written by `compare`: small drift, and a one-sided -inf."""
    root = tmp_path_factory.mktemp("verdicts")
    write_trace(root / "ref", [record(prompt_id="p0"), record(prompt_id="p1")])
    write_trace(root / "drift", [record(prompt_id="p0", sampler=[-0.51, -0.5, -0.5]),
                                 record(prompt_id="p1", forced=[None, -1.0, -1.0, -1.2, -1.0, -1.0])])
    write_trace(root / "neg_inf", [record(prompt_id="p0", sampler=[-math.inf, -0.5, -0.5]), record(prompt_id="p1")])
    out = {}
    for name in ("drift", "neg_inf"):
        proc = run_cli("compare", "ref", name, "--out", f"res_{name}", cwd=root)
        assert proc.returncode == 1, proc.stderr
        out[name] = json.loads((root / f"res_{name}" / "verdict.json").read_text(encoding="utf-8"))
    return out


def _write(folder: Path, verdict: Any, *, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "verdict.json").write_text(text if text is not None else json.dumps(verdict), encoding="utf-8")
    return folder


def _report_refused(folder: Path, *needles: str) -> str:
    """`report` refuses the folder in one line and leaves it byte-identical."""
    before = snapshot(folder)
    proc = run_cli("report", folder.name, cwd=folder.parent, timeout=30)
    line = refused(proc, *needles)
    assert snapshot(folder) == before
    return line


# ------------------------------------------------------------------ real verdicts pass and render
@pytest.mark.parametrize("name", ["drift", "neg_inf"])
def test_report_inputs__verdicts_compare_writes_validate_and_render(tmp_path, made, name):
    folder = _write(tmp_path / "res", made[name])
    proc = run_cli("report", "res", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted([*report.OUTPUTS, "verdict.json"])
    jsonschema.validate(made[name], VERDICT_SCHEMA)  # the generic validator and the specification agree


def test_report_inputs__one_sided_neg_inf_renders_inf_everywhere(made):
    v = made["neg_inf"]
    comment, summary, html = report.render_comment(v), report.render_summary(v), report.render_html(v)
    assert "abs diff **inf**" in comment and "infinitely past the bound" in comment
    assert "**inf** vs bound" in summary
    assert "max inf" in html


# ------------------------------------------------------------------ forged field types
def _at(path: str, value: Any) -> Callable[[dict], None]:
    def edit(v: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for p in parents:
            v = v[p]
        v[last] = value
    return edit


FORGED = [
    (_at("headline", 5), "verdict.headline must be a string, got the integer 5"),
    (_at("checks.0.status", 3), "verdict.checks[0].status must be one of 'pass', 'fail'"),
    (_at("checks.0.value", [0.1]), "verdict.checks[0].value must be a number or a string or null, got an array"),
    (_at("checks.0.bound", "1e-4"), "verdict.checks[0].bound must be a number, got the string '1e-4'"),
    (_at("checks.0.n_total", 2.5), "verdict.checks[0].n_total must be an integer, got the number 2.5"),
    (_at("checks", {"0": {}}), "verdict.checks must be an array, got an object"),
    (_at("environment_diff", {}), "verdict.environment_diff must be an array, got an object"),
    (_at("warnings", [1]), "verdict.warnings[0] must be a string, got the integer 1"),
    (_at("measures.overall", []), "verdict.measures.overall must be an object, got an array"),
    (_at("measures.per_config.greedy.forced", "big"),
     "verdict.measures.per_config.greedy.forced must be an object or null, got the string 'big'"),
    (_at("worst_tokens.0", ["sampler"]), "verdict.worst_tokens[0] must be an object, got an array"),
    (_at("exit_code", "1"), "verdict.exit_code must be one of 0, 1, got '1'"),
    (_at("reference", None), "verdict.reference must be an object, got null"),
    (lambda v: v.pop("reproduce"), "verdict has no 'reproduce'"),
    (lambda v: v["checks"][0].pop("title"), "verdict.checks[0] has no 'title'"),
]


@pytest.mark.parametrize("forge, message", FORGED, ids=[m.split(" must")[0].split(" has")[0] for _, m in FORGED])
def test_report_inputs__forged_field_type_is_one_bad_input_line(tmp_path, made, forge, message):
    v = copy.deepcopy(made["neg_inf"])
    forge(v)
    with pytest.raises(jsonschema.ValidationError):  # the specification says so too
        jsonschema.validate(v, VERDICT_SCHEMA)
    _report_refused(_write(tmp_path / "res", v), f"res/verdict.json: {message}",
                    "(see gate/schemas/verdict.schema.json)")


@pytest.mark.parametrize("text, message", [
    ('{"schema": "parity-gate/verdict", "version": 1, "n": ' + "7" * 5000 + "}", "not a usable JSON document"),
    ("[" * 100_000 + "]" * 100_000, "not a usable JSON document (nested too deeply)"),
    ('{"schema": "parity-gate/verdict", "version": true}', "verdict schema version True is not supported"),
])
def test_report_inputs__json_python_cannot_hold_is_refused(tmp_path, text, message):
    _report_refused(_write(tmp_path / "res", None, text=text), f"res/verdict.json: {message}")


def test_report_inputs__nan_where_a_number_belongs_is_refused(tmp_path, made):
    v = copy.deepcopy(made["drift"])
    v["checks"][0]["value"] = math.nan  # json.dumps writes the NaN literal, which json.loads reads back
    _report_refused(_write(tmp_path / "res", v), "res/verdict.json: verdict.checks[0].value must be a number or a "
                                                 "string or null, got the number NaN")


def test_report_inputs__lone_surrogate_is_refused(tmp_path, made):
    v = copy.deepcopy(made["drift"])
    v["warnings"].append("\ud800")
    _report_refused(_write(tmp_path / "res", v), "res/verdict.json: verdict.warnings[1] is not valid Unicode")


def test_report_inputs__absurd_nesting_is_refused(tmp_path, made):
    v = copy.deepcopy(made["drift"])
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    v["environment_diff"].append({"key": "k", "group": "engine", "reference": deep, "candidate": 1, "differs": True})
    _report_refused(_write(tmp_path / "res", v), "res/verdict.json: verdict nests more than 64 levels deep")


# ------------------------------------------------------------------ not a regular file
@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_report_inputs__verdict_that_is_not_a_file_is_refused_without_blocking(tmp_path, kind):
    folder = tmp_path / "res"
    folder.mkdir()
    target = folder / "verdict.json"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    needle = {"fifo": "is a FIFO (named pipe), not a regular file", "device": "is a character device, not a regular "
              "file", "folder": "cannot read: [Errno 21] Is a directory"}[kind]
    _report_refused(folder, "res/verdict.json: ", needle)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_report_inputs__read_verdict_refuses_a_fifo_without_blocking(tmp_path, kind):
    """report, publish and diagnose all read verdict.json through gate.core.verdict.read_verdict."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "verdict.json")
    else:
        (tmp_path / "verdict.json").symlink_to("/dev/zero")
    code = ("from gate.core.verdict import read_verdict\nfrom gate.core.errors import BadInput\n"
            "try:\n    read_verdict('.')\nexcept BadInput as e:\n    print(e.line())\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert proc.returncode == 0, proc.stderr
    kind = {"fifo": "a FIFO (named pipe)", "device": "a character device"}[kind]
    assert proc.stdout.startswith(f"verdict.json: is {kind}, not a regular file"), proc.stdout


# ------------------------------------------------------------------ every number the report formats is total
BIG = [math.inf, -math.inf, 1e308, -1e308, 1.7976931348623157e308, 5e-324, "Infinity", "-Infinity", 10 ** 400, 0.0]


@pytest.mark.parametrize("big", BIG, ids=repr)
def test_report_inputs__huge_and_infinite_values_render(made, big):
    v = copy.deepcopy(made["drift"])
    for c in v["checks"]:
        c["value"] = big if not isinstance(big, int) else 1e308
        c["status"] = "fail"
    for w in v["worst_tokens"]:
        w.update(reference=big, candidate=-1e308, abs_diff=big)
    for channel in ("forced", "sampler"):
        v["by_position"][channel] = [{"start": 0, "end": 8, "count": 3, "mean_abs_diff": big, "max_abs_diff": big},
                                     {"start": 8, "end": 16, "count": big, "mean_abs_diff": 1e-3, "max_abs_diff": 1e-3}]
        v["histogram"][channel] = {"zero": big, "decades": [{"exp": 308, "count": 2}, {"exp": big, "count": big}]}
        v["measures"]["overall"][channel]["max_abs_diff"] = big
    for row in v["per_prompt"]:
        row.update(forced_max_abs_diff=big, sampler_max_abs_diff="Infinity")
    texts = [report.render_comment(v), report.render_summary(v), report.render_html(v)]
    if big in (math.inf, "Infinity"):
        assert all("inf" in t for t in texts)
        assert "drawn at 1e+04" in texts[0]  # the mermaid chart says where inf went


@pytest.mark.parametrize("value, text", [
    (math.inf, "inf"), (-math.inf, "-inf"), ("Infinity", "inf"), ("-Infinity", "-inf"), (math.nan, "NaN"),
    (1e308, "1e+308"), (-1e308, "-1e+308"), (10 ** 400, "inf"), (None, "n/a"), ([1], "[1]"),
])
def test_report_inputs__number_formatting_is_total(value, text):
    assert _values._num(value) == text


@pytest.mark.parametrize("value, bound, text", [
    ("Infinity", 1e-4, "infinitely past the bound"),
    (math.inf, 1e-4, "infinitely past the bound"),
    (1e308, 1e-300, "inf× the bound"),
    (0.72, 1e-4, "7,200× the bound"),
    ("-Infinity", 0.9, "off by inf"),
    ([1], 0.5, ""),
])
def test_report_inputs__ratio_to_the_bound_is_total(value, bound, text):
    op = ">=" if value == "-Infinity" else "<="
    assert view._ratio({"status": "fail", "value": value, "bound": bound, "op": op}) == text


# ------------------------------------------------------------------ any value anywhere: a report or one line
def _paths(value: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    out = [prefix] if prefix else []
    if depth < 5 and isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,), depth + 1)
    elif depth < 5 and isinstance(value, list):
        for i, v in enumerate(value[:3]):
            out += _paths(v, prefix + (i,), depth + 1)
    return out


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10 ** 400, max_value=10 ** 400)
    | st.floats(allow_nan=True) | st.sampled_from(["Infinity", "-Infinity", "NaN", "", "x" * 300])
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_report_inputs__any_value_at_any_path_gives_a_report_or_bad_input(made, tmp_path, data):
    """The only outcomes are a rendered report or BadInput: never another exception."""
    v = copy.deepcopy(made[data.draw(st.sampled_from(sorted(made)))])
    path = data.draw(st.sampled_from(_paths(v)))
    target = v
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JSON_VALUES)
    folder = tmp_path / "res"
    folder.mkdir(exist_ok=True)
    text = json.dumps(v, allow_nan=True)
    (folder / "verdict.json").write_text(text, encoding="utf-8")
    try:
        loaded = read_verdict(folder)
    except BadInput as exc:
        assert "\n" not in exc.line() and "verdict.json" in exc.what
        return
    report.render_comment(loaded), report.render_summary(loaded), report.render_html(loaded)


def test_report_inputs__verdict_too_large_is_refused_before_reading(tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    with open(folder / "verdict.json", "wb") as fh:  # sparse: no disk is used
        fh.truncate((256 << 20) + 1)
    before = (folder / "verdict.json").stat()
    proc = run_cli("report", "res", cwd=tmp_path, timeout=30)
    refused(proc, "res/verdict.json: is 268,435,457 bytes, over the 256 MiB limit for a verdict")
    after = (folder / "verdict.json").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert [p.name for p in folder.iterdir()] == ["verdict.json"]

"""Suite validation: every problem named with file:line, all of them at once.
The CLI side of the same catalogue is tests/integration/test_errors.py."""
from __future__ import annotations

import textwrap

import pytest

from gate.errors import BadInput
from gate.suite import SAMPLING_DEFAULTS, load_suite, parse_engine_arg, workload_hash
from tests._util import REPO

SUITE = """\
name: unit
model: model
engine:
  dtype: float32
  seed: 0
prompts:
  - id: a
    text: "Hello there"
  - id: 7
    token_ids: [1, 2, 3]
sampling:
  - name: greedy
    temperature: 0
    max_tokens: 4
  - name: hot
    temperature: 0.7
    top_p: 0.95
    seed: 100
    n: 3
policy:
  atol: 1.0e-3
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"vocab_size": 384}', encoding="utf-8")
    return tmp_path


def _write(folder, text, name="suite.yaml"):
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problem(folder, text, name="suite.yaml"):
    with pytest.raises(BadInput) as info:
        load_suite(_write(folder, text, name))
    return info.value.what


# ------------------------------------------------------------------ valid suites
def test_suite__valid_suite_loads_with_defaults_filled(folder):
    s = load_suite(_write(folder, SUITE))
    assert s.name == "unit"
    assert s.model == (folder / "model").resolve()
    assert s.engine == {"dtype": "float32", "seed": 0}
    assert [(p.id, p.text, p.token_ids) for p in s.prompts] == [("a", "Hello there", None), ("7", None, (1, 2, 3))]
    greedy, hot = s.sampling
    assert greedy.params == dict(SAMPLING_DEFAULTS, temperature=0.0, max_tokens=4)
    assert isinstance(greedy.params["temperature"], float)
    assert hot.seeds() == [100, 101, 102] and hot.n == 3 and hot.logprobs == SAMPLING_DEFAULTS["logprobs"]
    assert s.policy == {"atol": 1e-3}
    assert s.engine_lines == {"dtype": f"{folder / 'suite.yaml'}:4", "seed": f"{folder / 'suite.yaml'}:5"}


def test_suite__relative_paths_resolve_against_the_suite_folder(folder, tmp_path, monkeypatch):
    sub = folder / "suites"
    sub.mkdir()
    (sub / "more.jsonl").write_text('{"id": "c", "token_ids": [5]}\n\n{"id": "d", "text": "x"}\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_suite(_write(sub, SUITE.replace("model: model", "model: ../model") + "prompts_file: more.jsonl\n"))
    assert s.model == (folder / "model").resolve()
    assert [p.id for p in s.prompts] == ["a", "7", "c", "d"]
    assert s.prompts[2].where == f"{sub / 'more.jsonl'}:1" and s.prompts[3].where == f"{sub / 'more.jsonl'}:3"


def test_suite__example_suite_is_valid(folder):
    text = (REPO / "examples" / "suite.yaml").read_text(encoding="utf-8")
    lines = [("model: model" if line.startswith("model:") else line) for line in text.splitlines()]
    s = load_suite(_write(folder, "\n".join(lines) + "\n"))
    assert s.prompts and s.sampling


# ------------------------------------------------------------------ problems, with file:line
@pytest.mark.parametrize("old,new,message", [
    ("max_tokens: 4", 'max_tokens: "ten"', ":14: sampling config 'greedy': max_tokens must be int, got 'ten'"),
    ("max_tokens: 4", "max_tokens: true", ":14: sampling config 'greedy': max_tokens must be int, got True"),
    ("temperature: 0.7", "temperature: hot", ":16: sampling config 'hot': temperature must be a number"),
    ("top_p: 0.95", "top_p: 1.5", ":15: sampling config 'hot': top_p must be in (0, 1]"),
    ("top_p: 0.95", "top_p: 0", ":15: sampling config 'hot': top_p must be in (0, 1]"),
    ("n: 3", "n: 0", ":15: sampling config 'hot': n must be >= 1"),
    ("seed: 100", "seed: -1", ":15: sampling config 'hot': seed must be >= 0"),
    ("n: 3", "n: 3\n    logprobs: 50", ":15: sampling config 'hot': logprobs (top-k recorded) must be in 0..20"),
    ("n: 3", "n: 3\n    top_k: -2", ":15: sampling config 'hot': top_k must be -1, 0 (off) or positive"),
    ("n: 3", "n: 3\n    best_of: 2", ":20: sampling config 'hot': unknown key 'best_of'"),
    ("  - name: hot", "  - name: greedy", ":15: duplicate sampling config name 'greedy'"),
    ("  - id: 7", "  - id: a", ":9: duplicate prompt id 'a' (also at"),
    ('    text: "Hello there"', '    text: ""', ":7: prompt 'a': 'text' must be a non-empty string"),
    ("token_ids: [1, 2, 3]", "token_ids: []", ":9: prompt '7': 'token_ids' must be a non-empty list"),
    ("token_ids: [1, 2, 3]", "token_ids: [1, 2.5]", ":9: prompt '7': 'token_ids' must be a non-empty list"),
    ("  - id: 7", "  - id: true", ":9: prompt 'id' must be a non-empty string, got True"),
    ("name: unit", "name: unit\nmodle: x", ":2: unknown key 'modle'"),
    ("model: model", "model: nowhere", ":2: model folder"),
    ("  seed: 0", "  seed: 0\n  model: x", ":6: engine.model is not allowed"),
    ("  atol: 1.0e-3", "  atol: 1e-3", ":20: policy 'atol' must be a non-negative number, got '1e-3'"),
    ("  atol: 1.0e-3", "  per_config:\n    lukewarm: {atol: 0.1}", ":20: policy per_config names unknown sampling "
                                                               "config 'lukewarm'"),
])
def test_suite__problem_is_named_with_file_and_line(folder, old, new, message):
    assert old in SUITE
    what = _problem(folder, SUITE.replace(old, new))
    assert what.startswith(str(folder / "suite.yaml")), what
    assert message in what, what


def test_suite__prompts_file_problems_name_that_file(folder):
    (folder / "more.jsonl").write_text('{"id": "c", "token_ids": [5]}\n{"id": "d"}\nnot json\n', encoding="utf-8")
    what = _problem(folder, SUITE + "prompts_file: more.jsonl\n")
    assert f"{folder / 'more.jsonl'}:2: prompt 'd' needs exactly one of 'text' or 'token_ids'" in what
    assert f"{folder / 'more.jsonl'}:3: malformed JSON line" in what
    assert what.startswith("2 problems in the suite: ")


def test_suite__every_problem_reported_at_once(folder):
    text = SUITE.replace("max_tokens: 4", "max_tokens: 0").replace("top_p: 0.95", "top_p: 2").replace(
        "name: unit", "name: unit\nextra: 1")
    what = _problem(folder, text)
    assert what.startswith("3 problems in the suite: ")
    assert ":2: unknown key 'extra'" in what and "max_tokens must be >= 1" in what and "top_p must be in" in what


@pytest.mark.parametrize("text,message", [
    ("", "the suite is empty"),
    ("# only a comment\n", "the suite is empty"),
    ("[1, 2]\n", ":1: the suite must be a mapping, got list"),
    ("just a string\n", ":1: the suite must be a mapping, got str"),
    ("model: model\nsampling:\n  - name: g\n", "the suite has no prompts"),
    ("model: model\nprompts:\n  - id: a\n    token_ids: [1]\n", "the suite has no sampling configs"),
    ("model: model\nprompts:\n  - id: a\n    token_ids: [1]\nsampling: []\n", "the suite has no sampling configs"),
    ("model: model\nprompts: {a: 1}\nsampling:\n  - name: g\n", ":2: 'prompts' must be a list"),
    ("model: model\nprompts:\n  - id: a\n    token_ids: [1]\nsampling: {name: g}\n",
     ":5: 'sampling' must be a list of named configs"),
    ("model: [1]\nprompts:\n  - id: a\n    token_ids: [1]\nsampling:\n  - name: g\n",
     ":1: 'model' must be a local path (string)"),
    ("model: model\nmodel: again\n", ":2: malformed YAML: duplicate key 'model' (first at line 1)"),
    ("model: model\nengine:\n  dtype: x\n   seed: 0\n", ":4: malformed YAML"),
])
def test_suite__whole_file_problems(folder, text, message):
    assert message in _problem(folder, text)


def test_suite__not_utf8_and_missing(folder):
    (folder / "bad.yaml").write_bytes(b"model: \xff\n")
    with pytest.raises(BadInput, match="not UTF-8 text"):
        load_suite(folder / "bad.yaml")
    with pytest.raises(BadInput, match="file not found"):
        load_suite(folder / "nope.yaml")


# ------------------------------------------------------------------ engine args
@pytest.mark.parametrize("text,expected", [
    ("logprobs_mode=processed_logprobs", ("logprobs_mode", "processed_logprobs")),
    ("gpu_memory_utilization=0.5", ("gpu_memory_utilization", 0.5)),
    ("enforce_eager=true", ("enforce_eager", True)),
    ("hf_overrides={head_dtype: float32}", ("hf_overrides", {"head_dtype": "float32"})),
    ("tokenizer_mode=a=b", ("tokenizer_mode", "a=b")),
    (" seed = 3", ("seed", 3)),
    ("revision=", ("revision", "")),
])
def test_suite__engine_arg_value_is_yaml(text, expected):
    assert parse_engine_arg(text) == expected


@pytest.mark.parametrize("text", ["dtype", "=float32", ""])
def test_suite__engine_arg_needs_key_and_equals(text):
    with pytest.raises(BadInput, match="is not KEY=VALUE"):
        parse_engine_arg(text)


def test_suite__engine_overrides_do_not_touch_the_suite(folder):
    s = load_suite(_write(folder, SUITE))
    t = s.with_engine_overrides({"dtype": "bfloat16"})
    assert t.engine == {"dtype": "bfloat16", "seed": 0} and s.engine["dtype"] == "float32"


# ------------------------------------------------------------------ workload identity
def _workload(folder, text):
    s = load_suite(_write(folder, text))
    return workload_hash({p.id: list(p.token_ids or (0,)) for p in s.prompts},
                         {c.name: c.params for c in s.sampling})


def test_suite__workload_hash_ignores_engine_and_policy_edits(folder):
    base = _workload(folder, SUITE)
    assert _workload(folder, SUITE.replace("dtype: float32", "dtype: bfloat16")) == base
    assert _workload(folder, SUITE.replace("atol: 1.0e-3", "atol: 0.5")) == base
    # spelling out a default is not a change
    assert _workload(folder, SUITE.replace("max_tokens: 4", "max_tokens: 4\n    logprobs: 5")) == base


def test_suite__workload_hash_follows_prompts_and_sampling(folder):
    base = _workload(folder, SUITE)
    assert _workload(folder, SUITE.replace("max_tokens: 4", "max_tokens: 5")) != base
    assert _workload(folder, SUITE.replace("[1, 2, 3]", "[1, 2, 4]")) != base

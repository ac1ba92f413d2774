"""Suite validation: every problem named with file:line, all of them at once.
The CLI side of the same catalogue is tests/integration/test_errors.py."""
from __future__ import annotations

import json
import textwrap

import pytest

from gate.core.errors import BadInput
from gate.core.identity import ContextLength, model_max_len
from gate.run.sampling import SAMPLING_DEFAULTS
from gate.run.suite import (
    PROMPTS_FILE_SIZE_LIMIT,
    SUITE_SIZE_LIMIT,
    YAML_ALIAS_LIMIT,
    check_prompt_lengths,
    load_suite,
    load_yaml,
    parse_engine_arg,
    workload_hash,
)
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
    ("  atol: 1.0e-3", "  atol: tight", ":20: policy 'atol' must be a non-negative number, got 'tight'"),
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


# ------------------------------------------------------------------ merge keys, anchors, aliases
MERGED = """\
model: model
prompts:
  - id: a
    token_ids: [1, 2, 3]
sampling:
  - &greedy
    name: greedy
    temperature: 0
    max_tokens: 4
  - &hot
    <<: *greedy
    name: hot
    temperature: 0.7
  - <<: [*hot, *greedy]
    name: hotter
    seed: 3
"""


def test_suite__merge_keys_share_settings_and_own_keys_override(folder):
    s = load_suite(_write(folder, MERGED))
    greedy, hot, hotter = s.sampling
    assert hot.params == dict(greedy.params, temperature=0.7)
    assert hotter.params == dict(hot.params, seed=3)  # with a list, the earlier anchor wins
    assert (greedy.where, hot.where, hotter.where) == (":6", ":10", ":14")


def test_suite__merged_key_keeps_the_line_its_anchor_wrote_it_on(folder):
    data = load_yaml(_write(folder, MERGED))
    assert data["sampling"][2].lines == {"name": 15, "seed": 16, "temperature": 13, "max_tokens": 9}
    what = _problem(folder, MERGED.replace("max_tokens: 4", "max_tokens: 4\n    top_p: 7"))
    assert what.count("top_p must be in (0, 1]") == 3, what  # the anchor's error, in each config


def test_suite__duplicate_key_beside_a_merge_is_still_an_error(folder):
    what = _problem(folder, MERGED.replace("    seed: 3", "    seed: 3\n    seed: 4"))
    assert what.endswith(":17: malformed YAML: duplicate key 'seed' (first at line 16)"), what


def test_suite__merge_of_a_scalar_is_named_with_its_line(folder):
    what = _problem(folder, MERGED.replace("<<: [*hot, *greedy]", "<<: 5"))
    assert ":14: malformed YAML: expected a mapping or list of mappings for merging" in what, what


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_suite__alias_expansion_is_capped_at_the_alias_that_crosses_it(folder):
    # 9**6 = 531,441 strings written out: over the limit at level 5 (9**5 = 59,049 per a4; the 2nd alias crosses)
    what = _problem(folder, _laughs(6))
    assert ":6: aliases expand the document to more than 100,000 nodes (at *a4)" in what, what
    assert YAML_ALIAS_LIMIT == 100_000


def test_suite__aliases_within_the_limit_load(folder):
    data = load_yaml(_write(folder, _laughs(4)))  # 9**4 = 6,561
    assert len(data["a3"]) == 9 and data["a3"][0] is data["a3"][1]  # shared, never copied


def test_suite__recursive_alias_is_refused_with_its_line(folder):
    what = _problem(folder, "model: model\nprompts: &p\n  - id: a\n    token_ids: *p\n")
    assert what.endswith(":4: alias *p refers to a node that contains it"), what


@pytest.mark.parametrize("text,message", [
    ("seed: 1" + "0" * 5000 + "\n", ":1: malformed YAML: cannot read the value (Exceeds the limit (4300 digits)"),
    ("when: 2020-13-01\n", ":1: malformed YAML: cannot read the value (month must be in 1..12)"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", ": YAML nested too deeply to read"),
])
def test_suite__values_yaml_cannot_build_are_bad_input(folder, text, message):
    assert message in _problem(folder, text)


# ------------------------------------------------------------------ files that are not suites
def test_suite__oversized_suite_is_refused_before_reading(folder):
    path = folder / "big.yaml"
    with open(path, "wb") as fh:
        fh.truncate(SUITE_SIZE_LIMIT + 1)  # sparse: the refusal comes from the stat
    with pytest.raises(BadInput) as info:
        load_suite(path)
    assert info.value.what == f"{path}: is 4,194,305 bytes, over the 4 MiB limit for a suite or policy file"
    assert "prompts_file (limit 64 MiB)" in info.value.hint


def test_suite__prompts_file_limits_and_kinds(folder):
    big = folder / "big.jsonl"
    with open(big, "wb") as fh:
        fh.truncate(PROMPTS_FILE_SIZE_LIMIT + 2**20)
    (folder / "dir.jsonl").mkdir()
    for name, message in [("big.jsonl", "is 68,157,440 bytes, over the 64 MiB limit for a prompts file"),
                          ("dir.jsonl", "is a folder, not a JSONL file"),
                          ("nope.jsonl", "not found (relative paths resolve")]:
        what = _problem(folder, SUITE + f"prompts_file: {name}\n")
        assert what.startswith(f"{folder / 'suite.yaml'}:22: prompts_file {folder / name} {message}"), what


def test_suite__prompts_file_lines_end_at_newline_only(folder):
    (folder / "more.jsonl").write_bytes('{"id": "c", "text": "a\u2028b\x85c"}\r\n'.encode("utf-8") + b"\xff\n"
                                        + b'{"id": "d", "token_ids": [1' + b"0" * 5000 + b"]}\n")
    what = _problem(folder, SUITE + "prompts_file: more.jsonl\n")
    assert what.startswith("2 problems in the suite: "), what
    assert f"{folder / 'more.jsonl'}:2: not UTF-8 text" in what
    assert f"{folder / 'more.jsonl'}:3: unreadable JSON line (Exceeds the limit (4300 digits)" in what


def test_suite__many_problems_are_shown_up_to_twenty(folder):
    lines = "".join('{"id": "x%d"}\n' % i for i in range(30))
    (folder / "more.jsonl").write_text(lines, encoding="utf-8")
    what = _problem(folder, SUITE + "prompts_file: more.jsonl\n")
    assert what.startswith("30 problems in the suite: ") and what.endswith("; and 10 more"), what
    assert what.count("needs exactly one of") == 20


# ------------------------------------------------------------------ values vLLM would refuse after start
@pytest.mark.parametrize("old,new,message", [
    ("temperature: 0.7", "temperature: .nan", ":15: sampling config 'hot': temperature is NaN; write a number"),
    ("temperature: 0.7", "temperature: .inf", ":15: sampling config 'hot': temperature is .inf; write a finite"),
    ("temperature: 0.7", "temperature: -.inf", ":15: sampling config 'hot': temperature is -.inf; write a finite"),
    ("temperature: 0.7", "temperature: 1.0e+400", ":15: sampling config 'hot': temperature is .inf"),
    ("top_p: 0.95", "top_p: .NaN", ":15: sampling config 'hot': top_p is NaN; write a number"),
    ("max_tokens: 4", "max_tokens: 4\n    min_tokens: 5", ":12: sampling config 'greedy': min_tokens 5 must be "
                                                         "<= max_tokens 4"),
    ("max_tokens: 4", "max_tokens: 4\n    min_tokens: -1", ":12: sampling config 'greedy': min_tokens must be >= 0"),
    ("seed: 100", f"seed: {2**63}", ":15: sampling config 'hot': seed must be below 2**63 for every sample"),
    ("seed: 100", f"seed: {2**63 - 2}", f"got seed {2**63 - 2} with n 3"),
    ("n: 3", "n: 3\n    top_k: -5", ":15: sampling config 'hot': top_k must be -1, 0 (off) or positive"),
])
def test_suite__values_the_engine_would_refuse_are_found_first(folder, old, new, message):
    assert old in SUITE
    what = _problem(folder, SUITE.replace(old, new))
    assert message in what, what


def test_suite__largest_seed_is_accepted(folder):
    s = load_suite(_write(folder, SUITE.replace("seed: 100", f"seed: {2**63 - 3}")))
    assert s.sampling_by_name["hot"].seeds()[-1] == 2**63 - 1


@pytest.mark.parametrize("old,new,message", [
    ("  - id: 7", '  - id: "\\ud800"', ":9: prompt id '\\ud800' holds a lone surrogate '\\ud800' at character 0"),
    ('text: "Hello there"', 'text: "Hello \\udc00"', ":7: prompt 'a': 'text' holds a lone surrogate '\\udc00' at "
                                                    "character 6, which is not valid Unicode"),
    ("  - name: hot", '  - name: "h\\udfffot"', ":15: sampling config name 'h\\udfffot' holds a lone surrogate"),
    ("name: unit", 'name: "\\ud83d"', ":1: 'name' holds a lone surrogate"),
])
def test_suite__lone_surrogates_are_refused(folder, old, new, message):
    assert old in SUITE
    what = _problem(folder, SUITE.replace(old, new))
    assert message in what, what


def test_suite__lone_surrogate_in_prompts_file(folder):
    (folder / "more.jsonl").write_text('{"id": "\\ud800", "text": "x"}\n{"id": "e", "text": "\\udbff"}\n',
                                       encoding="utf-8")
    what = _problem(folder, SUITE + "prompts_file: more.jsonl\n")
    assert f"{folder / 'more.jsonl'}:1: prompt id '\\ud800' holds a lone surrogate" in what
    assert f"{folder / 'more.jsonl'}:2: prompt 'e': 'text' holds a lone surrogate" in what


# ------------------------------------------------------------------ prompt lengths
def _model_config(folder, **cfg):
    (folder / "model" / "config.json").write_text(json.dumps(dict({"vocab_size": 384}, **cfg)), encoding="utf-8")


def test_suite__token_prompt_longer_than_the_model_is_refused(folder):
    _model_config(folder, max_position_embeddings=3)
    what = _problem(folder, SUITE)
    config = folder / "model" / "config.json"
    assert what == (f"{folder / 'suite.yaml'}:9: prompt '7' has 3 token ids, over the 2 a prompt may fill "
                    f"(max_model_len 3 from {config} max_position_embeddings, less one for the output)")


def test_suite__prompt_plus_max_tokens_over_the_model_is_refused(folder):
    _model_config(folder, max_position_embeddings=2048, n_positions=19)  # the smallest key wins, as in vLLM
    what = _problem(folder, SUITE)  # 3 ids + max_tokens 16 (config 'hot', the default) = 19
    assert what.endswith(":9: prompt '7' has 3 token ids; with max_tokens 16 of sampling config 'hot' that is 19, "
                         "over the 18 a prompt and its completion may fill (max_model_len 19 from "
                         f"{folder / 'model' / 'config.json'} n_positions, less one for the scoring step)"), what
    _model_config(folder, n_positions=20)
    assert load_suite(_write(folder, SUITE)).prompts


def test_suite__engine_max_model_len_wins_over_the_model_config(folder):
    _model_config(folder, max_position_embeddings=2048)
    what = _problem(folder, SUITE.replace("  seed: 0", "  seed: 0\n  max_model_len: 8"))
    assert f"max_model_len 8 from engine.max_model_len at {folder / 'suite.yaml'}:6" in what, what
    # anything but a plain positive number ("4k", -1: auto) is vLLM's to read
    assert load_suite(_write(folder, SUITE.replace("  seed: 0", "  seed: 0\n  max_model_len: 4k"))).prompts


def test_suite__prompts_file_prompt_too_long_names_its_line(folder):
    _model_config(folder, max_position_embeddings=32)
    (folder / "more.jsonl").write_text('{"id": "c", "token_ids": [5]}\n{"id": "d", "token_ids": %s}\n'
                                       % json.dumps([1] * 40), encoding="utf-8")
    what = _problem(folder, SUITE + "prompts_file: more.jsonl\n")
    assert what.startswith(f"{folder / 'more.jsonl'}:2: prompt 'd' has 40 token ids, over the 31"), what


def test_suite__text_prompt_lengths_are_checked_once_tokenized(folder):
    _model_config(folder, max_position_embeddings=24)
    s = load_suite(_write(folder, SUITE))
    check_prompt_lengths(s, {"a": [1] * 7, "7": [1, 2, 3]})  # 7 + 16 < 24
    with pytest.raises(BadInput) as info:
        check_prompt_lengths(s, {"a": [1] * 8, "7": [1, 2, 3]})
    assert info.value.what == (f"{folder / 'suite.yaml'}:7: prompt 'a' has 8 token ids; with max_tokens 16 of "
                               "sampling config 'hot' that is 24, over the 23 a prompt and its completion may fill "
                               f"(max_model_len 24 from {folder / 'model' / 'config.json'} max_position_embeddings, "
                               "less one for the scoring step)")
    assert "raise engine.max_model_len" in info.value.hint
    with pytest.raises(BadInput, match="max_model_len 10 from --engine-arg max_model_len"):
        check_prompt_lengths(s, {"a": [1] * 2}, dict(s.engine, max_model_len=10))


@pytest.mark.parametrize("cfg,expected", [
    ({"max_position_embeddings": 4096}, (4096, "max_position_embeddings")),
    ({"max_position_embeddings": 4096, "seq_length": 2048}, (2048, "seq_length")),
    ({"text_config": {"max_position_embeddings": 512}, "max_position_embeddings": 9}, (512, "max_position_embeddings")),
    ({"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "linear", "factor": 4.0}}, None),
    ({"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}},
     (4096, "max_position_embeddings")),
    ({"max_position_embeddings": True}, None),
    ({}, None),
])
def test_identity__model_max_len_from_config_json(folder, cfg, expected):
    (folder / "model" / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    got = model_max_len(folder / "model")
    assert (got and (got.tokens, got.source.rsplit(" ", 1)[1])) == expected


def test_identity__tokenizer_model_max_length_counts_when_smaller(folder):
    _model_config(folder, max_position_embeddings=4096)
    (folder / "model" / "tokenizer_config.json").write_text('{"model_max_length": 1024}', encoding="utf-8")
    got = model_max_len(folder / "model")
    assert got == ContextLength(1024, f"{folder / 'model' / 'tokenizer_config.json'} model_max_length")


def test_identity__broken_config_json_is_named(folder):
    (folder / "model" / "config.json").write_text('{"vocab_size": ', encoding="utf-8")
    with pytest.raises(BadInput, match="config.json is not valid JSON"):
        model_max_len(folder / "model")
    assert "config.json is not valid JSON" in _problem(folder, SUITE)


def test_load_suite__strict_paths_refuses_a_suite_or_prompts_file_linked_out_of_the_workspace(tmp_path, monkeypatch):
    from gate.core.errors import BadInput as _BadInput

    ws, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    ws.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("GITHUB_WORKSPACE", str(ws))
    model = ws / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (elsewhere / "secret.jsonl").write_text('{"id": "x", "text": "from outside"}\n')
    (ws / "prompts.jsonl").symlink_to(elsewhere / "secret.jsonl")
    suite = ws / "suite.yaml"
    suite.write_text("model: model\nprompts_file: prompts.jsonl\nsampling:\n  - name: g\n    temperature: 0\n")
    assert [p.id for p in load_suite(suite).prompts] == ["x"]  # without the flag, links are followed
    with pytest.raises(_BadInput, match=r"suite.yaml:2: prompts_file prompts.jsonl resolves to .*elsewhere/secret"
                                        r".jsonl, outside the workspace .*ws \(--strict-paths\)"):
        load_suite(suite, strict_paths=True)
    (elsewhere / "suite.yaml").write_text(suite.read_text())
    (ws / "linked.yaml").symlink_to(elsewhere / "suite.yaml")
    with pytest.raises(_BadInput, match=r"suite .*linked.yaml resolves to .*elsewhere/suite.yaml, outside"):
        load_suite(ws / "linked.yaml", strict_paths=True)


# ------------------------------------------------------------------ weight_update:
def test_suite__weight_update_defaults_and_paths(folder):
    (folder / "old").mkdir()
    (folder / "old" / "config.json").write_text("{}", encoding="utf-8")
    s = load_suite(_write(folder, SUITE + "weight_update:\n  from: old\n"))
    wu = s.weight_update
    assert wu.source == (folder / "old").resolve() and wu.load == s.model
    assert [p.name for p in wu.paths] == ["reload/keep/clear-cache"]
    # max_tokens None: the machine's default, resolved at run time
    assert (wu.max_tokens, wu.switch_at, wu.atol, wu.backend) == (None, None, 1e-4, "file")
    s = load_suite(_write(folder, SUITE + "weight_update:\n  from: old\n  switch_at: 3\n  paths:\n"
                                          "    - {via: native, pause: wait}\n    - {pause: abort, cache: keep}\n"))
    assert [p.name for p in s.weight_update.paths] == ["native/wait/clear-cache", "reload/abort/keep-cache"]
    assert load_suite(_write(folder, SUITE)).weight_update is None


def test_suite__weight_update_problems_are_named_with_their_lines(folder):
    what = _problem(folder, SUITE + textwrap.dedent("""\
        weight_update:
          from: nowhere
          max_tokens: 1
          atol: -1
          pathz: []
          paths:
            - {via: reload, pause: kep}
            - via: sleep
              cach: clear
            - {via: reload}
            - {via: reload, pause: keep, cache: clear}
        """))
    assert "7 problems in the suite" in what, what
    top = SUITE.count("\n")  # weight_update: is the line after
    for line, msg in ((2, "weight_update.from: model folder"), (3, "weight_update.max_tokens must be an int >= 2"),
                      (4, "weight_update.atol must be a finite number >= 0"), (5, "weight_update: unknown key 'pathz'"),
                      (7, "weight_update.paths[0].pause must be one of none, abort, wait, keep, got 'kep'"),
                      (9, "weight_update.paths[1]: unknown key 'cach'"),
                      (11, "weight_update.paths[3]: path reload/keep/clear-cache given twice")):
        assert f"suite.yaml:{top + line}: {msg}" in what, (line, msg, what)
    assert "'weight_update' must be a mapping" in _problem(folder, SUITE + "weight_update: [old]\n")
    assert "weight_update needs 'from'" in _problem(folder, SUITE + "weight_update: {paths: [{via: reload}]}\n")
    assert "the update changes nothing" in _problem(folder, SUITE + "weight_update: {from: model}\n")

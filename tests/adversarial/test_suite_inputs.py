"""Hostile suites, policies and prompt files (docs/suite-format.md, "Limits"),
through the real CLI: every case exits 2 with exactly one line on stderr,
no traceback, nothing written, and every input byte-identical afterwards.

Nothing here starts the engine: each case is refused while the suite is
read. Files that could block (FIFOs) or never end (/dev/zero, an alias
bomb) run in a subprocess with a timeout and a memory cap, so a regression
fails the test instead of hanging or exhausting the machine."""
from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._util import record, write_trace

MEMORY_CAP = 2 * 1024**3  # address space of the CLI under test: an expanding alias bomb dies, not the machine

SUITE = """\
model: model
prompts:
  - id: a
    token_ids: [1, 2, 3]
  - id: b
    text: hello
sampling:
  - &greedy
    name: greedy
    temperature: 0
    max_tokens: 8
  - <<: *greedy
    name: hot
    temperature: 0.7
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """The real CLI, as a user runs it, with a timeout and a memory cap."""
    full = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run([sys.executable, "-m", "gate", *map(str, args)], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=_cap_memory)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (folders and special files as None)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("parity-gate: bad input: ") and line.endswith(")") and "(hint: " in line, line
    for needle in needles:
        assert needle in line, line
    assert proc.stdout == ""
    return line


@pytest.fixture
def proj(tmp_path) -> Path:
    """A suite's folder: the suite, a model folder with config.json (nothing
    here gets as far as the weights) and two trace sets for --policy cases."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(
        json.dumps({"vocab_size": 384, "max_position_embeddings": 64}), encoding="utf-8")
    (tmp_path / "suite.yaml").write_text(SUITE, encoding="utf-8")
    write_trace(tmp_path / "a", [record()])
    write_trace(tmp_path / "b", [record()])
    return tmp_path


def _record(suite: str = "suite.yaml") -> list[str]:
    return ["record", "--suite", suite, "--out", "new/golden"]


def _laughs(key: str = "a") -> str:
    """A "billion laughs" document: 9 levels of 9 aliases, 9**9 strings written out."""
    lines = [f'{key}0: &{key}0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"{key}{i}: &{key}{i} [" + ", ".join([f"*{key}{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ section 4: unbounded reads and hangs
def test_suite_inputs__alias_bomb_in_a_suite_is_refused_at_its_line(proj):
    bomb = textwrap.indent(_laughs(), "  ")  # under engine:, lines 3..11
    (proj / "suite.yaml").write_text("model: model\nengine:\n" + bomb + SUITE.split("\n", 1)[1], encoding="utf-8")
    before = snapshot(proj)
    # a4 stands for 9**5 nodes; the second *a4 on the a5 line crosses 100,000
    line = refused(cli(*_record(), cwd=proj),
                   "suite.yaml:8: aliases expand the document to more than 100,000 nodes (at *a4)",
                   "(hint: write the values out, or share fewer and smaller anchors)")
    assert snapshot(proj) == before, line


def test_suite_inputs__alias_bomb_as_a_policy_file(proj):
    (proj / "policy.yaml").write_text(_laughs(), encoding="utf-8")
    before = snapshot(proj)
    refused(cli("compare", "a", "b", "--out", "result", "--policy", "policy.yaml", cwd=proj),
            "policy.yaml:6: aliases expand the document to more than 100,000 nodes (at *a4)")
    assert snapshot(proj) == before


def test_suite_inputs__recursive_alias(proj):
    (proj / "suite.yaml").write_text(SUITE + "policy: &p\n  per_config: *p\n", encoding="utf-8")
    refused(cli(*_record(), cwd=proj), "suite.yaml:16: alias *p refers to a node that contains it")


@pytest.mark.parametrize("where", ["suite", "policy", "prompts_file"])
def test_suite_inputs__fifo_is_refused_and_never_read(proj, where):
    os.mkfifo(proj / "pipe")
    if where == "suite":
        args = _record("pipe")
        expect = "pipe: is a FIFO (named pipe), not a regular file"
    elif where == "policy":
        args = ["compare", "a", "b", "--out", "result", "--policy", "pipe"]
        expect = "pipe: is a FIFO (named pipe), not a regular file"
    else:
        (proj / "suite.yaml").write_text(SUITE + "prompts_file: pipe\n", encoding="utf-8")
        args = _record()
        expect = "suite.yaml:15: prompts_file pipe is a FIFO (named pipe), not a regular file"
    before = snapshot(proj)
    refused(cli(*args, cwd=proj, timeout=30), expect)
    assert snapshot(proj) == before


@pytest.mark.parametrize("where", ["suite", "policy", "prompts_file"])
def test_suite_inputs__dev_zero_is_refused_and_never_read(proj, where):
    if where == "suite":
        args, expect = _record("/dev/zero"), "/dev/zero: is a character device, not a regular file"
    elif where == "policy":
        args = ["compare", "a", "b", "--out", "result", "--policy", "/dev/zero"]
        expect = "/dev/zero: is a character device, not a regular file"
    else:
        (proj / "suite.yaml").write_text(SUITE + "prompts_file: /dev/zero\n", encoding="utf-8")
        args, expect = _record(), "suite.yaml:15: prompts_file /dev/zero is a character device, not a regular file"
    before = snapshot(proj)
    refused(cli(*args, cwd=proj, timeout=30), expect)
    assert snapshot(proj) == before


def test_suite_inputs__prompts_file_that_is_a_folder(proj):
    (proj / "more").mkdir()
    (proj / "suite.yaml").write_text(SUITE + "prompts_file: more\n", encoding="utf-8")
    refused(cli(*_record(), cwd=proj), "suite.yaml:15: prompts_file more is a folder, not a JSONL file")


def test_suite_inputs__oversized_files_are_refused_with_the_limit(proj):
    with open(proj / "big.yaml", "wb") as fh:
        fh.truncate(5 * 2**20)  # sparse: the refusal comes from the size, before any read
    with open(proj / "big.jsonl", "wb") as fh:
        fh.truncate(65 * 2**20)
    before = snapshot(proj)
    refused(cli(*_record("big.yaml"), cwd=proj),
            "big.yaml: is 5,242,880 bytes, over the 4 MiB limit for a suite or policy file",
            "(hint: move long prompt lists into a prompts_file (limit 64 MiB))")
    refused(cli("compare", "a", "b", "--out", "result", "--policy", "big.yaml", cwd=proj), "over the 4 MiB limit")
    (proj / "suite.yaml").write_text(SUITE + "prompts_file: big.jsonl\n", encoding="utf-8")
    refused(cli(*_record(), cwd=proj), "is 68,157,440 bytes, over the 64 MiB limit for a prompts file")
    assert {k: v for k, v in snapshot(proj).items() if k != "suite.yaml"} == \
        {k: v for k, v in before.items() if k != "suite.yaml"}


def test_suite_inputs__nesting_and_huge_numbers(proj):
    (proj / "suite.yaml").write_text(SUITE + "policy: " + "[" * 3000 + "]" * 3000 + "\n", encoding="utf-8")
    refused(cli(*_record(), cwd=proj), "suite.yaml: YAML nested too deeply to read")
    (proj / "suite.yaml").write_text(SUITE.replace("max_tokens: 8", "max_tokens: 8" + "0" * 5000), encoding="utf-8")
    refused(cli(*_record(), cwd=proj), "suite.yaml:11: malformed YAML: cannot read the value")


# ------------------------------------------------------------------ section 6: one line, whatever the path
@pytest.mark.parametrize("name", ["new\nline.yaml", "carriage\rreturn.yaml", "esc\x1b[31m.yaml", "sep\u2028x.yaml"])
def test_suite_inputs__control_characters_in_a_path_stay_on_one_line(proj, name):
    proc = cli(*_record(name), cwd=proj)
    line = refused(proc, ": file not found")
    assert repr(name)[1:-1] in line, line
    (proj / name).write_text(SUITE.replace("temperature: 0.7", "temperature: -1"), encoding="utf-8")
    refused(cli(*_record(name), cwd=proj), f"{repr(name)[1:-1]}:12: sampling config 'hot': temperature must be >= 0")


# ------------------------------------------------------------------ section 5: found before the engine starts
@pytest.mark.parametrize("old,new,expect", [
    ("max_tokens: 8", "max_tokens: 8\n    min_tokens: 9",
     "suite.yaml:8: sampling config 'greedy': min_tokens 9 must be <= max_tokens 8"),
    ("max_tokens: 8", "max_tokens: 8\n    min_tokens: -1", "sampling config 'greedy': min_tokens must be >= 0"),
    ("max_tokens: 8", f"max_tokens: 8\n    seed: {2**63}", "sampling config 'greedy': seed must be below 2**63"),
    ("temperature: 0.7", "temperature: .nan", "suite.yaml:12: sampling config 'hot': temperature is NaN"),
    ("temperature: 0.7", "temperature: .inf", "sampling config 'hot': temperature is .inf; write a finite number"),
    ("temperature: 0.7", "temperature: 0.7\n    top_k: -3", "sampling config 'hot': top_k must be -1, 0 (off) or "
                                                           "positive"),
    ("token_ids: [1, 2, 3]", "token_ids: " + json.dumps(list(range(64))),
     "suite.yaml:3: prompt 'a' has 64 token ids, over the 63 a prompt may fill (max_model_len 64 from"),
    ("token_ids: [1, 2, 3]", "token_ids: " + json.dumps(list(range(56))),
     "suite.yaml:3: prompt 'a' has 56 token ids; with max_tokens 8 of sampling config 'greedy' that is 64, over the "
     "63 a prompt and its completion may fill"),
    ("model: model", "model: model\nengine:\n  max_model_len: 11",
     "prompt 'a' has 3 token ids; with max_tokens 8 of sampling config 'greedy' that is 11, over the 10 a prompt and "
     "its completion may fill (max_model_len 11 from engine.max_model_len at"),
    ("  - id: a", '  - id: "a\\ud800"', "suite.yaml:3: prompt id 'a\\ud800' holds a lone surrogate '\\ud800' at "
                                      "character 1, which is not valid Unicode"),
    ("text: hello", 'text: "hel\\udc00lo"', "suite.yaml:5: prompt 'b': 'text' holds a lone surrogate"),
    ("name: hot", 'name: "\\udfffhot"', "sampling config name '\\udfffhot' holds a lone surrogate"),
    ("    temperature: 0.7", "    temperature: 0.7\n    top_p: 2",
     "suite.yaml:12: sampling config 'hot': top_p must be in (0, 1]"),
])
def test_suite_inputs__bad_values_are_refused_while_reading_the_suite(proj, old, new, expect):
    assert old in SUITE
    (proj / "suite.yaml").write_text(SUITE.replace(old, new, 1), encoding="utf-8")
    before = snapshot(proj)
    refused(cli(*_record(), cwd=proj), expect)
    assert snapshot(proj) == before


def test_suite_inputs__lone_surrogate_in_a_prompts_file(proj):
    (proj / "more.jsonl").write_text('{"id": "c", "text": "x\\ud83d"}\n', encoding="utf-8")
    (proj / "suite.yaml").write_text(SUITE + "prompts_file: more.jsonl\n", encoding="utf-8")
    refused(cli(*_record(), cwd=proj), "more.jsonl:1: prompt 'c': 'text' holds a lone surrogate '\\ud83d'")


# ------------------------------------------------------------------ vLLM's own rules, before the engine
def test_suite_inputs__vllm_sampling_params_rules_before_the_engine_starts(proj):
    """What only vLLM knows (this vLLM refuses temperature above 2) is asked
    of vllm.SamplingParams, built as the run builds it, without an engine.
    load_suite itself never imports vllm."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    (proj / "suite.yaml").write_text(SUITE.replace("temperature: 0.7", "temperature: 2.5"), encoding="utf-8")
    code = """
        import sys
        from gate.core.errors import BadInput
        from gate.run.suite import load_suite, validate_with_vllm
        suite = load_suite("suite.yaml")
        assert "vllm" not in sys.modules
        try:
            validate_with_vllm(suite)
        except BadInput as exc:
            print(exc.line())
        suite = load_suite("ok.yaml")
        validate_with_vllm(suite)
        print("ok")
    """
    (proj / "ok.yaml").write_text(SUITE, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=proj, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr
    first, last = proc.stdout.splitlines()
    assert first.startswith("suite.yaml:12: sampling config 'hot' rejected by vLLM: temperature must be in [0, 2], "
                            "got 2.5"), first
    assert first.endswith("(hint: use values this vLLM accepts (see docs/suite-format.md))")
    assert last == "ok"


# ------------------------------------------------------------------ what users write
def test_suite_inputs__exponent_without_a_dot_is_a_number_in_a_suite_and_a_policy_file(proj):
    """`atol: 1e-4` as YAML 1.2 and every other tool write it: a float, not
    the string PyYAML's YAML 1.1 would make of it."""
    from gate.core.policy import load_policy, parse_policy
    from gate.run.suite import load_suite

    (proj / "suite.yaml").write_text(SUITE + "policy:\n  atol: 3e-4\n  checks:\n    forced.k3_kl: 1E-7\n",
                                     encoding="utf-8")
    suite = load_suite(proj / "suite.yaml")
    policy = parse_policy(suite.policy, "suite.yaml")
    assert policy.default.atol == 3e-4 and policy.default.bounds["forced.k3_kl"] == 1e-7
    (proj / "policy.yaml").write_text("atol: 3e-4\nrtol: 2e-1\n", encoding="utf-8")
    assert load_policy(proj / "policy.yaml").default.rtol == 0.2
    proc = cli("compare", "a", "b", "--out", "result", "--policy", "policy.yaml", cwd=proj)
    assert proc.returncode == 0, proc.stderr
    checks = json.loads((proj / "result" / "verdict.json").read_text(encoding="utf-8"))["checks"]
    assert next(c for c in checks if c["id"] == "forced.logprobs_close")["bound"] == 3e-4

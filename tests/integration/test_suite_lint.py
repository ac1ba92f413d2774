"""`parity-gate suite lint` through the real CLI (the model's tokenizer, no
engine), and `check`'s untested notes through the entry point with a
stand-in engine: said on stderr before the engine starts, and kept in the
verdict's warnings."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from gate import commands, record
from gate.cli import main
from gate.core.trace import Scores
from gate.run.engine import Generation
from gate.run.tinymodel import build_tiny_model
from tests._util import REPO, run_cli

# 156 tokens with the tiny model's tokenizer: the two prompts below share 158, one full 128-token block
SHARED = ("You are a careful assistant. Answer the question below in one short sentence, using plain words, and say "
          "so when you do not know. Keep units, numbers and names exactly as they are written in the question, and "
          "do not add a second sentence. ")
SUITE = """\
name: lint
model: {model}
engine:
  dtype: float32
  enable_prefix_caching: false
prompts:
  - id: fox
    text: "The quick brown fox"
  - id: ids
    token_ids: [10, 20, 30, 40, 50]
sampling:
  - name: greedy
    temperature: 0.0
    max_tokens: 4
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def _suite(folder: Path, model: Path, extra: str = "") -> Path:
    path = folder / "suite.yaml"
    path.write_text(SUITE.format(model=model) + extra)
    return path


LONG = f"""\
  - id: sys-a
    text: "{SHARED}What is the boiling point of water at sea level?"
  - id: sys-b
    text: "{SHARED}Who wrote the novel Moby-Dick?"
"""


def test_suite_lint__prompts_shorter_than_a_block_leave_prefix_caching_untested(tmp_path, model):
    p = run_cli("suite", "lint", _suite(tmp_path, model), "--engine-arg", "block_size=128")
    assert p.returncode == 1, p.stderr
    assert ("UNTESTED   enable_prefix_caching (false at " in p.stdout
            and "no two prompts share a full 128-token block: the longest prompt has 12 tokens" in p.stdout)
    assert "exercised  dtype (float32 at " in p.stdout
    assert p.stdout.rstrip().endswith("1 knob this suite sets or changes cannot be exercised: "
                                      "enable_prefix_caching (exit 1)")


def test_suite_lint__two_prompts_sharing_a_block_exercise_it_and_exit_0(tmp_path, model):
    suite = _suite(tmp_path, model)
    suite.write_text(suite.read_text().replace("prompts:\n", "prompts:\n" + LONG))
    p = run_cli("suite", "lint", suite, "--engine-arg", "block_size=128")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "exercised  enable_prefix_caching (false at " in p.stdout
    assert "prompt 'sys-b' (greedy, sample 0) can reuse 128 tokens cached by prompt 'sys-a'" in p.stdout
    assert p.stdout.rstrip().endswith("every knob this suite sets can be exercised")


def test_suite_lint__engine_arg_knob_counts_as_set(tmp_path, model):
    p = run_cli("suite", "lint", _suite(tmp_path, model), "--engine-arg", "max_num_seqs=64")
    assert p.returncode == 1
    assert "UNTESTED   max_num_seqs (64 at --engine-arg): no engine call holds more than 2 requests" in p.stdout


def test_suite_lint__bad_input_exits_2_and_help_documents_the_exit_codes(tmp_path, model):
    p = run_cli("suite", "lint", tmp_path / "missing.yaml")
    assert p.returncode == 2 and p.stderr.startswith("parity-gate: bad input: ")
    h = run_cli("suite", "lint", "--help")
    assert h.returncode == 0
    assert "1  at least one of them cannot: a check would pass without testing it" in h.stdout


def test_suite_lint__demo_suite_exercises_prefix_caching_and_exits_0(tmp_path, model):
    """examples/suite.yaml, as `make demo` runs it (CPU blocks of 128 tokens)."""
    text = (REPO / "examples" / "suite.yaml").read_text()
    assert "model: ../.cache/tiny-model\n" in text
    (tmp_path / "suite.yaml").write_text(text.replace("model: ../.cache/tiny-model\n", f"model: {model}\n"))
    p = run_cli("suite", "lint", tmp_path / "suite.yaml", "--engine-arg", "block_size=128")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "exercised  enable_prefix_caching (false at " in p.stdout


# ------------------------------------------------------------------ check, with a stand-in engine
def _lp(*parts) -> float:
    return -(zlib.crc32(repr(parts).encode()) % 1000) / 1000 - 0.01


class _Engine:
    """Same numbers whatever the engine args (so a check passes): a token's
    decode logprob equals its prefill score, as raw logprobs on CPU."""

    def __init__(self, args: dict) -> None:
        self.args = args

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) % 300 for c in text]

    def generate(self, reqs):
        out = []
        for r in reqs:
            ids = list(r.prompt_token_ids)
            toks, lps = [], []
            for _ in range(int(r.params["max_tokens"])):
                toks.append(zlib.crc32(repr((ids + toks, r.params["seed"])).encode()) % 300)
                lps.append(_lp(tuple(ids + toks)))
            out.append(Generation(r.key, toks, Scores("decode", lps, [[t] for t in toks], [[v] for v in lps]),
                                  "length"))
        return out

    def score(self, seqs, k):
        out = []
        for p, comp in seqs:
            ids = list(p) + list(comp)
            lps = [None] + [_lp(tuple(ids[:i + 1])) for i in range(1, len(ids))]
            out.append(Scores("prefill", lps, [None] + [[ids[i]] for i in range(1, len(ids))],
                              [None] + [[v] for v in lps[1:]], completion_token_ids=list(comp)))
        return out

    def decode_tokens(self, ids):
        return [f"t{i}" for i in ids]

    def resolved(self):
        return {"block_size": 128, "max_num_seqs": 256, "max_num_batched_tokens": 4096,
                "enable_prefix_caching": False, **self.args}

    def limits(self):
        return {"cpu": False, "chunked_prefill": True, "max_num_batched_tokens": 4096, "block_size": 128,
                "prefix_caching": bool(self.args.get("enable_prefix_caching")), "max_model_len": 512}

    def fingerprint(self):
        return {"vllm_version": "fake", "device_name": "cpu", "env": {}}

    def capabilities(self):
        return {"forced_decode": False, "logprobs_mode": True}

    def close(self):
        pass


@pytest.fixture
def engine(monkeypatch):
    started = []

    def start(model, engine_args, lines, kind="vllm", **_):
        started.append(dict(engine_args))
        return _Engine(dict(engine_args))

    for module in (commands, record):  # check's engine and record's
        monkeypatch.setattr(module, "start_engine", start)
        monkeypatch.setattr(module, "validate_with_vllm", lambda suite: None)
    monkeypatch.delenv("VLLM_BATCH_INVARIANT", raising=False)
    return started


def _check(tmp_path: Path, suite: Path, *extra: str) -> tuple[int, dict]:
    golden, out = tmp_path / "golden", tmp_path / "result"
    if not golden.exists():
        assert main(["record", "--suite", str(suite), "--out", str(golden), "--quiet"]) == 0
    rc = main(["check", "--suite", str(suite), "--golden", str(golden), "--out", str(out), "--quiet", "--force",
               *extra])
    return rc, json.loads((out / "verdict.json").read_text())


NOTE = ("untested: enable_prefix_caching changed (false -> true), but no two prompts share a full 128-token block: "
        "the longest prompt has 19 tokens, and a prompt must be longer than 128 to reuse one")


def test_check__prefix_caching_with_prompts_shorter_than_a_block_is_named_untested(tmp_path, model, engine, capsys):
    rc, verdict = _check(tmp_path, _suite(tmp_path, model), "--engine-arg", "enable_prefix_caching=true")
    assert rc == 0 and verdict["verdict"] == "pass"
    assert NOTE in verdict["warnings"]
    assert f"parity-gate: {NOTE}" in capsys.readouterr().err
    assert engine[-1]["enable_prefix_caching"] is True


def test_suite_lint__with_golden_marks_the_change_and_prints_the_checks_note(tmp_path, model, engine, capsys):
    suite = _suite(tmp_path, model)
    _check(tmp_path, suite)
    capsys.readouterr()
    rc = main(["suite", "lint", str(suite), "--golden", str(tmp_path / "golden"), "--engine-arg",
               "enable_prefix_caching=true"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "UNTESTED   enable_prefix_caching (changed false -> true): no two prompts share" in out
    assert f"  check would note: {NOTE}" in out
    assert "block 128 tokens (the golden)" in out


def test_check__unchanged_knobs_give_no_note(tmp_path, model, engine):
    _, verdict = _check(tmp_path, _suite(tmp_path, model))
    assert not [w for w in verdict["warnings"] if w.startswith("untested: ")]


def test_check__prompts_sharing_a_block_exercise_prefix_caching_and_give_no_note(tmp_path, model, engine):
    shared = "[" + ", ".join(str(7 + i % 50) for i in range(130))
    suite = _suite(tmp_path, model)
    suite.write_text(suite.read_text().replace("prompts:\n", f"prompts:\n  - id: a\n    token_ids: {shared}, 1]\n"
                                                           f"  - id: b\n    token_ids: {shared}, 2]\n"))
    rc, verdict = _check(tmp_path, suite, "--engine-arg", "enable_prefix_caching=true")
    assert rc == 0
    assert not [w for w in verdict["warnings"] if w.startswith("untested: ")]

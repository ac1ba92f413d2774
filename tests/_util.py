"""Shared helpers for the trace, compare, policy and bad-input tests: build
records and trace files by hand (no engine), run the real CLI, and list what
a command left on disk."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from gate.core.trace import Manifest, Record, Scores, TraceWriter

REPO = Path(__file__).resolve().parent.parent


def record(config: str = "greedy", prompt_id: str = "p0", sample: int = 0, *,
           prompt: Sequence[int] = (1, 2, 3), completion: Sequence[int] = (4, 5, 6),
           sampler: Sequence[float | None] | None = None, forced: Sequence[float | None] | None = None,
           sampler_top_ids: Any = None, sampler_top_lps: Any = None,
           forced_top_ids: Any = None, forced_top_lps: Any = None,
           completion_tokens: Sequence[str] | None = None, seed: int | None = 0) -> Record:
    """A record with sampler logprobs (one per completion token) and forced
    scores (None, then one per prompt[1:] + completion token)."""
    n_c, n_all = len(completion), len(prompt) + len(completion)
    if sampler is None:
        sampler = [-0.5] * n_c
    if forced is None:
        forced = [None] + [-1.0] * (n_all - 1)
    return Record(
        config=config, prompt_id=prompt_id, sample=sample, seed=seed,
        prompt_token_ids=list(prompt), completion_token_ids=list(completion),
        sampler=Scores("decode", list(sampler), sampler_top_ids, sampler_top_lps),
        forced=Scores("prefill", list(forced), forced_top_ids, forced_top_lps, completion_token_ids=list(completion)),
        completion_tokens=completion_tokens)


def manifest(kind: str = "golden", model: dict[str, Any] | None = None, **suite: Any) -> Manifest:
    return Manifest(kind=kind, model=model or {}, suite=suite)


def write_trace(out: Path, records: Iterable[Record], man: Manifest | None = None) -> Path:
    with TraceWriter(out, man or manifest()) as w:
        for r in records:
            w.write(r)
    return w.path


def run_cli(*args: Any, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real CLI, as a user runs it."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")  # a warning from a dependency is not our stderr line
    return subprocess.run([sys.executable, "-m", "gate", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def tree(root: Path) -> set[str]:
    """Every path under root (files and folders), relative: what a run left behind."""
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")}


def git(repo: Path, *args: str) -> str:
    """git in `repo` with a fixed identity and no system or user config; its stdout, stripped."""
    env = {"PATH": os.environ["PATH"], "HOME": str(repo.parent), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example"}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()

"""Bisect cost on the CPU build: environment build cold vs cached, engine
start cold vs warm, and the cost of one bisect step, side by side in one run.

  env build, cold uv cache:  a fresh UV_CACHE_DIR and a fresh env cache: uv
                             fetches and unpacks every wheel (from the
                             configured index) into its cache first
  env build, warm uv cache:  a fresh env cache, uv's cache kept: uv links
                             the wheels (torch included) from its cache
  env reuse:                 the env is in the env cache: nothing runs
  engine start cold/warm:    `check -v` in that env, with fresh vLLM and
                             torch-inductor cache folders (cold) and then
                             with the folders the previous run filled
                             (warm); read from the "engine started in X s"
                             line. The model's files stay in the page cache
                             (dropping it would disturb the machine's other
                             users)
  bisect step:               one probe as `bisect` runs it: env reuse +
                             `check` in its own process (warm caches)

    python bench/bisect_cost.py [--release 0.31.0] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gate.run import envs  # noqa: E402
from gate.run.tinymodel import build_tiny_model  # noqa: E402

SUITE = """\
name: bisect-bench
model: {model}
engine: {{dtype: float32, seed: 0, max_model_len: 256, logprobs_mode: raw_logprobs}}
prompts:
  - {{id: fox, text: "The quick brown fox"}}
  - {{id: rl, text: "Reinforcement learning samples rollouts and"}}
sampling:
  - {{name: greedy, temperature: 0.0, max_tokens: 16, logprobs: 5}}
  - {{name: hot, temperature: 0.7, max_tokens: 16, seed: 7, n: 2, logprobs: 5}}
"""


def timed(fn):
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out


def gate(python: Path, argv: list[str], lib: Path, caches: Path) -> tuple[float, float | None, str]:
    env = dict(os.environ, PYTHONPATH=str(lib), VLLM_CACHE_ROOT=str(caches / "vllm"),
               TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"), VLLM_LOGGING_LEVEL="WARNING")
    t0 = time.monotonic()
    p = subprocess.run([str(python), "-m", "gate", "-v", *argv], capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    m = re.search(r"engine started in ([0-9.]+) ?s", p.stderr + p.stdout)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{argv[0]} failed ({p.returncode}): {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return wall, float(m.group(1)) if m else None, p.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", default="0.31.0")
    ap.add_argument("--package", default=envs.default_package())
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bisect-bench-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", seed=0)
        suite = root / "suite.yaml"
        suite.write_text(SUITE.format(model=model))
        old_uv = os.environ.get("UV_CACHE_DIR")
        os.environ["UV_CACHE_DIR"] = str(root / "uv-cache")
        cold_s, _ = timed(lambda: envs.build_env(root / "envs-a", a.package, a.release, root / "a.log"))
        if old_uv is None:
            del os.environ["UV_CACHE_DIR"]
        else:
            os.environ["UV_CACHE_DIR"] = old_uv
        rows.append(("env build, cold uv cache", cold_s, f"{a.package}=={a.release}"))
        warm_s, env = timed(lambda: envs.build_env(root / "envs-b", a.package, a.release, root / "b.log"))
        rows.append(("env build, warm uv cache", warm_s, "wheels linked from uv's cache"))
        reuse_s, env = timed(lambda: envs.build_env(root / "envs-b", a.package, a.release, root / "b.log"))
        rows.append(("env reuse (cached)", reuse_s, ""))
        lib = root / "gate-lib"
        snap_s, _ = timed(lambda: envs.snapshot_gate(lib))
        rows.append(("gate snapshot into the run", snap_s, ""))
        py = envs.env_python(env)
        caches = root / "caches-1"
        wall, start, _ = gate(py, ["record", "--suite", str(suite), "--out", str(root / "golden"), "--quiet"], lib,
                              caches)
        rows.append(("record, cold caches: wall", wall, f"engine start {start} s"))
        wall, start, _ = gate(py, ["check", "--suite", str(suite), "--golden", str(root / "golden"), "--out",
                                   str(root / "c1"), "--quiet"], lib, caches)
        rows.append(("check, warm caches: wall", wall, ""))
        rows.append(("engine start, warm caches", start or float("nan"), "vLLM + inductor caches from the run before"))
        wall_c, start_c, _ = gate(py, ["check", "--suite", str(suite), "--golden", str(root / "golden"), "--out",
                                       str(root / "c2"), "--quiet"], lib, root / "caches-2")
        rows.append(("check, cold caches: wall", wall_c, ""))
        rows.append(("engine start, cold caches", start_c or float("nan"), "fresh VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR"))
        rows.append(("bisect step (env reuse + check, warm)", reuse_s + wall, "one probe"))
    print(f"{'what':42} {'seconds':>8}  note")
    for name, s, note in rows:
        print(f"{name:42} {s:8.1f}  {note}")
    if a.json:
        a.json.write_text(json.dumps([{"what": n, "seconds": round(s, 2), "note": t} for n, s, t in rows], indent=1))


if __name__ == "__main__":
    main()

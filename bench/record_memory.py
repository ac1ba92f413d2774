"""Peak memory of `parity-gate record` as the suite grows (docs/scale.md).

Records a suite of P prompts and one of 4P prompts on the CPU build with the
tiny model, each twice: with the default call size (outputs saved call by
call, gate/run/checkpoint.py) and with one call per config (every output of a
config held at once, as the gate did before). Prints a table of the peak RSS
of the gate's own process (ru_maxrss from wait4) and of the whole process
tree (sampled from /proc every 50 ms: vLLM's engine core runs in a child),
and the 4P/P ratios. Target: the default's gate-process ratio <= 1.3.

    .venv/bin/python bench/record_memory.py [--prompts 64] [--max-tokens 128]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate.run.tinymodel import build_tiny_model  # noqa: E402


def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, ValueError):
            pass
        todo.extend(children.get(p, []))
    return total


def _suite(folder: Path, model: Path, prompts: int, max_tokens: int) -> Path:
    rng = random.Random(prompts)
    lines = [f"model: {model}", "engine:", "  dtype: float32", "  seed: 0", "  max_model_len: 512", "prompts:"]
    for i in range(prompts):
        ids = [rng.randrange(10, 300) for _ in range(rng.randrange(8, 48))]
        lines.append(f"  - id: p{i:05d}\n    token_ids: {ids}")
    lines += ["sampling:", "  - name: greedy", "    temperature: 0.0", f"    max_tokens: {max_tokens}",
              "    ignore_eos: true", "    logprobs: 5", "  - name: hot", "    temperature: 0.8",
              f"    max_tokens: {max_tokens}", "    ignore_eos: true", "    seed: 3", "    logprobs: 5"]
    path = folder / f"suite-{prompts}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _record(suite: Path, out: Path, call_size: int) -> tuple[float, float, float]:
    """(seconds, gate process peak MiB, process tree peak MiB)."""
    env = dict(os.environ, VLLM_LOGGING_LEVEL="ERROR", PYTHONWARNINGS="ignore")
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "gate", "record", "--suite", str(suite), "--out", str(out),
                             "--quiet", "--call-size", str(call_size)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    th.join()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"record failed: {stderr.decode(errors='replace')[-2000:]}")
    return time.monotonic() - t, usage.ru_maxrss / 1024, peak[0] / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", seed=0)
        rows = []
        for label, call_size in (("calls of 64 (saved as they return)", 64), ("one call per config", 1 << 30)):
            for n in (args.prompts, 4 * args.prompts):
                suite = _suite(root, model, n, args.max_tokens)
                secs, gate_mib, tree_mib = _record(suite, root / f"g-{n}-{call_size}", call_size)
                rows.append((label, n, secs, gate_mib, tree_mib))
                print(f"  {label}: {n} prompts done in {secs:.0f}s", file=sys.stderr)
    print("| plan | prompts | tokens generated | seconds | gate process peak RSS (MiB) | process tree peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, n, secs, g, t in rows:
        print(f"| {label} | {n} | {n * 2 * args.max_tokens:,} | {secs:.0f} | {g:.0f} | {t:.0f} |")
    for label in dict.fromkeys(r[0] for r in rows):
        small, big = [r for r in rows if r[0] == label]
        print(f"{label}: 4x prompts -> gate process {big[3] / small[3]:.2f}x, process tree {big[4] / small[4]:.2f}x")


if __name__ == "__main__":
    main()

"""Comparison throughput and memory on traces on disk.

Writes two synthetic trace sets of N teacher-forced tokens with top-5 (the
reference and a slightly perturbed candidate), then, each in a fresh
subprocess so peak RSS is its own:
  parse:   read and validate every record of both files, as compare's
           reader does (what any consumer must pay);
  compare: the full streaming comparison (parse + every measure).
Each is run --repeat times, alternating, and the median wall time is
reported (the ratio is of the medians; peak RSS is the largest seen). The
CPU-time ratio beside it moves less when other work shares the cores.
Prints tokens/s, wall and CPU time, the compare/parse ratio (target <= 1.2
at 1M tokens with top-5) and peak RSS at two sizes (target: RSS
does not grow with trace size).

    python bench/compare_throughput.py [--tokens 1000000] [--seq-len 250] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate.core.trace import Manifest, Record, Scores, TraceWriter, read_trace  # noqa: E402

K = 5  # top-k on every scored position, both sides
TARGET_RATIO = 1.2
PROMPT_LEN = 16


def write_traces(path: Path, tokens: int, seq_len: int, seed: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    n_seq = max(1, tokens // seq_len)
    base = np.random.default_rng(0)  # same token ids and reference logprobs on both sides
    manifest = Manifest(kind="bench")
    with TraceWriter(path, manifest) as w:
        for i in range(n_seq):
            prompt = base.integers(0, 32000, PROMPT_LEN).tolist()
            completion = base.integers(0, 32000, seq_len).tolist()
            total = PROMPT_LEN + seq_len
            lp = -base.exponential(1.0, total).astype(np.float32)
            tops = base.integers(0, 32000, (total, K))
            top_lp = np.sort(-base.exponential(1.0, (total, K)).astype(np.float32), axis=1)[:, ::-1]
            if noise:
                lp = lp + rng.normal(0, noise, total).astype(np.float32)
            logprobs = [None] + lp[1:].astype(np.float64).tolist()
            top_ids = [None] + tops[1:].tolist()
            top_lps = [None] + top_lp[1:].astype(np.float64).tolist()
            w.write(Record(config="bench", prompt_id=f"p{i:07d}", sample=0, prompt_token_ids=prompt,
                           completion_token_ids=completion,
                           forced=Scores(path="prefill", logprobs=logprobs, top_ids=top_ids,
                                         top_logprobs=top_lps)))


def _child(mode: str, a: str, b: str) -> None:
    from gate.core.compare import compare_traces

    t, cpu = time.perf_counter(), time.process_time()
    if mode == "parse":
        n = 0
        for reader in (read_trace(Path(a)), read_trace(Path(b))):
            for rec in reader.records():
                n += len(rec.completion_token_ids)
        n //= 2
    else:
        result = compare_traces(read_trace(Path(a)), read_trace(Path(b)))
        n = result.overall["forced"]["tokens"]
    dt, cpu = time.perf_counter() - t, time.process_time() - cpu
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "tokens": n, "seconds": dt, "cpu_seconds": cpu, "peak_rss_mb": rss_mb}))


def _measure(mode: str, a: Path, b: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(a), str(b)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--seq-len", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each mode per size; the median is reported")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "A", "B"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    print(f"top-{K}, {args.seq_len} completion tokens per record, median of {args.repeat} runs each")
    print(f"{'tokens':>9} {'file MB':>8} {'parse s':>8} {'compare s':>10} {'ratio':>6} {'tok/s':>10} "
          f"{'parse RSS MB':>13} {'compare RSS MB':>15} {'parse CPU s':>11} {'compare CPU s':>13} {'CPU ratio':>9} "
          f"{'tok/CPU s':>10}  {'wall ratios of the runs':<}")
    with tempfile.TemporaryDirectory() as tmp:
        for tokens in (args.tokens // 4, args.tokens):
            a, b = Path(tmp) / f"a{tokens}", Path(tmp) / f"b{tokens}"
            write_traces(a, tokens, args.seq_len, seed=1, noise=0.0)
            write_traces(b, tokens, args.seq_len, seed=2, noise=1e-3)
            size = (a / "traces.jsonl").stat().st_size / 2**20
            runs = [(_measure("parse", a, b), _measure("compare", a, b)) for _ in range(max(1, args.repeat))]
            parse_s = statistics.median(p["seconds"] for p, _ in runs)
            comp_s = statistics.median(c["seconds"] for _, c in runs)
            tokens_seen = runs[0][1]["tokens"]
            ratio = comp_s / parse_s
            parse_cpu = statistics.median(p["cpu_seconds"] for p, _ in runs)
            comp_cpu = statistics.median(c["cpu_seconds"] for _, c in runs)
            each = " ".join(f"{c['seconds'] / p['seconds']:.2f}" for p, c in runs)
            print(f"{tokens_seen:>9} {size:>8.1f} {parse_s:>8.2f} {comp_s:>10.2f} {ratio:>6.2f} "
                  f"{tokens_seen / comp_s:>10.0f} {max(p['peak_rss_mb'] for p, _ in runs):>13.1f} "
                  f"{max(c['peak_rss_mb'] for _, c in runs):>15.1f} {parse_cpu:>11.2f} {comp_cpu:>13.2f} "
                  f"{comp_cpu / parse_cpu:>9.2f} {tokens_seen / comp_cpu:>10.0f}  {each}")
    print(f"targets: ratio <= {TARGET_RATIO} at {args.tokens} tokens (compare vs parse of the same files); "
          f"compare RSS flat across sizes")


if __name__ == "__main__":
    main()

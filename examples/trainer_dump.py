"""How an RL framework checks its trainer against its rollouts with parity-gate.

The trainer already computes, for every rollout token, the logprob under the
current policy (the numerator of the PPO/GRPO importance ratio). Dump those
numbers with gate.core.trace.TraceWriter, keyed exactly like the rollout trace
(config, prompt_id, sample), and run `parity-gate compare ROLLOUTS TRAINER`.
The verdict then holds the RL view too (gate.core.rl_metrics: k3 KL, mult-prob
error, clip fraction, importance-ratio distribution, share truncated at C=2).

Run (after `parity-gate record --suite examples/suite.yaml --out /tmp/g`):

    python examples/trainer_dump.py --rollouts /tmp/g --model .cache/tiny-model --out /tmp/trainer
    parity-gate compare /tmp/g /tmp/trainer --out /tmp/rl-result

Here the "trainer" is a plain transformers forward pass in float32, as in
verl/OpenRLHF/NeMo-RL's actor: replace `trainer_logprobs` with your own.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from gate.core.rl_metrics import measure, summary_line
from gate.core.trace import Manifest, Record, Scores, TraceWriter, read_trace


def trainer_logprobs(model, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
    """What the actor computes in its loss: log_softmax(logits in float32)
    gathered at the rollout tokens (teacher-forced)."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return lp[len(prompt_ids) - 1:].tolist()  # logprob of each completion token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=Path, required=True, help="rollout trace folder (vLLM side)")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    rollouts = read_trace(args.rollouts)
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32).eval()
    # A trainer may leave identity fields empty: compare then warns instead of refusing.
    manifest = Manifest(kind="trainer", suite={"sampling": rollouts.manifest.suite.get("sampling", {})},
                        tool={"name": "my-rl-framework", "step": 0})
    with TraceWriter(args.out, manifest) as writer:  # records sorted by (config, prompt_id, sample)
        for rec in rollouts.records():
            lps = trainer_logprobs(model, list(rec.prompt_token_ids), list(rec.completion_token_ids))
            writer.write(Record(config=rec.config, prompt_id=rec.prompt_id, sample=rec.sample,
                                prompt_token_ids=rec.prompt_token_ids, completion_token_ids=rec.completion_token_ids,
                                sampler=Scores(path="trainer", logprobs=lps)))
    rl = measure(read_trace(args.rollouts), read_trace(args.out))
    print(summary_line(rl))
    print(f"next: parity-gate compare {args.rollouts} {args.out} --out RESULT_DIR")


if __name__ == "__main__":
    main()

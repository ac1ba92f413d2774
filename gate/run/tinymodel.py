"""Build a small Llama-style model with random weights and a locally trained
tokenizer, for tests and the demo (nothing is downloaded).

Shape follows docs/design.md section 4.5: head_dim 64 (CPU attention refuses 16),
2 layers, hidden 128. Deterministic for a given seed: the same seed gives
byte-identical files, a different seed gives different weights (a second
"model" for identity and weight-update tests)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from gate.core.fsutil import StagedDir

__all__ = ["build_tiny_model"]

log = logging.getLogger(__name__)

# A fixed corpus so the tokenizer is the same on every machine.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A gate checks every token before it reaches training.
Reinforcement learning samples rollouts and trains on the logprobs the engine returns.
When the engine is bumped, the numbers can move while the text still looks fine.
Golden traces are recorded once and checked on every dependency bump, token by token.
Teacher forcing scores the same tokens in the same contexts, so versions can be compared.
Once a free run diverges, later positions are not comparable, which is why we score the golden.
Temperature, top-k and top-p change the distribution; raw and processed logprobs differ.
Prefix caching, async scheduling and the lm_head precision are runtime settings worth watching.
0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) [ ] { } < > , . ; : ! ? ' " # @ % & | ~ ^ _ `
def main(): return sum(x * x for x in range(10))
Paris is the capital of France. Water boils at one hundred degrees. The sky is blue today.
"""

VOCAB_SIZE = 384
HIDDEN = 128
LAYERS = 2
HEADS = 2  # head_dim = 128 / 2 = 64
MAX_POSITIONS = 1024


def _train_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(out))


# What a tiny-model folder holds: --force replaces a folder of these files only.
MODEL_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                         "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"})


SHAPES = ("tiny", "qwen2-0.5b", "qwen2-moe")


def _model(shape: str, vocab: int):
    """`tiny`: the CPU test model. `qwen2-0.5b`: Qwen2-0.5B's body (24 layers,
    hidden 896, 14 heads, 2 KV heads) with the small tokenizer, in bfloat16:
    the GPU validation tier's model (docs/design.md section 4.1, run G3)."""
    if shape == "qwen2-moe":
        # A small mixture-of-experts body (8 layers, 8 experts, 2 per token, a shared expert): in vLLM its expert
        # weights load into the fused-MoE layout, the path an RL weight update must reach.
        from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

        return Qwen2MoeForCausalLM(Qwen2MoeConfig(
            vocab_size=vocab, hidden_size=512, intermediate_size=1024, moe_intermediate_size=256,
            shared_expert_intermediate_size=512, num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1,
            num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
            bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, torch_dtype="bfloat16"))
    if shape == "qwen2-0.5b":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2ForCausalLM(Qwen2Config(
            vocab_size=vocab, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
            bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, torch_dtype="bfloat16"))
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS, bos_token_id=0, eos_token_id=1,
        tie_word_embeddings=False, torch_dtype="float32"))


def build_tiny_model(out: Path, seed: int = 0, force: bool = False, shape: str = "tiny",
                     logit_scale: float = 40.0) -> Path:
    """Write config.json, model.safetensors and the tokenizer into `out`
    (replaced atomically: built in a temp dir, then renamed; an existing
    non-empty `out` only with `force`, and only if it holds a model's files).
    `logit_scale` widens the tiny model's logits: 40 gives peaked, real-model
    like distributions; a small scale gives flat ones, like a random-weight
    model on a GPU, where a changed seed changes the first sampled token."""
    import torch

    stage = StagedDir(Path(out), force=force, owned=MODEL_FILES)
    tmp = stage.dir
    try:
        _train_tokenizer(tmp)
        vocab = json.loads((tmp / "tokenizer.json").read_text())["model"]["vocab"]
        torch.manual_seed(seed)
        model = _model(shape, len(vocab))
        if shape != "tiny":
            model = model.to(torch.bfloat16)
        if shape == "tiny":
            with torch.no_grad():
                # Default init gives near-uniform distributions; widen the logits so
                # sampling configs and top-k behave like a real model's would.
                model.lm_head.weight.mul_(logit_scale)
        model.save_pretrained(str(tmp), safe_serialization=True)
    except BaseException:
        stage.discard()
        raise
    stage.commit()
    log.info("tiny model (seed %d) written to %s", seed, stage.out)
    return stage.out


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--out", required=True, type=Path, help="folder to write the model into")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--shape", choices=SHAPES, default="tiny",
                        help="tiny (CPU tests, default) or qwen2-0.5b (Qwen2-0.5B's body, bf16: the GPU tier)")
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty --out")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    build_tiny_model(out, seed=args.seed, force=args.force, shape=args.shape)
    print(f"{args.shape} model (seed {args.seed}) written to {out}")
    return 0

"""A small Llama trained briefly on Python source: the GPU tier's trained model
(docs/design.md section 4.4, run G4). Random weights give flat distributions; a trained model gives the
peaked ones real users sample from, where a changed decode path shows on the
tokens that still match.

    python bench/train_tiny.py --out MODEL --prompts PROMPTS.json [--cpu]

Corpus: the `.py` files of this interpreter's standard library (no download:
every GPU host has one). A file is held out when crc32 of its path relative
to the stdlib is 0 mod 10; the model trains on the others, and the prompts
come from the held-out files only. Tokenizer: the project's small byte-level
tokenizer (gate/run/tinymodel.py), so every byte of source encodes.

Shape: 8 layers, hidden 512, 8 heads (head_dim 64), 8 KV heads, vocab 384;
trained with AdamW in bf16 autocast for `--steps` steps of 64 x 256 tokens
(fixed seeds), saved in HF format with bf16 weights. `--cpu` trains the
2-layer CPU shape for a few steps, in float32, to test the scripts.

Prompts (PROMPTS.json, a list of {id, token_ids, source}): windows of the
held-out files, 32-256 tokens, starting at a line start; and groups of four
prompts that share a prefix of `--shared-prefix` tokens (default 64: four full
16-token GPU KV blocks) and continue differently, so prefix caching has blocks
to reuse. The run's numbers go to `train.json` beside the model.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import sysconfig
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GPU = {"hidden": 512, "layers": 8, "heads": 8, "steps": 500, "batch": 64, "seq": 256, "chars": 8_000_000,
       "lr": 1e-3, "prompts": 64, "groups": 6, "min_len": 32, "max_len": 256, "prefix": 64}
CPU = {"hidden": 128, "layers": 2, "heads": 2, "steps": 20, "batch": 8, "seq": 64, "chars": 200_000,
       "lr": 3e-3, "prompts": 8, "groups": 1, "min_len": 8, "max_len": 24, "prefix": 8}
HELD_OUT_MOD = 10


def corpus_files() -> tuple[Path, list[Path], list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts) and p.is_file())
    held = [p for p in files if zlib.crc32(str(p.relative_to(root)).encode()) % HELD_OUT_MOD == 0]
    train = [p for p in files if zlib.crc32(str(p.relative_to(root)).encode()) % HELD_OUT_MOD != 0]
    return root, train, held


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8", errors="replace")


def _starts_from_offsets(enc) -> list[int]:
    tokens = enc.tokens  # each access builds the whole list: read it once
    return [0] + [i for i in range(1, len(tokens)) if tokens[i - 1].endswith("Ċ")]  # 'Ċ': byte-level newline


def make_prompts(tok, held: list[Path], root: Path, shape: dict, seed: int) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for p in held:
        enc = tok.encode(_read(p))
        if len(enc.ids) >= 2 * shape["max_len"] + shape["prefix"]:
            docs.append((str(p.relative_to(root)), enc.ids, _starts_from_offsets(enc)))
    if not docs:
        raise SystemExit("no held-out file is long enough for a prompt")
    lo, hi, pre = shape["min_len"], shape["max_len"], shape["prefix"]
    prompts: list[dict] = []
    n_groups = shape["groups"]
    n_single = shape["prompts"] - 4 * n_groups
    for i in range(n_single):
        name, ids, starts = docs[rng.randrange(len(docs))]
        n = rng.randint(lo, hi)
        ok = [s for s in starts if s + n <= len(ids)]
        s = rng.choice(ok)
        prompts.append({"id": f"s{i:03d}", "token_ids": ids[s:s + n], "source": f"{name}[{s}:{s + n}]"})
    # Groups: the file's first `pre` tokens (its header: licence, docstring, imports), then four
    # different later windows of the same file, each starting at a line start.
    picked = rng.sample(range(len(docs)), min(n_groups, len(docs)))
    for g, d in enumerate(picked):
        name, ids, starts = docs[d]
        later = [s for s in starts if s >= pre + hi]
        for j in range(4):
            n = rng.randint(max(lo - pre, 8), hi - pre)
            ok = [s for s in later if s + n <= len(ids)] or [pre]
            s = rng.choice(ok)
            prompts.append({"id": f"g{g}-{j}", "token_ids": ids[:pre] + ids[s:s + n],
                            "source": f"{name}[0:{pre}]+[{s}:{s + n}]"})
    return prompts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="model folder (replaced)")
    ap.add_argument("--prompts", type=Path, required=True, help="prompts JSON to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="training steps (default 500 on GPU, 20 with --cpu)")
    ap.add_argument("--shared-prefix", type=int, help="tokens the prompts of a group share (default 64; 8 with --cpu)")
    ap.add_argument("--cpu", action="store_true", help="the 2-layer CPU shape, a few float32 steps")
    args = ap.parse_args()
    shape = dict(CPU if args.cpu else GPU)
    if args.steps is not None:
        shape["steps"] = args.steps
    if args.shared_prefix is not None:
        shape["prefix"] = args.shared_prefix

    import shutil

    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO))
    from gate.run.tinymodel import _train_tokenizer

    t0 = time.monotonic()
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _train_tokenizer(out)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    vocab = tok.get_vocab_size()

    root, train_files, held = corpus_files()
    rng = random.Random(args.seed)
    order = list(train_files)
    rng.shuffle(order)
    texts, chars = [], 0
    for p in order:
        t = _read(p)
        texts.append(t)
        chars += len(t)
        if chars >= shape["chars"]:
            break
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(1)  # </s> between files
    data = torch.tensor(ids, dtype=torch.long)
    held_ids: list[int] = []
    for enc in tok.encode_batch([_read(p) for p in held[:40]]):
        held_ids.extend(enc.ids)
        held_ids.append(1)
    held_data = torch.tensor(held_ids, dtype=torch.long)
    t_tok = time.monotonic() - t0

    cuda = torch.cuda.is_available() and not args.cpu
    dev = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(args.seed)
    h = shape["hidden"]
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=h, intermediate_size=3 * h, num_hidden_layers=shape["layers"],
                      num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
                      max_position_embeddings=1024, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(dev)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=shape["lr"], betas=(0.9, 0.95))
    steps, bs, seq = shape["steps"], shape["batch"], shape["seq"]
    warm = max(1, steps // 20)

    def lr_at(i: int) -> float:
        if i < warm:
            return shape["lr"] * (i + 1) / warm
        return shape["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm))))

    gen = torch.Generator().manual_seed(args.seed)

    def batch(src: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, src.numel() - seq - 1, (bs,), generator=g)
        return torch.stack([src[s:s + seq + 1] for s in starts.tolist()]).to(dev)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda):
            logits = model(input_ids=x[:, :-1]).logits
        return torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1))

    losses = []
    t1 = time.monotonic()
    for i in range(steps):
        for gp in opt.param_groups:
            gp["lr"] = lr_at(i)
        loss = loss_of(batch(data, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i % 50 == 0 or i == steps - 1:
            losses.append([i, round(loss.item(), 4)])
            print(f"step {i}: loss {loss.item():.4f}", flush=True)
    if cuda:
        torch.cuda.synchronize()
    t_train = time.monotonic() - t1
    model.eval()
    with torch.no_grad():
        hg = torch.Generator().manual_seed(args.seed + 1)
        held_loss = sum(loss_of(batch(held_data, hg)).item() for _ in range(4)) / 4
    print(f"held-out loss {held_loss:.4f} ({held_loss / math.log(2):.3f} bits/token)", flush=True)

    model = model.to(torch.bfloat16).cpu() if not args.cpu else model.cpu()
    model.config.bos_token_id, model.config.eos_token_id = 0, 1
    model.save_pretrained(str(out), safe_serialization=True)
    prompts = make_prompts(tok, held, root, shape, args.seed + 2)
    args.prompts.write_text(json.dumps(prompts) + "\n")
    sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    info = {"shape": {k: shape[k] for k in ("hidden", "layers", "heads", "steps", "batch", "seq", "lr")},
            "parameters": params, "vocab": vocab, "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__, "python": sys.version.split()[0],
            "corpus": {"train_files": len(texts), "of_train_files": len(train_files), "held_out_files": len(held),
                       "train_chars": chars, "train_tokens": len(ids), "held_out_tokens_scored": len(held_ids)},
            "loss": losses, "held_out_loss": round(held_loss, 4), "seconds": {"tokenize": round(t_tok, 1),
                                                                               "train": round(t_train, 1)},
            "saved_dtype": "float32" if args.cpu else "bfloat16", "model_sha256": sha,
            "prompts": {"n": len(prompts), "lengths": [min(len(p["token_ids"]) for p in prompts),
                                                        max(len(p["token_ids"]) for p in prompts)],
                        "shared_prefix": shape["prefix"], "groups": shape["groups"]}}
    (out.parent / "train.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info)[:800], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

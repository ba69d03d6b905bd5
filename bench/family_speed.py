"""The inference engine's speed on a RoBERTa model against a BERT model of the same size, fed
the same id tensors in the same run: RoBERTa's only costs of its own are the position ids
counted from the padding id and one token type.

    python bench/family_speed.py                  # base size, 3 rounds
    python bench/family_speed.py --size mini --rounds 5

Both models are random (seed 0), put on the engine by `bertkit.engine.runner.prepare` with the
options `auto` picks on this CPU; each round times both on the same batches (variable lengths,
padded), alternating which goes first. Prints tokens/s per model per round, the median of each
and the ratio RoBERTa / BERT; --json writes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bertkit import BertConfig, BertModel
from bertkit.engine.runner import InferenceOptions, prepare
from bertkit.runtime import cpu_description, local_runtime


def batches(vocab: int, n: int, batch: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, mask) batches of real-text-like lengths (16..128 tokens), ids from 3 up (neither
    BERT's padding id 0 nor RoBERTa's 1); the padding is filled per model."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(16, 129, (batch,), generator=g)
        T = int(lengths.max())
        ids = torch.randint(3, vocab, (batch, T), generator=g)
        mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        out.append((ids, mask))
    return out


def timed(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], pad: int) -> float:
    """Tokens per second over `data`, each batch's padding set to `pad`."""
    tokens = sum(int(m.sum()) for _, m in data)
    feeds = [(ids.masked_fill(m == 0, pad), m) for ids, m in data]
    start = time.perf_counter()
    with torch.inference_mode():
        for ids, mask in feeds:
            model(ids, mask)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="base", help="preset size (default base)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--batches", type=int, default=12, help="batches a round (default 12)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences a batch (default 32)")
    p.add_argument("--json", type=Path, help="write the figures to this file")
    args = p.parse_args()
    rt = local_runtime()
    options = InferenceOptions.from_env()
    models = {}
    for name, preset in (("bert", args.size), ("roberta", f"roberta-{args.size}")):
        torch.manual_seed(0)
        config = BertConfig.preset(preset, vocab_size=30522, pad_token_id=0 if name == "bert" else 1)
        models[name] = (prepare(BertModel(config, add_pooling_layer=False), options, rt), config.pad_token_id)
    data = batches(30522, args.batches, args.batch_size)
    for model, pad in models.values():  # warm-up: one round each, not counted
        timed(model, data[:2], pad)
    rates: dict[str, list[float]] = {"bert": [], "roberta": []}
    for r in range(args.rounds):
        order = ["bert", "roberta"] if r % 2 == 0 else ["roberta", "bert"]
        for name in order:
            model, pad = models[name]
            rates[name].append(timed(model, data, pad))
        print(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:,.0f} tokens/s" for n in rates))
    med = {n: statistics.median(v) for n, v in rates.items()}
    ratio = med["roberta"] / med["bert"]
    print(cpu_description())
    print(f"{args.size}, {rt.describe()}: BERT {med['bert']:,.0f} tokens/s, RoBERTa {med['roberta']:,.0f} "
          f"tokens/s; RoBERTa / BERT = {ratio:.3f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "median": med, "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The masked-LM objective as training runs it: the shards as each step's micro-batches
(`Corpus`, `Batches`: rebuilt from (seed, epoch, position), so a resumed run sees exactly the
batches it would have seen), the loss over the masked positions divided by the global count of
masked tokens (`mlm_loss`, `normalised`), and the held-out evaluation (`evaluate_mlm`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.data.batching import IGNORE
from bertkit.data.corpus import ShardedCorpus
from bertkit.data.mlm import (
    InstanceMaker,
    MaskingConfig,
    SpanIndex,
    SpecialIds,
    WholeWords,
    collate,
    epoch_order,
    line_lengths,
    pack_spans,
)
from bertkit.errors import BertkitError
from bertkit.models.heads import PreTrainingOutput
from bertkit.runtime import Runtime
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training.loop import TrainArgs
from bertkit.training.pretrain_args import PretrainArgs


@dataclass
class Corpus:
    """The shards as training reads them: the documents cut into spans once, the makers that
    build each (epoch, position)'s instance, and the held-out split's."""

    train_docs: ShardedCorpus
    spans: SpanIndex
    maker: InstanceMaker
    held_maker: InstanceMaker
    held: int  # held-out sequences
    steps_per_epoch: int  # optimizer steps
    words: str  # what whole-word masking takes a word to be (the tokenizer's word rule)

    @classmethod
    def open(cls, args: PretrainArgs, tok: Tokenizer, shard_dir: Path) -> Corpus:
        t = args.train
        train_docs = ShardedCorpus(shard_dir, "train")
        held_docs = ShardedCorpus(shard_dir, "heldout")
        special = SpecialIds.from_tokenizer(tok)
        budget = args.max_seq_length - (3 if args.nsp else 2)
        spans = pack_spans(line_lengths(train_docs), budget)
        masking = MaskingConfig(probability=args.mlm_probability, whole_word=args.whole_word_mask)
        cont = WholeWords(tok, read_words(args.word_list)) if args.whole_word_mask else None
        maker = InstanceMaker(train_docs, spans, special, masking, args.nsp, cont, t.seed)
        held_spans = pack_spans(line_lengths(held_docs), budget)
        held_nsp = args.nsp and len(held_docs) > 1
        held_maker = InstanceMaker(held_docs, held_spans, special, masking, held_nsp, cont)
        steps_per_epoch = len(spans) // t.batch_size
        if steps_per_epoch == 0:
            raise BertkitError(
                f"the corpus gives {len(spans)} sequences of {args.max_seq_length} tokens, fewer than "
                f"one batch of {t.batch_size}"
            )
        words = tok.word_rule.describe()
        return cls(train_docs, spans, maker, held_maker, len(held_spans), steps_per_epoch, words)

    def describe(self, args: PretrainArgs, rt: Runtime) -> str:
        docs, t = self.train_docs, args.train
        line = (
            f"{len(docs)} documents, {docs.num_tokens:,} tokens → {len(self.spans):,} sequences "
            f"of ≤ {args.max_seq_length} tokens; {self.steps_per_epoch} steps an epoch of {t.batch_size} "
            f"({rt.describe()})"
        )
        if args.whole_word_mask:
            line += f"\nwhole-word masking: {word_source(docs, args.word_list, self.words)}"
        return line


class Batches:
    """`batches(epoch, skip)`: this rank's micro-batches (`grad_accum` a step) of each step,
    rebuilt from (seed, epoch, position), less the first `skip` micro-batches, which a resumed run
    trained on (`run.resuming` says how many); counts the real tokens it gave."""

    def __init__(self, corpus: Corpus, t: TrainArgs, micro: int, pad: int, rt: Runtime):
        self.corpus, self.t, self.micro, self.pad, self.rt = corpus, t, micro, pad, rt
        self.seen_tokens = 0  # real (unpadded) tokens this rank trained on in this session

    def __call__(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        t, micro, rt, c = self.t, self.micro, self.rt, self.corpus
        order = epoch_order(len(c.spans), t.seed, epoch)
        for step in range(skip // t.grad_accum, c.steps_per_epoch):
            window = order[step * t.batch_size : (step + 1) * t.batch_size]
            mine = range(rt.rank * micro * t.grad_accum, (rt.rank + 1) * micro * t.grad_accum, micro)
            parts = [
                collate([c.maker.make(epoch, int(i)) for i in window[s : s + micro]], self.pad) for s in mine
            ]
            self.seen_tokens += sum(int(p["attention_mask"].sum()) for p in parts)
            yield from normalised(parts, rt, t.grad_accum)


def read_words(path: str | None) -> list[str]:
    if path is None:
        return []
    from bertkit.tokenization.text import iter_text_lines

    return [w for w in iter_text_lines(path, strip_gutenberg=False) if w.strip()]


def normalised(parts: list[dict], dist: Runtime, accum: int):
    """Attach to each micro-batch the divisor that turns its summed masked-LM loss into its share
    of the global token mean: all masked tokens of the step, over (processes × accumulation)."""
    count = torch.tensor([float(sum(int((p["labels"] != IGNORE).sum()) for p in parts))])
    if dist.world > 1:
        count = count.to(dist.device)
        torch.distributed.all_reduce(count)
    norm = max(count.item(), 1.0) / (dist.world * accum)
    for p in parts:
        p["mlm_norm"] = norm
        yield p


def mlm_logits(out) -> torch.Tensor:
    """The masked-LM logits of BertForPreTraining's output or BertForMaskedLM's (a family
    without next-sentence prediction pretrains the latter)."""
    return out.prediction_logits if isinstance(out, PreTrainingOutput) else out.logits


def mlm_loss(model, batch: dict) -> torch.Tensor:
    """Masked-LM cross-entropy, computed only at the masked positions (sparse), summed and
    divided by `mlm_norm` (see `normalised`); plus the next-sentence loss when labelled."""
    labels = batch["labels"]
    masked = labels != IGNORE
    out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], masked_positions=masked)
    loss = F.cross_entropy(mlm_logits(out).float(), labels[masked], reduction="sum") / batch["mlm_norm"]
    if "next_sentence_label" in batch:
        loss = loss + F.cross_entropy(out.seq_relationship_logits.float(), batch["next_sentence_label"])
    return loss


def held_out_batches(maker: InstanceMaker, n: int, micro: int, pad: int, dist: Runtime) -> list[dict]:
    """A fixed held-out set (epoch 0's masking), split across ranks."""
    picks = np.arange(min(n, len(maker.spans)))[dist.rank :: dist.world]
    return [
        collate([maker.make(0, int(i)) for i in picks[s : s + micro]], pad)
        for s in range(0, len(picks), micro)
    ]


def evaluate_mlm(model, batches: list[dict], dist: Runtime) -> dict[str, float]:
    """Held-out masked-LM loss (per masked token), accuracy, and next-sentence accuracy."""
    sums = torch.zeros(5, dtype=torch.float64)  # loss, correct, masked tokens, nsp correct, nsp count
    for batch in batches:
        batch = {k: v.to(dist.device) for k, v in batch.items()}
        labels = batch["labels"]
        masked = labels != IGNORE
        out = model(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], masked_positions=masked
        )
        logits, gold = mlm_logits(out).float(), labels[masked]
        sums[0] += F.cross_entropy(logits, gold, reduction="sum").item()
        sums[1] += (logits.argmax(-1) == gold).sum().item()
        sums[2] += len(gold)
        if "next_sentence_label" in batch:
            sums[3] += (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
            sums[4] += len(batch["next_sentence_label"])
    if dist.world > 1:
        sums = sums.to(dist.device)
        torch.distributed.all_reduce(sums)
        sums = sums.cpu()
    metrics = {
        "mlm_loss": (sums[0] / sums[2].clamp(min=1)).item(),
        "mlm_accuracy": (sums[1] / sums[2].clamp(min=1)).item(),
    }
    if sums[4] > 0:
        metrics["nsp_accuracy"] = (sums[3] / sums[4]).item()
    metrics["mlm_perplexity"] = math.exp(min(metrics["mlm_loss"], 50.0))
    return metrics


def word_source(docs: ShardedCorpus, word_list: str | None, pieces: str) -> str:
    """What whole-word masking takes a word to be, in words, for the log; `pieces`: the
    tokenizer's word rule, described."""
    found = [pieces]
    if docs.segmenter:
        found.append(f"the shards' {docs.segmenter} word boundaries")
    if word_list:
        found.append(f"the words of {word_list}")
    if len(found) == 1:
        found.append("each CJK character alone (build the shards with --segmenter for Chinese words)")
    return ", ".join(found)

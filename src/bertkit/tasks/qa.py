"""Extractive question answering (SQuAD v1.1 style).

A context longer than the window becomes overlapping windows (`doc_stride` tokens shared);
each window carries the answer's start/end token, or [CLS] when the answer is not inside it.
Decoding takes the n best starts and ends of every window, keeps spans inside the context
that are at most `max_answer_length` tokens long, and returns the best-scoring one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bertkit.config import BertConfig
from bertkit.heads import BertForQuestionAnswering
from bertkit.inference import batches, device_of
from bertkit.metrics import squad_em_f1
from bertkit.tokenizer import Tokenizer


@dataclass
class QATask:
    max_length: int = 384
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20

    name = "qa"
    main_metric = "f1"
    model_class = BertForQuestionAnswering

    def prepare(self, train_feats: list[dict], batch_size: int) -> None:
        """Nothing to learn from the training features (NER sets its loss scale here)."""

    def configure(self, config: BertConfig) -> None:
        pass

    def info(self) -> dict:
        return {
            "task": self.name,
            "max_length": self.max_length,
            "doc_stride": self.doc_stride,
            "max_answer_length": self.max_answer_length,
            "n_best": self.n_best,
        }

    @classmethod
    def from_info(cls, info: dict, config: BertConfig) -> QATask:
        return cls(
            info.get("max_length", 384),
            info.get("doc_stride", 128),
            info.get("max_answer_length", 30),
            info.get("n_best", 20),
        )

    def features(self, tokenizer: Tokenizer, examples: Sequence, with_labels: bool = True) -> list[dict]:
        enc = tokenizer(
            [e.question.lstrip() for e in examples],
            [e.context for e in examples],
            truncation="only_second",
            max_length=self.max_length,
            stride=self.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        feats = []
        for row, owner in enumerate(enc["overflow_to_sample_mapping"]):
            seq = enc.sequence_ids(row)
            # offsets only for context tokens: decoding must never pick the question
            offsets = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][row], seq, strict=True)]
            f = {
                "input_ids": enc["input_ids"][row],
                "token_type_ids": enc["token_type_ids"][row],
                "offsets": offsets,
                "example": owner,
            }
            if with_labels and examples[owner].answers:
                f["start_positions"], f["end_positions"] = self._positions(
                    examples[owner].answers[0], offsets
                )
            feats.append(f)
        return feats

    @staticmethod
    def _positions(answer: dict, offsets: list) -> tuple[int, int]:
        start_char = answer["answer_start"]
        end_char = start_char + len(answer["text"])
        ctx = [i for i, o in enumerate(offsets) if o is not None]
        if not ctx or offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
            return 0, 0  # not (wholly) in this window: point at [CLS]
        start = next(i for i in ctx if offsets[i][1] > start_char)
        end = next(i for i in reversed(ctx) if offsets[i][0] < end_char)
        return start, end

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return (
            F.cross_entropy(out.start_logits.float(), batch["start_positions"])
            + F.cross_entropy(out.end_logits.float(), batch["end_positions"])
        ) / 2

    @torch.inference_mode()
    def predict(self, model, feats: list[dict], examples: Sequence, pad_id: int, max_tokens: int = 16384):
        device = device_of(model)
        best: dict[int, dict] = {}
        for idx, batch in batches(feats, pad_id, max_tokens, device):
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            starts, ends = out.start_logits.float().cpu(), out.end_logits.float().cpu()
            for b, i in enumerate(idx):
                f = feats[i]
                cand = self._best_span(starts[b], ends[b], f["offsets"])
                if cand and (f["example"] not in best or cand["logit"] > best[f["example"]]["logit"]):
                    best[f["example"]] = cand
        preds = []
        for e_i, e in enumerate(examples):
            c = best.get(e_i)
            if c is None:
                preds.append({"answer": "", "start": 0, "end": 0, "score": 0.0})
            else:
                preds.append(
                    {
                        "answer": e.context[c["start"] : c["end"]],
                        "start": c["start"],
                        "end": c["end"],
                        "score": c["score"],
                    }
                )
        return preds

    def _best_span(self, start: torch.Tensor, end: torch.Tensor, offsets: list) -> dict | None:
        n = len(offsets)
        start, end = start[:n], end[:n]
        k = min(self.n_best, n)
        top_s = torch.topk(start, k).indices.tolist()
        top_e = torch.topk(end, k).indices.tolist()
        # score spans by logits; the probability is over this window's valid spans considered
        spans = [
            (float(start[s] + end[e]), s, e)
            for s in top_s
            for e in top_e
            if offsets[s] is not None and offsets[e] is not None and s <= e < s + self.max_answer_length
        ]
        if not spans:
            return None
        logits = torch.tensor([sp[0] for sp in spans])
        probs = logits.softmax(0)
        j = int(logits.argmax())
        _, s, e = spans[j]
        return {"logit": spans[j][0], "start": offsets[s][0], "end": offsets[e][1], "score": float(probs[j])}

    def metrics(self, examples: Sequence, preds: list[dict]) -> dict:
        return squad_em_f1(
            {e.id: p["answer"] for e, p in zip(examples, preds, strict=True)},
            {e.id: [a["text"] for a in e.answers] for e in examples},
        )

    def error(self, example, pred: dict, index: int) -> dict | None:
        golds = [a["text"] for a in example.answers]
        if pred["answer"] in golds:
            return None
        return {
            "id": example.id,
            "question": example.question,
            "answers": golds,
            "predicted": pred["answer"],
            "score": pred["score"],
        }

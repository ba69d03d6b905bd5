"""Extractive question answering (SQuAD v1.1 style).

A context longer than the window becomes overlapping windows (`doc_stride` tokens shared);
each window carries the answer's start/end token, or [CLS] when the answer is not inside it.
Decoding takes the n best starts and ends of every window, keeps spans inside the context
that are at most `max_answer_length` tokens long, and returns the best-scoring one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bertkit.data.examples import ReaderOptions
from bertkit.engine.runner import forward_batches
from bertkit.errors import BertkitError
from bertkit.evaluation.metrics import squad_em_f1
from bertkit.models.config import BertConfig
from bertkit.models.heads import BertForQuestionAnswering
from bertkit.tasks.base import Task
from bertkit.tokenization.tokenizer import Tokenizer


@dataclass
class QATask(Task):
    max_length: int = 384
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20

    name = "qa"
    main_metric = "f1"
    model_class = BertForQuestionAnswering
    formats = ("squad",)
    pipeline_names = ("question-answering",)
    onnx_outputs = ("start_logits", "end_logits")
    response_key = "answers"
    request_fields = ("questions", "contexts")
    transformers_head = "ForQuestionAnswering"

    @classmethod
    def read(cls, path: str | Path, fmt: str | None, opts: ReaderOptions) -> list:
        from bertkit.data.squad import read_squad

        return read_squad(path)

    @classmethod
    def from_settings(cls, settings: dict, train: list, source: str | Path) -> QATask:
        given = settings
        if given.get("class_weighting") not in (None, "none"):  # a span task has no classes to weight
            raise BertkitError("--class-weights works with --task classify and ner, not qa")
        return cls(**cls.settings({**given, "doc_stride": given.get("stride")}))

    @classmethod
    def from_info(cls, info: dict, config: BertConfig) -> QATask:
        return cls(**cls.settings(info))

    def trainable(self, feat: dict) -> bool:
        return "start_positions" in feat  # a window of an unanswerable example cannot be trained on

    @property
    def labels_to_check(self) -> list[str] | None:
        return None

    def call_items(self, inputs: Any, text_pair: Any, question: Any, context: Any) -> tuple[list, bool]:
        single = isinstance(question, str)
        qs, cs = ([question], [context]) if single else (question, context)
        return list(zip(qs, cs, strict=True)), single

    def examples_of(self, items: list) -> list:
        """(question, context) pairs as examples."""
        from bertkit.data.examples import QAExample

        return [QAExample(str(i), q, c, [], None) for i, (q, c) in enumerate(items)]

    def example_from_line(self, obj: dict | None, line: str, n: int, source: str) -> Any:
        from bertkit.data.examples import QAExample

        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("question"), str)
            or not isinstance(obj.get("context"), str)
        ):
            raise BertkitError(f"line {n}: expected a JSON object with 'question' and 'context'", source)
        return QAExample(str(obj.get("id", n)), obj["question"], obj["context"], [], None)

    def output_row(self, example: Any, pred: dict) -> dict:
        return {"id": example.id, **pred}

    @property
    def num_scores(self) -> int | None:
        return None

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
        norm = batch.get("loss_norm", float(len(out.start_logits)))  # see Task.loss_count
        ce = lambda logits, gold: F.cross_entropy(logits.float(), gold, reduction="sum")  # noqa: E731
        return (
            ce(out.start_logits, batch["start_positions"]) + ce(out.end_logits, batch["end_positions"])
        ) / (2 * norm)

    @torch.inference_mode()
    def predict(self, model, feats: list[dict], examples: Sequence, pad_id: int, max_tokens: int = 16384):
        best: dict[int, dict] = {}

        def forward(batch: dict[str, torch.Tensor]):
            return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

        for idx, _, out in forward_batches(model, forward, feats, pad_id, max_tokens):
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

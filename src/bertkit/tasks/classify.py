"""Sequence classification and regression: single texts or pairs.

Long texts are not silently cut: with `windows=True` each text becomes overlapping windows of
`max_length` tokens (stride `stride`), every window is trained with the text's label, and a
text's prediction is the mean of its windows' logits.

`class_weighting` ("none", "auto" or a file; `--class-weights`) weights each class's cross-entropy
(single-label classification only); `tasks.weights` says how auto weights are normalised. The
resolved `class_weights` are saved with the run's settings; prediction does not use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from bertkit.data.examples import ReaderOptions
from bertkit.engine.runner import forward_batches
from bertkit.errors import BertkitError
from bertkit.evaluation.metrics import classification_metrics, regression_metrics
from bertkit.models.config import BertConfig
from bertkit.models.heads import BertForSequenceClassification
from bertkit.options import option
from bertkit.tasks import weights
from bertkit.tasks.base import Task
from bertkit.tokenization.tokenizer import Tokenizer


@dataclass
class ClassifyOptions:
    """The classify task's own flags (`bertkit finetune --task classify`); None: the default."""

    regression: bool = option(False, help="classify: a numeric target (MSE loss)")
    multi_label: bool = option(
        False,
        help="classify: each text carries zero or more labels (a list column); sigmoid head, BCE loss, "
        "per-label thresholds",
    )
    positive_label: str | None = option(
        None, help="classify: report F1 of this class and select by it (e.g. 1)"
    )
    windows: bool = option(
        False, help="classify: cover long texts with overlapping windows instead of truncating"
    )


@dataclass
class ClassifyTask(Task):
    labels: list[str] | None  # None for regression
    window_pooling: ClassVar[str] = "mean"  # a text's window logits: averaged
    max_length: int = 128
    windows: bool = False
    stride: int = 64  # tokens shared by consecutive windows
    positive_label: str | None = None  # for binary F1 (e.g. MRPC's "1")
    class_weighting: str = weights.NONE  # "none", "auto" or a weights file (see tasks.weights)
    class_weights: list[float] | None = None  # per label, in label order; set by `prepare`

    name = "classify"
    model_class = BertForSequenceClassification
    formats = ("tsv", "csv", "jsonl", "folders")
    pipeline_names = ("text-classification", "sentiment-analysis")
    flag_group: ClassVar[type | None] = ClassifyOptions
    transformers_head: ClassVar[str | None] = "ForSequenceClassification"
    optional_request_fields = ("text_pairs",)  # sentence pairs: a second text for each

    def __post_init__(self) -> None:
        if self.regression and (self.class_weighting != weights.NONE or self.class_weights is not None):
            raise BertkitError("--class-weights works with single-label classification, not --regression")
        weights.check_length(self.class_weights, self.labels)

    @classmethod
    def read(cls, path: str | Path, fmt: str | None, opts: ReaderOptions) -> list:
        """TSV/CSV/JSONL rows (the format from the extension unless given), or a folder per label
        (a directory, or a folder inside a tar archive: `aclImdb.tar.gz/aclImdb/train`)."""
        from bertkit.data.folders import is_folder_dataset, read_folder_classification

        if fmt == "folders" or (fmt is None and is_folder_dataset(path)):
            return read_folder_classification(path)
        return cls.read_rows(path, fmt, opts)

    @staticmethod
    def read_rows(path: str | Path, fmt: str | None, opts: ReaderOptions, label_sets: Any = None) -> list:
        """TSV/CSV/JSONL rows; `label_sets` (multi-label): how a label cell splits into names."""
        from bertkit.data.readers import read_text_classification

        return read_text_classification(
            path,
            fmt,
            text_column=opts.text_column,
            pair_column=opts.pair_column,
            label_column=opts.label_column,
            regression=bool(opts.regression),
            label_sets=label_sets,
        )

    @classmethod
    def from_settings(cls, settings: dict, train: list, source: str | Path) -> ClassifyTask:
        from bertkit.data.labels import label_vocab

        labels = None if settings.get("regression") else label_vocab(train)
        if labels is not None and any(e.label is None for e in train):
            raise BertkitError("the training file has no labels (pass --label-column)", source)
        positive = settings.get("positive_label")
        if positive is not None and labels is not None and positive not in labels:
            raise BertkitError(f"--positive-label {positive!r} is not a training label ({', '.join(labels)})")
        return cls(labels, **cls.settings(settings))

    def reader_options(self) -> ReaderOptions:
        return ReaderOptions(regression=self.regression)

    def serving(self) -> ClassifyTask:
        return replace(self, windows=True)  # long texts: windows, never a silent cut

    def text_scores(self) -> list[str]:
        return list(self.labels) if self.labels is not None else ["score"]  # None: regression

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.labels is None else logits.float().softmax(-1)

    def call_items(self, inputs: Any, text_pair: Any, question: Any, context: Any) -> tuple[list, bool]:
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        pairs = [text_pair] if single else (text_pair or [None] * len(texts))
        return list(zip(texts, pairs, strict=True)), single

    def examples_of(self, items: list) -> list:
        """Texts, or (text, pair) tuples, as examples."""
        from bertkit.data.examples import TextExample

        pairs = [it if isinstance(it, tuple) else (it, None) for it in items]
        return [TextExample(t, p, None, 0) for t, p in pairs]

    def example_from_line(self, obj: dict | None, line: str, n: int, source: str) -> Any:
        from bertkit.data.examples import TextExample

        example = super().example_from_line(obj, line, n, source)
        pair = obj.get("text_pair") if isinstance(obj, dict) else None
        return TextExample(example.text, pair, None, n)

    @property
    def num_scores(self) -> int | None:
        return 1 if self.regression else len(self.labels or [])

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def main_metric(self) -> str:
        if self.regression:
            return "pearson"
        return "f1" if self.positive_label is not None else "accuracy"

    def configure(self, config: BertConfig) -> None:
        """Name the head's outputs in the config (saved as id2label/label2id)."""
        if self.labels is None:  # regression
            config.set_labels(["score"])
            config.problem_type = "regression"
        else:
            config.set_labels(self.labels)
            config.problem_type = "single_label_classification"

    def prepare(self, train_feats: list[dict], batch_size: int) -> None:
        if self.class_weighting != weights.NONE and self.labels is not None:
            targets = (f["labels"] for f in train_feats)
            self.class_weights = weights.resolve(self.class_weighting, self.labels, targets)

    def info(self) -> dict:
        return {**super().info(), "regression": self.regression}

    @classmethod
    def from_transformers(cls, config: BertConfig) -> tuple[dict, str]:
        """problem_type (or a single output) says regression or multi-label; else single-label.
        Multi-label thresholds: 0.5 for every label (transformers saves none)."""
        labels = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
        if config.problem_type == "regression" or len(labels) == 1:
            return {"task": cls.name, "regression": True}, "regression (one score)"
        if config.problem_type == "multi_label_classification":
            info = {"task": cls.name, "multi_label": True, "threshold_mode": "fixed"}
            info["thresholds"] = [0.5] * len(labels)
            return (
                info,
                f"multi-label, {len(labels)} labels, threshold 0.5 for each (transformers saves none)",
            )
        return {"task": cls.name}, f"single-label, {config.num_labels} classes"

    @classmethod
    def from_info(cls, info: dict, config: BertConfig) -> ClassifyTask:
        if info.get("regression"):
            return cls(None, **cls.settings(info))
        assert config.id2label is not None  # saved by configure
        return cls([config.id2label[i] for i in sorted(config.id2label)], **cls.settings(info))

    def features(self, tokenizer: Tokenizer, examples: Sequence, with_labels: bool = True) -> list[dict]:
        """Token ids per window; `example` indexes the text a window belongs to."""
        texts = [e.text for e in examples]
        pairs = [e.pair for e in examples]
        has_pairs = any(p is not None for p in pairs)
        if has_pairs and not all(p is not None for p in pairs):
            raise BertkitError("some examples have a second text (pair) and others do not")
        enc = tokenizer(
            texts,
            pairs if has_pairs else None,
            truncation="longest_first" if not (self.windows and has_pairs) else "only_second",
            max_length=self.max_length,
            return_overflowing_tokens=self.windows,
            stride=self.stride if self.windows else 0,
        )
        owners = enc["overflow_to_sample_mapping"] if self.windows else range(len(examples))
        label2id = {name: i for i, name in enumerate(self.labels or [])}
        feats = []
        for row, owner in enumerate(owners):
            f = {
                "input_ids": enc["input_ids"][row],
                "token_type_ids": enc["token_type_ids"][row],
                "example": owner,
            }
            if with_labels:
                label = examples[owner].label
                f["labels"] = float(label) if self.regression else label2id[label]
            feats.append(f)
        return feats

    def outputs(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits

    @property
    def soft_targets(self) -> str | None:
        return "value" if self.regression else "softmax"

    def blank_labels(self, feat: dict) -> Any:
        return 0.0 if self.regression else 0

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_from(model, self.outputs(model, batch), batch)

    def loss_from(self, model, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        norm = batch.get("loss_norm", float(len(logits)))  # see Task.loss_count
        if self.regression:
            return F.mse_loss(logits.squeeze(-1).float(), batch["labels"].float(), reduction="sum") / norm
        w = None if self.class_weights is None else logits.new_tensor(self.class_weights, dtype=torch.float32)
        # Deliberately the weighted sum divided by the batch's example count (loss_norm), not
        # F.cross_entropy's weighted 'mean', which divides by the sum of the targets' weights: that
        # divisor would be each rank's own, and under DDP the ranks' losses would no longer add up
        # to the whole batch's. With auto weights an average example weighs 1 (tasks.weights).
        return F.cross_entropy(logits.float(), batch["labels"], weight=w, reduction="sum") / norm

    @torch.inference_mode()
    def logits(
        self, model, feats: list[dict], n_examples: int, pad_id: int, max_tokens: int = 8192
    ) -> torch.Tensor:
        """(N, C) logits per example: length-sorted batches, a text's window logits pooled by
        `window_pooling` (mean, or max: a label any window finds)."""
        most = self.window_pooling == "max"
        width = 1 if self.labels is None else len(self.labels)  # None: regression
        out = torch.full((n_examples, width), -torch.inf if most else 0.0)
        count = torch.zeros(n_examples)

        def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits

        for idx, _, logits in forward_batches(model, forward, feats, pad_id, max_tokens):
            owners = torch.tensor([feats[i]["example"] for i in idx])
            if most:
                got = logits.float().cpu()
                out.scatter_reduce_(0, owners[:, None].expand_as(got), got, "amax")
            else:
                out.index_add_(0, owners, logits.float().cpu())
            count.index_add_(0, owners, torch.ones(len(idx)))
        return out.nan_to_num(neginf=0.0) if most else out / count.clamp(min=1)[:, None]

    def predict(
        self, model, feats: list[dict], examples: Sequence, pad_id: int, max_tokens: int = 8192
    ) -> list[dict]:
        return self.predictions(self.logits(model, feats, len(examples), pad_id, max_tokens))

    def predictions(self, logits: torch.Tensor) -> list[dict]:
        if self.labels is None:  # regression
            return [{"score": float(v)} for v in logits[:, 0]]
        probs = logits.softmax(-1)
        return [
            {
                "label": self.labels[int(p.argmax())],
                "score": float(p.max()),
                "scores": {name: float(x) for name, x in zip(self.labels, p, strict=True)},
            }
            for p in probs
        ]

    def metrics(self, examples: Sequence, preds: list[dict]) -> dict:
        if self.labels is None:  # regression
            return regression_metrics([float(e.label) for e in examples], [p["score"] for p in preds])
        return classification_metrics(
            [e.label for e in examples],
            [p["label"] for p in preds],
            self.labels,
            positive_label=self.positive_label,
        )

    def error(self, example, pred: dict, index: int) -> dict | None:
        """The row errors.jsonl gets for a wrong prediction (off by more than 1.0 for regression)."""
        row = {"index": index, "line": example.line, "text": example.text, "pair": example.pair}
        if self.regression:
            if abs(pred["score"] - float(example.label)) <= 1.0:
                return None
            return {**row, "label": float(example.label), "predicted": pred["score"]}
        if pred["label"] == example.label:
            return None
        return {**row, "label": example.label, "predicted": pred["label"], "scores": pred["scores"]}

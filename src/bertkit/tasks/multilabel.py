"""Multi-label classification: each text carries zero, one or several of the labels.

The head is classification's (a linear layer on the pooled [CLS] vector, one logit per label),
trained with a loss per label — asymmetric by default (`label_loss`; Ridnik et al. 2021: easy
negatives down-weighted, the negatives' probabilities shifted by a margin), binary cross-entropy
with `pos_weight` for rare labels, or focal — and saved with
`problem_type: "multi_label_classification"`, so `transformers` loads it as its own. A label is
predicted when its sigmoid probability reaches its threshold. Thresholds are tuned on the dev set:
by default each label's F1-best threshold shrunk toward the one threshold best for macro F1 by
the label's dev support (`threshold_mode="shrunk"`: a label with one or two dev positives gets
nearly the global threshold, one with hundreds its own), each label's own (`"per-label"`), the
global one (`"global"`), or given (`"fixed"`); a tuned threshold that would fire on nearly every
dev text for a rarer label falls back to the global one (listed as `fallback_labels`). Where
every training text has a label, each text gets at least its most probable one (`top_label`).
With `windows` a long text's probability for a label is the highest of its windows'.
Thresholds are saved with the model and used by every predicting path. Dev scores reported with
tuned thresholds are optimistic (tuned on dev); the test scores are the honest ones.

Defaults for this task (`train_overrides`, `label_loss`, docs/results.md): the asymmetric loss,
the head at 10x the learning rate and at least 500 optimizer steps (more epochs over a small
training set), without which the model learns the labels' base rates, or their ranking without
scores a threshold can separate, on long-tailed label sets.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.data.examples import ReaderOptions
from bertkit.errors import BertkitError
from bertkit.evaluation.metrics import multilabel_metrics
from bertkit.models.config import BertConfig
from bertkit.options import option
from bertkit.tasks.classify import ClassifyTask

THRESHOLD_MODES = ("shrunk", "per-label", "global", "fixed")


class LabelLoss(NamedTuple):
    """A per-label loss: -(t w (1 - p)^gamma_pos log p + (1 - t) p_m^gamma_neg log(1 - p_m)),
    p_m = max(p - margin, 0) on negatives; `auto_weights`: `pos_weight="auto"` weighs its positives
    by negatives/positives (the others focus on the hard examples themselves)."""

    gamma_pos: float
    gamma_neg: float
    margin: float
    auto_weights: bool


# binary cross-entropy; focal (Lin et al. 2017); asymmetric (Ridnik et al. 2021, the paper's defaults)
LABEL_LOSSES = {
    "bce": LabelLoss(0.0, 0.0, 0.0, True),
    "focal": LabelLoss(2.0, 2.0, 0.0, False),
    "asymmetric": LabelLoss(0.0, 4.0, 0.05, False),
}
POS_WEIGHT_CLIP = 30.0  # `--pos-weight auto`: negatives/positives, at most this
POS_WEIGHT_RULES = ("auto", "sqrt")  # negatives/positives in training, or its square root
GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)  # the global threshold's candidates
SHRINK = 5.0  # dev positives at which a label's own threshold and the global one weigh alike
FLOOD = 0.9  # a tuned threshold firing on more of dev than this (label on fewer than half) falls back
COLLAPSED = 0.95  # training loss / the best constant predictor's loss above this: learned base rates


@dataclass
class MultiLabelOptions:
    """The multi-label variant's own flags (with --multi-label); None: the default."""

    threshold_mode: str | None = option(
        None,
        choices=THRESHOLD_MODES[:3],
        help="multi-label: tune on dev each label's F1-best threshold shrunk toward the global one by "
        "its dev support (shrunk, the default), each label's own (per-label), or one for all labels "
        "maximising macro F1 (global)",
    )
    pos_weight: str | None = option(
        None,
        help="multi-label: weight of each label's positives in the loss: auto (default: for bce, "
        f"negatives/positives in training, at most {POS_WEIGHT_CLIP:g}; none for the other losses), sqrt "
        "(its square root), none, or a file (label<TAB>weight)",
    )
    label_loss: str | None = option(
        None,
        choices=tuple(LABEL_LOSSES),
        help="multi-label: the loss per label: asymmetric (the default: gamma 0 on positives, 4 on "
        "negatives, negatives' probabilities less 0.05), binary cross-entropy (bce; transformers' loss) "
        "or focal (gamma 2)",
    )


@dataclass
class MultiLabelTask(ClassifyTask):
    labels: list[str]  # (never None: no regression here)
    thresholds: list[float] | None = None  # per label, in `labels` order
    threshold_mode: str = "shrunk"
    pos_weight: list[float] | str | None = "auto"  # per label; "auto" until `prepare` resolves it
    label_loss: str = "asymmetric"  # one of LABEL_LOSSES
    label_separator: str = ","
    top_label: bool = False  # at least the most probable label per text (every training text has one)
    fallback_labels: list[str] | None = None  # whose tuned threshold fell back to the global one

    flag_group = MultiLabelOptions
    variant_flag = "multi_label"  # the setting that makes a classify task this one (registry)
    train_overrides = {"head_lr_mult": 10.0, "min_steps": 500}
    window_pooling = "max"  # a label any window of a long text finds (max of its probabilities)

    def __post_init__(self) -> None:
        if self.class_weighting != "none" or self.class_weights is not None:
            raise BertkitError(
                "--class-weights weighs single-label classes; for multi-label use --pos-weight"
            )
        if self.label_loss not in LABEL_LOSSES:
            raise BertkitError(
                f"label loss must be one of {', '.join(LABEL_LOSSES)}, not {self.label_loss!r}"
            )
        if self.threshold_mode not in THRESHOLD_MODES:
            raise BertkitError(
                f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, not {self.threshold_mode!r}"
            )

    # ---- reading and building -----------------------------------------------------------------

    @classmethod
    def read(cls, path: str | Path, fmt: str | None, opts: ReaderOptions) -> list:
        """Classification's TSV/CSV/JSONL reader, each label cell read as a set (`LabelSets`)."""
        from bertkit.data.folders import is_folder_dataset
        from bertkit.data.labels import LabelSets, read_label_file

        if fmt == "folders" or (fmt is None and is_folder_dataset(path)):
            raise BertkitError(
                "a folder per label gives each text one label: multi-label data needs a TSV/CSV/JSONL "
                "file with a column of label lists",
                path,
            )
        if opts.regression:
            raise BertkitError("--multi-label and --regression exclude each other")
        names, source = opts.label_names, "the model's labels"
        if opts.labels_file:
            names, source = read_label_file(opts.labels_file), str(opts.labels_file)
        separator = opts.label_separator or cls.label_separator
        sets = LabelSets(separator, tuple(names) if names else None, source)
        return cls.read_rows(path, fmt, opts, sets)

    @classmethod
    def from_settings(cls, settings: dict, train: list, source: str | Path) -> MultiLabelTask:
        from bertkit.data.labels import label_vocab, read_label_file

        if any(e.label is None for e in train):
            raise BertkitError("the training file has no labels (pass --label-column)", source)
        labels_file = settings.get("labels_file")
        labels = read_label_file(labels_file) if labels_file else label_vocab(train)
        _refuse_numbers(labels, train, source)
        task = cls(labels, **cls.settings(settings, skip=("labels", "thresholds", "pos_weight")))
        task.pos_weight = _pos_weight_arg(settings.get("pos_weight"), labels)
        task.top_label = all(e.label for e in train)
        task.thresholds = thresholds_arg(settings, labels)
        if task.thresholds is not None:
            task.threshold_mode = "fixed"
        return task

    def reader_options(self) -> ReaderOptions:
        return ReaderOptions(multi_label=True, label_names=self.labels, label_separator=self.label_separator)

    def info(self) -> dict:
        return {**super().info(), "multi_label": True}

    @classmethod
    def from_info(cls, info: dict, config: BertConfig) -> MultiLabelTask:
        assert config.id2label is not None  # saved by configure
        labels = [config.id2label[i] for i in sorted(config.id2label)]
        return cls(labels, **cls.settings(info, skip=("labels", "regression", "multi_label")))

    def override(self, opts: dict) -> MultiLabelTask:
        """The model with the thresholds `--threshold`/`--thresholds` give at prediction time."""
        given = thresholds_arg(opts, self.labels)
        return self if given is None else replace(self, thresholds=given, threshold_mode="fixed")

    # ---- training -----------------------------------------------------------------------------

    @property
    def main_metric(self) -> str:
        return "macro_f1"

    @property
    def num_scores(self) -> int | None:
        return len(self.labels)

    def configure(self, config: BertConfig) -> None:
        config.set_labels(self.labels)
        config.problem_type = "multi_label_classification"

    def features(self, tokenizer, examples: Sequence, with_labels: bool = True) -> list[dict]:
        """Classification's windows; `labels` is the text's 0/1 vector over `self.labels`."""
        feats = super().features(tokenizer, examples, with_labels=False)
        if with_labels:
            index = {name: i for i, name in enumerate(self.labels)}
            for f in feats:
                hot = [0.0] * len(self.labels)
                for name in examples[f["example"]].label:
                    hot[index[name]] = 1.0
                f["labels"] = tuple(hot)  # a tuple: pad_batch stacks it, (B, L)
        return feats

    def prepare(self, train_feats: list[dict], batch_size: int) -> None:
        hot = np.array([f["labels"] for f in train_feats])
        if self.pos_weight == "auto" and not LABEL_LOSSES[self.label_loss].auto_weights:
            self.pos_weight = None
        if self.pos_weight in POS_WEIGHT_RULES:
            pos = hot.sum(0)
            ratio = (len(hot) - pos) / np.maximum(pos, 1)
            ratio = np.sqrt(ratio) if self.pos_weight == "sqrt" else ratio
            self.pos_weight = np.clip(ratio, 1.0, POS_WEIGHT_CLIP).round(4).tolist()
        weight = np.ones(hot.shape[1]) if self.pos_weight is None else np.asarray(self.pos_weight)
        self._constant_loss = constant_loss(hot.mean(0), weight, self.label_loss)

    @property
    def soft_targets(self) -> str | None:
        return "sigmoid"

    def blank_labels(self, feat: dict) -> Any:
        return (0.0,) * len(self.labels)

    def loss_from(self, model, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The label loss averaged over labels, summed over texts / the batch's loss_norm: for bce,
        `transformers`' BCEWithLogitsLoss (a mean over all N x L) when the batch is one process's."""
        weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        losses = label_losses(logits.float(), batch["labels"].float(), weight, self.label_loss)
        return losses.mean(-1).sum() / batch.get("loss_norm", float(len(logits)))

    def tune(self, model, feats: list[dict], examples: Sequence, pad_id: int) -> list[dict] | None:
        """Thresholds from the dev set (unless fixed); the dev predictions made with them."""
        probs = self.logits(model, feats, len(examples), pad_id).sigmoid().numpy()
        if self.threshold_mode != "fixed":
            truth = np.array([[name in e.label for name in self.labels] for e in examples], dtype=np.int64)
            self.thresholds, fallback = tuned_thresholds(probs, truth, self.threshold_mode)
            self.fallback_labels = [self.labels[i] for i in fallback]
        return self.decide(probs)

    def diagnose(self, metrics: dict, history: list[dict]) -> str | None:
        """Names a collapse: dev predictions (nearly) all alike, or a training loss that stayed at
        what predicting each label's base rate scores."""
        losses = [h["loss"] for h in history if "loss" in h][-5:]  # the last logged, 3 at least
        base = getattr(self, "_constant_loss", None)
        at_base = len(losses) >= 3 and base is not None and float(np.mean(losses)) > COLLAPSED * base
        alike = metrics.get("same_prediction_share", 0.0) >= COLLAPSED
        if not (at_base or alike):
            return None
        why = []
        if at_base:
            why.append(f"training loss {np.mean(losses):.4f} is the labels' base-rate loss {base:.4f}")
        if alike:
            why.append(f"{metrics['same_prediction_share']:.0%} of dev texts got the same labels")
        return (
            f"the model collapsed ({'; '.join(why)}): try --label-loss asymmetric (or bce with --pos-weight "
            "auto), --head-lr-mult 10, a lower --lr or more steps"
        )

    # ---- predicting and scoring ---------------------------------------------------------------

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid()  # each label on its own

    def predictions(self, logits: torch.Tensor) -> list[dict]:
        return self.decide(self.probabilities(logits).numpy())

    def decide(self, probs: np.ndarray) -> list[dict]:
        """Each text's labels over their thresholds (most probable first) and every label's probability."""
        cut = np.asarray(self.thresholds if self.thresholds is not None else [0.5] * len(self.labels))
        out = []
        for p in probs:
            over = sorted(map(int, np.flatnonzero(p >= cut)), key=lambda i: -p[i])
            if self.top_label and not over:
                over = [int(np.argmax(p))]
            scores = {name: float(x) for name, x in zip(self.labels, p, strict=True)}
            out.append({"labels": [self.labels[i] for i in over], "scores": scores})
        return out

    def metrics(self, examples: Sequence, preds: list[dict]) -> dict:
        scores = np.array([[p["scores"][name] for name in self.labels] for p in preds])
        m = multilabel_metrics([e.label for e in examples], [p["labels"] for p in preds], scores, self.labels)
        if self.thresholds is not None:
            m["thresholds"] = dict(zip(self.labels, map(float, self.thresholds), strict=True))
        if self.fallback_labels:
            m["fallback_labels"] = list(self.fallback_labels)
        sets = Counter(tuple(p["labels"]) for p in preds)
        m["same_prediction_share"] = sets.most_common(1)[0][1] / len(preds) if preds else 0.0
        return m

    def error(self, example, pred: dict, index: int) -> dict | None:
        """A text whose predicted labels differ from its true ones: the missed and the spurious."""
        true, got = set(example.label), set(pred["labels"])
        if true == got:
            return None
        row = {"index": index, "line": example.line, "text": example.text, "pair": example.pair}
        missed, spurious = (
            [x for x in self.labels if x in true - got],
            [x for x in self.labels if x in got - true],
        )
        return {**row, "labels": list(example.label), "predicted": pred["labels"], "missed": missed,
                "spurious": spurious, "scores": pred["scores"]}  # fmt: skip

    def output_row(self, example: Any, pred: dict) -> dict:
        return {"text": example.text, **pred}


# --------------------------------------------------------------------------- thresholds


def per_label_thresholds(probs: np.ndarray, truth: np.ndarray) -> list[float]:
    """For each label, the threshold that maximises its F1 on (probs, truth), both (N, L): the
    midpoint below the k-th highest probability for the best k (0.5 for a label with no positive)."""
    out = []
    for p, t in zip(probs.T, truth.T, strict=True):
        positives = int(t.sum())
        if positives == 0:
            out.append(0.5)
            continue
        order = np.argsort(-p, kind="stable")
        ps, tp = p[order], np.cumsum(t[order])
        k = np.arange(1, len(p) + 1)
        f1 = 2 * tp / (k + positives)
        f1[:-1][ps[:-1] == ps[1:]] = -1  # cut only between distinct probabilities
        best = int(np.argmax(f1))
        below = ps[best + 1] if best + 1 < len(ps) else 0.0
        out.append(float((ps[best] + below) / 2))
    return out


def tuned_thresholds(probs: np.ndarray, truth: np.ndarray, mode: str) -> tuple[list[float], list[int]]:
    """Thresholds by `mode` (shrunk, per-label, global) from dev (probs, truth), both (N, L), and
    the labels whose tuned threshold fell back to the global one: it fired on over FLOOD of the
    texts while the label is on fewer than half."""
    overall = global_threshold(probs, truth)[0]
    if mode == "global":
        return [overall] * truth.shape[1], []
    own = np.array(per_label_thresholds(probs, truth))
    if mode == "shrunk":
        support = truth.sum(0)
        own = (support * own + SHRINK * overall) / (support + SHRINK)
    flooded = ((probs >= own).mean(0) > FLOOD) & (truth.mean(0) < 0.5)
    own[flooded] = overall
    return own.tolist(), np.flatnonzero(flooded).tolist()


def label_losses(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None, kind: str = "bce"
) -> torch.Tensor:
    """Each (text, label)'s loss, same shape as `logits`; `target` in [0, 1] (soft targets too),
    positives' terms times `pos_weight` (per label). With p = sigmoid(logit) and, on negatives,
    p_m = max(p - margin, 0): -(t w (1 - p)^g+ log p + (1 - t) p_m^g- log(1 - p_m)); bce (gammas
    and margin 0) is `BCEWithLogitsLoss(pos_weight=w)`."""
    g_pos, g_neg, margin, _ = LABEL_LOSSES[kind]
    p = logits.sigmoid()
    pos = (1 - p).pow(g_pos) * F.logsigmoid(logits)
    if margin:
        p_m = (p - margin).clamp(min=0)
        neg = p_m.pow(g_neg) * torch.log1p(-p_m)  # p_m <= 1 - margin: finite
    else:
        neg = p.pow(g_neg) * F.logsigmoid(-logits)
    if pos_weight is not None:
        pos = pos * pos_weight
    return -(target * pos + (1 - target) * neg)


def constant_loss(rate: np.ndarray, weight: np.ndarray, kind: str = "bce") -> float:
    """The label loss (mean over labels) of the best constant prediction, given each label's
    positive rate and positive weight: what a model scores that learned only those (brute force
    over logits from -20 to 20 by 0.001)."""
    z = torch.linspace(-20, 20, 40_001, dtype=torch.float64)[:, None]  # (G, 1)
    w = torch.as_tensor(weight, dtype=torch.float64)
    pos = label_losses(z, torch.ones_like(z), None, kind)  # (G, 1)
    neg = label_losses(z, torch.zeros_like(z), None, kind)
    r = torch.as_tensor(rate, dtype=torch.float64)
    total = r * w * pos + (1 - r) * neg  # (G, L)
    return float(total.min(0).values.mean())


def global_threshold(probs: np.ndarray, truth: np.ndarray) -> list[float]:
    """One threshold for all labels (from 0.01 to 0.99 by 0.01) maximising macro F1."""
    pos = truth.sum(0)
    best, best_f1 = 0.5, -1.0
    for x in GRID:
        pred = probs >= x
        tp = (pred & (truth == 1)).sum(0)
        denom = pred.sum(0) + pos
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean()
        if f1 > best_f1:
            best, best_f1 = float(x), f1
    return [best] * truth.shape[1]


def thresholds_arg(opts: dict, labels: list[str]) -> list[float] | None:
    """The thresholds `--threshold X` (all labels) or `--thresholds FILE` give (None: neither)."""
    value, path = opts.get("threshold"), opts.get("thresholds")
    if value is not None and path is not None:
        raise BertkitError("--threshold and --thresholds exclude each other")
    if value is not None:
        if not 0.0 < value < 1.0:
            raise BertkitError(f"--threshold must lie between 0 and 1, not {value}")
        return [float(value)] * len(labels)
    return None if path is None else [float(v) for v in read_label_values(path, labels, "threshold", 1.0)]


def _pos_weight_arg(value: str | None, labels: list[str]) -> list[float] | str | None:
    if value is None:
        return MultiLabelTask.pos_weight  # the dataclass's default
    if value == "none":
        return None
    if value in POS_WEIGHT_RULES:
        return value
    return read_label_values(value, labels, "pos_weight", None)


def read_label_values(path: str | Path, labels: list[str], what: str, below: float | None) -> list[float]:
    """A value per label from a JSON object {label: value} or `label<TAB>value` lines; every label
    exactly once, each a positive number (and < `below` when given)."""
    from bertkit.data.cleaning import numbered_lines

    lines = numbered_lines(path)
    if lines[0][1].startswith("{"):
        try:
            obj = json.loads("\n".join(line for _, line in lines))
        except json.JSONDecodeError as e:
            raise BertkitError(
                f"line {e.lineno}: not a JSON object of {what}s per label ({e.msg})", path
            ) from None
        if not isinstance(obj, dict):
            raise BertkitError(f"expected a JSON object of {what}s per label", path)
        rows = [(1, str(k), v) for k, v in obj.items()]
    else:
        rows = [(n, *(line.rsplit("\t", 1) if "\t" in line else (line, None))) for n, line in lines]
    found: dict[str, float] = {}
    for n, name, raw in rows:
        name = name.strip()
        if name not in labels:
            shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
            raise BertkitError(f"line {n}: {name!r} is not one of the model's labels ({shown})", path)
        if name in found:
            raise BertkitError(f"line {n}: a second {what} for {name!r}", path)
        found[name] = _bounded(raw, below, f"line {n}: {what} of {name!r}", path)
    missing = [x for x in labels if x not in found]
    if missing:
        raise BertkitError(f"no {what} for labels {', '.join(missing)}", path)
    return [found[x] for x in labels]


def _bounded(raw: Any, below: float | None, where: str, path: str | Path) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        v = float("nan")
    if not (v > 0 and (below is None or v < below)):
        bound = f"between 0 and {below:g}" if below is not None else "a positive number"
        raise BertkitError(f"{where} must be {bound}, found {raw!r}", path)
    return v


def _refuse_numbers(labels: list[str], train: list, path: str | Path) -> None:
    """A label column of fractional numbers is a regression target, not label names."""

    def fraction(x: str) -> bool:
        try:
            return not float(x).is_integer()
        except ValueError:
            return False

    if labels and all(map(fraction, labels)):
        line = next(e.line for e in train if e.label)
        raise BertkitError(
            f"line {line}: the label column holds numbers like {labels[0]}: a regression target, "
            "not labels (drop --multi-label; pass --regression)",
            path,
        )

"""What a task is: the protocol every fine-tuning task follows, with the defaults most share.

A task object knows how its examples are read (`formats`, `read`), built from the command line
(`from_settings`), turned into features and batches (`features`, `loss_count`), trained (`loss`,
`main_metric`), distilled (`outputs`, `loss_from`, `soft_targets`, `soft_positions`,
`blank_labels`), decoded (`predict`) and scored (`metrics`, `error`); what it saves with the model
(`info`, `from_info`); how the pipelines, `bertkit predict` and the server hand it inputs and
show its answers (`call_items`, `examples_of`, `present`, `example_from_line`, `output_row`,
`with_output_scheme`), the fields of a server request (`request_fields`; the server parses it);
and what its ONNX graph gives (`onnx_outputs`, `onnx_model`). The table of tasks is
`tasks.registry`; nothing outside `tasks/` asks a task's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from bertkit.data.examples import ReaderOptions
from bertkit.errors import BertkitError
from bertkit.models.config import BertConfig

if TYPE_CHECKING:
    from bertkit.tokenization.tokenizer import Tokenizer


class Task:
    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]] = ()  # file formats its reader takes
    pipeline_names: ClassVar[tuple[str, ...]] = ()  # names `bertkit.pipeline` knows it by
    onnx_outputs: ClassVar[tuple[str, ...]] = ("logits",)
    response_key: ClassVar[str] = "predictions"  # the server's answer field
    # The server's request: JSON lists of texts, the first names the items, the rest (of the same
    # length) pair with them; `optional` ones may be left out (the server parses, from this).
    request_fields: ClassVar[tuple[str, ...]] = ("texts",)
    optional_request_fields: ClassVar[tuple[str, ...]] = ()
    greater_is_better: ClassVar[bool] = True
    flag_group: ClassVar[type | None] = None  # a dataclass of this task's own flags (bertkit.options)
    # TrainArgs fields whose default differs for this task (used where the flag is not given)
    train_overrides: ClassVar[dict[str, Any]] = {}
    # the head a directory fine-tuned by transformers names in `architectures` for this task
    # (after the family's prefix: RobertaForTokenClassification -> "ForTokenClassification")
    transformers_head: ClassVar[str | None] = None
    max_length: int  # tokens a text (or window) the model reads: each task's dataclass sets it

    @property
    def main_metric(self) -> str:
        """The dev metric that picks the best weights (a plain class attribute in most tasks; a
        property here so that a task may also derive it from its settings, as classification does)."""
        return "accuracy"

    def read_as(self) -> str | None:
        """How the training file was read, for the log (e.g. the NER tag scheme); None: nothing to say."""
        return None

    # ---- reading and building -----------------------------------------------------------------

    @classmethod
    def read(cls, path: str | Path, fmt: str | None, opts: ReaderOptions) -> list:
        """The examples of a file in format `fmt` (None: from the extension), read with `opts`."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: dict, train: list, source: str | Path) -> Task:
        """The task for these settings (by field name, None: not given; the command line's task
        flags, or the Python API's keywords) and the training examples read from `source`."""
        raise NotImplementedError

    @classmethod
    def from_info(cls, info: dict, config: BertConfig) -> Task:
        """The task saved in a directory's config.json (its `bertkit` section)."""
        raise NotImplementedError

    @classmethod
    def from_transformers(cls, config: BertConfig) -> tuple[dict, str]:
        """The saved info (as `from_info` takes it) of a directory transformers fine-tuned for
        this task, read from its config (`id2label`, `problem_type`), and one line saying what
        was read and which defaults stand where transformers saves none."""
        return {"task": cls.name}, cls.name

    @classmethod
    def settings(cls, source: dict, skip: tuple[str, ...] = ("labels",)) -> dict:
        """The task's dataclass fields found in `source` (not None): defaults stay the dataclass's."""
        names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in skip]  # type: ignore[arg-type]
        return {k: source[k] for k in names if source.get(k) is not None}

    def info(self) -> dict:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        saved = [f.name for f in fields if f.init and f.name != "labels"]
        return {"task": self.name, **{k: getattr(self, k) for k in saved}}

    def reader_options(self) -> ReaderOptions:
        """Reader options the task's own settings imply (classification: regression)."""
        return ReaderOptions()

    @property
    def labels_to_check(self) -> list[str] | None:
        """Labels dev/test files must use (None: the task has no label set)."""
        return getattr(self, "labels", None)

    # ---- training -----------------------------------------------------------------------------

    model_class: Any

    def configure(self, config: BertConfig) -> None:
        """Name the head's outputs in the config (saved as id2label/label2id)."""

    def prepare(self, train_feats: list[dict], batch_size: int) -> None:
        """What the task learns from the training features before training (NER: its loss scale)."""

    def trainable(self, feat: dict) -> bool:
        return "labels" in feat

    def loss_count(self, feats: Sequence[dict]) -> float:
        """What the loss of a batch of these features is divided by: its examples by default.
        Under torchrun each rank's summed loss is divided by this count over the whole batch
        (`loss_norm`), so 1 and N processes take the same step."""
        return float(len(feats))

    def load_model(self, model_dir: str | Path, **kw: Any) -> torch.nn.Module:
        return self.model_class.from_pretrained(model_dir, **kw)

    def features(self, tokenizer: Tokenizer, examples: Sequence, with_labels: bool = True) -> list[dict]:
        """Model inputs for the examples (with `with_labels`, their targets too)."""
        raise NotImplementedError

    def build_model(self, config: BertConfig) -> torch.nn.Module:
        """A freshly initialised model of the task for `config` (a distillation student)."""
        return self.model_class(config)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of a batch, divided by its `loss_norm` (see `loss_count`); `model` is the task's
        `model_class`. Tasks that can be distilled split it: loss_from(model, outputs(model, batch), ...)."""
        raise NotImplementedError

    # ---- distillation (bertkit.training.distill asks these; None / an error: the task cannot be distilled)

    @property
    def soft_targets(self) -> str | None:
        """What the outputs are scores of: "softmax" (one class among several: a KL at a
        temperature), "sigmoid" (independent labels: binary cross-entropy at a temperature) or
        "value" (a number: squared error); None: the task cannot be distilled."""
        return None

    def outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scores the loss reads: (B, C) per sequence, or (B, T, C) per token."""
        raise BertkitError(f"{self.name} models cannot be distilled")

    def loss_from(self, model: Any, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """`loss` from the outputs already computed; `model` gives what else the loss needs (a CRF)."""
        raise BertkitError(f"{self.name} models cannot be distilled")

    def soft_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Where soft targets apply: a (B, T) bool mask for per-token outputs; None: every row."""
        return None

    def blank_labels(self, feat: dict) -> Any:
        """Labels of the right shape for a feature that has none (a distillation example labelled
        by the teacher alone): they carry no hard loss, which distillation leaves out for such rows,
        but keep batches, `loss_count` and `soft_positions` as for labelled ones."""
        raise BertkitError(f"{self.name} models cannot be distilled")

    def predict(
        self, model: Any, feats: list[dict], examples: Sequence, pad_id: int, max_tokens: int = 8192
    ) -> list[dict]:
        """One prediction per example, from the features of all its windows."""
        raise NotImplementedError

    def tune(self, model: Any, feats: list[dict], examples: Sequence, pad_id: int) -> list[dict] | None:
        """Learn the task's decision settings from dev predictions (multi-label: thresholds) and
        return those predictions; None when the task tunes nothing (then `predict` is called)."""
        return None

    def diagnose(self, metrics: dict, history: list[dict]) -> str | None:
        """One line when the dev scores say training went wrong (e.g. a collapse to one answer)."""
        return None

    def metrics(self, examples: Sequence, preds: list[dict]) -> dict:
        raise NotImplementedError

    def error(self, example: Any, pred: dict, index: int) -> dict | None:
        """The row errors.jsonl gets for a wrong prediction (None: the prediction is right)."""
        raise NotImplementedError

    # ---- using --------------------------------------------------------------------------------

    def override(self, opts: dict) -> Task:
        """The task with the decision settings a prediction run gives (`--threshold`), if any."""
        given = [k for k in ("threshold", "thresholds") if opts.get(k) is not None]
        if given:
            raise BertkitError(f"--{given[0]} applies to multi-label classification models only")
        return self

    def with_output_scheme(self, scheme: str | None) -> Task:
        """The task writing its rows' tags in `scheme` (`--output-scheme`; None: as it predicts)."""
        if scheme is not None:
            raise BertkitError(f"--output-scheme applies to NER models, not {self.name} ones")
        return self

    def serving(self) -> Task:
        """The task as the server runs it (classification: long texts in windows)."""
        return self

    def text_scores(self) -> list[str] | None:
        """The names of the scores `logits` gives a whole text or pair, one per output (what TEI's
        /predict and /rerank serve); None for a task that scores no whole texts."""
        return None

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) logits -> what the task reads from them: probabilities, or the value itself."""
        raise NotImplementedError

    def call_items(self, inputs: Any, text_pair: Any, question: Any, context: Any) -> tuple[list, bool]:
        """A pipeline call's arguments as items for `examples_of`, and whether it was one input."""
        single = isinstance(inputs, str)
        return ([inputs] if single else list(inputs)), single

    def examples_of(self, items: list) -> list:
        raise NotImplementedError

    def present(self, pred: dict) -> Any:
        """What a pipeline call or the server gives back for one prediction."""
        return pred

    def example_from_line(self, obj: dict | None, line: str, n: int, source: str) -> Any:
        """`bertkit predict`'s input line `n` (a JSON object `obj`, or plain text) as an example."""
        text = obj.get("text") if isinstance(obj, dict) else line
        if not isinstance(text, str):
            raise BertkitError(f"line {n}: expected a 'text' string field", source)
        return self.examples_of([text])[0]

    def output_row(self, example: Any, pred: dict) -> dict:
        return {"text": example.text, **pred}

    # ---- ONNX ---------------------------------------------------------------------------------

    @property
    def num_scores(self) -> int | None:
        """Scores per item the graph's `logits` must give (None: not checked)."""
        labels = getattr(self, "labels", None)
        return len(labels) if labels else None

    @property
    def onnx_needs_torch(self) -> bool:
        """Whether `onnx_model` needs the PyTorch model too (a CRF's transitions)."""
        return False

    def onnx_model(self, runner: torch.nn.Module, torch_model: torch.nn.Module | None) -> torch.nn.Module:
        """The object `predict` calls, with the forward pass by a graph `runner` (ONNX Runtime's
        `OnnxRunner` or OpenVINO's `OpenvinoRunner`: called like the model, outputs by name)."""
        return runner

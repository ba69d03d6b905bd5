"""BertConfig: the hyperparameters of a BERT-family encoder, with Hugging Face's field names.

`config.json` is read and written in the Hugging Face format, so a bertkit directory is a
`transformers` directory and the other way round. `model_type` names the family (see
`families`): a family whose config names fields otherwise (DistilBERT's `dim`, `n_layers`, ...)
is read and written in its own names. Fields bertkit does not use are kept in `extra` and
written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.errors import BertkitError
from bertkit.fileio import write_json
from bertkit.hub import resolve
from bertkit.models.families import FAMILIES, Family, family

CONFIG_NAME = "config.json"

# Activations the encoder knows, by the names Hugging Face configs use.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh")

# name -> (layers, hidden, heads); intermediate is 4 * hidden as in BERT.
DEFAULT_PRESET = "mini"  # what `bertkit init` and `bertkit pretrain` build unless told
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def preset_names() -> list[str]:
    """BERT's sizes, and each size with the prefix of a family that offers new models of its kind
    (roberta-mini, ...)."""
    prefixed = [f"{t}-{size}" for t, f in FAMILIES.items() if f.new_model is not None for size in PRESETS]
    return [*PRESETS, *(p for p in prefixed if not p.startswith("bert-"))]


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    architectures: list[str] | None = None
    model_type: str = "bert"
    embedding_size: int | None = None  # ELECTRA: embeddings narrower than the layers, projected up
    # Unknown fields from config.json, written back as they came.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def family(self) -> Family:
        return family(self.model_type)

    @property
    def embedding_dim(self) -> int:
        """The width of the embedding tables (ELECTRA's `embedding_size`, else hidden_size)."""
        return self.embedding_size or self.hidden_size

    @property
    def max_length(self) -> int:
        """The longest sequence the position table holds (RoBERTa's start after the padding id)."""
        if self.family.positions_after_padding:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    # ---- labels -------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    def set_labels(self, labels: list[str]) -> None:
        """Name the output classes of a classification head, in id order."""
        self.id2label = dict(enumerate(labels))
        self.label2id = {name: i for i, name in self.id2label.items()}

    # ---- presets and checks -------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BertConfig:
        """A named size: tiny (L2/H128), mini (L4/H256), small (L4/H512), medium (L8/H512), base,
        large; a BERT, or with a family's prefix that family's (`roberta-mini`: one token type,
        LayerNorm eps 1e-5, positions counted after the padding id). `max_position_embeddings`
        counts the tokens a sequence may hold (default 512); RoBERTa's table adds pad + 1."""
        if name not in preset_names():
            raise BertkitError(f"unknown config preset {name!r}; expected one of {', '.join(preset_names())}")
        model_type, _, size = name.rpartition("-")
        fam = family(model_type or "bert")
        layers, hidden, heads = PRESETS[size]
        kw: dict[str, Any] = dict(
            model_type=fam.model_type,
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            **(fam.new_model or {}),
        )
        kw.update(overrides)
        if fam.positions_after_padding:
            pad = kw.setdefault("pad_token_id", fam.defaults.get("pad_token_id", 0))
            kw["max_position_embeddings"] = kw.get("max_position_embeddings", 512) + pad + 1
        return cls(**kw)

    def validate(self, source: str | None = None) -> None:
        """Check types and relations of the fields; raise BertkitError naming the field."""
        where = f"{source}: " if source else ""

        def bad(name: str, expected: str) -> BertkitError:
            return BertkitError(f"{where}field {name!r} = {getattr(self, name)!r}, expected {expected}")

        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(name, "a positive integer")
        if not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool):
            raise bad("pad_token_id", "an integer")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v < 1.0:
                raise bad(name, "a number in [0, 1)")
        if self.classifier_dropout is not None and (
            not isinstance(self.classifier_dropout, (int, float)) or not 0.0 <= self.classifier_dropout < 1.0
        ):
            raise bad("classifier_dropout", "null or a number in [0, 1)")
        for name in ("initializer_range", "layer_norm_eps"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise bad(name, "a positive number")
        if self.hidden_act not in ACTIVATIONS:
            raise bad("hidden_act", f"one of {', '.join(ACTIVATIONS)}")
        family(self.model_type, source)
        if self.embedding_size is not None and (
            not isinstance(self.embedding_size, int)
            or isinstance(self.embedding_size, bool)
            or self.embedding_size <= 0
        ):
            raise bad("embedding_size", "null or a positive integer")
        if self.position_embedding_type != "absolute":
            raise bad("position_embedding_type", "'absolute' (the only kind BERT uses)")
        if self.hidden_size % self.num_attention_heads:
            raise BertkitError(
                f"{where}hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise bad("pad_token_id", f"an id below vocab_size {self.vocab_size}")
        if (expected := self._bad_labels()) is not None:
            raise bad(*expected)

    def _bad_labels(self) -> tuple[str, str] | None:
        """(field, what was expected) where id2label or label2id is malformed; None if neither."""
        if self.id2label is not None:
            if not isinstance(self.id2label, dict) or not all(
                isinstance(k, int) and isinstance(v, str) for k, v in self.id2label.items()
            ):
                return "id2label", "a mapping from integer ids to label names"
            if sorted(self.id2label) != list(range(len(self.id2label))):
                return "id2label", "ids 0..N-1"
        if self.label2id is not None and (
            not isinstance(self.label2id, dict)
            or not all(isinstance(k, str) and isinstance(v, int) for k, v in self.label2id.items())
        ):
            return "label2id", "a mapping from label names to integer ids"
        return None

    # ---- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if d["id2label"] is not None:  # JSON object keys are strings, as transformers writes them
            d["id2label"] = {str(k): v for k, v in d["id2label"].items()}
        for k in (
            "classifier_dropout",
            "id2label",
            "label2id",
            "problem_type",
            "architectures",
            "embedding_size",
        ):
            if d[k] is None:
                del d[k]
        fam = self.family
        d = {fam.config_names.get(k, k): v for k, v in d.items() if k not in fam.config_absent}
        return {**self.extra, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> BertConfig:
        where = f"{source}: " if source else ""
        if not isinstance(d, dict):
            raise BertkitError(f"{where}expected a JSON object")
        fam = family(d.get("model_type", "bert"), source)
        theirs = {v: k for k, v in fam.config_names.items()}
        d = {**fam.defaults, **{theirs.get(k, k): v for k, v in d.items()}}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        if isinstance(kw.get("id2label"), dict):
            try:
                kw["id2label"] = {int(k): v for k, v in kw["id2label"].items()}
            except ValueError:
                raise BertkitError(f"{where}field 'id2label' has a key that is not an integer") from None
        try:
            obj = cls(**kw)
        except BertkitError as e:
            raise BertkitError(f"{where}{e}") from None
        obj.extra = extra
        return obj

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> BertConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BertkitError("no such file", path) from None
        except UnicodeDecodeError as e:
            raise BertkitError(f"not UTF-8 text ({e.reason} at byte {e.start})", path) from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise BertkitError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", path) from None
        return cls.from_dict(d, source=str(path))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> BertConfig:
        """From a model directory, or a Hub name (`org/name[@revision]`, see `bertkit.hub`)."""
        directory = resolve(directory)
        if not directory.is_dir():
            raise BertkitError("no such model directory", directory)
        return cls.from_json_file(directory / CONFIG_NAME)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        write_json(Path(directory) / CONFIG_NAME, self.to_dict())


def check_tokenizer(config: BertConfig, tokenizer: Any, directory: str | os.PathLike) -> None:
    """One line naming both files when a tokenizer does not fit the model of `directory`: an id
    past the embedding table (a table larger than the vocabulary is valid), or, for a family
    whose positions count from the padding id (RoBERTa), another padding id."""
    top = max(tokenizer.vocab.values())
    if top >= config.vocab_size:
        raise BertkitError(
            f"the tokenizer (tokenizer.json) gives ids up to {top} but config.json's vocab_size is "
            f"{config.vocab_size}: the tokenizer is not this model's",
            directory,
        )
    if config.family.positions_after_padding and tokenizer.pad_token_id != config.pad_token_id:
        raise BertkitError(
            f"the tokenizer (tokenizer.json) pads with id {tokenizer.pad_token_id} but config.json's "
            f"pad_token_id is {config.pad_token_id} ({config.model_type} positions count from it)",
            directory,
        )

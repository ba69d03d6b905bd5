"""Task heads on the encoder. Each model returns logits; losses belong to the tasks.

One class a head serves every family: the config's family picks the head's layout where
transformers has one of its own (RoBERTa's and ELECTRA's dense classification head, DistilBERT's
pre-classifier, the masked-LM head's activation). Module and parameter names follow
`checkpoint.RENAMES`, so each class saves and loads as the `transformers` class of its family
(`BertForSequenceClassification` on a RoBERTa config is `RobertaForSequenceClassification`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.errors import BertkitError
from bertkit.models.checkpoint import PretrainedMixin
from bertkit.models.config import BertConfig
from bertkit.models.encoder import BertModel, activation, init_weights


@dataclass
class MaskedLMOutput:
    logits: torch.Tensor  # (B, T, V), or (N, V) for the N positions asked for
    hidden_states: torch.Tensor | None = None  # (B, T, H) last encoder layer


@dataclass
class PreTrainingOutput:
    prediction_logits: torch.Tensor  # (B, T, V), or (N, V)
    seq_relationship_logits: torch.Tensor  # (B, 2)


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, num_labels) for sequences, (B, T, num_labels) for tokens
    hidden_states: torch.Tensor | None = None


@dataclass
class SpanOutput:
    start_logits: torch.Tensor  # (B, T)
    end_logits: torch.Tensor  # (B, T)


class MaskedLMHead(nn.Module):
    """dense + activation + LayerNorm, then the decoder, whose matrix is the word embeddings
    (tied, as in BERT) plus a bias of its own."""

    def __init__(self, config: BertConfig):
        super().__init__()
        E = config.embedding_dim  # back to the width of the (tied) word embeddings
        self.dense = nn.Linear(config.hidden_size, E)
        self.act = activation(config.family.mlm_act or config.hidden_act)
        self.norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(x))), decoder_weight, self.bias)  # (..., V)


def _select(x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Hidden states at the masked positions only, (N, H): the vocabulary projection is the
    costliest matrix product in pretraining, and only ~15 % of tokens need it."""
    return x if positions is None else x[positions.bool()]


class _HeadModel(PretrainedMixin, nn.Module):
    encoder_prefix = "bert."  # where the encoder's parameters sit in this model's state dict
    pooling = True  # whether the head reads the pooler (where the family has one)
    needs_nsp = False  # only BERT pretrains with a next-sentence head

    def __init__(self, config: BertConfig):
        super().__init__()
        if self.needs_nsp and not config.family.nsp:
            raise BertkitError(f"{type(self).__name__}: {config.model_type} has no next-sentence head")
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=self.pooling)

    def _init_heads(self, *modules: nn.Module) -> None:
        for m in modules:
            m.apply(lambda mod: init_weights(mod, self.config.initializer_range))

    def set_attention_impl(self, impl: str) -> None:
        self.bert.set_attention_impl(impl)


class BertForMaskedLM(_HeadModel):
    pooling = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.mlm = MaskedLMHead(config)
        self._init_heads(self.mlm)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
    ):
        """`masked_positions` (B, T) bool: compute logits only there, returning (N, V)."""
        h = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.mlm(_select(h, masked_positions), self.bert.embeddings.word.weight)
        return MaskedLMOutput(logits, h)


class BertForPreTraining(_HeadModel):
    """Masked-LM and next-sentence heads, as BERT is pretrained."""

    needs_nsp = True

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.mlm = MaskedLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self._init_heads(self.mlm, self.nsp)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
    ):
        out = self.bert(input_ids, attention_mask, token_type_ids)
        h = _select(out.last_hidden_state, masked_positions)
        return PreTrainingOutput(self.mlm(h, self.bert.embeddings.word.weight), self.nsp(out.pooler_output))


class BertForNextSentencePrediction(_HeadModel):
    needs_nsp = True

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self._init_heads(self.nsp)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ):
        return ClassifierOutput(self.nsp(self.bert(input_ids, attention_mask, token_type_ids).pooler_output))


def _classifier_dropout(config: BertConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


class DenseHead(nn.Module):
    """RoBERTa's and ELECTRA's sequence head on the first token: dropout, dense, tanh (RoBERTa)
    or GELU (ELECTRA), dropout, out_proj."""

    def __init__(self, config: BertConfig, p: float):
        super().__init__()
        H = config.hidden_size
        self.dropout = nn.Dropout(p)
        self.dense = nn.Linear(H, H)
        self.act = nn.GELU() if config.family.classifier == "cls-gelu" else nn.Tanh()
        self.out_proj = nn.Linear(H, config.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, num_labels)
        return self.out_proj(self.dropout(self.act(self.dense(self.dropout(x)))))


class BertForSequenceClassification(_HeadModel):
    """`num_labels` classes, or 1 for regression, in the family's layout: a linear layer on the
    pooled [CLS] vector (BERT); a DenseHead on the first token (RoBERTa, ELECTRA); pre_classifier,
    ReLU, dropout and a linear layer on the first token (DistilBERT)."""

    def __init__(self, config: BertConfig):
        self.kind = config.family.classifier
        self.pooling = self.kind == "pooled"
        super().__init__(config)
        self.dropout = _classifier_dropout(config)
        H, n = config.hidden_size, config.num_labels
        self.pre_classifier = nn.Linear(H, H) if self.kind == "pre-classifier" else None
        self.classifier = (
            DenseHead(config, self.dropout.p) if self.kind.startswith("cls-") else nn.Linear(H, n)
        )
        self._init_heads(self.classifier, *([self.pre_classifier] if self.pre_classifier else []))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ):
        out = self.bert(input_ids, attention_mask, token_type_ids)
        if self.pooling:
            return ClassifierOutput(self.classifier(self.dropout(out.pooler_output)))  # (B, num_labels)
        first = out.last_hidden_state[:, 0]  # (B, H)
        if self.pre_classifier is not None:
            first = self.dropout(F.relu(self.pre_classifier(first)))
        return ClassifierOutput(self.classifier(first))


class BertForTokenClassification(_HeadModel):
    """A linear layer on every token's hidden state."""

    pooling = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._init_heads(self.classifier)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ):
        h = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        return ClassifierOutput(self.classifier(self.dropout(h)), h)  # (B, T, num_labels)


class BertForQuestionAnswering(_HeadModel):
    """Start and end scores for every token: the answer span of extractive QA."""

    pooling = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.extra.get("qa_dropout", 0.0))  # DistilBERT's; BERT has none
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self._init_heads(self.qa_outputs)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ):
        h = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        start, end = self.qa_outputs(self.dropout(h)).unbind(dim=-1)  # (B, T) each
        return SpanOutput(start, end)


MODEL_CLASSES: dict[str, type[PretrainedMixin]] = {
    cls.__name__: cls
    for cls in (
        BertModel,
        BertForMaskedLM,
        BertForPreTraining,
        BertForNextSentencePrediction,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertForQuestionAnswering,
    )
}


def model_class(config: BertConfig) -> type[PretrainedMixin]:
    """The bertkit class for the head config.json's `architectures` names in its family
    (`RobertaForMaskedLM` -> BertForMaskedLM), or the bare encoder for one bertkit lacks."""
    name = (config.architectures or ["Model"])[0]
    head = name.removeprefix(config.family.class_prefix)
    cls = MODEL_CLASSES.get("Bert" + head, BertModel)
    return BertModel if getattr(cls, "needs_nsp", False) and not config.family.nsp else cls


def load_model(directory, **kwargs):
    """Load a directory into the class its config.json names under `architectures`
    (what `transformers` writes), or a bare encoder when it names none bertkit knows."""
    config = BertConfig.from_pretrained(directory)
    return model_class(config).from_pretrained(directory, config=config, **kwargs)


def pretraining_class(config: BertConfig) -> type[BertForPreTraining] | type[BertForMaskedLM]:
    """What a family pretrains: BERT masked-LM and next sentence, the others masked-LM alone."""
    return BertForPreTraining if config.family.nsp else BertForMaskedLM


def init_model_dir(
    preset: str,
    tokenizer_dir: str | os.PathLike,
    output: str | os.PathLike,
    seed: int = 0,
    overwrite: bool = False,
    **overrides,
) -> BertForPreTraining | BertForMaskedLM:
    """A randomly initialised model of a preset size (BertForPreTraining; BertForMaskedLM for a
    family without next-sentence prediction), sized to a tokenizer's vocabulary and saved with
    it as a model directory: the start of pretraining, or of fine-tuning from scratch where no
    pretrained model exists."""
    from bertkit.fileio import staged_output
    from bertkit.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig.preset(preset, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, **overrides)
    torch.manual_seed(seed)
    model = pretraining_class(config)(config)
    with staged_output(Path(output), overwrite) as stage:
        model.save_pretrained(stage)
        tok.save_pretrained(stage)
    return model

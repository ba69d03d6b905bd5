"""Task heads on the encoder. Each model returns logits; losses belong to the tasks.

Module and parameter names follow `checkpoint.RENAMES`, so each class saves and loads as the
`transformers` class of the same name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(x))), decoder_weight, self.bias)  # (..., V)


def _select(x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Hidden states at the masked positions only, (N, H): the vocabulary projection is the
    costliest matrix product in pretraining, and only ~15 % of tokens need it."""
    return x if positions is None else x[positions.bool()]


class _HeadModel(PretrainedMixin, nn.Module):
    encoder_prefix = "bert."
    pooling = True

    def __init__(self, config: BertConfig):
        super().__init__()
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


class BertForSequenceClassification(_HeadModel):
    """A linear layer on the pooled [CLS] vector: `num_labels` classes, or 1 for regression."""

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
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output
        return ClassifierOutput(self.classifier(self.dropout(pooled)))  # (B, num_labels)


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
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self._init_heads(self.qa_outputs)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ):
        h = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        start, end = self.qa_outputs(h).unbind(dim=-1)  # (B, T) each
        return SpanOutput(start, end)


MODEL_CLASSES = {
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


def load_model(directory, **kwargs):
    """Load a directory into the class its config.json names under `architectures`
    (what `transformers` writes), or a bare BertModel when it names none bertkit knows."""
    config = BertConfig.from_pretrained(directory)
    name = (config.architectures or ["BertModel"])[0]
    return MODEL_CLASSES.get(name, BertModel).from_pretrained(directory, config=config, **kwargs)


def init_model_dir(
    preset: str,
    tokenizer_dir: str | os.PathLike,
    output: str | os.PathLike,
    seed: int = 0,
    overwrite: bool = False,
    **overrides,
) -> BertForPreTraining:
    """A randomly initialised BertForPreTraining of a preset size, sized to a tokenizer's
    vocabulary and saved with it as a model directory: the start of pretraining, or of
    fine-tuning from scratch where no pretrained model exists."""
    from bertkit.fileio import staged_output
    from bertkit.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig.preset(preset, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, **overrides)
    torch.manual_seed(seed)
    model = BertForPreTraining(config)
    with staged_output(Path(output), overwrite) as stage:
        model.save_pretrained(stage)
        tok.save_pretrained(stage)
    return model

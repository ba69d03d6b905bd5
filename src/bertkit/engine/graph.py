"""A model as the graph exporters trace: three int64 tensors in, a tuple of the head's outputs
out. Shared by ONNX export (`bertkit.inference.export`) and the OpenVINO runner, which converts
the same graph at load time."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from bertkit.models.encoder import BertModel

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Graph(nn.Module):
    """The model as a function of three tensors returning a tuple (what the exporter traces)."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        if hasattr(self.model, "emissions"):  # a NER tagger: BERT (+ BiLSTM) emission scores
            batch = dict(zip(INPUTS, (input_ids, attention_mask, token_type_ids), strict=True))
            return (cast(Any, self.model).emissions(batch),)  # tasks.ner.NerTagger's
        out = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(getattr(out, name) for name in self.outputs)


def traceable(model: nn.Module) -> nn.Module:
    """`model` made ready to be traced, in place: eval, fp32, and attention by the plain formula
    (it converts to standard operators). Trace it on inputs with padding (`example_inputs`): a
    mask of all ones takes the no-mask branch, which would be traced into the graph."""
    model.eval().float()
    for m in model.modules():
        if isinstance(m, BertModel):
            m.set_attention_impl("eager")
    return model


def example_inputs(vocab_size: int, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, token_type_ids) of two rows, the second padded with `pad`
    (RoBERTa's positions count the tokens that are not padding), ids inside the vocabulary."""
    words = [i for i in range(2, min(vocab_size, 64)) if i != pad][:11]  # 11 ids, none the padding
    ids = torch.tensor([words[:8], [*words[8:], pad, pad, pad, pad, pad]])
    mask = torch.tensor([[1] * 8, [1] * 3 + [0] * 5])
    return ids, mask, torch.zeros_like(ids)

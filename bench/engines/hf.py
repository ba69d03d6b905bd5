"""transformers on PyTorch (SDPA attention), fp32 or bf16 weights, length-sorted batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engines.common import Batcher, collect, mean_pool


def version() -> str:
    import transformers

    return f"transformers {transformers.__version__}, torch {torch.__version__}"


def load(model_dir: Path, kind: str, attn: str = "sdpa"):
    import transformers as hf

    cls = hf.BertModel if kind == "embed" else hf.BertForSequenceClassification
    return cls.from_pretrained(str(model_dir), attn_implementation=attn).eval()


class Graph(torch.nn.Module):
    """Positional inputs, one tensor out (last hidden state or logits): what exporters want."""

    def __init__(self, model, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state if self.kind == "embed" else out.logits


def build(model_dir: Path, kind: str, work: Path, calib: list[str], dtype: str):
    model = load(model_dir, kind)
    if dtype == "bf16":
        model.to(torch.bfloat16)
    batcher = Batcher(model_dir)
    dim = model.config.hidden_size

    @torch.inference_mode()
    def run(texts: list[str]) -> np.ndarray:
        out = collect(kind, len(texts), dim)
        for idx, ids, mask, types in batcher(texts):
            t = [torch.from_numpy(a) for a in (ids, mask, types)]
            y = model(input_ids=t[0], attention_mask=t[1], token_type_ids=t[2])
            if kind == "embed":
                out[idx] = mean_pool(y.last_hidden_state.float().numpy(), mask)
            else:
                out[idx] = y.logits.float().argmax(-1).numpy()
        return out

    return run

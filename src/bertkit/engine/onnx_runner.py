"""`--backend onnx`: a fine-tuned directory's head run by ONNX Runtime from the file
`bertkit export` wrote, in place of the PyTorch model.

The tasks call the model as they call a PyTorch one (`model(input_ids, attention_mask,
token_type_ids).logits`, a tagger's `emissions(batch)` and `crf`), so batching by length, windows,
span decoding and Viterbi decoding are the same code for both backends; only the forward pass
moves to ONNX Runtime. Inputs are padded batches, as the graph takes them (no packing).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from bertkit.errors import BertkitError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxRunner(nn.Module):
    """An ONNX Runtime session called like a bertkit model; returns its outputs by name."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise BertkitError("--backend onnx needs onnxruntime: pip install 'bertkit[onnx]'") from None
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BertkitError(f"ONNX Runtime cannot load the file ({first})", path) from None
        self.path = path
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        # a model with one token type (RoBERTa) exports without token_type_ids, as optimum's do
        if "input_ids" not in self.inputs or not set(self.inputs) <= set(INPUTS):
            raise BertkitError(
                f"the graph takes {', '.join(self.inputs)}; expected {', '.join(INPUTS)} "
                "or some of them (a file written by `bertkit export`)",
                path,
            )

    def forward(self, input_ids, attention_mask, token_type_ids) -> SimpleNamespace:
        feed = dict(zip(INPUTS, (input_ids, attention_mask, token_type_ids), strict=True))
        got = self.session.run(None, {k: feed[k].cpu().numpy().astype(np.int64) for k in self.inputs})
        return SimpleNamespace(**{n: torch.from_numpy(g) for n, g in zip(self.outputs, got, strict=True)})

    def output_dim(self, name: str) -> int | str | None:
        shape = next(o.shape for o in self.session.get_outputs() if o.name == name)
        return shape[-1] if shape else None


class OnnxTagger(nn.Module):
    """A NER tagger whose emissions (BERT, and the BiLSTM where there is one) come from a graph
    runner (ONNX Runtime, or OpenVINO's `OpenvinoRunner`); the CRF, if any, stays a PyTorch
    module (Viterbi decoding is not in the graph)."""

    def __init__(self, runner: nn.Module, crf: nn.Module | None):
        super().__init__()
        self.runner, self.crf = runner, crf

    def emissions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # (B, T, C)
        return self.runner(*(batch[k] for k in INPUTS)).logits


def onnx_model(model_dir: Path, task, torch_model: nn.Module | None, path: str | Path | None, threads=None):
    """The object `task.predict` calls, backed by the ONNX file `path` (default DIR/model.onnx)."""
    path = Path(path) if path else Path(model_dir) / "model.onnx"
    if not path.is_file():
        raise BertkitError(
            f"no ONNX file; write it with: bertkit export --model {model_dir} --output {path}", path
        )
    runner = OnnxRunner(path, threads)
    want = list(task.onnx_outputs)
    if runner.outputs != want:
        raise BertkitError(
            f"the graph gives {', '.join(runner.outputs)}; a {task.name} model needs "
            f"{', '.join(want)} (export it from this directory)",
            path,
        )
    n = task.num_scores
    dim = runner.output_dim("logits") if n is not None else None
    if n is not None and isinstance(dim, int) and dim != n:
        raise BertkitError(
            f"the graph gives {dim} scores per item; {model_dir}/config.json has {n} labels "
            "(export it from this directory)",
            path,
        )
    return task.onnx_model(runner, torch_model)

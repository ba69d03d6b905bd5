"""ONNX export with a parity check: `bertkit export --model DIR --output model.onnx [--int8]`.

The graph takes input_ids, attention_mask and token_type_ids, (batch, sequence) int64 with both
axes dynamic, and gives what the directory's head gives: `logits` for a classifier or a softmax
NER model, `start_logits`/`end_logits` for QA, `last_hidden_state`/`pooler_output` for a plain
encoder. CRF / BiLSTM-CRF taggers export their emission scores (BERT and the BiLSTM); Viterbi
decoding is not in the graph: `--backend onnx` runs it in PyTorch. Before the file is put in
place, ONNX Runtime runs it on real sentences and its outputs are compared with PyTorch's: fp32
must agree to 1e-4 (else nothing is written); `--int8` (ONNX Runtime dynamic quantization, per
channel) reports its difference. Written to a temporary file, then renamed. Run the file with
`bertkit predict|evaluate|serve --backend onnx`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.engine.graph import INPUTS, Graph, traceable
from bertkit.errors import BertkitError
from bertkit.fileio import atomic_path
from bertkit.hub import resolve

# Real sentences of mixed lengths and scripts for the parity check.
CHECK_TEXTS = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn",
    "it 's a charming and often affecting journey .",
    "The European Commission said on Thursday it disagreed with German advice to consumers to shun "
    "British lamb until scientists determine whether mad cow disease can be transmitted to sheep .",
    "unflinchingly bleak and desperate",
    "中国队在比赛中获得了冠军。",
]

OPSET = 17  # the ONNX opset written unless told


def load_for_export(model_dir: Path) -> tuple[nn.Module, tuple[str, ...]]:
    """The directory's model and the outputs its graph gives: its task's head, or the encoder."""
    from bertkit.models.encoder import BertModel
    from bertkit.tasks import registry

    if registry.is_task_dir(model_dir):
        task = registry.from_dir(model_dir)
        return task.load_model(model_dir), task.onnx_outputs
    encoder = BertModel.from_pretrained(model_dir)
    pooled = ("pooler_output",) if encoder.pooler is not None else ()  # DistilBERT, ELECTRA: none
    return encoder, ("last_hidden_state", *pooled)


def export_onnx(model_dir: str | Path, output: str | Path, int8: bool = False, opset: int = OPSET) -> dict:
    """Export, check against PyTorch with ONNX Runtime, then write `output`; returns the check."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BertkitError("ONNX export needs onnxruntime: pip install 'bertkit[onnx]'") from None
    from bertkit.tokenization.tokenizer import Tokenizer

    model_dir, output = resolve(model_dir), Path(output)
    model, outputs = load_for_export(model_dir)
    traceable(model)
    tok = Tokenizer.from_pretrained(model_dir)
    enc = tok(CHECK_TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
    feed = tuple(enc[k] for k in INPUTS)
    axes = {k: {0: "batch", 1: "sequence"} for k in (*INPUTS, *outputs)}
    if "pooler_output" in axes:
        axes["pooler_output"] = {0: "batch"}
    with tempfile.TemporaryDirectory(
        prefix=".export-", dir=output.parent if output.parent.is_dir() else None
    ) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        graph = Graph(model, outputs).eval()  # eval: the exporter restores the wrapper's mode after
        with torch.inference_mode():
            want = graph(*feed)
        _trace(graph, feed, fp32, outputs, axes, opset)
        check: dict[str, Any] = {"outputs": list(outputs), "opset": opset, "texts": len(CHECK_TEXTS)}
        real = enc["attention_mask"].bool().numpy()
        check["fp32_max_abs_diff"] = _max_diff(ort, fp32, feed, want, real)
        if check["fp32_max_abs_diff"] > 1e-4:
            raise BertkitError(
                f"ONNX Runtime disagrees with PyTorch by {check['fp32_max_abs_diff']:.2e} (> 1e-4); "
                "nothing written",
                output,
            )
        final = fp32
        if int8:
            final = _quantize(fp32, Path(tmp) / "model.int8.onnx")
            check["int8_max_abs_diff"] = _max_diff(ort, final, feed, want, real)
        with atomic_path(output) as dest:
            dest.write_bytes(final.read_bytes())
    sidecar = output.with_suffix(output.suffix + ".json")
    with atomic_path(sidecar) as dest:
        dest.write_text(json.dumps({"model": str(model_dir), "int8": int8, **check}, indent=2) + "\n")
    return check


def _trace(
    graph: nn.Module, feed: tuple, path: Path, outputs: tuple[str, ...], axes: dict, opset: int
) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer's notes on Python branches (mask all ones? T within positions?) are
        # expected: the check inputs take the general path, and parity is checked after.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            feed,
            str(path),
            input_names=list(INPUTS),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def _quantize(fp32: Path, path: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantization (per-channel weights) of the graph in `fp32`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quiet its advice to pre-process first
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return path


def _max_diff(ort, path: Path, feed, want, real: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}  # token_type_ids is pruned where it is unused
    got = sess.run(None, {k: t.numpy() for k, t in zip(INPUTS, feed, strict=True) if k in names})
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        d = np.abs(g - w)
        if d.ndim >= 2 and d.shape[:2] == real.shape:  # per-token outputs: real tokens only
            d = d[real]
        worst = max(worst, float(d.max()))
    return worst

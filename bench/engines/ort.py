"""ONNX Runtime: the plain export of transformers' model, or the graph the
`onnxruntime.transformers` BERT optimizer fuses (attention, skip-LayerNorm, bias-GELU), in fp32
or with dynamic int8 quantization of the optimized graph (ONNX Runtime's CPU advice for BERT)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from engines.common import Batcher, collect, mean_pool

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def export(model_dir: Path, kind: str, path: Path) -> Path:
    from engines.hf import Graph, load

    if path.exists():
        return path
    model = load(model_dir, kind, attn="eager")
    x = tuple(torch.ones(2, 8, dtype=torch.long) for _ in NAMES)
    axes = {n: {0: "batch", 1: "sequence"} for n in NAMES} | {"output": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Graph(model, kind).eval(),
            x,
            str(path),
            input_names=NAMES,
            output_names=["output"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return path


def build(model_dir: Path, kind: str, work: Path, calib: list[str], optimize: bool, int8: bool = False):
    import onnxruntime as ort

    path = export(model_dir, kind, work / f"{kind}.onnx")
    if optimize:
        from onnxruntime.transformers import optimizer

        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        opt = optimizer.optimize_model(
            str(path), model_type="bert", num_heads=cfg["num_attention_heads"], hidden_size=cfg["hidden_size"]
        )
        path = work / f"{kind}.opt.onnx"
        opt.save_model_to_file(str(path))
    if int8:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = work / f"{kind}.opt.int8.onnx"
        # The fused graph's contrib operators defeat ONNX shape inference; its tensors are float.
        extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
        quantize_dynamic(
            str(path), str(q), weight_type=QuantType.QInt8, per_channel=True, extra_options=extra
        )
        path = q
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    batcher = Batcher(model_dir)
    dim = json.loads((Path(model_dir) / "config.json").read_text())["hidden_size"]

    def run(texts: list[str]) -> np.ndarray:
        out = collect(kind, len(texts), dim)
        for idx, ids, mask, types in batcher(texts):
            y = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
            out[idx] = mean_pool(y, mask) if kind == "embed" else y.argmax(-1)
        return out

    return run

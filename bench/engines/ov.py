"""OpenVINO as its documentation advises for throughput on a CPU: the PyTorch model converted
with `ov.convert_model` (dynamic batch and length), compiled with the THROUGHPUT hint, batches
through an `AsyncInferQueue` of the optimal number of requests; fp32 (`INFERENCE_PRECISION_HINT`
f32), bf16 (where the CPU has bf16 units) or int8 by NNCF post-training quantization
(`ModelType.TRANSFORMER`, calibrated on real texts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engines.common import OPENVINO_MAX_TOKENS, Batcher, collect, mean_pool
from engines.ort import NAMES


def version() -> str:
    import nncf
    import openvino

    return f"openvino {openvino.__version__}, nncf {nncf.__version__}"


def convert(model_dir: Path, kind: str, work: Path):
    import openvino as ov

    from engines.hf import Graph, load

    path = work / f"{kind}.xml"
    if path.exists():
        return ov.Core().read_model(str(path))
    x = tuple(torch.ones(2, 8, dtype=torch.long) for _ in NAMES)
    shapes = [(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in NAMES]
    with torch.no_grad():
        model = ov.convert_model(Graph(load(model_dir, kind), kind).eval(), example_input=x, input=shapes)
    ov.save_model(model, str(path))
    return model


def quantize(model, model_dir: Path, kind: str, work: Path, calib: list[str]):
    import nncf
    import openvino as ov

    path = work / f"{kind}.int8.xml"
    if path.exists():
        return ov.Core().read_model(str(path))
    items = [
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        for _, ids, mask, types in Batcher(model_dir, max_tokens=0)(calib)
    ]
    q = nncf.quantize(
        model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
    )
    ov.save_model(q, str(path))
    return q


def build(model_dir: Path, kind: str, work: Path, calib: list[str], precision: str):
    import openvino as ov

    model = convert(model_dir, kind, work)
    config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    if precision == "int8":
        model = quantize(model, model_dir, kind, work, calib)
    else:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(model, "CPU", config)
    queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    batcher = Batcher(model_dir, max_tokens=OPENVINO_MAX_TOKENS)
    dim = json.loads((Path(model_dir) / "config.json").read_text())["hidden_size"]
    out: np.ndarray = np.zeros(0)

    def done(request, userdata):
        idx, mask = userdata
        y = request.get_output_tensor(0).data
        out[idx] = mean_pool(y, mask) if kind == "embed" else y.argmax(-1)

    queue.set_callback(done)

    def run(texts: list[str]) -> np.ndarray:
        nonlocal out
        out = collect(kind, len(texts), dim)
        for idx, ids, mask, types in batcher(texts):
            queue.start_async(
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, (idx, mask)
            )
        queue.wait_all()
        return out

    return run

"""The engines `bench/inference_vs_engines.py` measures, one module per family; each runs in a
process of its own (`python bench/inference_vs_engines.py --child ENGINE ...`).

Every engine is `build(model_dir, kind, work, calib) -> run(texts) -> np.ndarray`: `kind`
"embed" gives (N, H) float32 mean-pooled sentence vectors, "classify" (N,) class ids of a
sequence classifier; `work` is a folder for the engine's converted files; `calib` real texts
for engines that calibrate (int8).
"""

from __future__ import annotations

import importlib

# engine -> (module, builder keyword arguments)
ENGINES: dict[str, tuple[str, dict]] = {
    # what a user gets without flags (`--backend auto`), and with --int8 only
    "bertkit default": ("bk", {}),
    "bertkit default int8": ("bk", {"int8": True}),  # OpenVINO: calibrated on the shipped texts
    # the torch engine, forced
    "bertkit auto": ("bk", {"precision": "auto", "backend": "torch"}),
    "bertkit fp32": ("bk", {"precision": "fp32", "backend": "torch"}),
    "bertkit int8": ("bk", {"precision": "auto", "int8": True, "backend": "torch"}),
    "bertkit openvino auto": ("bk", {"precision": "auto", "backend": "openvino"}),
    "bertkit openvino fp32": ("bk", {"precision": "fp32", "backend": "openvino"}),
    "bertkit openvino int8": ("bk", {"precision": "auto", "int8": True, "backend": "openvino"}),
    "transformers fp32": ("hf", {"dtype": "fp32"}),
    "transformers bf16": ("hf", {"dtype": "bf16"}),
    "onnxruntime fp32": ("ort", {"optimize": False}),
    "onnxruntime optimized fp32": ("ort", {"optimize": True}),
    "onnxruntime optimized int8": ("ort", {"optimize": True, "int8": True}),
    "openvino fp32": ("ov", {"precision": "f32"}),
    "openvino bf16": ("ov", {"precision": "bf16"}),
    "openvino int8": ("ov", {"precision": "int8"}),
    "ctranslate2 fp32": ("ct2", {"compute_type": "float32", "mode": "intra"}),
    "ctranslate2 fp32 inter": ("ct2", {"compute_type": "float32", "mode": "inter"}),
    "ctranslate2 int8": ("ct2", {"compute_type": "int8", "mode": "intra"}),
    "ctranslate2 int8 inter": ("ct2", {"compute_type": "int8", "mode": "inter"}),
}


def build(name: str, model_dir, kind: str, work, calib: list[str]):
    module, kw = ENGINES[name]
    return importlib.import_module(f"engines.{module}").build(model_dir, kind, work, calib, **kw)


def version(name: str) -> str:
    module, _ = ENGINES[name]
    return importlib.import_module(f"engines.{module}").version()

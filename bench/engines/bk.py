"""bertkit through its public pipelines: `bertkit.pipeline("feature-extraction", model=DIR,
precision=..., int8=..., backend=...)` (its own tokenization, length batching by token budget,
engine: PyTorch, or OpenVINO with `backend="openvino"`), and "text-classification" for a
classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def version() -> str:
    import torch

    import bertkit

    return f"bertkit {bertkit.__version__}, torch {torch.__version__}"


def build(
    model_dir: Path, kind: str, work: Path, calib: list[str], precision=None, int8: bool = False, backend=None
):
    import bertkit

    kw = {"precision": precision, "int8": int8 or None, "backend": backend}
    if backend == "openvino" and int8:  # NNCF calibrates on the texts the other int8 engines get
        (work / "calibration.txt").write_text("\n".join(" ".join(t.split()) for t in calib) + "\n")
        kw["calibration"] = work / "calibration.txt"
    if kind == "embed":
        pipe = bertkit.pipeline(
            "feature-extraction", model=model_dir, pooling="mean", normalize=False, max_length=512, **kw
        )
        return lambda texts: pipe(texts)
    pipe = bertkit.pipeline("text-classification", model=model_dir, **kw)
    label2id = json.loads((Path(model_dir) / "config.json").read_text())["label2id"]
    return lambda texts: np.array([label2id[p["label"]] for p in pipe(texts)], dtype=np.int64)

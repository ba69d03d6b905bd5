"""CTranslate2's BERT encoder (converted by its TransformersConverter), fp32 or int8; "intra" =
one caller with all threads inside each batch, "inter" = one translator replica per thread with
batches submitted from as many Python threads (CTranslate2's two documented modes). A
classifier's linear layer is applied to CTranslate2's pooled output in numpy."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from engines.common import Batcher, classifier_head, collect


def version() -> str:
    import ctranslate2

    return f"ctranslate2 {ctranslate2.__version__}"


def convert(model_dir: Path, work: Path, kind: str) -> Path:
    import ctranslate2

    path = work / f"ct2-{kind}"
    if not path.exists():
        ctranslate2.converters.TransformersConverter(str(model_dir)).convert(str(path))
    return path


def build(model_dir: Path, kind: str, work: Path, calib: list[str], compute_type: str, mode: str):
    import ctranslate2

    threads = torch.get_num_threads()
    intra, inter = (threads, 1) if mode == "intra" else (1, threads)
    enc = ctranslate2.Encoder(
        str(convert(model_dir, work, kind)),
        device="cpu",
        compute_type=compute_type,
        intra_threads=intra,
        inter_threads=inter,
    )
    head = classifier_head(model_dir) if kind == "classify" else None
    batcher = Batcher(model_dir)
    dim = json.loads((Path(model_dir) / "config.json").read_text())["hidden_size"]
    pool = ThreadPoolExecutor(inter)

    def one(ids: np.ndarray, mask: np.ndarray, types: np.ndarray):
        lengths = mask.sum(1)
        rows = [r[:n].tolist() for r, n in zip(ids, lengths, strict=True)]
        tt = [r[:n].tolist() for r, n in zip(types, lengths, strict=True)]
        y = enc.forward_batch(rows, token_type_ids=tt)
        if head is not None:
            return (np.asarray(y.pooler_output) @ head[0].T + head[1]).argmax(-1)
        h = np.asarray(y.last_hidden_state)  # (B, T, H), padded past each length
        m = (np.arange(h.shape[1])[None, :] < lengths[:, None]).astype(np.float32)[..., None]
        return (h * m).sum(1) / m.sum(1)

    def run(texts: list[str]) -> np.ndarray:
        out = collect(kind, len(texts), dim)
        jobs = [(idx, pool.submit(one, ids, mask, types)) for idx, ids, mask, types in batcher(texts)]
        for idx, job in jobs:
            out[idx] = job.result()
        return out

    return run

"""The teacher's logits for every training feature, computed once before training by the
inference engine on the runtime's device and precision into a memory-mapped .npy (beside the
output, or in OUTPUT-checkpoints/ where a resumed run finds and reuses it, keyed by a fingerprint
of the teacher's files and the features), and the teacher's own dev/test scores.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bertkit.engine.runner import forward_batches
from bertkit.fileio import write_json
from bertkit.runtime import Runtime
from bertkit.tasks.base import Task
from bertkit.tokenization.tokenizer import Tokenizer

CACHE, CACHE_INFO = "teacher-logits.npy", "teacher-logits.json"


@dataclass
class TeacherLogits:
    """The teacher's logits for every training feature: `values` (rows, C) memory-mapped, a row a
    feature (sequence tasks) or a row a token (token tasks); feature i's rows start at `start[i]`."""

    values: np.ndarray
    start: np.ndarray  # (n + 1,)
    per_token: bool

    def batch(self, idx: list[int], T: int) -> torch.Tensor:
        """Features `idx` as a batch: (B, C), or (B, T, C) zero-padded to T tokens."""
        if not self.per_token:
            return torch.from_numpy(np.array(self.values[self.start[idx]], dtype=np.float32))
        out = torch.zeros(len(idx), T, self.values.shape[1])
        for b, i in enumerate(idx):
            rows = np.array(self.values[self.start[i] : self.start[i + 1]], dtype=np.float32)  # a copy
            out[b, : len(rows)] = torch.from_numpy(rows)
        return out


def row_starts(feats: list[dict], per_token: bool) -> np.ndarray:
    lengths = [len(f["input_ids"]) if per_token else 1 for f in feats]
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def fingerprint(teacher_dir: Path, feats: list[dict]) -> str:
    """What a cache was computed from: the teacher's files (name, size, time) and the features."""
    h = hashlib.sha256()
    for p in sorted(Path(teacher_dir).iterdir()):
        if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    for f in feats:
        h.update(np.asarray(f["input_ids"], dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()


def write_teacher_logits(teacher: nn.Module, task: Task, feats: list[dict], pad: int, root: Path) -> dict:
    """Run the (inference-engine) teacher over `feats` once, writing root/teacher-logits.npy
    (renamed into place when complete); returns what the cache holds."""
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{CACHE}.partial-{os.getpid()}"
    out: np.memmap | None = None
    start, per_token = np.zeros(1, np.int64), False
    with torch.inference_mode():
        for idx, _, logits in forward_batches(teacher, lambda b: task.outputs(teacher, b), feats, pad, 8192):
            values = logits.float().cpu().numpy()
            if out is None:
                per_token = values.ndim == 3
                start = row_starts(feats, per_token)
                out = np.lib.format.open_memmap(partial, "w+", np.float32, (int(start[-1]), values.shape[-1]))
            for b, i in enumerate(idx):
                out[start[i] : start[i + 1]] = (
                    values[b, : start[i + 1] - start[i]] if per_token else values[b]
                )
    assert out is not None  # there are training features
    out.flush()
    del out
    os.replace(partial, root / CACHE)
    return {"features": len(feats), "per_token": per_token}


def teacher_logits(
    root: Path,
    teacher_dir: Path,
    task: Task,
    feats: list[dict],
    pad: int,
    rt: Runtime,
    engine: nn.Module | None,
) -> TeacherLogits:
    """The training features' teacher logits from the cache in `root`, computed first (by rank 0,
    with `engine`) unless a cache of the same teacher and features is there (a resumed run)."""
    key = fingerprint(teacher_dir, feats)
    info_path = root / CACHE_INFO
    if rt.main and _read_json(info_path).get("fingerprint") != key:
        assert engine is not None  # rank 0 holds the teacher's engine
        write_json(info_path, {**write_teacher_logits(engine, task, feats, pad, root), "fingerprint": key})
    rt.barrier()
    info = _read_json(info_path)
    values = np.load(root / CACHE, mmap_mode="r")
    return TeacherLogits(values, row_starts(feats, info["per_token"]), info["per_token"])


def _read_json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def teacher_scores(
    task: Task, engine: nn.Module, tokenizer: Tokenizer, dev: list, test: list | None, dev_feats: list[dict]
) -> dict:
    """The teacher's dev and test scores, on the same data the student is scored on."""
    pad = tokenizer.pad_token_id
    scores = {}
    for split, examples, feats in (("dev", dev, dev_feats), ("test", test, None)):
        if examples:
            feats = feats if feats is not None else task.features(tokenizer, examples)
            with torch.inference_mode():
                scores[split] = task.metrics(examples, task.predict(engine, feats, examples, pad))
    return scores

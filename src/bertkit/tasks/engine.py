"""A fine-tuned directory's task model on the backend the inference options ask for (PyTorch,
ONNX Runtime or OpenVINO), called as the task's PyTorch model is: what pipelines, the server and
distillation's teacher run."""

from __future__ import annotations

from pathlib import Path

import torch

from bertkit.engine.backend import choose
from bertkit.engine.runner import InferenceOptions, prepare
from bertkit.models.config import BertConfig, check_tokenizer
from bertkit.runtime import Runtime
from bertkit.tasks.base import Task
from bertkit.tokenization.tokenizer import Tokenizer


def task_engine(
    task: Task,
    model_dir: Path,
    options: InferenceOptions,
    rt: Runtime,
    tokenizer: Tokenizer,
    model: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, InferenceOptions]:
    """A fine-tuned directory's model on the backend `options` ask for (`auto`: bertkit.engine.backend's
    choice), called as the task's PyTorch model is, and the options with the backend resolved.
    `model`: the directory's PyTorch model when the caller has loaded it already."""
    check_tokenizer(BertConfig.from_pretrained(model_dir), tokenizer, model_dir)
    o = options.on(choose(options, rt, ("torch", "onnx", "openvino")))
    if o.backend == "onnx":
        from bertkit.engine.onnx_runner import onnx_model

        # The graph holds the whole forward pass; only a CRF's transitions come from PyTorch.
        if task.onnx_needs_torch and model is None:
            model = task.load_model(model_dir)
        return onnx_model(model_dir, task, model, o.onnx_file, rt.threads), o
    model = model if model is not None else task.load_model(model_dir)
    if o.backend == "openvino":
        from bertkit.engine.openvino_runner import openvino_runner

        runner = openvino_runner(model, task.onnx_outputs, o, rt, tokenizer)
        return task.onnx_model(runner, model), o
    return prepare(model, o, rt), o

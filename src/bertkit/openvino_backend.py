"""`--backend openvino`: the forward pass by OpenVINO, converted in memory from the directory's
PyTorch model (no export step), as OpenVINO's documentation advises for throughput on a CPU.

bertkit keeps everything around the forward pass: tokenization, batching by length, windows,
span and Viterbi decoding, pooling. The model is converted with `openvino.convert_model` (batch
and sequence axes dynamic) and compiled with the THROUGHPUT hint; the engine's streams
(`bertkit.inference.forward_batches`) run OpenVINO's optimal number of requests at once, one
infer request per thread. Precision follows the runtime: bf16 (`INFERENCE_PRECISION_HINT`) where
it computes in bf16, else fp32; `int8` quantizes the graph with NNCF post-training quantization
(`ModelType.TRANSFORMER`: SmoothQuant, int8 matrix products and attention), calibrated on the
first 300 texts of `InferenceOptions.calibration` (`--calibration FILE`) or, without them, on
random token sequences, which keep less (all-MiniLM-L6-v2 on SST-2 dev sentences, mean / min
cosine to fp32: 0.9970 / 0.943 calibrated on 300 SST-2 train sentences, 0.9919 / 0.840 on random
tokens).
Batches of short rows run on a second compilation of the graph without OpenVINO's fused
attention, which is slower on short rows (SHORT). Conversion and quantization take seconds,
once per load.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bertkit.errors import BertkitError

if TYPE_CHECKING:
    from bertkit.inference import InferenceOptions
    from bertkit.runtime import Runtime
    from bertkit.tokenizer import Tokenizer

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CALIBRATION_LENGTHS = (8, 16, 32, 64, 128)  # random token sequences, as bertkit.int8
CALIBRATION_ROWS = 60  # sequences of each length: 300 in all (NNCF's default subset)
CALIBRATION_TEXTS = 300  # the first texts of a calibration file
# Batches of at most SHORT tokens a row run without OpenVINO's fused attention ("snippets"), on
# a second compiled model of the same graph. On 2 cores of an AMD EPYC (AVX512-BF16), the fused
# kernel took 22 of 128 ms for 148 sequences of 14 tokens (plain nodes: 10 of 117 ms); texts/s
# with and without it at 1,024 tokens a batch: SST-2 2,374 / 2,482, 20 Newsgroups 381 / 397,
# CoNLL-2003 int8 2,281 / 2,415, but IMDB (256 tokens and more) 106 / 102.
SHORT = 128


def _openvino():
    try:
        import openvino
    except ImportError:
        raise BertkitError("--backend openvino needs OpenVINO: pip install 'bertkit[openvino]'") from None
    return openvino


def calibration_items(
    vocab_size: int, max_length: int, tokenized: Sequence[Sequence[int]] | None = None, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """NNCF's calibration inputs, one sequence each: `tokenized` ids, or random token sequences
    of CALIBRATION_LENGTHS (ids drawn from the whole vocabulary)."""
    if tokenized is None:
        g = np.random.default_rng(seed)
        lengths = [min(T, max_length) for T in CALIBRATION_LENGTHS for _ in range(CALIBRATION_ROWS)]
        tokenized = [g.integers(0, vocab_size, T).tolist() for T in lengths]
    items = []
    for ids in tokenized:
        row = np.asarray(ids, dtype=np.int64)[None, :max_length]
        mask, types = np.ones_like(row), np.zeros_like(row)
        items.append({"input_ids": row, "attention_mask": mask, "token_type_ids": types})
    return items


class OpenvinoRunner(nn.Module):
    """An OpenVINO compiled model called like a bertkit model; returns its outputs by name."""

    def __init__(
        self,
        model: nn.Module,
        outputs: tuple[str, ...],
        bf16: bool,
        int8: bool = False,
        threads: int | None = None,
        streams: int = 0,
        calibration: list[dict[str, np.ndarray]] | None = None,
    ):
        super().__init__()
        ov = _openvino()
        from bertkit.export import Graph, example_inputs, traceable

        shapes = [(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in INPUTS]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python branches (see traceable)
            graph = ov.convert_model(
                Graph(traceable(model), outputs), example_input=example_inputs(), input=shapes
            )
        if int8:
            graph = quantize(graph, calibration or [])
        self.fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())
        config: dict = {"PERFORMANCE_HINT": "THROUGHPUT"}
        if not int8:  # NNCF's graph keeps its own choice around the int8 operations
            config["INFERENCE_PRECISION_HINT"] = "bf16" if bf16 else "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if streams:  # else the hint's choice
            config["NUM_STREAMS"] = streams
        core = ov.Core()
        self.compiled = core.compile_model(graph, "CPU", config)
        # Short batches: the same graph with attention as plain MatMul/Softmax nodes, which run
        # short rows faster than OpenVINO's fused attention (see SHORT).
        self.short = core.compile_model(graph, "CPU", {**config, "SNIPPETS_MODE": "DISABLE"})
        self.outputs = outputs
        self.streams = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.precision = "int8" if int8 else ("bf16" if bf16 else "fp32")
        self._local = threading.local()

    def request(self, T: int):
        """This thread's infer request (one per calling thread: the engine's streams) for
        batches of length T."""
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        short = T <= SHORT
        if short not in requests:
            requests[short] = (self.short if short else self.compiled).create_infer_request()
        return requests[short]

    def forward(self, input_ids, attention_mask, token_type_ids) -> SimpleNamespace:
        request = self.request(input_ids.shape[1])
        feed = (input_ids, attention_mask, token_type_ids)
        feed_np = {n: np.asarray(t.cpu().numpy(), dtype=np.int64) for n, t in zip(INPUTS, feed, strict=True)}
        got = request.infer(feed_np, share_inputs=True)  # outputs are copies: callers keep them
        return SimpleNamespace(
            **{n: torch.from_numpy(np.asarray(got[i])) for i, n in enumerate(self.outputs)}
        )

    def extra_repr(self) -> str:
        fq = f" ({self.fake_quantize} FakeQuantize)" if self.fake_quantize else ""
        return f"openvino {self.precision}{fq}, {self.streams} requests, outputs={self.outputs}"


def openvino_runner(
    model: nn.Module,
    outputs: tuple[str, ...],
    options: InferenceOptions,
    runtime: Runtime,
    tokenizer: Tokenizer,
) -> OpenvinoRunner:
    """`model`'s forward pass on OpenVINO (the CPU) with the engine's `options` (int8, streams,
    calibration) in the runtime's precision and threads."""
    from bertkit.model import BertModel

    config = next(m.config for m in model.modules() if isinstance(m, BertModel))
    calibration = None
    if options.int8:
        longest = min(config.max_position_embeddings, 512)
        tokenized = None
        if options.calibration:
            from bertkit.embeddings import read_texts

            texts = [t for t in read_texts(options.calibration) if t.strip()][:CALIBRATION_TEXTS]
            if not texts:
                raise BertkitError("no texts to calibrate on", options.calibration)
            tokenized = tokenizer(texts, truncation=True, max_length=longest)["input_ids"]
        calibration = calibration_items(config.vocab_size, longest, tokenized)
    return OpenvinoRunner(
        model, outputs, runtime.bf16, options.int8, runtime.threads, options.streams, calibration
    )


def quantize(graph, items: list[dict[str, np.ndarray]]):
    """NNCF post-training int8 quantization for transformers, calibrated on `items`."""
    try:
        import nncf
    except ImportError:
        raise BertkitError("--backend openvino --int8 needs NNCF: pip install 'bertkit[openvino]'") from None
    logging.getLogger("nncf").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout may be the predictions
        return nncf.quantize(
            graph, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
        )

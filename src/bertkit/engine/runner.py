"""The inference engine: how bertkit runs a model over many texts, on a CPU or a GPU.

Where and in what precision is the runtime's (`bertkit.runtime`): `prepare` moves the model to
`runtime.device` and gives it bf16 or fp16 weights where `runtime.dtype` says so.

Every predicting path uses it (pipelines, `bertkit predict`/`evaluate`/`embed`, the server):

- inputs are sorted by length and cut into batches by a token budget (B × T ≤ max_tokens),
  results go back in input order (`batches`): real text of mixed lengths then pays almost
  nothing for padding;
- padding-free dense layers (`model.Packing`): the QKV, output and feed-forward projections and
  the LayerNorms run on the N real tokens of a batch; attention runs on rows that short
  sequences share (block-diagonal mask), so its kernels see a few long rows, not many tiny ones;
- bf16 weights where the hardware multiplies bf16 natively (AMX / AVX512-BF16 CPUs, CUDA), fp32
  elsewhere (the runtime's precision); heads that need fp32 (BiLSTM, CRF) get fp32 hidden states;
- CPU only: bf16/fp32 weights prepacked for oneDNN with GELU and the residual adds fused into
  the matrix products (`bertkit.engine.fused`); optional int8 matrix products (`bertkit.engine.int8`: QKV,
  attention output and up-projection, SmoothQuant calibrated without data); on CUDA, SDPA's
  fused attention kernels and pinned-memory copies that do not block;
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from torch import nn

from bertkit.data.batching import pad_batch, sorted_order
from bertkit.engine.fused import can_prepack, fuse_layers
from bertkit.engine.int8 import available as int8_available
from bertkit.engine.int8 import quantize_encoder
from bertkit.errors import BertkitError
from bertkit.models.encoder import BertModel
from bertkit.options import option
from bertkit.runtime import Runtime, local_runtime

ModelT = TypeVar("ModelT", bound=nn.Module)
R = TypeVar("R")

BACKENDS = ("auto", "torch", "onnx", "openvino")  # auto: bertkit.engine.backend decides
BACKEND_HELP = {  # as --backend describes them
    "auto": "auto (default): the fastest installed for the device, the CPU's kind and the precision "
    "(a table measured per CPU kind; the choice is printed)",
    "torch": "torch: bertkit's own engine",
    "onnx": "onnx: the task head run by ONNX Runtime from a `bertkit export` file",
    "openvino": "openvino: the model converted to OpenVINO at load time (pip install bertkit[openvino])",
}
# The token budget each backend runs fastest at (max_tokens=0): bertkit's engine packs large
# batches into long GEMMs; OpenVINO's THROUGHPUT streams lose with larger requests (SST-2 2,374
# texts/s at 1,024 against 2,201 at 2,048 and 1,389 at 8,192; IMDB 106 against 102 and 82;
# docs/benchmarks.md).
MAX_TOKENS = {"torch": 8192, "onnx": 8192, "openvino": 1024}
# A GPU's kernels fill up only with far larger batches (the row cap of `sorted_order` still holds).
CUDA_MAX_TOKENS = 65536


@dataclass
class InferenceOptions:
    max_tokens: int = option(0, unset=True, help="padded tokens a batch (default {budgets})")  # 0: MAX_TOKENS
    packed: bool = True  # padding-free dense layers
    int8: bool = option(
        False, help="int8 matrix products (CPU, SmoothQuant; the rest in --precision)"
    )  # SmoothQuant-calibrated (CPU, bertkit.engine.int8)
    prepack: bool = True  # CPU weights reordered once for oneDNN, post-ops fused (bertkit.engine.fused)
    streams: int = option(
        0, unset=True, help="batches run at once, each on threads/N threads (CPU; default auto: 2)"
    )  # 0: auto
    backend: str = option("auto", unset=True, choices=BACKENDS, help="{backends}")  # BACKEND_HELP
    onnx_file: str | None = option(None, help="graph for --backend onnx (default MODEL/model.onnx)")
    calibration: str | None = option(
        None,
        help="texts (one a line, or JSON lines with 'text') that OpenVINO's --int8 calibrates on "
        "(the first 300); default 320 texts of many kinds shipped with bertkit",
    )  # else the package's static/calibration.txt
    budget_given: bool = field(default=False, init=False)  # max_tokens asked for (else per device)

    @classmethod
    def from_env(cls, **overrides) -> InferenceOptions:
        """Defaults, then `BERTKIT_BACKEND` from the environment, then `overrides` that are not
        None (command-line flags)."""
        given: dict[str, Any] = {}
        if os.environ.get("BERTKIT_BACKEND"):
            given["backend"] = os.environ["BERTKIT_BACKEND"]
        given.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**given)

    def __post_init__(self) -> None:
        if self.streams < 0:
            raise BertkitError(f"streams must be 0 (auto) or more, not {self.streams}")
        if self.backend not in BACKENDS:
            raise BertkitError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.max_tokens < 0:
            raise BertkitError(f"max_tokens must be 0 (the backend's) or more, not {self.max_tokens}")
        self.budget_given = self.max_tokens > 0
        self.max_tokens = self.max_tokens or MAX_TOKENS.get(self.backend, MAX_TOKENS["torch"])

    def on(self, backend: str) -> InferenceOptions:
        """These options with `backend` (what `auto` resolved to) and its token budget, unless a
        budget was asked for."""
        return replace(self, backend=backend, max_tokens=self.max_tokens if self.budget_given else 0)


def engine_dtype(rt: Runtime, int8: bool = False) -> torch.dtype:
    """The float weights' and activations' dtype: the runtime's (bf16, fp16 or fp32); under int8
    the same around the int8 matrix products."""
    if int8 and (rt.device.type != "cpu" or not int8_available()):
        raise BertkitError("int8 runs on the CPU only, with oneDNN (torch.backends.mkldnn)")
    return rt.dtype


def device_of(model: nn.Module) -> torch.device:
    """Where a model's inputs go: its parameters' device; the CPU for one without parameters
    (an ONNX Runtime session, `bertkit.engine.onnx_runner`)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def encoders(model: nn.Module) -> list[BertModel]:
    return [m for m in model.modules() if isinstance(m, BertModel)]


def prepare(model: ModelT, options: InferenceOptions | None = None, runtime: Runtime | None = None) -> ModelT:
    """`model` made ready for inference, in place (and returned): on the runtime's device, eval
    mode, packing, precision, quantization, compilation. Use a copy if the model is still being
    trained. `runtime` defaults to a local one (`BERTKIT_DEVICE`, `BERTKIT_PRECISION`, ...)."""
    o = options or InferenceOptions()
    rt = runtime or local_runtime()
    dtype = engine_dtype(rt, o.int8)
    model.eval().to(rt.device)
    device = rt.device
    if device.type == "cuda" and not o.budget_given:
        o.max_tokens = CUDA_MAX_TOKENS
    tied = getattr(model, "mlm", None) is not None  # the MLM decoder shares the word embeddings
    if dtype != torch.float32 and tied:
        model.to(dtype)
    for enc in encoders(model):
        enc.packed = o.packed
        enc.streams = streams_for(o, device)  # read by forward_batches
        if o.int8:  # before the cast: calibration runs the fp32 encoder
            quantize_encoder(enc, o.max_tokens, dtype)
        if dtype != torch.float32 and not tied:
            # The encoder holds nearly all the FLOPs; heads (a BiLSTM, a CRF) stay fp32 and get
            # fp32 hidden states.
            enc.to(dtype)
            enc.output_dtype = torch.float32
        if o.prepack and can_prepack(device, next(enc.parameters()).dtype):
            fuse_layers(enc, o.max_tokens)
    return model


def streams_for(options: InferenceOptions, device: torch.device) -> int:
    """How many batches run at once: asked for, or on a CPU with two threads or more two
    streams of half the threads each (as OpenVINO's throughput hint runs requests), else one."""
    if options.streams:
        return options.streams
    return 2 if device.type == "cpu" and torch.get_num_threads() >= 2 else 1


def streams_of(model: nn.Module) -> int:
    """The batches `model` runs at once: its encoder's `streams` (set by `prepare`), an OpenVINO
    runner's optimal number of requests, else one (an ONNX Runtime session)."""
    for m in model.modules():
        streams = getattr(m, "streams", None)
        if isinstance(streams, int):
            return streams
    return 1


def forward_batches(
    model: nn.Module,
    fn: Callable[[dict[str, torch.Tensor]], R],
    features: Sequence[dict],
    pad_id: int,
    max_tokens: int,
    keys: Sequence[str] = (),
) -> Iterator[tuple[list[int], dict[str, torch.Tensor], R]]:
    """(indices, batch, fn(batch)) for each of `batches(...)` in order, on `model`'s device.
    `fn` (the forward pass) runs on `streams_of(model)` batches at once: on a CPU each stream
    is a thread of its own with threads/streams intra-op threads, which keeps
    both cores busy where one batch's small operations cannot (the GIL is released inside
    torch's kernels)."""
    it = batches(features, pad_id, max_tokens, device_of(model), keys)
    head = list(itertools.islice(it, 2))
    it = itertools.chain(head, it)
    streams = streams_of(model)
    if streams <= 1 or len(head) < 2:  # one batch (a single request): all threads on it
        for idx, batch in it:
            yield idx, batch, fn(batch)
        return
    per_stream = max(1, torch.get_num_threads() // streams)

    def work(batch: dict[str, torch.Tensor]) -> R:
        with torch.inference_mode():  # thread-local: each worker enters it
            return fn(batch)

    pending: deque = deque()
    with ThreadPoolExecutor(streams, initializer=torch.set_num_threads, initargs=(per_stream,)) as pool:
        for idx, batch in it:
            pending.append((idx, batch, pool.submit(work, batch)))
            if len(pending) > streams:
                i, b, f = pending.popleft()
                yield i, b, f.result()
        while pending:
            i, b, f = pending.popleft()
            yield i, b, f.result()


def batches(
    features: Sequence[dict], pad_id: int, max_tokens: int, device: torch.device, keys: Sequence[str] = ()
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(indices, padded batch on `device`) in length order within a token budget; the caller
    puts results back at `indices`. On CUDA the batch is pinned and copied without blocking."""
    cuda = device.type == "cuda"
    for idx in sorted_order([len(f["input_ids"]) for f in features], max_tokens):
        batch = pad_batch([features[i] for i in idx], pad_id, keys)
        yield (
            idx,
            {k: (v.pin_memory() if cuda else v).to(device, non_blocking=cuda) for k, v in batch.items()},
        )

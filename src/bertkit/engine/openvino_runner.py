"""`--backend openvino`: the forward pass by OpenVINO, converted in memory from the directory's
PyTorch model (no export step), as OpenVINO's documentation advises for throughput on a CPU.

bertkit keeps everything around the forward pass: tokenization, batching by length, windows,
span and Viterbi decoding, pooling. The model is converted with `openvino.convert_model` (batch
and sequence axes dynamic) and compiled with the THROUGHPUT hint; the engine's streams
(`bertkit.engine.runner.forward_batches`) run OpenVINO's optimal number of requests at once, one
infer request per thread. Precision follows the runtime: bf16 (`INFERENCE_PRECISION_HINT`) where
it computes in bf16, else fp32; `int8` quantizes the graph with NNCF post-training quantization
(`ModelType.TRANSFORMER`: SmoothQuant, int8 matrix products and attention; `nncf_settings`),
calibrated on the first 300 texts of `InferenceOptions.calibration` (`--calibration FILE`) or,
without them, on the texts of various kinds shipped with the package (`static/calibration.txt`,
written for it; `shipped_calibration`), never on random tokens, which keep far less
(all-MiniLM-L6-v2 on SST-2 dev sentences, mean / min cosine to fp32: 0.9970 / 0.943 calibrated
on 300 SST-2 train sentences, 0.9919 / 0.840 on random tokens).

The converted (and quantized) graph is cached on disk (`cache_dir()`: `BERTKIT_CACHE`, else
`$XDG_CACHE_HOME/bertkit`, else `~/.cache/bertkit`), keyed by the weights' hash, the outputs,
the precision, the int8 calibration and OpenVINO's version, and OpenVINO caches its compiled
blobs beside it: a second load of the same model skips conversion, quantization and most of
the compiling.
Batches of short rows run on a second compilation of the graph without OpenVINO's fused
attention, which is slower on short rows (SHORT)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bertkit.engine.graph import INPUTS, Graph, example_inputs, traceable
from bertkit.errors import BertkitError
from bertkit.models.encoder import BertModel

log = logging.getLogger("bertkit")

if TYPE_CHECKING:
    from bertkit.engine.runner import InferenceOptions
    from bertkit.runtime import Runtime
    from bertkit.tokenization.tokenizer import Tokenizer

CALIBRATION_TEXTS = 300  # the first texts of a calibration file
SHIPPED_CALIBRATION = Path(__file__).parent / "static" / "calibration.txt"
# The shipped texts are one to a few sentences long; paragraphs made of consecutive ones (PARAGRAPHS
# sentence counts, in turn) stand in for the long texts NNCF must also see: every third item is one.
PARAGRAPHS = (3, 5, 8, 12, 20)
CACHE_FORMAT = 3  # bumped when the conversion changes what it writes
# NNCF's settings, chosen on all-MiniLM-L6-v2 (min cosine to fp32 over 2,048 SST-2 / 2,048
# CoNLL-2003 / 1,024 20 Newsgroups / 256 IMDB texts; mean 0.9965-0.9972 for the chosen one):
# defaults (SmoothQuant alpha 0.95, mean-of-extremes activation ranges), shipped sentences
# 0.968 / 0.958 / 0.954 / 0.987; with paragraphs 0.974 / 0.965 / 0.964 / 0.994; alpha 0.75
# 0.986 / 0.978 / 0.982 / 0.993; alpha 0.75 and the calibration's extremes as ranges (MINMAX)
# 0.985 / 0.985 / 0.993 / 0.994, as fast (alpha 0.6: mean 0.992; 0.85: SST-2 min 0.970); the
# same with `shipped_calibration`'s paragraphs 0.982 / 0.989 / 0.990 / 0.994.
SMOOTH_QUANT_ALPHA = 0.75


def nncf_settings(nncf) -> dict:
    """nncf.quantize's keyword arguments beyond the model and the data."""
    from nncf.quantization import advanced_parameters as ap
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    advanced = ap.AdvancedQuantizationParameters(
        smooth_quant_alphas=ap.AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA),
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
    )
    return {"model_type": nncf.ModelType.TRANSFORMER, "advanced_parameters": advanced}


def shipped_calibration() -> list[str]:
    """CALIBRATION_TEXTS texts from the shipped file: two in three as written, every third a
    paragraph of consecutive ones (PARAGRAPHS)."""
    lines = [t for t in SHIPPED_CALIBRATION.read_text(encoding="utf-8").splitlines() if t.strip()]
    out, single = [], 0
    for i in range(CALIBRATION_TEXTS):
        if i % 3 < 2:
            out.append(lines[single % len(lines)])
            single += 1
        else:
            k, start = PARAGRAPHS[(i // 3) % len(PARAGRAPHS)], (i * 37) % len(lines)
            out.append(" ".join(lines[(start + j) % len(lines)] for j in range(k)))
    return out


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


def calibration_items(tokenized: Sequence[Sequence[int]], max_length: int) -> list[dict[str, np.ndarray]]:
    """NNCF's calibration inputs, one tokenized text each."""
    items = []
    for ids in tokenized:
        row = np.asarray(ids, dtype=np.int64)[None, :max_length]
        mask, types = np.ones_like(row), np.zeros_like(row)
        items.append({"input_ids": row, "attention_mask": mask, "token_type_ids": types})
    return items


def cache_dir() -> Path:
    """Where bertkit caches converted models: `BERTKIT_CACHE`, else `$XDG_CACHE_HOME/bertkit`,
    else `~/.cache/bertkit`."""
    if os.environ.get("BERTKIT_CACHE"):
        return Path(os.environ["BERTKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bertkit"


def graph_key(model: nn.Module, outputs: Sequence[str], precision: str, calibration) -> str:
    """What a converted graph depends on: the weights (every tensor's name, dtype, shape and
    bytes), the outputs, the precision, the int8 calibration inputs and OpenVINO's version."""
    import openvino

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{CACHE_FORMAT} {openvino.__version__} {precision} {','.join(outputs)}".encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for item in calibration or []:
        h.update(item["input_ids"].tobytes())
        h.update(b"|")
    return h.hexdigest()


def cached_graph(key: str, build):
    """The graph cached under `key`, or `build()`'s, saved there first (written to a temporary
    folder, then renamed: a half-written graph is never read)."""
    ov = _openvino()
    root = cache_dir() / "openvino"
    where = root / key / "model.xml"
    if where.is_file():
        with contextlib.suppress(RuntimeError):  # unreadable: convert again and replace it
            return ov.Core().read_model(str(where))
    graph = build()
    tmp = root / f".{key}.partial-{os.getpid()}"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        ov.save_model(graph, str(tmp / "model.xml"), compress_to_fp16=False)
        shutil.rmtree(root / key, ignore_errors=True)
        os.replace(tmp, root / key)
    except OSError as e:  # a cache that cannot be written costs the next load time, nothing else
        log.warning("could not cache the OpenVINO model in %s (%s)", root, e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return graph


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

        shapes = [(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in INPUTS]

        def build():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python branches (see traceable)
                c = next(m.config for m in model.modules() if isinstance(m, BertModel))
                example = example_inputs(c.vocab_size, c.pad_token_id)
                graph = ov.convert_model(
                    Graph(traceable(model), outputs), example_input=example, input=shapes
                )
            return quantize(graph, calibration or []) if int8 else graph

        precision = "int8" if int8 else ("bf16" if bf16 else "fp32")
        graph = cached_graph(graph_key(model, outputs, precision, calibration if int8 else None), build)
        self.fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())
        config: dict = {"PERFORMANCE_HINT": "THROUGHPUT"}
        if not int8:  # NNCF's graph keeps its own choice around the int8 operations
            config["INFERENCE_PRECISION_HINT"] = "bf16" if bf16 else "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if streams:  # else the hint's choice
            config["NUM_STREAMS"] = streams
        core = ov.Core()
        with contextlib.suppress(OSError):  # OpenVINO's own cache of compiled blobs
            compiled_cache = cache_dir() / "openvino" / "compiled"
            compiled_cache.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(compiled_cache)})
        self.compiled = core.compile_model(graph, "CPU", config)
        # Short batches: the same graph with attention as plain MatMul/Softmax nodes, which run
        # short rows faster than OpenVINO's fused attention (see SHORT).
        self.short = core.compile_model(graph, "CPU", {**config, "SNIPPETS_MODE": "DISABLE"})
        self.outputs = outputs
        self.streams = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.precision = precision
        self._local = threading.local()
        # One call here, on one thread, before the engine's streams call at once: the first
        # numpy conversion in OpenVINO's bindings initialises a static under the GIL, and two
        # threads doing it together deadlocked (a bench child hung with both streams inside
        # `InferRequest.infer` and the main thread waiting for the GIL).
        one = np.ones((1, 2), dtype=np.int64)
        self.short.create_infer_request().infer(dict.fromkeys(INPUTS, one))

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
    config = next(m.config for m in model.modules() if isinstance(m, BertModel))
    calibration = None
    if options.int8:
        from bertkit.tokenization.text import read_texts

        texts = shipped_calibration()
        if options.calibration:
            texts = [t for t in read_texts(options.calibration) if t.strip()][:CALIBRATION_TEXTS]
            if not texts:
                raise BertkitError("no texts to calibrate on", options.calibration)
        longest = min(config.max_length, 512)
        tokenized = tokenizer(texts, truncation=True, max_length=longest)["input_ids"]
        calibration = calibration_items(tokenized, longest)
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
        return nncf.quantize(graph, nncf.Dataset(items), subset_size=len(items), **nncf_settings(nncf))

"""Which backend runs a model's forward pass: `--backend auto` (the default everywhere).

`auto` takes the fastest backend installed for the device, the CPU's kind and the precision
class, from a fixed table (`AUTO`) that `docs/benchmarks.md` justifies, not from a probe at
load time: the same machine always gets the same engine. On a GPU it is the torch engine; on a
CPU the table's choice where it is installed (OpenVINO needs `pip install 'bertkit[openvino]'`,
and NNCF for int8), else the torch engine. What the chosen backend does not run (fill-mask,
distillation's layer losses) falls back to the torch engine. The choice is one
line in the log (logger "bertkit.engine.backend", INFO; the CLI shows it on stderr). `--backend
torch|onnx|openvino` (or `BERTKIT_BACKEND`) forces one; ONNX is never chosen by itself (it runs
a file `bertkit export` wrote).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING

from bertkit.runtime import cpu_kind

if TYPE_CHECKING:
    from bertkit.engine.runner import InferenceOptions
    from bertkit.runtime import Runtime

log = logging.getLogger("bertkit.engine.backend")

# CPU kind -> (exact class: bf16/fp32, int8) backend where it is installed. Measured with
# bench/inference_vs_engines.py on all-MiniLM-L6-v2, four corpora (docs/benchmarks.md):
# - avx512_bf16 (AMD EPYC): the OpenVINO backend 1.10-1.19x OpenVINO bf16 where the torch engine
#   is 0.76-0.96x; int8 0.99-1.16x OpenVINO int8 where the torch engine's is 0.59-0.68x;
# - avx2 (no bf16 units): OpenVINO fp32 1.11/1.13x the fastest fp32 engine, the torch engine
#   0.89/0.74x; int8 without VNNI: the torch engine 244 sentences/s, OpenVINO+NNCF 177;
# - amx (Xeon): the torch engine 1.13-1.22x the fastest exact engine on sentences and reviews;
#   the OpenVINO backend has not been measured there, so it is not chosen.
AUTO = {
    "amx": ("torch", "torch"),
    "avx512_bf16": ("openvino", "openvino"),
    "avx2": ("openvino", "torch"),
}
NEEDS = {"openvino": ("openvino",), "openvino-int8": ("openvino", "nncf")}


def installed(backend: str, int8: bool = False) -> bool:
    modules = NEEDS.get(f"{backend}-int8" if int8 else backend, ())
    return all(importlib.util.find_spec(m) is not None for m in modules)


def choose(options: InferenceOptions, runtime: Runtime, runs: tuple[str, ...] = ("torch", "openvino")) -> str:
    """The backend for `options.backend` ("auto" resolved; a forced one as it is), given what the
    caller `runs` (fill-mask: torch only; a forced backend it does not run falls back to torch).
    Says the choice in one log line."""
    if options.backend != "auto":
        if options.backend not in runs:
            log.info("backend: torch (%s does not run this model)", options.backend)
            return "torch"
        return options.backend
    backend, why = _auto(options, runtime, runs)
    log.info("backend: %s (auto: %s)", backend, why)
    return backend


def _auto(o: InferenceOptions, rt: Runtime, runs: tuple[str, ...]) -> tuple[str, str]:
    if rt.device.type != "cpu":
        return "torch", f"{rt.device.type} device"
    kind = cpu_kind()
    wanted = AUTO[kind][1 if o.int8 else 0]
    where = f"the fastest for {'int8' if o.int8 else rt.compute} on {kind} CPUs"
    if wanted == "torch":
        return "torch", where
    if wanted not in runs:
        return "torch", f"{wanted} does not run this model"
    if not installed(wanted, o.int8):
        extra = "pip install 'bertkit[openvino]'"
        return "torch", f"{wanted} is {where} but not installed: {extra}"
    return wanted, where

"""What the machine can do: bf16 matrix units, the device to train on."""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AMX or AVX512-BF16).
    `BERTKIT_CPU_BF16=0/1` overrides the detection."""
    forced = os.environ.get("BERTKIT_CPU_BF16")
    if forced is not None:
        return forced not in ("0", "false", "no", "")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return False
    words = set(flags.split())
    return bool({"amx_bf16", "avx512_bf16"} & words)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast is on by default where it is faster: CUDA with bf16 support, or a CPU
    with bf16 matrix units. Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()

"""The env check: Python, torch, transformers, the GPU (or CPU) and the modules bertkit needs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import torch

from .common import CheckFailed, Ctx

# What bertkit imports at run time beyond torch/tokenizers/numpy, and what needs it.
MODULES = {
    "scipy": "metrics",
    "sklearn": "metrics",
    "matplotlib": "finetune/pretrain reports (plots)",
    "tensorboard": "training logs",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
}


def check_env(ctx: Ctx) -> dict:
    import transformers

    d = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    d |= {"transformers": transformers.__version__, "device": ctx.device, "wheels": ctx.facts.get("wheels")}
    missing = [m for m in MODULES if importlib.util.find_spec(m) is None]
    d["missing_modules"] = {m: MODULES[m] for m in missing}
    if ctx.cuda:
        if not torch.cuda.is_available():
            raise CheckFailed(
                f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no GPU", None, d
            )
        p = torch.cuda.get_device_properties(torch.device(ctx.device))
        d |= {
            "gpu": p.name,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "sm_count": p.multi_processor_count,
        }
        d |= {
            "capability": f"{p.major}.{p.minor}",
            "bf16": torch.cuda.is_bf16_supported(),
            "gpus": torch.cuda.device_count(),
        }
        d |= {"nccl": torch.distributed.is_nccl_available(), "cudnn": torch.backends.cudnn.version()}
        d["nvidia_smi"] = nvidia_smi()
        line = f"{p.name}, {d['memory_gib']} GiB, {p.multi_processor_count} SMs, sm_{p.major}{p.minor}"
        line += f", bf16 {d['bf16']}"
    else:
        d |= {"cpu_bf16_units": cpu_bf16_units(), "threads": torch.get_num_threads()}
        line = f"CPU, {torch.get_num_threads()} threads, bf16 units {d['cpu_bf16_units']}"
    line += f"; torch {torch.__version__}, transformers {transformers.__version__}, Python {d['python']}"
    if missing:
        uses = ", ".join(sorted(set(d["missing_modules"].values())))
        line += f"; MISSING {', '.join(missing)} (needed by {uses})"
    return {"status": "warn" if missing else "pass", "line": line, "details": d}


def cpu_bf16_units() -> list[str]:
    try:
        flags = next((ln for ln in open("/proc/cpuinfo", encoding="utf-8") if ln.startswith("flags")), "")
    except OSError:
        return []
    return sorted({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    q = "name,driver_version,memory.total,power.limit,clocks.max.sm"
    try:
        r = subprocess.run(
            ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None

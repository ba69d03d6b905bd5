"""Where and how bertkit computes: the one owner of device, precision, threads and the
distributed context (nanochat's `compute_init`).

Every command builds one `Runtime` from the same flags (`--device`, `--precision`, `--threads`)
and everything else asks it: models and batches go to `runtime.device`, training autocasts with
`runtime.autocast()`, the inference engine picks its weights' dtype from `runtime.bf16`, and under
torchrun `runtime.rank`/`world` say which slice of the work is this process's.

- device: `auto` (the default) is CUDA when a GPU is visible (the local rank's under torchrun),
  else the CPU; `cuda` or `cuda:N` where there is none is a one-line error.
- precision: `auto` is bf16 where the device multiplies bf16 natively (a GPU of compute
  capability 8.0 or more, a CPU with AMX or AVX512-BF16); elsewhere fp16 on CUDA (a T4 or V100:
  emulated bf16 is slower than fp32) and fp32 on a CPU; `bf16`, `fp16` (CUDA only) and `fp32`
  force it. The same meaning in training (autocast; fp16 with a gradient scaler) and inference
  (weights in that dtype).
- distributed: under torchrun (even with one process) a training command joins the group: gloo
  on CPUs, nccl on GPUs. A plain run is a world of one without a group.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch

from bertkit.errors import BertkitError
from bertkit.options import option

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class RuntimeArgs:
    """The runtime flags and their defaults (`BERTKIT_DEVICE`, `BERTKIT_PRECISION` and
    `BERTKIT_THREADS` in the environment override the defaults, flags override both)."""

    device: str = option(
        "auto",
        unset=True,
        help="auto (default: CUDA when a GPU is visible, else the CPU), cpu, cuda or cuda:N "
        "(env BERTKIT_DEVICE; default {default})",
    )
    precision: str = option(
        "auto",
        unset=True,
        choices=PRECISIONS,
        help="auto (default): bf16 where the device multiplies bf16 natively (GPUs of compute "
        "capability 8.0+, AMX/AVX512-BF16 CPUs), else fp16 on CUDA and fp32 on a CPU; bf16, fp16 "
        "(CUDA) or fp32 force it, in training (autocast, fp16 with a loss scaler) and inference (weights)",
    )
    threads: int | None = option(
        None, unset=True, help="CPU threads (default: one per core)"
    )  # None: torch's

    @classmethod
    def from_env(cls, **overrides: Any) -> RuntimeArgs:
        args = cls()
        env = os.environ
        args.device = env.get("BERTKIT_DEVICE") or args.device
        args.precision = env.get("BERTKIT_PRECISION") or args.precision
        if env.get("BERTKIT_THREADS"):
            args.threads = int(env["BERTKIT_THREADS"])
        for k, v in overrides.items():
            if v is not None:
                setattr(args, k, v)
        return args


# oneDNN's kernel families as `ONEDNN_MAX_CPU_ISA` names them, and the features each lets oneDNN
# use: a cap below the CPU's own features makes oneDNN run the lower kernels (its AVX2 u8 x s8
# products saturate even on a VNNI CPU), so the features bertkit counts on are those of the cap.
_VNNI, _BF16, _ALL = frozenset({"vnni"}), frozenset({"vnni", "bf16"}), frozenset({"vnni", "bf16", "amx"})
ONEDNN_ISA_FEATURES = {
    "sse41": frozenset(), "avx": frozenset(), "avx2": frozenset(), "avx512_core": frozenset(),
    "avx2_vnni": _VNNI, "avx2_vnni_2": _VNNI, "avx512_core_vnni": _VNNI,
    "avx512_core_bf16": _BF16, "avx10_1_512": _BF16, "avx512_core_fp16": _BF16,
    "avx512_core_amx": _ALL, "avx10_1_512_amx": _ALL, "avx512_core_amx_fp16": _ALL,
    "avx10_1_512_amx_fp16": _ALL,
}  # fmt: skip


def _overridden(name: str) -> bool | None:
    forced = os.environ.get(name)
    return None if forced is None else forced not in ("0", "false", "no", "")


def onednn_allows(feature: str) -> bool:
    """False where `ONEDNN_MAX_CPU_ISA` (or `DNNL_MAX_CPU_ISA`) holds oneDNN below the kernels
    with `feature` ("vnni", "bf16", "amx"); true without a cap."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "all").lower()
    return cap not in ONEDNN_ISA_FEATURES or feature in ONEDNN_ISA_FEATURES[cap]


@functools.cache
def cpu_has_amx() -> bool:
    """True where the CPU has AMX tiles for bf16 and int8 (Sapphire Rapids and later).
    `BERTKIT_CPU_AMX=0/1` overrides the detection (it chooses code paths: no hardware is
    emulated)."""
    forced = _overridden("BERTKIT_CPU_AMX")
    if forced is not None:
        return forced
    return {"amx_bf16", "amx_int8"} <= cpu_flags() and onednn_allows("amx")


@functools.cache
def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AMX or AVX512-BF16) and oneDNN
    may use them. `BERTKIT_CPU_BF16=0/1` overrides the detection."""
    forced = _overridden("BERTKIT_CPU_BF16")
    if forced is not None:
        return forced
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags()) and onednn_allows("bf16")


@functools.cache
def cpu_has_vnni() -> bool:
    """True where the CPU multiplies u8 x s8 without 16-bit saturation (AVX512-VNNI, AVX-VNNI,
    AMX-INT8) and oneDNN may use it; elsewhere int8 weights keep neighbouring pairs within 128
    (`bertkit.engine.int8`). `BERTKIT_CPU_VNNI=0/1` overrides it."""
    forced = _overridden("BERTKIT_CPU_VNNI")
    if forced is not None:
        return forced
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags()) and onednn_allows("vnni")


CPU_KINDS = ("amx", "avx512_bf16", "avx2")


def cpu_kind() -> str:
    """The kind of CPU that decides the engine's defaults: "amx", "avx512_bf16" (bf16 units
    without AMX) or "avx2" (no bf16 units: AVX2-only CPUs, and AVX-512 ones without BF16)."""
    if cpu_has_amx():
        return "amx"
    return "avx512_bf16" if cpu_has_bf16() else "avx2"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return frozenset(next((ln for ln in f if ln.startswith("flags")), "").split())
    except OSError:
        return frozenset()


def bf16_native(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 natively (elsewhere bf16 is emulated, slower than fp32)."""
    if device.type == "cuda":  # torch counts emulation as support unless told not to
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_bf16()


def resolve_device(spec: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """`auto`/None: CUDA (device `local_rank`) when available, else the CPU; `cpu`; `cuda[:N]`."""
    spec = str(spec or "auto")
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BertkitError(
                f"--device {spec}: no CUDA device is available here (use --device cpu or auto)"
            )
        index = local_rank if spec == "cuda" else _index(spec)
        if index >= torch.cuda.device_count():
            raise BertkitError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    raise BertkitError(f"--device must be one of {', '.join(DEVICES)}, not {spec!r}")


def _index(spec: str) -> int:
    tail = spec.partition(":")[2]
    if not tail.isdigit():
        raise BertkitError(f"--device {spec}: expected cuda:N with N a device number")
    return int(tail)


@dataclass
class Runtime:
    device: torch.device
    precision: str = "auto"  # as asked: auto, bf16, fp16 or fp32 (`compute` says what it resolved to)
    threads: int | None = None
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" or "nccl" under torchrun

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BertkitError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        cuda = self.device.type == "cuda"
        if self.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            raise BertkitError(f"--precision bf16: {torch.cuda.get_device_name(self.device)} has no bf16")
        if self.precision == "fp16" and not cuda:
            raise BertkitError("--precision fp16 runs on CUDA; on a CPU use bf16 or fp32 (or auto)")

    @property
    def compute(self) -> str:
        """The precision computed in: "bf16", "fp16" or "fp32" (`auto` resolved for the device)."""
        if self.precision != "auto":
            return self.precision
        if bf16_native(self.device):
            return "bf16"
        return "fp16" if self.device.type == "cuda" else "fp32"

    @property
    def dtype(self) -> torch.dtype:
        """The float dtype of `compute`: autocast's in training, the weights' in inference."""
        return DTYPES[self.compute]

    @property
    def bf16(self) -> bool:
        return self.compute == "bf16"

    @property
    def fp16(self) -> bool:
        return self.compute == "fp16"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether this process is in a process group (torchrun), even a world of one."""
        return self.backend is not None

    def describe(self) -> str:
        where = f", rank {self.rank} of {self.world} ({self.backend})" if self.distributed else ""
        return f"{self.device}, {self.compute}{where}"

    def autocast(self, enabled: bool | None = None):
        """Autocast to bf16 or fp16 on this device when the runtime computes in one of them."""
        on = self.compute != "fp32" if enabled is None else enabled
        dtype = self.dtype if self.compute != "fp32" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=on)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """The loss scaler training needs in fp16 (small gradients underflow it); a no-op
        otherwise (bf16 has fp32's range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.fp16)

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch's tensors on this device (pinned and copied without blocking on CUDA)."""
        cuda = self.device.type == "cuda"
        return {k: _move(v, self.device, cuda) if torch.is_tensor(v) else v for k, v in batch.items()}

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a no-op alone)."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _move(t: torch.Tensor, device: torch.device, cuda: bool) -> torch.Tensor:
    if cuda and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def compute_init(args: RuntimeArgs | None = None, distributed: bool = True) -> Runtime:
    """The runtime of this process: device, precision, threads and, under torchrun (when
    `distributed`), the process group. Inference commands pass `distributed=False`."""
    a = args or RuntimeArgs.from_env()
    if a.threads:
        if a.threads < 1:
            raise BertkitError(f"--threads must be a positive number, not {a.threads}")
        torch.set_num_threads(a.threads)
    # torchrun sets WORLD_SIZE and TORCHELASTIC_RUN_ID: join its group, even as a world of one
    env = os.environ
    launched = distributed and (int(env.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in env)
    local = int(env.get("LOCAL_RANK", "0")) if launched else 0
    device = resolve_device(a.device, local)
    rt = Runtime(device, a.precision, a.threads, local_rank=local)
    if not launched:
        return rt
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rt.backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=rt.backend)
    rt.rank, rt.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return rt


def local_runtime(device: str | torch.device | None = None, precision: str | None = None) -> Runtime:
    """A world-of-one runtime with the environment's defaults (what the Python API uses when no
    runtime is given)."""
    return compute_init(
        RuntimeArgs.from_env(device=None if device is None else str(device), precision=precision), False
    )


def cpu_description() -> str:
    """lscpu's model name and the flags that decide matrix-product speed (for benchmark reports)."""
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    lines = out.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model name")), "unknown")
    words = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("Flags")), [])
    keep = [
        w for w in words if w.startswith(("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx"))
    ]
    return f"CPU: {model}; flags: {' '.join(keep) or 'no avx2/avx512/amx'}"

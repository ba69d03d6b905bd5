"""What the checks of bench/gpu_check.py share: data paths, sizes, the context and results,
running a bertkit command-line step with a timeout, and a few small helpers."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
REQUIRED = ("sst2/train.tsv", "sst2/dev.tsv", "conll2003/train.txt", "conll2003/valid.txt", "text")


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the GPU run, or --quick (a CPU smoke test)."""

    parity_preset: str = "base"
    parity_texts: int = 128
    vocab: int = 8192
    model_preset: str = "small"
    steps: int = 300
    batch: int = 32
    lr: float = 1e-4
    compare_texts: int = 1000
    pt_steps: int = 300
    pt_batch: int = 64
    pt_seq: int = 128
    pt_every: int = 100
    ddp_steps: int = 50
    speed_short: int = 8192
    speed_long: int = 1024
    speed_batch: int = 128
    repeats: int = 3


QUICK = Sizes("tiny", 16, 1000, "tiny", 40, 16, 1e-3, 48, 20, 16, 64, 10, 10, 256, 16, 32, 2)


class CheckFailed(Exception):
    def __init__(self, line: str, error: str | None = None, details: dict | None = None):
        super().__init__(line)
        self.error, self.details = error, details or {}


@dataclass
class Ctx:
    args: argparse.Namespace
    sizes: Sizes
    device: str
    data: Path
    out: Path
    work: Path
    deadline: float
    dirs: dict[str, Path] = field(default_factory=dict)  # what earlier steps made
    facts: dict = field(default_factory=dict)  # numbers later steps use
    results: list[dict] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def child_env(ctx: Ctx) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    parts = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def bertkit_cmd(ctx: Ctx, *argv, torchrun: bool = False) -> list[str]:
    cli = shlex.split(ctx.args.cli)
    head = [sys.executable]
    if torchrun:
        head += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    return head + cli + [str(a) for a in argv]


def run_cli(ctx: Ctx, log_name: str, cmd: list[str], timeout: float, env: dict | None = None) -> str:
    """Run a command in its own process group; its output goes to OUT/logs/LOG_NAME.log.
    Returns stdout; raises CheckFailed with the stderr tail on a non-zero exit or a timeout."""
    timeout = max(10.0, min(timeout, ctx.deadline - time.monotonic() + 60))
    log = ctx.out / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = shlex.join(cmd).replace(sys.executable, "python")
    pipe = subprocess.PIPE
    p = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=child_env(ctx) | (env or {}),
        stdout=pipe,
        stderr=pipe,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p, signal.SIGKILL)
        out, err = p.communicate()
        err += f"\n[gpu_check: killed after {timeout:.0f} s]"
    log.write_text(f"$ {shown}\n--- stdout\n{out}\n--- stderr\n{err}\n", encoding="utf-8")
    if p.returncode != 0:
        last = next((ln for ln in reversed(err.strip().splitlines()) if ln.strip()), "no stderr")
        raise CheckFailed(f"exit {p.returncode}: {last[:300]}", f"$ {shown}\n{err[-4000:]}")
    return out


def fresh(path: Path) -> Path:
    """`path` with nothing left from an earlier run in the same --work folder."""
    for p in (path, path.with_name(path.name + "-checkpoints")):
        shutil.rmtree(p, ignore_errors=True)
    return path


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group this script started for `proc` (and nothing else)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
        proc.wait()


def mean_cos(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    c = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
    return float(c.mean()), float(c.min())


def quiet_transformers():
    import transformers as hf

    hf.logging.set_verbosity_error()
    hf.utils.logging.disable_progress_bar()
    return hf

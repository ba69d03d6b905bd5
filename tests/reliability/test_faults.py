"""Faults injected into real runs: a full disk, a read-only filesystem, a file-size limit and
SIGKILL, during fine-tuning and pretraining writes. After each: a one-line error naming what
happened, no traceback, nothing half-written or mistaken for complete, and a clean resume.

The full and read-only disks are small tmpfs mounts, which need root; elsewhere those tests skip.
"""

from __future__ import annotations

import contextlib
import json
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertkit.cli import main
from bertkit.training.pretrain import checkpoints, load_checkpoint


@contextlib.contextmanager
def small_fs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` mounted at `path` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here ({r.stderr.strip() or 'needs root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(fs: Path, leave: int) -> Path:
    """Fill the filesystem at `fs` up to `leave` free bytes."""
    free = shutil.disk_usage(fs).free - leave
    filler = fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free, 0))
    return filler


@pytest.fixture(scope="module")
def tiny_data(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sst")
    lines = (shared_data / "en/glue/SST-2/train.tsv").read_text(encoding="utf-8").splitlines()
    (d / "train.tsv").write_text("\n".join(lines[:65]) + "\n")
    (d / "dev.tsv").write_text("\n".join([lines[0], *lines[65:97]]) + "\n")
    return d / "train.tsv", d / "dev.tsv"


def finetune_args(model: Path, data: tuple[Path, Path], out: Path) -> list[str]:
    train, dev = data
    return ["finetune", "--task", "classify", "--model", str(model), "--train", str(train), "--dev", str(dev),
            "--output", str(out), "--max-steps", "2", "--batch-size", "16", "--quiet"]  # fmt: skip


def kill_when(args: list[str], ready) -> None:
    """Run `bertkit ARGS` and SIGKILL it as soon as `ready()` holds (or after 300 s)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bertkit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not ready() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_nothing_left(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not list(parent.glob(f".{name}.*")), list(parent.iterdir())


def test_finetune_on_a_full_disk(tiny_dir, tiny_data, tmp_path, capsys):
    half_a_model = (tiny_dir / "model.safetensors").stat().st_size // 2  # the weights cannot fit
    with small_fs(tmp_path / "fs", f"{half_a_model // 1024}k") as fs:
        assert main(finetune_args(tiny_dir, tiny_data, fs / "out")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
        assert_nothing_left(fs, "out")  # the staged run was removed: the disk is free again
        assert shutil.disk_usage(fs).used < 1_000_000


def test_finetune_disk_fills_while_writing_the_report(tiny_dir, tiny_data, tmp_path, capsys):
    """The model fits, the report (written last: tables, PNGs, errors) does not."""

    def used(d: Path) -> int:  # bytes the files take on a filesystem (whole 4 kB pages)
        return sum(-(-f.stat().st_size // 4096) * 4096 for f in d.rglob("*") if f.is_file())

    assert main(finetune_args(tiny_dir, tiny_data, tmp_path / "ref")) == 0
    total, report = used(tmp_path / "ref"), used(tmp_path / "ref" / "report")
    with small_fs(tmp_path / "fs", f"{(total - report // 2) // 1024}k") as fs:
        capsys.readouterr()
        assert main(finetune_args(tiny_dir, tiny_data, fs / "out")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
        assert "report" in err  # the file it could not write
        assert_nothing_left(fs, "out")


def test_finetune_into_a_read_only_filesystem(tiny_dir, tiny_data, tmp_path, capsys):
    with small_fs(tmp_path / "ro", "4m", read_only=True) as fs:
        assert main(finetune_args(tiny_dir, tiny_data, fs / "out")) == 2
        err = capsys.readouterr().err
        assert "Read-only file system" in err and "writable" in err and "Traceback" not in err


def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_finetune_under_a_file_size_limit(tiny_dir, tiny_data, tmp_path):
    """`ulimit -f`: the model file cannot be written whole; the process says so and exits 2."""
    cmd = [sys.executable, "-m", "bertkit", *finetune_args(tiny_dir, tiny_data, tmp_path / "out")]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size(2_000_000)
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "File too large" in r.stderr and "ulimit" in r.stderr and "Traceback" not in r.stderr
    assert_nothing_left(tmp_path, "out")


def test_finetune_killed_leaves_nothing_complete_and_the_next_run_cleans_up(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "out"
    args = finetune_args(tiny_dir, tiny_data, out)
    args[args.index("--max-steps") + 1] = "100000"
    kill_when(args, lambda: list(tmp_path.glob(".out.partial-*/log.jsonl")))
    assert not out.exists() and list(tmp_path.glob(".out.partial-*"))  # killed mid-run: no output
    assert main(finetune_args(tiny_dir, tiny_data, out)) == 0
    assert (out / "metrics.json").is_file() and not list(tmp_path.glob(".out.partial-*"))


def test_finetune_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(
    tiny_dir, tiny_data, tmp_path
):
    """`finetune --save-every`: three SIGKILLs at random moments (some inside a checkpoint write,
    one every 2 steps), each followed by --resume: every checkpoint on disk is whole, no output
    appears before the end, and in fp32 the dev metrics, the chosen step, the evaluation record
    and the final weights equal an uninterrupted run's; the checkpoints go once it completes."""
    from safetensors.torch import load_file

    from bertkit.training.resume import checkpoints as step_dirs
    from bertkit.training.resume import read_trainer_state

    def args(out: Path) -> list[str]:
        a = finetune_args(tiny_dir, tiny_data, out)
        a[a.index("--max-steps") + 1] = "16"
        a[a.index("--batch-size") + 1] = "8"  # 64 examples: 8 steps an epoch, so 2 epochs
        return [
            *a,
            "--eval-every",
            "2",
            "--save-every",
            "2",
            "--precision",
            "fp32",
            "--seed",
            "3",
            "--lr",
            "1e-3",
        ]

    def run(out: Path, log: Path, *extra: str) -> subprocess.Popen:
        with open(log, "a") as f:
            cmd = [sys.executable, "-m", "bertkit", *args(out), *extra]
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)

    ref = tmp_path / "ref"
    assert run(ref, tmp_path / "ref.log").wait(timeout=600) == 0
    out, root = tmp_path / "out", tmp_path / "out-checkpoints"
    rng = random.Random(0)
    resumed_from = []
    for target in sorted(rng.sample(range(2, 15), 3)):
        proc = run(out, tmp_path / "out.log", "--resume")
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            found = step_dirs(root)
            if found and int(found[-1].name.split("-")[1]) >= target:
                break
            time.sleep(0.01)
        time.sleep(rng.random() * 0.3)  # anywhere in a step, an evaluation or a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists()
        for ck in step_dirs(root):  # every checkpoint on disk is whole
            assert read_trainer_state(ck)["step"] == int(ck.name.split("-")[1])
            assert all(torch.isfinite(v).all() for v in load_file(ck / "model.safetensors").values())
        resumed_from.append(step_dirs(root)[-1] if step_dirs(root) else None)
    assert run(out, tmp_path / "out.log", "--resume").wait(timeout=600) == 0
    text = (tmp_path / "out.log").read_text()
    assert "Traceback" not in text
    assert sum(ck is not None for ck in resumed_from) >= 2  # the kills landed mid-run
    assert all(f"resuming from {ck}" in text for ck in filter(None, resumed_from))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert a["dev"] == b["dev"] and a["train"]["best_step"] == b["train"]["best_step"]
    logs = [list(map(json.loads, (d / "log.jsonl").read_text().splitlines())) for d in (ref, out)]
    assert logs[0] == logs[1]  # every evaluation, and the mean training loss over all 16 steps
    assert [r["step"] for r in logs[0] if "dev_accuracy" in r] == list(range(2, 17, 2))
    assert [r["step"] for r in logs[0] if "loss" in r] == [16]
    wa, wb = load_file(ref / "model.safetensors"), load_file(out / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit
    assert not root.exists()


def test_finetune_resume_refuses_other_settings_and_stray_checkpoints(tiny_dir, tiny_data, tmp_path, capsys):
    done = tmp_path / "done"
    assert main([*finetune_args(tiny_dir, tiny_data, done), "--save-every", "1"]) == 0
    assert (done / "metrics.json").is_file() and not (tmp_path / "done-checkpoints").exists()

    out, root = tmp_path / "out", tmp_path / "out-checkpoints"
    a = [*finetune_args(tiny_dir, tiny_data, out), "--save-every", "1", "--precision", "fp32"]
    a[a.index("--max-steps") + 1] = "100000"
    kill_when(a, lambda: list(root.glob("step-*")))
    capsys.readouterr()
    assert main(a) == 2  # checkpoints of a killed run: continue it or remove them, never clobber
    err = capsys.readouterr().err
    assert "pass --resume" in err and "out-checkpoints" in err and "Traceback" not in err
    assert main([*a, "--resume", "--lr", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert "--resume with lr 0.001, but the run used 5e-05" in err and "Traceback" not in err
    assert list(root.glob("step-*")) and not out.exists()  # refused runs change nothing


# ---- pretraining ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """A 600-token vocabulary and shards from real sentences."""
    d = tmp_path_factory.mktemp("pt")
    text = [line.split("\t")[0] for line in tiny_data[0].read_text().splitlines()[1:]]
    for i in range(3):
        (d / f"doc{i}.txt").write_text("\n".join(text * (i + 2)) + "\n")
    assert main(["tokenizer", "train", str(d), "--vocab-size", "600", "--output", str(d / "tok")]) == 0
    files = [str(d / f"doc{i}.txt") for i in range(3)]
    args = ["--tokenizer", str(d / "tok"), "--output", str(d / "data"), "--quiet"]
    assert main(["shards", "--corpus", *files, *args]) == 0
    return d / "tok", d / "data"


def pretrain_args(corpus: tuple[Path, Path], out: Path) -> list[str]:
    tok, data = corpus
    args = ["pretrain", "--corpus", str(data), "--tokenizer", str(tok), "--output", str(out)]
    args += ["--config", "tiny", "--max-seq-length", "32", "--batch-size", "4", "--max-steps", "4"]
    args += ["--save-every", "2", "--eval-every", "1000", "--precision", "fp32", "--quiet", "--seed", "1"]
    return [*args, "--keep-checkpoints", "3"]


def test_pretrain_disk_fills_between_checkpoints_then_resumes(corpus, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert main(pretrain_args(corpus, ref)) == 0
    ck_bytes = sum(f.stat().st_size for f in checkpoints(ref)[0].iterdir())
    with small_fs(tmp_path / "fs", f"{4 * ck_bytes // 1024 + 4096}k") as fs:
        run = fs / "run"
        shutil.copytree(ref, run)  # the run as it stood after its step-2 checkpoint
        shutil.rmtree(checkpoints(run)[-1])
        for name in ("model.safetensors", "config.json"):
            (run / name).unlink()
        filler = fill(fs, leave=ck_bytes // 2)
        capsys.readouterr()
        assert main([*pretrain_args(corpus, run), "--resume"]) == 2  # the step-4 checkpoint cannot fit
        err = capsys.readouterr().err
        assert "No space left on device" in err and "Traceback" not in err
        assert [p.name for p in checkpoints(run)] == ["step-00000002"]
        load_checkpoint(checkpoints(run)[0])  # the last complete checkpoint is intact
        assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
        filler.unlink()
        assert main([*pretrain_args(corpus, run), "--resume"]) == 0
        from safetensors.torch import load_file

        a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)  # as if the disk had never filled


def test_pretrain_under_a_file_size_limit(corpus, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bertkit", *pretrain_args(corpus, out)]
    limit = _limit_file_size(100_000)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "File too large" in r.stderr and "Traceback" not in r.stderr
    assert checkpoints(out) == [] and not list((out / "checkpoints").glob(".*"))
    assert not (out / "model.safetensors").exists()


def test_pretrain_output_on_a_read_only_filesystem(corpus, tmp_path, capsys):
    with small_fs(tmp_path / "ro", "1m", read_only=True) as fs:
        assert main(pretrain_args(corpus, fs / "run")) == 2
        err = capsys.readouterr().err
        assert "Read-only file system" in err and "Traceback" not in err

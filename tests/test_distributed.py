"""Fine-tuning under torchrun (DDP, gloo on the CPU) against one process, and its resume after
SIGKILL: real data, a small random model with dropout off, fp32, the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import bertkit
from bertkit.tasks.registry import load_examples

TORCHRUN = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node",
    "2",
    "-m",
    "bertkit",
]


@pytest.fixture(scope="module")
def nodrop_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny random BERT with dropout off, so 1 and 2 processes can agree to 1e-5."""
    d = tmp_path_factory.mktemp("nodrop")
    config = bertkit.BertConfig.from_pretrained(tiny_dir)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    bertkit.BertModel(config).save_pretrained(d)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, d / name)
    return d


def _head(src: Path, dest: Path, lines: int) -> Path:
    with open(src, encoding="utf-8") as f:
        dest.write_text("".join(line for _, line in zip(range(lines), f, strict=False)), encoding="utf-8")
    return dest


def _conll_head(src: Path, dest: Path, sentences: int) -> Path:
    blocks = src.read_text(encoding="utf-8").split("\n\n")
    dest.write_text("\n\n".join(blocks[:sentences]) + "\n", encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Real slices: 320 SST-2 sentences (dev 160) and 240 CoNLL-2003 sentences (dev 120)."""
    d = tmp_path_factory.mktemp("ddpdata")
    sst, conll = shared_data / "en/glue/SST-2", shared_data / "en/conll2003"
    return {
        "classify": (
            _head(sst / "train.tsv", d / "train.tsv", 321),
            _head(sst / "dev.tsv", d / "dev.tsv", 161),
        ),
        "ner": (
            _conll_head(conll / "train.txt", d / "train.txt", 240),
            _conll_head(conll / "valid.txt", d / "valid.txt", 120),
        ),
    }


def _args(task: str, model: Path, data: dict, out: Path, *extra: str) -> list[str]:
    train, dev = data[task]
    return ["finetune", "--task", task, "--model", str(model), "--train", str(train), "--dev", str(dev),
            "--output", str(out), "--device", "cpu", "--precision", "fp32", "--batch-size", "16",
            "--epochs", "1", "--eval-every", "5", "--lr", "2e-3", "--warmup", "2", "--quiet",
            *extra]  # fmt: skip


def _run(cmd: list[str], timeout: int = 400) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _descendants(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return [c for child in children for c in (child, *_descendants(child))]


def _signal(pids: set[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _kill_tree(pid: int) -> None:
    """Stop the launcher and every process below it until the tree stops growing (a stopped
    process starts no other), then kill them all at once: no rank is left behind to hold a port."""
    stopped: set[int] = set()
    while (tree := {pid, *_descendants(pid)}) != stopped:
        _signal(tree - stopped, signal.SIGSTOP)
        stopped |= tree
    _signal(stopped, signal.SIGKILL)


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= 1e-5, worst
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert (
        ma["train"]["steps"] == mb["train"]["steps"] and ma["train"]["best_step"] == mb["train"]["best_step"]
    )
    for k, v in ma["dev"].items():
        if isinstance(v, float):
            assert v == pytest.approx(mb["dev"][k], abs=1e-9), k


@pytest.mark.parametrize("task", ["classify", "ner"])
def test_two_processes_equal_one(task, nodrop_dir, data, tmp_path):
    _run([sys.executable, "-m", "bertkit", *_args(task, nodrop_dir, data, tmp_path / "one")])
    _run([*TORCHRUN, *_args(task, nodrop_dir, data, tmp_path / "two")])
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    n_train = len(load_examples(task, data[task][0]))
    assert metrics["train"]["steps"] == -(-n_train // 16)  # every example once, 16 a step
    assert not list(tmp_path.glob(".two.partial-*")), "rank 1 must not stage an output"
    bertkit.pipeline("text-classification" if task == "classify" else "ner", model=tmp_path / "two")


def test_torchrun_survives_sigkill_then_resume_equals_uninterrupted(nodrop_dir, data, tmp_path):
    """`--save-every 3` under torchrun: SIGKILL the launcher and both ranks once a checkpoint
    exists, `--resume` under torchrun, and end with the uninterrupted run's weights and metrics."""
    _run([sys.executable, "-m", "bertkit", *_args("classify", nodrop_dir, data, tmp_path / "whole")])
    out = tmp_path / "killed"
    args = [*TORCHRUN, *_args("classify", nodrop_dir, data, out, "--save-every", "3")]
    ckpts = tmp_path / "killed-checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    deadline = time.time() + 300
    while not list(ckpts.glob("step-*/trainer_state.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    _kill_tree(proc.pid)  # the launcher and every rank at once (ranks run in sessions of their own)
    proc.wait()
    assert not out.exists()
    assert "resuming from" in _run([*args, "--resume"])
    _assert_same_run(tmp_path / "whole", out)
    assert not ckpts.exists()

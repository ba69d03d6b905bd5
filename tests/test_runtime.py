"""The runtime without a GPU: `--device cuda` with none is a one-line error on every command;
with CUDA patched in, `auto` picks it, and the model, every batch and autocast go to it; under a
patched torchrun environment it picks nccl on CUDA and gloo on the CPU. Plus the structure the
runtime and the task registry promise: no task name compared outside tasks/ (the import graph:
test_architecture.py)."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest
import torch

import bertkit.runtime as runtime_mod
from bertkit.errors import BertkitError
from bertkit.runtime import Runtime, RuntimeArgs, compute_init, resolve_device

SRC = Path(__file__).resolve().parents[1] / "src" / "bertkit"


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA 'available' with 2 devices and bf16; moving anything there is recorded, not done."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    seen = {"module_to": [], "batch_to": [], "autocast": []}
    real_to = torch.nn.Module.to

    def module_to(self, *args, **kwargs):
        dev = kwargs.get("device", args[0] if args else None)
        if isinstance(dev, (str, torch.device)) and torch.device(dev).type == "cuda":
            seen["module_to"].append(torch.device(dev))
            return self
        return real_to(self, *args, **kwargs)

    def move(t, device, cuda):
        seen["batch_to"].append((device, cuda))
        return t

    def autocast(device_type, dtype=None, enabled=True, **kw):
        seen["autocast"].append((device_type, dtype, enabled))
        return contextlib.nullcontext()

    monkeypatch.setattr(torch.nn.Module, "to", module_to)
    monkeypatch.setattr(runtime_mod, "_move", move)
    monkeypatch.setattr(torch, "autocast", autocast)
    return seen


def test_auto_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert compute_init(RuntimeArgs(), distributed=False).device == torch.device("cpu")
    with pytest.raises(BertkitError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(BertkitError, match="--device must be one of"):
        resolve_device("tpu")


def test_auto_picks_cuda_and_bf16(fake_cuda):
    rt = compute_init(RuntimeArgs(), distributed=False)
    assert rt.device == torch.device("cuda", 0) and rt.bf16
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(BertkitError, match="only 2 CUDA device"):
        resolve_device("cuda:2")
    assert not Runtime(torch.device("cuda", 0), "fp32").bf16


def test_precision_means_the_same_on_every_device(monkeypatch):
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda: False)
    assert not Runtime(torch.device("cpu"), "auto").bf16  # emulated bf16 is slower: fp32
    assert Runtime(torch.device("cpu"), "bf16").bf16
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda: True)
    assert Runtime(torch.device("cpu"), "auto").bf16
    with pytest.raises(BertkitError, match="--precision must be one of"):
        Runtime(torch.device("cpu"), "fp8")


@pytest.mark.parametrize("cuda", [True, False])
@pytest.mark.parametrize("world", [2, 1])
def test_torchrun_environment_picks_the_backend(cuda, world, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(world - 1))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")  # torchrun's, even for one process
    joined: list[str] = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: bool(joined))
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: world - 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: world)
    rt = compute_init(RuntimeArgs(device="auto"))
    assert joined == ["nccl" if cuda else "gloo"] and rt.backend == joined[0] and rt.distributed
    assert (rt.rank, rt.world, rt.main) == (world - 1, world, world == 1)
    assert rt.device == (torch.device("cuda", world - 1) if cuda else torch.device("cpu"))
    alone = compute_init(RuntimeArgs(device="cpu"), distributed=False)  # inference: never joins
    assert alone.world == 1 and not alone.distributed and joined == [joined[0]]


def test_finetune_puts_model_batches_and_autocast_on_cuda(fake_cuda, head_dir, tmp_path):
    """Two training steps with the runtime on (patched) CUDA: the model is moved there, every
    batch goes through the runtime's pinned non-blocking copy to it, autocast is CUDA bf16."""
    from bertkit.data.examples import TextExample
    from bertkit.engine.runner import InferenceOptions, prepare
    from bertkit.models.heads import BertForSequenceClassification
    from bertkit.tasks.classify import ClassifyTask
    from bertkit.training.finetune import train_model
    from bertkit.training.loop import TrainArgs

    model_dir = head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["neg", "pos"])
    rt = compute_init(RuntimeArgs(), distributed=False)
    assert rt.device.type == "cuda"
    texts = [TextExample(f"a text number {i}", None, ["neg", "pos"][i % 2], i) for i in range(8)]
    args = TrainArgs(max_steps=2, batch_size=4, progress=False, tensorboard=False, eval_every=100)
    train_model(ClassifyTask(["neg", "pos"]), model_dir, texts, texts[:2], args, rt)
    assert fake_cuda["module_to"] and all(d.type == "cuda" for d in fake_cuda["module_to"])
    assert len(fake_cuda["batch_to"]) >= 2 * 4  # 2 batches × their tensors
    assert all(d.type == "cuda" and pinned for d, pinned in fake_cuda["batch_to"])
    assert ("cuda", torch.bfloat16, True) in fake_cuda["autocast"]
    fake_cuda["module_to"].clear()
    prepare(BertForSequenceClassification.from_pretrained(model_dir), InferenceOptions(), rt)
    assert fake_cuda["module_to"] == [torch.device("cuda", 0)]


@pytest.mark.parametrize(
    "argv",
    [
        ["finetune", "--task", "classify", "--model", "m", "--train", "t", "--dev", "d", "--output", "o"],
        ["distill", "--task", "classify", "--teacher", "m", "--train", "t", "--dev", "d", "--output", "o"],
        ["evaluate", "--model", "m", "--data", "d", "--output", "o"],
        ["predict", "--model", "m"],
        ["embed", "--model", "m", "--output", "o.npy"],
        ["serve", "--model", "m"],
        ["pretrain", "--corpus", "c", "--output", "o"],
        [
            "search",
            "--task",
            "classify",
            "--model",
            "m",
            "--train",
            "t",
            "--dev",
            "d",
            "--output",
            "o",
            "--grid",
            "lr=1e-4",
        ],
        ["fill-mask", "--model", "m", "a [MASK]"],
    ],  # fmt: skip
    ids=lambda a: a[0],
)
def test_device_cuda_without_cuda_is_one_line(argv, tmp_path, monkeypatch, capsys):
    from bertkit.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0, err
    assert "--device cuda: no CUDA device" in err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_no_task_name_compared_outside_tasks():
    """Outside tasks/, no `==`/`!=`/`in` against a task's name string: the registry answers."""
    from bertkit.tasks.registry import TASKS

    names = set(TASKS)
    for path in SRC.rglob("*.py"):
        if "tasks" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                consts = [c for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in names]
                assert not consts, f"{path.name}:{node.lineno} compares a task name"


def clear_cpu_caches() -> None:
    for f in (runtime_mod.cpu_has_amx, runtime_mod.cpu_has_bf16, runtime_mod.cpu_has_vnni):
        f.cache_clear()


@pytest.mark.parametrize(
    ("flags", "cap", "kind", "vnni"),
    [
        ("avx2 fma", None, "avx2", False),  # most cloud VMs and laptops
        ("avx2 avx_vnni", None, "avx2", True),  # AVX-VNNI without AVX-512 (Alder Lake)
        ("avx2 avx512f avx512_vnni", None, "avx2", True),  # Cascade Lake: no bf16 units
        ("avx2 avx512f avx512_vnni avx512_bf16", None, "avx512_bf16", True),  # EPYC Genoa
        ("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile", None, "amx", True),
        # oneDNN held to lower kernels runs them, whatever the CPU has
        ("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8", "AVX2", "avx2", False),
        ("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8", "avx512_core", "avx2", False),
        ("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8", "AVX512_CORE_BF16", "avx512_bf16", True),
        ("avx2 avx512f avx512_vnni avx512_bf16", "ALL", "avx512_bf16", True),
    ],
)
def test_cpu_kind_from_flags_and_onednn_cap(monkeypatch, flags, cap, kind, vnni):
    for name in ("BERTKIT_CPU_AMX", "BERTKIT_CPU_BF16", "BERTKIT_CPU_VNNI", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    monkeypatch.setattr(runtime_mod, "cpu_flags", lambda: frozenset(flags.split()))
    clear_cpu_caches()
    try:
        assert (runtime_mod.cpu_kind(), runtime_mod.cpu_has_vnni()) == (kind, vnni)
        assert Runtime(torch.device("cpu"), "auto").bf16 == (kind != "avx2")
    finally:
        clear_cpu_caches()


@pytest.mark.parametrize("kind", runtime_mod.CPU_KINDS)
def test_overrides_choose_each_kind(monkeypatch, kind):
    """BERTKIT_CPU_AMX / _BF16 / _VNNI choose another kind's code paths on any CPU."""
    monkeypatch.setenv("BERTKIT_CPU_AMX", "1" if kind == "amx" else "0")
    monkeypatch.setenv("BERTKIT_CPU_BF16", "0" if kind == "avx2" else "1")
    monkeypatch.setenv("BERTKIT_CPU_VNNI", "0" if kind == "avx2" else "1")
    clear_cpu_caches()
    try:
        assert runtime_mod.cpu_kind() == kind
    finally:
        clear_cpu_caches()

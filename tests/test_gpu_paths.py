"""The GPU paths without a GPU (CUDA patched in): precision where bf16 is emulated (fp16, with a
loss scaler in training), variable-length flash attention over packed sequences (a reference
kernel stands in for it), the token budget per device."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bertkit.models.encoder as model_mod
import bertkit.runtime as runtime_mod
from bertkit.engine.runner import CUDA_MAX_TOKENS, MAX_TOKENS, InferenceOptions, prepare
from bertkit.errors import BertkitError
from bertkit.models.encoder import Packing
from bertkit.runtime import Runtime, RuntimeArgs, compute_init
from bertkit.training.loop import Stepper, TrainArgs
from test_engine_layers import FP32, batch, tiny


@pytest.fixture
def old_gpu(monkeypatch):
    """A GPU that has bf16 only by emulation (a T4 or V100), and module moves recorded, not done."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    moved: list[torch.device] = []
    real_to = nn.Module.to

    def module_to(self, *args, **kwargs):
        dev = kwargs.get("device", args[0] if args else None)
        if isinstance(dev, (str, torch.device)) and torch.device(dev).type == "cuda":
            moved.append(torch.device(dev))
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", module_to)
    return moved


def test_auto_is_fp16_where_bf16_is_emulated(old_gpu):
    rt = compute_init(RuntimeArgs(), distributed=False)
    assert rt.device.type == "cuda" and (rt.compute, rt.dtype) == ("fp16", torch.float16)
    assert rt.fp16 and not rt.bf16 and rt.describe() == "cuda:0, fp16"
    assert rt.grad_scaler().is_enabled()
    # bf16 still runs when asked for (emulated), fp32 too; neither scales the loss
    assert Runtime(rt.device, "bf16").dtype == torch.bfloat16
    assert not Runtime(rt.device, "fp32").grad_scaler().is_enabled()


def test_auto_is_bf16_on_a_gpu_that_has_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    rt = Runtime(torch.device("cuda", 0), "auto")
    assert rt.compute == "bf16" and not rt.grad_scaler().is_enabled()


def test_fp16_is_for_cuda(monkeypatch):
    with pytest.raises(BertkitError, match="fp16 runs on CUDA"):
        Runtime(torch.device("cpu"), "fp16")
    monkeypatch.setattr(runtime_mod, "cpu_has_bf16", lambda: False)
    assert Runtime(torch.device("cpu"), "auto").compute == "fp32"  # never fp16 on a CPU


def test_inference_weights_and_budget_follow_the_device(old_gpu):
    rt = Runtime(torch.device("cuda", 0), "auto")
    o = InferenceOptions()
    enc = prepare(tiny(), o, rt)
    assert old_gpu and enc.embeddings.word.weight.dtype == torch.float16
    assert enc.output_dtype == torch.float32  # heads get fp32 hidden states
    assert o.max_tokens == CUDA_MAX_TOKENS
    given = InferenceOptions(max_tokens=512)
    prepare(tiny(), given, rt)
    assert given.max_tokens == 512  # asked for: kept
    cpu = InferenceOptions()
    prepare(tiny(), cpu, FP32)
    assert cpu.max_tokens == MAX_TOKENS["torch"]


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k):
    """Each sequence's own attention, one at a time: what flash's variable-length kernel computes."""
    out = torch.empty_like(q)
    for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
        qs, ks, vs = (x[a:b].transpose(0, 1)[None] for x in (q, k, v))  # (1, nh, n, hs)
        out[a:b] = F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
    return out


def test_varlen_attention_matches_the_block_diagonal_rows(monkeypatch):
    lengths = [3, 5, 2, 60, 7, 33]
    ids, mask, types = batch(lengths)
    m = tiny()
    m.packed = True
    with torch.no_grad():
        want = m(ids, mask, types).last_hidden_state
    p = Packing.of(mask, varlen=True)
    assert p.cu_seqlens.tolist() == [0, 3, 8, 10, 70, 77, 110] and p.longest == 60
    calls = []

    def kernel(*args):
        calls.append(args[5])
        return reference_varlen(*args)

    monkeypatch.setattr(model_mod, "varlen_attn", kernel)
    monkeypatch.setattr(model_mod, "varlen_ok", lambda x: True)
    with torch.no_grad():
        got = m(ids, mask, types).last_hidden_state
    assert calls == [60, 60]  # both layers, no padded rows
    real = mask.bool()
    assert torch.allclose(got[real], want[real], atol=1e-5)
    assert not got[~real].any()  # padding stays zeros


def test_fp16_training_scales_the_loss_and_skips_overflow():
    """A fp16 run's Stepper (a CPU GradScaler stands in for CUDA's): the loss is scaled, an
    overflowing step is skipped without the non-finite error and the scale lowered, the next
    steps train; the scale is in the resumable state."""
    torch.manual_seed(0)
    model = nn.Linear(8, 2)
    rt = Runtime(torch.device("cpu"), "fp32")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    rt.grad_scaler = lambda: scaler  # type: ignore[method-assign]
    stepper = Stepper(model, TrainArgs(lr=0.1, warmup=0, nonfinite="stop"), rt, total=20)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))

    def loss_fn(m, b):
        return F.cross_entropy(m(b[0]), b[1])

    before = model.weight.detach().clone()
    stepper.forward_backward(loss_fn, (x * 1e12, y))  # scaled gradients past float32's range
    assert stepper.update() is False and scaler.get_scale() == 2.0**119  # backed off, no error
    assert torch.equal(model.weight, before)
    first = float(loss_fn(model, (x, y)))
    for _ in range(10):
        stepper.forward_backward(loss_fn, (x, y))
        assert stepper.update()
    assert float(loss_fn(model, (x, y))) < first
    assert stepper.scaler.state_dict()["scale"] == scaler.get_scale()

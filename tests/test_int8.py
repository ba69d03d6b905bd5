"""The int8 engine (`bertkit.engine.int8`) on a random model: each int8 product against the same
quantization done by hand in fp32, the SmoothQuant algebra, calibration against brute force,
and a whole quantized encoder against the fp32 one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from bertkit.engine import int8
from bertkit.engine.fused import FusedLayer
from bertkit.engine.runner import InferenceOptions, prepare
from bertkit.runtime import Runtime, cpu_flags, cpu_has_vnni
from test_engine_layers import FP32, batch, tiny

pytestmark = pytest.mark.skipif(not int8.available(), reason="torch without oneDNN's int8 linear")


def fake_quant(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Per-tensor asymmetric quantization, as Int8Linear.quantize does, back to floats."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = max(high - low, 1e-8) / levels
    zero = round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def weight_scale(w: torch.Tensor, pairs: bool) -> torch.Tensor:
    """(out, 1): the largest |w| per output channel, or with `pairs` the largest |w[2i]| + |w[2i+1]|
    (an odd last channel alone), over 127."""
    if not pairs:
        return w.abs().amax(1, keepdim=True) / 127
    sums = [w[:, i : i + 2].abs().sum(1) for i in range(0, w.shape[1], 2)]
    return torch.stack(sums, 1).amax(1, keepdim=True) / 127


def reference(linear: nn.Linear, x: torch.Tensor, smooth=None) -> torch.Tensor:
    s = smooth if smooth is not None else torch.ones(linear.in_features)
    w = linear.weight.detach() * s
    w_scale = weight_scale(w, pairs=not cpu_has_vnni())
    wq = torch.round(w / w_scale).clamp(-127, 127) * w_scale
    return fake_quant(x / s, 255) @ wq.T + linear.bias.detach()


@pytest.mark.parametrize("smoothed", [False, True])
def test_int8_linear_is_the_quantized_product(smoothed):
    torch.manual_seed(0)
    lin = nn.Linear(64, 96)
    x = torch.randn(40, 64) * torch.linspace(0.1, 4, 64)  # channels of very different ranges
    s = torch.rand(64) + 0.5 if smoothed else None
    q = int8.Int8Linear(lin, 64, torch.float32, smooth=s)
    want = reference(lin, x, s)
    got = q(x)
    # the same integers multiplied: only the float epilogue's rounding differs
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    # and it is an int8 product, not the float one
    assert not torch.allclose(got, lin(x), atol=1e-4)
    assert (got - lin(x)).abs().max() < 0.05 * lin(x).abs().max()


def test_int8_linear_fuses_gelu_and_the_residual_add():
    torch.manual_seed(1)
    lin = nn.Linear(32, 48)
    x, r = torch.randn(10, 32), torch.randn(10, 48)
    plain = int8.Int8Linear(lin, 16, torch.float32)
    gelu = int8.Int8Linear(lin, 16, torch.float32, post=("gelu", "none"))
    assert torch.allclose(gelu(x), nn.functional.gelu(plain(x)), atol=1e-5)
    assert torch.allclose(plain(x, residual=r), plain(x) + r, atol=1e-5)
    bf16 = int8.Int8Linear(lin, 16, torch.bfloat16)
    assert bf16(x).dtype == torch.bfloat16 and torch.allclose(bf16(x).float(), plain(x), atol=2e-2)


def test_smoothing_changes_nothing_in_exact_arithmetic():
    torch.manual_seed(2)
    lin = nn.Linear(16, 8).double()
    x = torch.randn(5, 16, dtype=torch.float64)
    s = int8.smoothing(x.abs().amax(0).float(), lin.weight).double()
    # SmoothQuant's identity: (x / s) (W s)^T = x W^T
    assert torch.allclose((x / s) @ (lin.weight * s).T, x @ lin.weight.T)
    # s balances the two ranges: max|x/s| and max|W s| per channel are equal at alpha 0.5
    xs, ws = (x / s).abs().amax(0), (lin.weight * s).abs().amax(0)
    assert torch.allclose(xs, ws, rtol=1e-4)


def test_input_maxima_are_the_channel_maxima():
    m = tiny()
    lins = [m.layers[0].attn.qkv, m.layers[1].ffn.up]
    got = int8.input_maxima(m, lins, seed=3)
    seen = [torch.zeros(64), torch.zeros(64)]

    def record(i):
        def hook(module, args):
            seen[i] = torch.maximum(seen[i], args[0].reshape(-1, 64).abs().amax(0))

        return hook

    hooks = [lin.register_forward_pre_hook(record(i)) for i, lin in enumerate(lins)]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for T in int8.CALIBRATION_LENGTHS:
            m(torch.randint(m.config.vocab_size, (int8.CALIBRATION_ROWS, min(T, 128)), generator=g))
    for h in hooks:
        h.remove()
    for a, b in zip(got, seen, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("prepack", [True, False])
def test_quantized_encoder_stays_close_to_fp32(prepack):
    ids, mask, types = batch([3, 5, 2, 60, 7, 33])
    ref = tiny()
    ref.packed = True
    q = prepare(tiny(), InferenceOptions(int8=True, prepack=prepack), FP32)
    kinds = [type(q.layers[0].attn.qkv), type(q.layers[0].attn.proj), type(q.layers[0].ffn.up)]
    assert kinds == [int8.Int8Linear] * 3
    assert isinstance(q.layers[0], FusedLayer) == prepack
    with torch.no_grad():
        want = ref(ids, mask, types).last_hidden_state
        got = q(ids, mask, types).last_hidden_state
    real = mask.bool()
    cos = nn.functional.cosine_similarity(got[real], want[real], dim=-1)
    assert cos.min() > 0.995, cos.min()
    assert not torch.allclose(got[real], want[real], atol=1e-4)  # it did quantize


def test_int8_follows_the_runtime_precision():
    bf16 = Runtime(torch.device("cpu"), "bf16")
    q = prepare(tiny(), InferenceOptions(int8=True, prepack=False), bf16)
    assert q.layers[0].attn.qkv.out_dtype == torch.bfloat16
    assert q.layers[0].ffn.down.weight.dtype == torch.bfloat16  # the float product left
    q32 = prepare(tiny(), InferenceOptions(int8=True, prepack=False), FP32)
    assert q32.layers[0].ffn.down.weight.dtype == torch.float32


@pytest.mark.parametrize("in_features", [8, 7])
def test_weights_keep_neighbouring_pairs_in_16_bits_without_vnni(monkeypatch, in_features):
    """AVX2's u8 x s8 instruction adds two neighbouring products in 16 bits: without VNNI each
    pair of weights keeps |q[2i]| + |q[2i+1]| <= 128; with VNNI every weight uses all 8 bits."""
    torch.manual_seed(2)
    lin = nn.Linear(in_features, 16)
    w = lin.weight.detach()
    for forced, pairs in (("0", True), ("1", False)):
        monkeypatch.setenv("BERTKIT_CPU_VNNI", forced)
        cpu_has_vnni.cache_clear()
        q = int8.Int8Linear(lin, 4, torch.float32)
        assert torch.allclose(q.w_scale, weight_scale(w, pairs).squeeze(1))
        qw, _ = int8.quantize_weight(w, pairs)
        a = nn.functional.pad(qw.int().abs(), (0, in_features % 2))
        assert int((a[:, 0::2] + a[:, 1::2]).max()) <= (128 if pairs else 254)
        assert int(qw.abs().amax()) <= 127 and (pairs or int(qw.abs().amax()) == 127)
    cpu_has_vnni.cache_clear()


AVX2_KERNELS = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
needs_avx2 = pytest.mark.skipif("avx2" not in cpu_flags(), reason="no AVX2 here (oneDNN's AVX2 kernels)")


@needs_avx2
def test_no_saturation_on_onednn_avx2_kernels():
    """oneDNN held to its AVX2 kernels (what a CPU without VNNI runs; ONEDNN_MAX_CPU_ISA=AVX2
    selects the same kernels on any x86 CPU): activations at the top of the u8 range against
    weights whose neighbouring pairs are large. The product is exact with the pairs bounded,
    and full-range weights do saturate there (so the check can fail)."""
    code = """
import torch
from torch import nn
from bertkit.engine import int8
from bertkit.runtime import cpu_has_vnni
assert not cpu_has_vnni()  # the cap says so, whatever the CPU
torch.manual_seed(0)
lin = nn.Linear(384, 32)
with torch.no_grad():
    lin.weight.copy_(torch.randn(32, 384).sign() * (torch.rand(32, 384) + 1))
x = torch.rand(64, 384) * 0.01 + 5.0  # all quantized near 255
q = int8.Int8Linear(lin, 64, torch.float32)
qw, w_scale = int8.quantize_weight(lin.weight.detach(), pairs=True)
xq, scale, zero = q.quantize(x)
exact = ((xq.double() - zero) * scale) @ (qw.double() * w_scale.double()[:, None]).T + lin.bias.double()
err = float((q(x).double() - exact).abs().max() / exact.abs().max())
q.packed = torch.ops.onednn.qlinear_prepack(int8.quantize_weight(lin.weight.detach(), False)[0], [64, 384])
q.w_scale = int8.quantize_weight(lin.weight.detach(), False)[1]
full = q(x).double()
full_err = float((full - lin(x).double()).abs().max() / exact.abs().max())
print(err, full_err)
"""
    out = subprocess.run([sys.executable, "-c", code], env=AVX2_KERNELS, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    err, full_err = map(float, out.stdout.split())
    assert err < 1e-5, err  # the same integers, only the float epilogue rounds
    assert full_err > 0.05, full_err  # pairs of 255 x 127 saturate 16 bits

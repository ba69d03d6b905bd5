"""The int8 engine (`bertkit.int8`) on a random model: each int8 product against the same
quantization done by hand in fp32, the SmoothQuant algebra, calibration against brute force,
and a whole quantized encoder against the fp32 one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bertkit import int8
from bertkit.fused import FusedLayer
from bertkit.inference import InferenceOptions, prepare
from bertkit.runtime import Runtime
from test_engine_layers import FP32, batch, tiny

pytestmark = pytest.mark.skipif(not int8.available(), reason="torch without oneDNN's int8 linear")


def fake_quant(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Per-tensor asymmetric quantization, as Int8Linear.quantize does, back to floats."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = max(high - low, 1e-8) / levels
    zero = round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def reference(linear: nn.Linear, x: torch.Tensor, levels: int, smooth=None) -> torch.Tensor:
    s = smooth if smooth is not None else torch.ones(linear.in_features)
    w = linear.weight.detach() * s
    w_scale = w.abs().amax(1, keepdim=True) / 127
    wq = torch.round(w / w_scale).clamp(-127, 127) * w_scale
    return fake_quant(x / s, levels) @ wq.T + linear.bias.detach()


@pytest.mark.parametrize("smoothed", [False, True])
def test_int8_linear_is_the_quantized_product(smoothed):
    torch.manual_seed(0)
    lin = nn.Linear(64, 96)
    x = torch.randn(40, 64) * torch.linspace(0.1, 4, 64)  # channels of very different ranges
    s = torch.rand(64) + 0.5 if smoothed else None
    q = int8.Int8Linear(lin, 64, torch.float32, smooth=s)
    want = reference(lin, x, q.levels, s)
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


def test_seven_bit_activations_without_vnni(monkeypatch):
    """AVX2's u8 x s8 instruction saturates 16-bit sums: without VNNI activations keep 7 bits."""
    from bertkit.runtime import cpu_has_vnni

    lin = nn.Linear(8, 4)
    for forced, levels in (("0", 127), ("1", 255)):
        monkeypatch.setenv("BERTKIT_CPU_VNNI", forced)
        cpu_has_vnni.cache_clear()
        assert int8.Int8Linear(lin, 4, torch.float32).levels == levels
    cpu_has_vnni.cache_clear()

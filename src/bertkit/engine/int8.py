"""int8 inference on oneDNN's u8 x s8 matrix products, faithful enough to stand in for bf16.

In each layer the QKV, attention-output and feed-forward up-projections multiply in int8:
weights per output channel (symmetric s8), activations per tensor at run time (asymmetric u8,
all 8 bits). The down-projection stays in the engine's float dtype: its input (after GELU) has
outliers that no per-tensor scale survives (all-MiniLM-L6-v2 on SST-2 sentences, mean cosine to
fp32: 0.990 with it in int8, 0.9989 without).

SmoothQuant (Xiao et al., 2023) moves the LayerNorm outputs' outlier channels into the weights:
x / s is quantized and W · s held, s = amax(x)^α / amax(W)^(1-α) per input channel, α = 0.5, for
the QKV and up-projections (whose inputs are LayerNorm outputs). The activation maxima come from
one pass over random token sequences, so no data is needed: calibrated that way the SST-2 mean
cosine was 0.99885, calibrated on CoNLL-2003 sentences 0.99886, without smoothing 0.9946.

Without VNNI (AVX2 only), oneDNN multiplies u8 x s8 with `vpmaddubsw`, which adds the products
of two neighbouring input channels (2i, 2i+1) in 16 bits and saturates past 32,767: 255 x 127 x 2
does. Activations still keep 8 bits there; the weights give up what is needed instead: each
output channel's scale makes |q[2i]| + |q[2i+1]| <= 128 (`quantize_weight`), so no pair can
saturate (255 x 128 = 32,640), and most channels lose far less than a bit, their largest weight
rarely having a large neighbour. all-MiniLM-L6-v2, 2,048 SST-2 sentences, oneDNN held to its AVX2
kernels: mean cosine to fp32 0.99863 (min 0.9944) against 0.99555 (0.9764) with 7-bit
activations; 0.99877 (0.9940) with VNNI.

`quantize_encoder` swaps the Linears for `Int8Linear`s in place; `bertkit.engine.fused.FusedLayer`
then runs them with the residual adds and GELU fused, as it runs its prepacked float Linears.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

from bertkit.engine.fused import post_op
from bertkit.models.encoder import BertModel, Layer
from bertkit.runtime import cpu_has_vnni

ALPHA = 0.5  # SmoothQuant's migration strength
CALIBRATION_LENGTHS = (8, 16, 32, 64, 128)  # random token sequences: 48 of each length
CALIBRATION_ROWS = 48

# torch marks quantized tensors as deprecated; they are only the fastest way here to quantize a
# tensor in one pass (the result is read as plain uint8).
warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


class Int8Linear(nn.Module):
    """An inference-only nn.Linear on oneDNN's int8 matrix product: `forward(x, residual)` =
    act(x W^T + b) or x W^T + b + residual, in `out_dtype`, as `bertkit.engine.fused.PrepackedLinear`.
    `smooth` (in_features,): the input is divided by it before quantization, the weight's columns
    multiplied by it (SmoothQuant)."""

    def __init__(
        self,
        linear: nn.Linear,
        batch_hint: int,
        out_dtype: torch.dtype,
        smooth: torch.Tensor | None = None,
        post: tuple[str, str] | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()  # (out, in)
        self.inv_smooth = None
        if smooth is not None:
            w = w * smooth
            self.inv_smooth = (1.0 / smooth).float()
        q, self.w_scale = quantize_weight(w, pairs=not cpu_has_vnni())
        self.packed = torch.ops.onednn.qlinear_prepack(q, [batch_hint, self.in_features])
        self.w_zero = torch.zeros(self.out_features, dtype=torch.long)
        self.bias = linear.bias.detach().float() if linear.bias is not None else None
        self.out_dtype = out_dtype
        self.attr, self.algorithm = post or ("none", "")

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """(M, K) float -> (M, K) uint8, scale, zero point: per tensor, from its min and max."""
        x = x * self.inv_smooth if self.inv_smooth is not None else x.float()
        lo, hi = torch.aminmax(x)
        low, high = min(float(lo), 0.0), max(float(hi), 0.0)
        scale = max(high - low, 1e-8) / 255
        zero = round(-low / scale)
        q = torch.quantize_per_tensor(x, scale, zero, torch.quint8)
        # the quantized tensor's bytes read as a plain uint8 tensor, without int_repr's copy
        u8 = torch.empty(0, dtype=torch.uint8)
        u8.set_(q.untyped_storage(), q.storage_offset(), q.size(), q.stride())
        return u8, scale, zero

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        qx, scale, zero = self.quantize(x.reshape(-1, self.in_features))
        w = (self.packed, self.w_scale, self.w_zero)
        if residual is None:
            y = torch.ops.onednn.qlinear_pointwise(
                qx, scale, zero, *w, self.bias, 1.0, 0, self.out_dtype, self.attr, [], self.algorithm
            )
        else:
            r = residual.reshape(-1, self.out_features).to(self.out_dtype)
            y = torch.ops.onednn.qlinear_pointwise.binary(
                qx, scale, zero, *w, r, self.bias, 1.0, 0, self.out_dtype, 1.0, 0, "add", 1.0, "none", [], ""
            )
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        smooth = ", smoothed" if self.inv_smooth is not None else ""
        post = "" if self.attr == "none" else f", {self.attr}"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8{smooth}{post}"


def quantize_weight(w: torch.Tensor, pairs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float -> (out, in) int8 and the (out,) scales, symmetric per output channel.
    `pairs`: bound the neighbouring pairs instead, |q[2i]| + |q[2i+1]| <= 128, the largest a
    16-bit sum of u8 x s8 products holds (AVX2 without VNNI; each |q| <= 127 follows)."""
    a = w.abs()
    if pairs:
        a = F.pad(a, (0, a.shape[1] % 2))  # an odd last channel pairs with a zero
        a = a[:, 0::2] + a[:, 1::2]  # (out, in/2); rounding adds at most 1 to a pair's 127
    scale = a.amax(1).clamp(min=1e-12) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def input_maxima(encoder: BertModel, linears: list[nn.Linear], seed: int = 0) -> list[torch.Tensor]:
    """Per input channel max |x| of each of `linears` over random token sequences (no padding)."""
    amax = [torch.zeros(m.in_features) for m in linears]

    def hook(i):
        def record(module, args):
            x = args[0].detach().float().reshape(-1, amax[i].numel()).abs().amax(0).cpu()
            torch.maximum(amax[i], x, out=amax[i])

        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(linears)]
    g = torch.Generator().manual_seed(seed)
    device = next(encoder.parameters()).device
    vocab, longest = encoder.config.vocab_size, encoder.config.max_length
    try:
        with torch.inference_mode():
            for T in CALIBRATION_LENGTHS:
                ids = torch.randint(vocab, (CALIBRATION_ROWS, min(T, longest)), generator=g)
                encoder(ids.to(device))
    finally:
        for h in handles:
            h.remove()
    return amax


def smoothing(act_max: torch.Tensor, weight: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """SmoothQuant's per input channel factor s = amax(x)^α / amax(W)^(1-α)."""
    w_max = weight.detach().float().abs().amax(0).clamp(min=1e-5)
    return (act_max.clamp(min=1e-5) ** alpha / w_max ** (1 - alpha)).clamp(min=1e-5)


def quantize_encoder(encoder: BertModel, batch_hint: int, out_dtype: torch.dtype) -> None:
    """The encoder's QKV, attention-output and up-projections made `Int8Linear`s, in place (its
    weights still fp32: calibration runs it). The other Linears stay as they are."""
    layers = [m for m in encoder.layers if isinstance(m, Layer)]
    smoothed = [lin for layer in layers for lin in (layer.attn.qkv, layer.ffn.up)]
    maxima = dict(zip(map(id, smoothed), input_maxima(encoder, smoothed), strict=True))
    for layer in layers:
        attn, ffn = layer.attn, layer.ffn
        s_qkv = smoothing(maxima[id(attn.qkv)], attn.qkv.weight)
        s_up = smoothing(maxima[id(ffn.up)], ffn.up.weight)
        post = post_op(ffn.act)
        attn.qkv = Int8Linear(attn.qkv, batch_hint, out_dtype, s_qkv)  # type: ignore[assignment]
        attn.proj = Int8Linear(attn.proj, batch_hint, out_dtype)  # type: ignore[assignment]
        ffn.up = Int8Linear(ffn.up, batch_hint, out_dtype, s_up, post)  # type: ignore[assignment]
        if post is not None:
            ffn.act = nn.Identity()

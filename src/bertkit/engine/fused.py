"""CPU inference layers on oneDNN: weights reordered once into its blocked layout, and the
elementwise work after a matrix product fused into it as a post-op (GELU after the up-projection,
the residual add after the attention-output and down projections), as torch.compile's weight
freezing does, without compiling. `fuse_layers` turns an encoder's layers into `FusedLayer`s;
the parameters and module names stay (`layers[i].ffn.up`, ...), only the forward pass changes.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.models.encoder import BertModel, Layer


# activation module -> (oneDNN post-op, its algorithm)
def post_op(act: nn.Module) -> tuple[str, str] | None:
    if isinstance(act, nn.GELU):
        return "gelu", act.approximate  # "none" (erf, BERT's) or "tanh"
    if isinstance(act, nn.ReLU):
        return "relu", ""
    return None


class PrepackedLinear(nn.Module):
    """An inference-only nn.Linear whose weight is reordered once into oneDNN's blocked layout
    (the plain bf16 F.linear pays that reorder on every call; skipping it measured 1.2-1.4x on
    BERT-sized products), with an optional fused activation and residual add:
    `forward(x, residual)` = act(x W^T + b) or x W^T + b + residual. In fp32 F.linear goes to
    MKL, which ran BERT-sized products slower than oneDNN on the CPUs measured."""

    def __init__(self, linear: nn.Linear, batch_hint: int, post: tuple[str, str] | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach()
        self.weight_dtype = w.dtype
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w, batch_hint)
        self.bias = linear.bias.detach() if linear.bias is not None else None
        self.attr, self.algorithm = post or ("none", "")

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        if residual is None:
            y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.attr, [], self.algorithm)
        else:
            r = residual.reshape(-1, self.out_features)
            y = torch.ops.mkldnn._linear_pointwise.binary(x, r, self.packed, self.bias, "add")
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        post = "" if self.attr == "none" else f", {self.attr}"
        return f"in_features={self.in_features}, out_features={self.out_features}, prepacked{post}"


class FusedLayer(nn.Module):
    """`model.Layer`'s forward pass on prepacked weights with fused post-ops; same submodules."""

    def __init__(self, layer: Layer, batch_hint: int):
        super().__init__()
        self.attn, self.attn_norm, self.ffn, self.ffn_norm = (
            layer.attn,
            layer.attn_norm,
            layer.ffn,
            layer.ffn_norm,
        )
        attn, ffn = self.attn, self.ffn
        post = post_op(ffn.act)  # None where an Int8Linear up-projection has fused it already

        def pack(linear: nn.Module, post=None) -> nn.Module:
            # Linears already made inference layers (`bertkit.engine.int8.Int8Linear`) stay as they are
            return PrepackedLinear(linear, batch_hint, post) if type(linear) is nn.Linear else linear

        # (the modules' annotations say nn.Linear: these stand in for them at inference)
        attn.qkv = pack(attn.qkv)  # type: ignore[assignment]
        attn.proj = pack(attn.proj)  # type: ignore[assignment]
        ffn.up = pack(ffn.up, post)  # type: ignore[assignment]
        ffn.down = pack(ffn.down)  # type: ignore[assignment]
        if post is not None:
            ffn.act = nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, packing=None) -> torch.Tensor:
        # x (N, H) packed or (B, T, H); dropout is the identity at inference
        attn, ffn = self.attn, self.ffn
        x = self.attn_norm(attn.proj(attn.attend(attn.qkv(x), mask, packing), residual=x))
        return self.ffn_norm(ffn.down(ffn.act(ffn.up(x)), residual=x))


def fuse_layers(encoder: BertModel, batch_hint: int) -> None:
    """An encoder's Layers made FusedLayers, in place, and its other Linears (the pooler's)
    prepacked."""
    layers = encoder.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, Layer):
            layers[i] = FusedLayer(layer, batch_hint)
    prepack_linears(encoder, batch_hint)


def prepack_linears(module: nn.Module, batch_hint: int) -> None:
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, PrepackedLinear(child, batch_hint))
        else:
            prepack_linears(child, batch_hint)


def can_prepack(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        device.type == "cpu"
        and dtype in (torch.bfloat16, torch.float32)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and (dtype != torch.bfloat16 or onednn_has_bf16())
    )


def onednn_has_bf16() -> bool:
    """oneDNN's bf16 linear needs AVX512 (BW/VL/DQ) or AVX-NE-CONVERT; on an AVX2-only CPU its
    weight reorder raises, and bf16 falls back to plain (emulated, slow) F.linear."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False

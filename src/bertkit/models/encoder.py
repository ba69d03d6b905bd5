"""The BERT encoder: embeddings, N post-LayerNorm Transformer layers, pooler.

Shapes: B batch, T tokens, H hidden size, nh attention heads, hs = H / nh head size.
Parameter names are bertkit's own (short, with a fused QKV projection); `checkpoint.py`
maps them to and from Hugging Face's names, so checkpoints interchange with `transformers`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.models.checkpoint import PretrainedMixin
from bertkit.models.config import BertConfig

try:  # flash attention over packed sequences of different lengths (CUDA, fp16/bf16)
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # torch before 2.9
    varlen_attn = None  # type: ignore[assignment]


def varlen_ok(x: torch.Tensor) -> bool:
    """Whether packed attention can run as variable-length flash attention on `x`'s device:
    CUDA, fp16 or bf16, and a torch that has it."""
    return varlen_attn is not None and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)


def activation(name: str):
    """The activation a config names. `gelu` is BERT's exact erf GELU; `gelu_new` the tanh form."""
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    if name in ("silu", "swish"):
        return nn.SiLU()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}")


def positions_after_padding(input_ids: torch.Tensor, pad: int) -> torch.Tensor:
    """RoBERTa's position ids: real tokens count pad + 1, pad + 2, ...; padding sits at `pad`."""
    real = input_ids.ne(pad).long()
    return torch.cumsum(real, dim=1) * real + pad  # (B, T)


class Embeddings(nn.Module):
    """word + token type + absolute position, then LayerNorm and dropout. The family decides
    where positions start (RoBERTa's after the padding id), whether token types exist
    (DistilBERT: none; one type: segment ids are ignored) and whether a projection lifts
    narrower embeddings to the layers' width (ELECTRA)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        fam, E = config.family, config.embedding_dim
        self.pad = config.pad_token_id
        self.after_padding = fam.positions_after_padding
        self.word = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        pad_position = config.pad_token_id if fam.positions_after_padding else None
        self.position = nn.Embedding(config.max_position_embeddings, E, padding_idx=pad_position)
        types = config.type_vocab_size if fam.token_types else 0
        self.token_type = nn.Embedding(types, E) if types else None
        self.norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.project = nn.Linear(E, config.hidden_size) if E != config.hidden_size else None

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        position_ids: torch.Tensor | None = None,  # (B, T) or (T,)
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        if position_ids is None:
            if self.after_padding:
                position_ids = positions_after_padding(input_ids, self.pad)
            else:
                position_ids = torch.arange(T, device=input_ids.device)
        last = T + self.pad if self.after_padding else T - 1
        if last >= self.position.num_embeddings:
            limit = self.position.num_embeddings - (self.pad + 1 if self.after_padding else 0)
            raise ValueError(f"sequence length {T} exceeds the model's {limit} positions")
        x = self.word(input_ids)
        if self.token_type is not None:
            if token_type_ids is None or self.token_type.num_embeddings == 1:
                token_type_ids = torch.zeros_like(input_ids)
            # Same order of additions as the reference implementation: fp32 sums then agree bit for bit.
            x = x + self.token_type(token_type_ids)
        x = self.dropout(self.norm(x + self.position(position_ids)))  # (B, T, E)
        return self.project(x) if self.project is not None else x  # (B, T, H)


@dataclass
class Packing:
    """Padding-free inference: the real tokens of a padded (B, T) batch packed into (N, H), so the
    dense layers (QKV, output projection, feed-forward, LayerNorm: nearly all the FLOPs) skip the
    padding. Only attention unpacks, into R rows of L positions: short sequences share a row
    (L >= `row`) under a block-diagonal mask, each attending to its own tokens only, so attention
    runs a few long rows instead of many tiny ones (CPU kernels pay per row: 630 sequences of 13
    tokens took 3x the time of the same tokens in rows of 64). Where no two sequences fit in a
    row, each has its own and the mask is the plain key-padding one.

    On CUDA in fp16/bf16 (`varlen`) attention does not unpack at all: the packed (N, 3H)
    projections go to variable-length flash attention with each sequence's bounds (`cu_seqlens`),
    as SDPA's fused kernels cannot take the block-diagonal mask."""

    index: torch.Tensor  # (N,) flat positions r * L + l of the real tokens in attention's layout
    batch_index: torch.Tensor  # (N,) flat positions b * T + t in the padded batch
    mask: torch.Tensor  # (R, 1, L, L) or (B, 1, 1, T) bool, True where a key may be attended to
    R: int
    L: int
    B: int
    T: int
    cu_seqlens: torch.Tensor | None = None  # (B + 1,) int32 sequence bounds in N: varlen attention
    longest: int = 0

    @classmethod
    def of(cls, attention_mask: torch.Tensor, row: int = 64, varlen: bool = False) -> Packing:
        B, T = attention_mask.shape
        batch_index = attention_mask.reshape(-1).nonzero().squeeze(1)
        if varlen:
            n = attention_mask.sum(1, dtype=torch.int32)
            cu = F.pad(torch.cumsum(n, 0, dtype=torch.int32), (1, 0))
            # no attention layout to unpack into: index, mask, R and L go unused
            return cls(batch_index, batch_index, attention_mask.bool(), 1, 0, B, T, cu, int(n.max()))
        lengths = attention_mask.sum(1).tolist()
        L = max(row, T)
        starts, r, used = [], 0, 0
        for n in lengths:  # sequences in order, each row filled while they fit
            if used + n > L:
                r, used = r + 1, 0
            starts.append(r * L + used)
            used += n
        R = r + 1
        if R >= B:  # one sequence a row: attention's layout is the batch's
            mask = attention_mask.bool()[:, None, None, :]
            return cls(batch_index, batch_index, mask, B, T, B, T)
        dev = attention_mask.device
        n = torch.tensor(lengths, device=dev)
        seq = torch.repeat_interleave(torch.arange(B, device=dev), n)  # (N,) each token's sequence
        first = torch.cumsum(n, 0) - n  # (B,) each sequence's first packed token
        index = torch.tensor(starts, device=dev)[seq] + torch.arange(len(seq), device=dev) - first[seq]
        segment = torch.full((R * L,), -1, device=dev).index_copy_(0, index, seq).view(R, L)
        # padding positions (segment -1) attend to each other: no row is fully masked
        mask = (segment[:, :, None] == segment[:, None, :])[:, None]  # (R, 1, L, L)
        return cls(index, batch_index, mask, R, L, B, T)

    def pad(self, x: torch.Tensor) -> torch.Tensor:  # (N, C) -> (R, L, C), zeros at padding
        out = x.new_zeros(self.R * self.L, x.shape[-1])
        return out.index_copy_(0, self.index, x).view(self.R, self.L, -1)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:  # (R, L, C) -> (N, C)
        return x.reshape(self.R * self.L, -1).index_select(0, self.index)

    def to_batch(self, x: torch.Tensor) -> torch.Tensor:  # (N, C) -> (B, T, C), zeros at padding
        out = x.new_zeros(self.B * self.T, x.shape[-1])
        return out.index_copy_(0, self.batch_index, x).view(self.B, self.T, -1)

    def from_batch(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (N, C)
        return x.reshape(self.B * self.T, -1).index_select(0, self.batch_index)


def split_heads(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused projection's output (B, T, 3H) as queries, keys and values (B, nh, T, hs) each."""
    B, T, H3 = qkv.shape
    q, k, v = qkv.split(H3 // 3, dim=-1)
    q, k, v = (x.view(B, T, n_head, -1).transpose(1, 2) for x in (q, k, v))
    return q, k, v


def attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention probabilities (B, nh, T, T), softmax(q k^T / sqrt(hs)) over the keys `mask`
    allows: the eager path's (before dropout), and what distillation's attention loss compares."""
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        att = att.masked_fill(~mask, torch.finfo(att.dtype).min)
    return att.softmax(dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and an output projection."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.n_head = config.num_attention_heads
        self.qkv = nn.Linear(H, 3 * H)  # one matrix product instead of three
        self.proj = nn.Linear(H, H)
        self.dropout_p = config.attention_probs_dropout_prob
        # "sdpa": torch's fused kernel; "eager": the plain formula, kept as the reference for tests.
        self.impl = "sdpa"

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None
    ) -> torch.Tensor:
        # x (B, T, H), or (N, H) with `packing`; mask (B, 1, 1, T) bool, True where a key may be
        # attended to, or None
        return self.proj(self.attend(self.qkv(x), mask, packing))

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None) -> torch.Tensor:
        """The heads' attention between the projections: (…, 3H) -> (…, H)."""
        if packing is not None and packing.cu_seqlens is not None:
            return self.attend_varlen(qkv, packing)
        if packing is not None:
            qkv = packing.pad(qkv)  # (N, 3H) -> (R, L, 3H): attention needs the sequences apart
            mask = packing.mask
        B, T, H3 = qkv.shape
        q, k, v = split_heads(qkv, self.n_head)
        p = self.dropout_p if self.training else 0.0
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            y = F.dropout(attention_probs(q, k, mask), p=p) @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, H3 // 3)
        return packing.unpad(y) if packing is not None else y  # (N, H) or (B, T, H)

    def attend_varlen(self, qkv: torch.Tensor, packing: Packing) -> torch.Tensor:
        """(N, 3H) packed projections -> (N, H), each sequence attending to its own tokens."""
        cu, longest = packing.cu_seqlens, packing.longest
        assert varlen_attn is not None and cu is not None
        N, H3 = qkv.shape
        q, k, v = qkv.view(N, 3, self.n_head, -1).unbind(1)  # (N, nh, hs) each
        y = cast(torch.Tensor, varlen_attn(q, k, v, cu, cu, longest, longest))  # (N, nh, hs)
        return y.reshape(N, H3 // 3)


class FeedForward(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Layer(nn.Module):
    """One post-LayerNorm Transformer layer, as in the BERT paper (norm after each residual)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None
    ) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, mask, packing)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class Pooler(nn.Module):
    """dense + tanh on the [CLS] position: the sentence vector next-sentence and classifiers read."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))  # (B, H)


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + each layer, (B, T, H) each


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) weights, zero biases, LayerNorm weight 1."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def extended_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) bool for attention, or None when nothing is padded
    (the unmasked kernel is faster)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


class BertModel(PretrainedMixin, nn.Module):
    """The bidirectional Transformer encoder of every family, with the pooler where the family
    has one unless `add_pooling_layer=False`."""

    hf_prefix = ""  # transformers saves a bare BertModel without the "bert." prefix

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if add_pooling_layer and config.family.pooler else None
        # Padding-free dense layers at inference (see Packing); `bertkit.engine.runner` turns it on.
        # Off by default: hidden states at padding positions are then zeros, not transformers' values.
        self.packed = False
        self.attention_row = 64  # packed: sequences share attention rows of at least this many tokens
        self.output_dtype: torch.dtype | None = None  # cast outputs to this (bf16 encoder, fp32 heads)
        self.streams = 1  # batches run at once at inference (bertkit.engine.runner.forward_batches)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def set_attention_impl(self, impl: str) -> None:
        """ "sdpa" (default) or "eager" (the plain formula, a reference for tests)."""
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"attention implementation must be 'sdpa' or 'eager', not {impl!r}")
        for layer in cast("Iterable[Layer]", self.layers):
            layer.attn.impl = impl

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T), 1 for tokens, 0 for padding
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        mask = extended_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        packing = None
        B, T = input_ids.shape
        if self.packed and not self.training and (mask is not None or 2 * T <= self.attention_row):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            varlen = varlen_ok(x) and cast(Layer, self.layers[0]).attn.impl == "sdpa"
            packing = Packing.of(attention_mask, self.attention_row, varlen)
            x = packing.from_batch(x)  # (N, H)
        hidden = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, mask, packing)
            if hidden is not None:
                hidden.append(x)
        if packing is not None:
            x = packing.to_batch(x)  # (B, T, H)
            hidden = [packing.to_batch(h) for h in hidden] if hidden is not None else None
        pooled = self.pooler(x) if self.pooler is not None else None
        if self.output_dtype is not None:
            x = x.to(self.output_dtype)
            pooled = pooled.to(self.output_dtype) if pooled is not None else None
            hidden = [h.to(self.output_dtype) for h in hidden] if hidden is not None else None
        return BertOutput(x, pooled, tuple(hidden) if hidden is not None else None)

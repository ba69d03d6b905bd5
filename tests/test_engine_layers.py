"""The inference engine's internals on a random model (no weights to install): attention rows
shared by short sequences, and oneDNN-fused layers, against the plain encoder."""

from __future__ import annotations

import pytest
import torch

import bertkit
from bertkit.engine.fused import FusedLayer, PrepackedLinear, can_prepack
from bertkit.engine.runner import InferenceOptions, prepare
from bertkit.models.encoder import Packing
from bertkit.runtime import Runtime

FP32 = Runtime(torch.device("cpu"), "fp32")


def tiny(seed: int = 0, act: str = "gelu") -> bertkit.BertModel:
    torch.manual_seed(seed)
    cfg = bertkit.BertConfig(
        vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=128, hidden_act=act,
    )  # fmt: skip
    return bertkit.BertModel(cfg).eval()


def batch(lengths: list[int], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(5, 300, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask, torch.randint(0, 2, (len(lengths), T), generator=g) * mask


def test_packing_rows_are_shared_and_sequences_kept_apart():
    _, mask, _ = batch([3, 5, 2, 60, 7])
    p = Packing.of(mask, row=64)
    assert (p.R, p.L) == (3, 64)  # [3, 5, 2] | [60] | [7]: filled in order while they fit
    rows = (p.index // p.L).tolist()
    assert rows == [0] * 10 + [1] * 60 + [2] * 7
    seq = torch.repeat_interleave(torch.arange(5), mask.sum(1))
    m = p.mask[:, 0].reshape(p.R * p.L, p.L)  # (R*L, L) query position -> keys of its row
    for i, j in enumerate(p.index.tolist()):  # each real token sees exactly its own sequence
        keys = p.index[seq == seq[i]] - (j // p.L) * p.L
        want = torch.zeros(p.L, dtype=torch.bool)
        want[keys] = True
        assert torch.equal(m[j], want)


def test_packing_long_sequences_get_their_own_rows():
    _, mask, _ = batch([40, 50, 33])
    p = Packing.of(mask, row=64)
    assert (p.R, p.L) == (3, 50) and torch.equal(p.index, p.batch_index)
    assert p.mask.shape == (3, 1, 1, 50)


@pytest.mark.parametrize("lengths", [[3, 5, 2, 60, 7], [4] * 9, [1, 2, 3, 4, 5, 6, 7, 8], [30, 31, 64]])
def test_packed_rows_match_the_plain_encoder(lengths):
    """Shared rows change which positions attention computes, not what a token sees: fp32
    hidden states equal the plain (B, T) encoder's at every real token."""
    ids, mask, types = batch(lengths)
    plain, packed = tiny(), tiny()
    packed.packed = True
    with torch.inference_mode():
        a, b = plain(ids, mask, types), packed(ids, mask, types)
    real = mask.bool()
    assert (a.last_hidden_state - b.last_hidden_state)[real].abs().max() <= 1e-5
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-5
    assert (b.last_hidden_state[~real] == 0).all()


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu", "silu"])
def test_fused_layers_match_the_plain_encoder(act):
    """Prepacked weights with GELU/ReLU and residual adds fused into the products (fp32): the same
    hidden states as the plain encoder; an activation oneDNN cannot fuse stays a module."""
    if not can_prepack(torch.device("cpu"), torch.float32):
        pytest.skip("this torch build has no oneDNN weight prepacking")
    ids, mask, types = batch([3, 5, 2, 60, 7])
    plain = tiny(act=act)
    fused = prepare(tiny(act=act), InferenceOptions(), FP32)
    assert all(isinstance(layer, FusedLayer) for layer in fused.layers)
    assert isinstance(fused.layers[0].ffn.up, PrepackedLinear) and isinstance(
        fused.pooler.dense, PrepackedLinear
    )
    assert fused.layers[0].ffn.up.attr == {"gelu": "gelu", "gelu_new": "gelu", "relu": "relu"}.get(
        act, "none"
    )
    with torch.inference_mode():
        a, b = plain(ids, mask, types), fused(ids, mask, types)
    real = mask.bool()
    assert (a.last_hidden_state - b.last_hidden_state)[real].abs().max() <= 1e-5
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-5


def test_streams_run_batches_at_once_and_keep_their_order():
    import threading

    from bertkit.engine.runner import batches, forward_batches, streams_for

    g = torch.Generator().manual_seed(4)
    lengths = torch.randint(1, 40, (300,), generator=g).tolist()
    feats = [
        {"input_ids": torch.randint(5, 300, (n,), generator=g).tolist(), "token_type_ids": [0] * n}
        for n in lengths
    ]
    model = tiny()
    model.packed = True
    seen: dict[int, int] = {}

    def fn(b):
        seen[threading.get_ident()] = torch.get_num_threads()
        assert torch.is_inference_mode_enabled()
        return model(b["input_ids"], b["attention_mask"]).last_hidden_state.sum(1)

    with torch.inference_mode():
        plain = [(idx, fn(b)) for idx, b in batches(feats, 0, 512, torch.device("cpu"))]
    model.streams = 2
    with torch.inference_mode():
        got = [(idx, y) for idx, _, y in forward_batches(model, fn, feats, 0, 512)]
    assert len(got) == len(plain) > 4
    for (i1, y1), (i2, y2) in zip(plain, got, strict=True):
        assert i1 == i2 and torch.equal(y1, y2)  # same batches, same order, same numbers
    assert len(seen) >= 2  # the calling thread and at least one worker
    threads = torch.get_num_threads()
    workers = [n for t, n in seen.items() if t != threading.get_ident()]
    assert workers and all(n == max(1, threads // 2) for n in workers)
    assert torch.get_num_threads() == threads  # the caller's setting is untouched
    seen.clear()
    with torch.inference_mode():
        one = list(forward_batches(model, fn, feats[:3], 0, 512))
    assert len(one) == 1 and list(seen) == [threading.get_ident()]  # one batch: no worker
    opts = InferenceOptions(streams=3)
    assert streams_for(opts, torch.device("cpu")) == 3
    assert streams_for(InferenceOptions(), torch.device("cuda")) == 1


def test_token_budget_follows_the_backend(monkeypatch):
    """max_tokens 0 (the default) is the backend's budget, chosen after BERTKIT_BACKEND and the
    flags are applied; a budget given explicitly is kept; a negative one is refused."""
    from bertkit.engine.runner import MAX_TOKENS
    from bertkit.errors import BertkitError

    monkeypatch.delenv("BERTKIT_BACKEND", raising=False)
    assert InferenceOptions().max_tokens == MAX_TOKENS["torch"]
    assert InferenceOptions.from_env(backend="openvino").max_tokens == MAX_TOKENS["openvino"]
    assert InferenceOptions.from_env(backend="openvino", max_tokens=300).max_tokens == 300
    monkeypatch.setenv("BERTKIT_BACKEND", "openvino")
    assert InferenceOptions.from_env().max_tokens == MAX_TOKENS["openvino"]
    assert InferenceOptions.from_env(backend="torch").max_tokens == MAX_TOKENS["torch"]
    with pytest.raises(BertkitError, match="max_tokens"):
        InferenceOptions(max_tokens=-1)

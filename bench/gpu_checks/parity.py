"""The tokenizer check and parity: bertkit's encoder against transformers' on the same ids."""

from __future__ import annotations

import torch

from .common import CheckFailed, Ctx, fresh, mean_cos, quiet_transformers
from .data import read_sst2


def check_tokenizer(ctx: Ctx) -> dict:
    from bertkit.tokenization.vocab import train_tokenizer

    out = fresh(ctx.work / "tok")
    tok = train_tokenizer([ctx.data / "text"], vocab_size=ctx.sizes.vocab, output=out)
    ctx.dirs["tok"] = out
    ids = [i for row in tok(read_sst2(ctx.data / "sst2/dev.tsv")[0])["input_ids"] for i in row]
    unk = sum(i == tok.unk_token_id for i in ids) / len(ids)
    line = f"WordPiece of {tok.vocab_size} tokens from {len(list((ctx.data / 'text').glob('*.gz')))} books; "
    return {
        "status": "pass",
        "line": line + f"[UNK] {unk:.2%} of SST-2 dev tokens",
        "details": {"unk_share": unk},
    }


def make_base(ctx: Ctx):
    """A random encoder of the parity preset, saved with the tokenizer as ctx.dirs["base"]."""
    import bertkit
    from bertkit.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(ctx.dirs["tok"])
    preset = ctx.sizes.parity_preset
    config = bertkit.BertConfig.preset(preset, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    ours = bertkit.BertModel(config).eval()
    with torch.no_grad():  # LayerNorm and biases off their 1/0 init, so a mis-mapped one shows
        for p in ours.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    ours.save_pretrained(fresh(ctx.work / "base"))
    tok.save_pretrained(ctx.work / "base")
    ctx.dirs["base"] = ctx.work / "base"
    return ours, tok


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1)


def check_parity(ctx: Ctx) -> dict:
    """bertkit's encoder against transformers' on the same ids: the model itself (hidden states)
    and the inference engine through bertkit.pipeline (mean-pooled vectors)."""
    import bertkit

    hf = quiet_transformers()
    ours, tok = make_base(ctx)
    base = ctx.dirs["base"]
    texts = read_sst2(ctx.data / "sst2/dev.tsv")[0][: ctx.sizes.parity_texts]
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    x = {k: enc[k].to(ctx.device) for k in ("input_ids", "attention_mask", "token_type_ids")}
    real, d = x["attention_mask"].bool(), {"texts": len(texts), "shape": list(enc["input_ids"].shape)}
    ours.to(ctx.device)
    with torch.inference_mode():
        ref = {}
        for impl in ("eager", "sdpa"):
            m, info = hf.BertModel.from_pretrained(base, attn_implementation=impl, output_loading_info=True)
            if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
                raise CheckFailed(f"transformers loaded the directory with {info}")
            ref[impl] = m.to(ctx.device).eval()
        h32 = {impl: m(**x).last_hidden_state for impl, m in ref.items()}
        a = ours(**x).last_hidden_state
        for impl, b in h32.items():
            d[f"fp32_max_abs_diff_vs_{impl}"] = float((a - b)[real].abs().max())
        pooled32 = mean_pool(h32["eager"], x["attention_mask"]).cpu()
        engine = bertkit.pipeline("feature-extraction", model=base, device=ctx.device, precision="fp32")
        d["fp32_max_abs_diff_engine_pooled"] = float((torch.from_numpy(engine(texts)) - pooled32).abs().max())
        b32 = h32["eager"][real]
        hf16 = ref["sdpa"].to(torch.bfloat16)(**x).last_hidden_state[real]
        bk16 = ours.to(torch.bfloat16)(**x).last_hidden_state[real]
        engine16 = bertkit.pipeline("feature-extraction", model=base, device=ctx.device, precision="bf16")
        d["bf16_cos_vs_hf_bf16"], d["bf16_cos_vs_fp32"] = mean_cos(bk16, hf16), mean_cos(bk16, b32)
        d["bf16_cos_engine_pooled_vs_fp32"] = mean_cos(torch.from_numpy(engine16(texts)), pooled32)
        d["hf_bf16_cos_vs_fp32"] = mean_cos(hf16, b32)
        if torch.device(ctx.device).type == "cuda":
            d |= check_fp16_varlen(base, ctx.device, texts, pooled32)
    worst = max(v for k, v in d.items() if k.startswith("fp32_max"))
    cos = min(v[0] for k, v in d.items() if k.startswith(("bf16_cos", "fp16_cos")))
    varlen_ok = d.get("varlen_attention_calls", -1) != 0  # -1: a torch without it
    line = f"{ctx.sizes.parity_preset} on {len(texts)} SST-2 sentences {tuple(real.shape)}: fp32 max|diff| "
    line += f"{worst:.1e} (≤ 1e-4; eager, sdpa, engine); bf16 mean cos ≥ {cos:.5f} (≥ 0.999; "
    line += f"transformers' own bf16 {d['hf_bf16_cos_vs_fp32'][0]:.5f})"
    if "varlen_attention_calls" in d:
        line += f"; fp16 engine, {d['varlen_attention_calls']} variable-length attention calls"
    ok = worst <= 1e-4 and cos >= 0.999 and varlen_ok
    return {"status": "pass" if ok else "fail", "line": line, "details": d}


def check_fp16_varlen(base, device, texts: list[str], pooled32: torch.Tensor) -> dict:
    """On CUDA: the engine in fp16 (what `auto` picks on GPUs without native bf16) against fp32,
    and whether its packed attention ran as variable-length flash attention (calls counted)."""
    import bertkit
    import bertkit.models.encoder as model_mod

    real, calls = model_mod.varlen_attn, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    if real is not None:
        model_mod.varlen_attn = counted
    try:
        engine = bertkit.pipeline("feature-extraction", model=base, device=device, precision="fp16")
        cos = mean_cos(torch.from_numpy(engine(texts)), pooled32)
    finally:
        model_mod.varlen_attn = real
    return {"fp16_cos_engine_pooled_vs_fp32": cos, "varlen_attention_calls": len(calls) if real else -1}

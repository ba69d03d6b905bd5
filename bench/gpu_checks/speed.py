"""The speed checks: bertkit's inference against transformers' BertModel, and bertkit's
fine-tuning against the Hugging Face Trainer."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .common import Ctx, mean_cos, quiet_transformers
from .data import long_passages, mean_tokens, read_sst2


def hf_embed(model, tok, texts: list[str], batch: int, device: str, order: list[int]) -> np.ndarray:
    """transformers as a user writes it: batches of `batch` texts in `order`, padded to the batch
    maximum, mean pooling over the real tokens."""
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(texts), batch):
            idx = order[s : s + batch]
            enc = tok(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=512, return_tensors="pt"
            ).to(device)
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out[idx] = ((h * m).sum(1) / m.sum(1)).float().cpu().numpy()
    return out


def best_of(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def check_speed_inference(ctx: Ctx) -> dict:
    import bertkit

    hf = quiet_transformers()
    s, base = ctx.sizes, ctx.dirs["base"]
    corpora = {
        "sst2": read_sst2(ctx.data / "sst2/train.tsv")[0][: s.speed_short],
        "gutenberg": long_passages(ctx.data / "text", s.speed_long),
    }
    pipe = bertkit.pipeline("feature-extraction", model=base, device=ctx.device)
    tok = hf.AutoTokenizer.from_pretrained(str(base))
    model = hf.BertModel.from_pretrained(
        str(base), attn_implementation="sdpa", dtype=torch.bfloat16, add_pooling_layer=False
    )
    model.to(ctx.device).eval()
    rows, worst = {}, 1.0
    for name, texts in corpora.items():
        n_tok = sum(len(i) for i in pipe.tokenizer(texts, truncation=True, max_length=512)["input_ids"])
        r = {"texts": len(texts), "tokens": n_tok}
        r["bertkit"], ours = best_of(lambda t=texts: pipe(t), s.repeats)
        as_given = list(range(len(texts)))
        by_len = sorted(as_given, key=lambda i, t=texts: len(t[i]))
        for label, order in (("hf_as_given", as_given), ("hf_sorted", by_len)):
            r[label], theirs = best_of(
                lambda t=texts, o=order: hf_embed(model, tok, t, s.speed_batch, ctx.device, o), s.repeats
            )
        r["cos_bertkit_vs_hf"] = mean_cos(torch.from_numpy(ours), torch.from_numpy(theirs))
        worst = min(worst, r["cos_bertkit_vs_hf"][0])
        r["ratio_vs_best_hf"] = min(r["hf_as_given"], r["hf_sorted"]) / r["bertkit"]
        rows[name] = r
    ctx.facts["speed_inference"] = rows
    parts = [
        f"{n}: bertkit {r['texts'] / r['bertkit']:,.0f} texts/s ({r['tokens'] / r['bertkit']:,.0f} tok/s), "
        f"transformers {r['texts'] / r['hf_as_given']:,.0f} as given / {r['texts'] / r['hf_sorted']:,.0f} "
        f"sorted = {r['ratio_vs_best_hf']:.2f}x"
        for n, r in rows.items()
    ]
    line = (
        f"{s.parity_preset}, bf16, batches of {s.speed_batch}: "
        + "; ".join(parts)
        + f"; mean cos ≥ {worst:.4f}"
    )
    return {"status": "pass" if worst >= 0.99 else "fail", "line": line, "details": rows}


def trainer_run(ctx: Ctx) -> dict:
    """The Hugging Face Trainer on finetune_classify's data and settings, from the same random model."""
    hf = quiet_transformers()
    s, init = ctx.sizes, str(ctx.dirs["init"])
    texts, gold = read_sst2(ctx.data / "sst2/train.tsv")
    labels = sorted(set(gold))  # bertkit's label order too
    tok = hf.AutoTokenizer.from_pretrained(init)
    enc = tok(texts, truncation=True, max_length=128)
    rows = [
        {"input_ids": i, "attention_mask": m, "token_type_ids": t, "labels": labels.index(y)}
        for i, m, t, y in zip(
            enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], gold, strict=True
        )
    ]
    model = hf.BertForSequenceClassification.from_pretrained(init, num_labels=len(labels))
    targs = hf.TrainingArguments(
        output_dir=str(ctx.work / "trainer"), per_device_train_batch_size=s.batch, learning_rate=s.lr,
        max_steps=s.steps, warmup_steps=math.ceil(0.1 * s.steps), weight_decay=0.01,
        bf16=ctx.args.precision == "bf16", seed=42, eval_strategy="no", save_strategy="no", report_to="none",
        logging_steps=max(1, s.steps // 10), disable_tqdm=True, use_cpu=not ctx.cuda,
    )  # fmt: skip
    trainer = hf.Trainer(
        model=model, args=targs, train_dataset=rows, data_collator=hf.DataCollatorWithPadding(tok)
    )
    trainer.remove_callback(hf.trainer_callback.PrinterCallback)  # its log lines, not ours
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = float(out.metrics["train_runtime"])
    ex_s = s.steps * s.batch / seconds
    return {
        "seconds": seconds,
        "examples_per_second": ex_s,
        "tokens_per_second": ex_s * mean_tokens(ctx, "classify"),
        "losses": losses,
    }


def check_speed_training(ctx: Ctx) -> dict:
    hf_run = trainer_run(ctx)
    ours = ctx.facts.get("finetune_classify")
    line = f"Trainer {hf_run['examples_per_second']:,.0f} ex/s ({hf_run['tokens_per_second']:,.0f} tok/s, "
    line += f"{hf_run['seconds']:.1f} s"
    line += f", loss {hf_run['losses'][0]:.3f} -> {hf_run['losses'][-1]:.3f})"
    if ours is None:
        return {
            "status": "skip",
            "line": line + "; finetune_classify gave no speed figures to compare",
            "details": {"trainer": hf_run},
        }
    ratio = ours["tokens_per_second"] / hf_run["tokens_per_second"]
    line = (
        f"bertkit {ours['examples_per_second']:,.0f} ex/s ({ours['tokens_per_second']:,.0f} tok/s, "
        f"{ours['seconds']} s) vs " + line
    )
    ctx.facts["speed_training"] = {"bertkit": ours, "trainer": hf_run, "ratio": ratio}
    return {"status": "pass", "line": line + f": {ratio:.2f}x", "details": ctx.facts["speed_training"]}

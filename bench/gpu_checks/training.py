"""The training checks, through the bertkit command line: init, finetune (classify, ner),
pretrain, and finetune under torchrun."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .common import CheckFailed, Ctx, bertkit_cmd, fresh, run_cli
from .data import mean_tokens, read_conll, read_sst2


def finetune_argv(ctx: Ctx, task: str, output: Path, steps: int) -> list:
    train, dev = {
        "classify": ("sst2/train.tsv", "sst2/dev.tsv"),
        "ner": ("conll2003/train.txt", "conll2003/valid.txt"),
    }[task]
    s = ctx.sizes
    return [
        "finetune", "--task", task, "--model", ctx.dirs["init"], "--train", ctx.data / train,
        "--dev", ctx.data / dev, "--output", output, "--device", ctx.device,
        "--precision", ctx.args.precision, "--max-steps", steps, "--batch-size", s.batch, "--lr", s.lr,
        "--max-length", 128, "--seed", 42, "--log-every", max(1, steps // 10), "--quiet",
    ]  # fmt: skip


def read_losses(log: Path) -> list[float]:
    rows = [json.loads(ln) for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [float(r["loss"]) for r in rows if "loss" in r]


def thirds(losses: list[float]) -> tuple[float, float]:
    """Means of the first and the last third of the logged training losses (each itself a mean
    over --log-every steps): the loss falls when the second is below the first."""
    if len(losses) < 2 or not all(map(math.isfinite, losses)):
        return float("nan"), float("nan")
    k = max(1, len(losses) // 3)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def loss_falls(losses: list[float]) -> bool:
    first, last = thirds(losses)
    return last < first


def check_init(ctx: Ctx) -> dict:
    out = fresh(ctx.work / "init")
    cmd = bertkit_cmd(
        ctx, "init", "--config", ctx.sizes.model_preset, "--tokenizer", ctx.dirs["tok"], "--output", out
    )
    stdout = run_cli(ctx, "init", cmd, 120)
    ctx.dirs["init"] = out
    return {"status": "pass", "line": stdout.strip().splitlines()[-1]}


def compare_classify(ctx: Ctx, model: Path) -> tuple[bool, str, dict]:
    import bertkit

    texts = read_sst2(ctx.data / "sst2/dev.tsv")[0][: ctx.sizes.compare_texts]
    cpu = bertkit.pipeline("text-classification", model=model, device="cpu", precision="fp32")(texts)
    dev = bertkit.pipeline("text-classification", model=model, device=ctx.device, precision="fp32")(texts)
    diff = max(
        abs(a["scores"][k] - b["scores"][k]) for a, b in zip(cpu, dev, strict=True) for k in a["scores"]
    )
    flips = [i for i, (a, b) in enumerate(zip(cpu, dev, strict=True)) if a["label"] != b["label"]]
    top2 = lambda r: sorted(r["scores"].values())[-2:]
    ties = [i for i in flips if top2(cpu[i])[1] - top2(cpu[i])[0] < 1e-4]
    ok = len(flips) == len(ties) and diff <= 1e-3
    line = (
        f"same label on {len(texts) - len(flips)}/{len(texts)} ({len(ties)} ties), max prob diff {diff:.1e}"
    )
    return ok, line, {"texts": len(texts), "flips": flips, "ties": ties, "max_prob_diff": diff}


def compare_ner(ctx: Ctx, model: Path) -> tuple[bool, str, dict]:
    import bertkit

    texts = [" ".join(w) for w in read_conll(ctx.data / "conll2003/valid.txt")[: ctx.sizes.compare_texts]]
    cpu = bertkit.pipeline("ner", model=model, device="cpu", precision="fp32")(texts)
    dev = bertkit.pipeline("ner", model=model, device=ctx.device, precision="fp32")(texts)
    key = lambda ents: [(e["text"], e["label"], e["start"], e["end"]) for e in ents]
    same = [i for i, (a, b) in enumerate(zip(cpu, dev, strict=True)) if key(a) == key(b)]
    diff = max(
        [abs(a["score"] - b["score"]) for i in same for a, b in zip(cpu[i], dev[i], strict=True)] or [0.0]
    )
    n_ents = sum(len(a) for a in cpu)
    ok = len(same) >= 0.995 * len(texts) and diff <= 1e-3
    line = (
        f"same entities in {len(same)}/{len(texts)} sentences ({n_ents} entities), max score diff {diff:.1e}"
    )
    return ok, line, {"texts": len(texts), "same": len(same), "entities": n_ents, "max_score_diff": diff}


def check_finetune(ctx: Ctx, task: str) -> dict:
    s, out = ctx.sizes, fresh(ctx.work / f"ft-{task}")
    run_cli(ctx, f"finetune_{task}", bertkit_cmd(ctx, *finetune_argv(ctx, task, out, s.steps)), 300)
    ctx.dirs[task] = out
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    losses, train = read_losses(out / "log.jsonl"), metrics["train"]
    ex_s = train["steps"] * s.batch / max(train["seconds"], 1e-9)
    speed = {"examples_per_second": ex_s, "tokens_per_second": ex_s * mean_tokens(ctx, task), **train}
    ctx.facts[f"finetune_{task}"] = speed | {"first_loss": losses[:1], "last_loss": losses[-1:]}
    agree, agree_line, agree_d = (compare_classify if task == "classify" else compare_ner)(ctx, out)
    score = metrics["dev"]["accuracy" if task == "classify" else "f1"]
    ok = loss_falls(losses) and train["steps"] == s.steps and agree
    first, last = thirds(losses)
    line = f"loss {first:.3f} -> {last:.3f} (first/last third of {len(losses)} logged); "
    line += f"{train['steps']} steps in "
    line += f"{train['seconds']} s = {ex_s:,.0f} ex/s, {speed['tokens_per_second']:,.0f} tok/s; dev "
    line += f"{'accuracy' if task == 'classify' else 'entity F1'} {score:.4f}; reloads; "
    line += f"CPU vs {ctx.device} fp32: {agree_line}"
    d = {"losses": losses, "metrics": metrics, "speed": speed, "cpu_vs_device": agree_d}
    return {"status": "pass" if ok else "fail", "line": line, "details": d}


def check_pretrain(ctx: Ctx) -> dict:
    s, out = ctx.sizes, fresh(ctx.work / "pretrain")
    cmd = bertkit_cmd(
        ctx, "pretrain", "--corpus", ctx.data / "text", "--tokenizer", ctx.dirs["tok"], "--output", out,
        "--config", s.model_preset, "--max-steps", s.pt_steps, "--batch-size", s.pt_batch,
        "--max-seq-length", s.pt_seq, "--device", ctx.device, "--precision", ctx.args.precision, "--quiet",
        "--save-every", s.pt_every, "--eval-every", s.pt_every, "--log-every", max(1, s.pt_steps // 10),
    )  # fmt: skip
    run_cli(ctx, "pretrain", cmd, 360)
    ctx.dirs["pretrain"] = out
    m = json.loads((out / "pretrain_metrics.json").read_text(encoding="utf-8"))
    losses = read_losses(out / "log.jsonl")
    ckpts = (
        sorted(p.name for p in (out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []
    )
    mlm = float(m.get("mlm_loss", float("nan")))
    ok = (
        m.get("steps") == s.pt_steps
        and math.isfinite(mlm)
        and loss_falls(losses)
        and m.get("tokens_per_second", 0) > 0
    )
    line = f"{m.get('steps')} steps of {s.pt_batch}x{s.pt_seq} in {m.get('train_seconds')} s = "
    first, last = thirds(losses)
    line += f"{m.get('tokens_per_second', 0):,} tok/s; loss {first:.3f} -> {last:.3f} (first/last third); "
    line += f"held-out mlm_loss {mlm:.3f}, mlm_accuracy {m.get('mlm_accuracy', float('nan')):.3f}; "
    line += f"checkpoints {', '.join(ckpts) or 'none'}"
    return {
        "status": "pass" if ok else "fail",
        "line": line,
        "details": {"metrics": m, "losses": losses, "checkpoints": ckpts},
    }


PROBE = """\
import os, torch, torch.distributed as dist
cuda = os.environ["GPU_CHECK_DEVICE"].startswith("cuda")
dist.init_process_group("nccl" if cuda else "gloo")
device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
t = torch.ones(8, device=device) * (dist.get_rank() + 1)
dist.all_reduce(t)
print(dist.get_backend(), dist.get_world_size(), float(t.sum()))
dist.destroy_process_group()
"""


def check_torchrun(ctx: Ctx) -> dict:
    """bertkit finetune under torchrun, one process. bertkit joins a process group only when
    WORLD_SIZE > 1, so the backend itself (nccl on a GPU) is probed by a separate all_reduce."""
    s, out = ctx.sizes, fresh(ctx.work / "ft-ddp")
    run_cli(
        ctx,
        "torchrun",
        bertkit_cmd(ctx, *finetune_argv(ctx, "classify", out, s.ddp_steps), torchrun=True),
        300,
    )
    missing = [f for f in ("config.json", "model.safetensors", "metrics.json") if not (out / f).is_file()]
    if missing:
        raise CheckFailed(f"exit 0 but the output lacks {', '.join(missing)}")
    train = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["train"]
    probe = ctx.work / "dist_probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    backend, world, total = run_cli(
        ctx, "torchrun_probe", [*head, str(probe)], 120, {"GPU_CHECK_DEVICE": ctx.device}
    ).split()[-3:]
    line = (
        f"finetune under torchrun --nproc_per_node 1: {train['steps']} steps in {train['seconds']} s, model "
    )
    line += f"written ({(out / 'model.safetensors').stat().st_size / 1e6:.0f} MB); {backend} all_reduce "
    line += f"under torchrun: {total} (world {world})"
    ok = train["steps"] == s.ddp_steps and backend == ("nccl" if ctx.cuda else "gloo") and float(total) == 8.0
    return {
        "status": "pass" if ok else "fail",
        "line": line,
        "details": {"train": train, "probe": [backend, total]},
    }

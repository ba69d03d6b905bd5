"""Pretraining from raw text: corpus → vocabulary → shards → masked-LM (+ next sentence) training
on the shared loop, with atomic checkpoints, exact resume and torch.distributed.

Data flow: `prepare` trains or loads the tokenizer and builds (or reuses) the token shards;
`pack_spans` cuts the training documents into spans once; each epoch's batches are rebuilt
from (seed, epoch, position) by `data.mlm`, so a resumed run sees exactly the batches it would
have seen. `--batch-size` is the global batch of one optimizer step, whatever the number of
processes: each of W ranks takes batch_size / (W × grad_accum) sequences per micro-batch, and
the masked-LM loss is divided by the global number of masked tokens, so 1 process and W
processes compute the same gradient.

Layout of the output directory:
    config.json, model.safetensors, tokenizer files     the final BertForPreTraining
    log.jsonl, tensorboard/, learning_curves.png        the training record
    pretrain_args.json                                  the run's settings (checked on --resume)
    data/                                               token shards and their manifest
    checkpoints/step-00001000/                          model, trainer_state.pt, data position
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.data.batching import IGNORE
from bertkit.data.mlm import (
    InstanceMaker,
    MaskingConfig,
    SpecialIds,
    WholeWords,
    collate,
    epoch_order,
    line_lengths,
    pack_spans,
)
from bertkit.errors import BertkitError
from bertkit.fileio import save_safetensors, write_json
from bertkit.models.config import PRESETS, BertConfig
from bertkit.models.heads import BertForPreTraining
from bertkit.runtime import Runtime, compute_init
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training import resume
from bertkit.training.loop import Checkpointing, Evaluation, TrainArgs, fit

if TYPE_CHECKING:
    from bertkit.data.shards import ShardedCorpus


def pretrain_defaults() -> TrainArgs:
    """The training settings pretraining starts from (fine-tuning's are `TrainArgs()`)."""
    return TrainArgs(epochs=1.0, batch_size=128, lr=5e-4, warmup=0.05, eval_every=500, keep_best=False)


@dataclass
class PretrainArgs:
    corpus: list[str]
    output: str
    train: TrainArgs = field(default_factory=pretrain_defaults)  # batch_size: sequences a step, all ranks
    tokenizer: str | None = None  # a tokenizer directory; None: train one (vocab_size)
    vocab_size: int = 30522
    cased: bool = False
    config: str = "mini"  # a preset name or a config.json path
    init_from: str | None = None  # continue pretraining a model directory
    max_seq_length: int = 128
    dropout: float | None = None  # hidden and attention dropout while pretraining; None: the config's
    init_range: float | None = None  # std of the initial weights of this run; None: the config's
    max_minutes: float | None = None
    save_every: int = 500
    keep_checkpoints: int = 2
    eval_sequences: int = 1024
    nsp: bool = False
    whole_word_mask: bool = False
    word_list: str | None = None  # words (one a line) kept whole when masking unspaced text
    mlm_probability: float = 0.15
    doc_mode: str = "file"
    heldout: float = 0.01
    workers: int | None = None
    segmenter: str | None = None  # raw text: word boundaries recorded in the shards (data.segment)
    fsdp: bool = False
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    # settings a resumed run must share with the run it resumes (and those of `train`)
    RESUME_KEYS = ("config", "max_seq_length", "nsp", "whole_word_mask", "word_list", "mlm_probability")
    RESUME_TRAIN_KEYS = ("batch_size", "grad_accum", "lr", "seed", "epochs", "max_steps")

    def settings(self) -> dict[str, Any]:
        """The run's settings, flat (pretrain_args.json)."""
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "train"}, **d["train"]}


# ---- preparation ------------------------------------------------------------------------------


def resolve_config(args: PretrainArgs, tok: Tokenizer) -> BertConfig:
    if args.init_from:
        return BertConfig.from_pretrained(args.init_from)
    if args.config in PRESETS:
        config = BertConfig.preset(args.config, vocab_size=tok.vocab_size)
    else:
        config = BertConfig.from_json_file(args.config)
    config.vocab_size, config.pad_token_id = tok.vocab_size, tok.pad_token_id
    return config


def prepare(args: PretrainArgs, dist: Runtime) -> tuple[Tokenizer, Path]:
    """The tokenizer (given, or trained into OUTPUT/tokenizer) and the shard directory (given,
    or built into OUTPUT/data; reused when its inputs are unchanged). Rank 0 does the work."""
    from bertkit.data.shards import build_shards

    out = Path(args.output)
    tok_dir = Path(args.tokenizer) if args.tokenizer else out / "tokenizer"
    given_shards = len(args.corpus) == 1 and (Path(args.corpus[0]) / "manifest.json").is_file()
    shard_dir = Path(args.corpus[0]) if given_shards else out / "data"
    if dist.main:
        if not args.tokenizer and not (tok_dir / "vocab.txt").is_file():
            from bertkit.tokenization.vocab import train_tokenizer

            print(f"training a WordPiece vocabulary of {args.vocab_size} tokens on the corpus")
            train_tokenizer(args.corpus, args.vocab_size, tok_dir, do_lower_case=not args.cased)
        if not given_shards:
            build_shards(
                args.corpus,
                tok_dir,
                shard_dir,
                workers=args.workers,
                heldout=args.heldout,
                doc_mode=args.doc_mode,
                segmenter=args.segmenter,
                progress=args.train.progress,
            )
    dist.barrier()
    return Tokenizer.from_pretrained(tok_dir), shard_dir


# ---- checkpoints ------------------------------------------------------------------------------


def checkpoints(output: Path) -> list[Path]:
    """Complete checkpoints of the run in `output`, oldest first."""
    return resume.checkpoints(output / "checkpoints")


def remove_partial_checkpoints(output: Path) -> list[Path]:
    return resume.remove_partial(output / "checkpoints")


def write_checkpoint(output: Path, model_state: dict, config: BertConfig, trainer: dict, keep: int) -> Path:
    """checkpoints/step-N, written whole or not at all (see `resume`)."""
    from bertkit.models.checkpoint import bertkit_to_hf

    def write_model(stage: Path) -> None:
        save_safetensors(bertkit_to_hf(model_state, "bert."), stage / "model.safetensors")
        config.architectures = ["BertForPreTraining"]
        config.save_pretrained(stage)

    return resume.write_checkpoint(output / "checkpoints", trainer, write_model, keep)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(bertkit-named model state, trainer state)."""
    from bertkit.models.checkpoint import ENCODER_PARTS, hf_to_bertkit, read_weights

    state, _ = read_weights(path)
    mapped, _ = hf_to_bertkit(state)
    model_state = {("bert." if k.startswith(ENCODER_PARTS) else "") + k: v for k, v in mapped.items()}
    return model_state, resume.read_trainer_state(path)


# ---- the run ----------------------------------------------------------------------------------


def _check_resume(args: PretrainArgs, out: Path) -> None:
    saved = out / "pretrain_args.json"
    if not saved.is_file():
        return
    old = json.loads(saved.read_text(encoding="utf-8"))
    now = args.settings()
    keys = (*PretrainArgs.RESUME_KEYS, *PretrainArgs.RESUME_TRAIN_KEYS)
    diff = [k for k in keys if k in old and old[k] != now[k]]
    if diff:
        k = diff[0]
        raise BertkitError(
            f"--resume with --{k.replace('_', '-')} {now[k]!r}, but the run used {old[k]!r}", saved
        )


def pretrain(args: PretrainArgs, rt: Runtime | None = None) -> dict[str, Any]:
    """Run (or resume) a pretraining job; returns the final held-out metrics. `rt`: the runtime
    (default: from the environment, joining torchrun's process group)."""
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        raise BertkitError(f"--dropout must be in [0, 1), not {args.dropout}")
    if args.init_range is not None and not 0.0 < args.init_range < 1.0:
        raise BertkitError(f"--init-range must be in (0, 1), not {args.init_range}")
    from bertkit.data.shards import ShardedCorpus

    dist = rt or compute_init()
    t = args.train
    out = Path(args.output)
    if args.resume:  # every rank checks, so that a refusal stops them all alike
        _check_resume(args, out)
    elif out.exists() and any(p.name not in ("data", "tokenizer") for p in out.iterdir()):
        raise BertkitError("output directory holds a run; pass --resume to continue it", out)
    dist.barrier()
    if dist.main:
        if args.resume:
            for p in remove_partial_checkpoints(out):
                print(f"removed an incomplete checkpoint left by an interrupted run: {p.name}")
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    tok, shard_dir = prepare(args, dist)
    special = SpecialIds.from_tokenizer(tok)
    config = resolve_config(args, tok)
    if args.max_seq_length > config.max_position_embeddings:
        raise BertkitError(
            f"--max-seq-length {args.max_seq_length} exceeds the model's "
            f"max_position_embeddings {config.max_position_embeddings}"
        )
    if config.vocab_size != tok.vocab_size:
        raise BertkitError(f"the model has {config.vocab_size} tokens, the tokenizer {tok.vocab_size}")
    per_rank, rem = divmod(t.batch_size, dist.world * t.grad_accum)
    if rem or per_rank == 0:
        raise BertkitError(
            f"--batch-size {t.batch_size} must be a multiple of processes × --grad-accum "
            f"({dist.world} × {t.grad_accum})"
        )

    train_docs = ShardedCorpus(shard_dir, "train")
    held_docs = ShardedCorpus(shard_dir, "heldout")
    budget = args.max_seq_length - (3 if args.nsp else 2)
    spans = pack_spans(line_lengths(train_docs), budget)
    masking = MaskingConfig(probability=args.mlm_probability, whole_word=args.whole_word_mask)
    cont = WholeWords(tok, _read_words(args.word_list)) if args.whole_word_mask else None
    maker = InstanceMaker(train_docs, spans, special, masking, args.nsp, cont, t.seed)
    held_spans = pack_spans(line_lengths(held_docs), budget)
    held_maker = InstanceMaker(held_docs, held_spans, special, masking, args.nsp and len(held_docs) > 1, cont)
    steps_per_epoch = len(spans) // t.batch_size  # optimizer steps
    if steps_per_epoch == 0:
        raise BertkitError(
            f"the corpus gives {len(spans)} sequences of {args.max_seq_length} tokens, fewer than "
            f"one batch of {t.batch_size}"
        )

    torch.manual_seed(t.seed)
    # A different dropout or initial scale applies to this run only: the saved config keeps the
    # model's own values, which are what fine-tuning should use (dropout, and the std of new heads).
    train_config = copy.deepcopy(config)
    if args.dropout is not None:
        train_config.hidden_dropout_prob = train_config.attention_probs_dropout_prob = args.dropout
    if args.init_range is not None:
        train_config.initializer_range = args.init_range
    model = BertForPreTraining(train_config)
    resume_state = None
    if args.resume and checkpoints(out):
        last = checkpoints(out)[-1]
        model_state, resume_state = load_checkpoint(last)
        model.load_state_dict(model_state)
        if dist.main:
            print(f"resuming from {last} (step {resume_state['step']})")
    elif args.init_from:
        model = BertForPreTraining.from_pretrained(args.init_from, config=train_config)
    if not args.nsp:  # no next-sentence task: the pooler and NSP head get no gradient (DDP needs this said)
        assert model.bert.pooler is not None  # BertForPreTraining's encoder has one (the NSP head's input)
        for param in [*model.nsp.parameters(), *model.bert.pooler.parameters()]:
            param.requires_grad_(False)
    model.to(dist.device)
    wrapped = _wrap(model, dist, args.fsdp)

    if dist.main:
        write_json(out / "pretrain_args.json", args.settings())
        print(
            f"{len(train_docs)} documents, {train_docs.num_tokens:,} tokens → {len(spans):,} sequences "
            f"of ≤ {args.max_seq_length} tokens; {steps_per_epoch} steps an epoch of {t.batch_size} "
            f"({dist.describe()})"
        )
        if args.whole_word_mask:
            print(f"whole-word masking: {_word_source(train_docs, args.word_list)}")

    targs = replace(t, keep_best=False, progress=t.progress and dist.main)
    first = resume_state
    micro = per_rank
    seen_tokens = 0  # real (unpadded) tokens this rank trained on in this session

    def batches(epoch: int):
        nonlocal first, seen_tokens
        skip = 0
        if first is not None and epoch == first["epoch"]:
            skip, first = first["epoch_step"], None
        order = epoch_order(len(spans), t.seed, epoch)
        for step in range(skip, steps_per_epoch):
            window = order[step * t.batch_size : (step + 1) * t.batch_size]
            mine = range(dist.rank * micro * t.grad_accum, (dist.rank + 1) * micro * t.grad_accum, micro)
            parts = [
                collate([maker.make(epoch, int(i)) for i in window[s : s + micro]], tok.pad_token_id)
                for s in mine
            ]
            seen_tokens += sum(int(p["attention_mask"].sum()) for p in parts)
            yield from _normalised(parts, dist, t.grad_accum)

    held = _held_out_batches(held_maker, args.eval_sequences, micro, tok.pad_token_id, dist)

    def evaluate(m) -> dict[str, float]:
        metrics = evaluate_mlm(m, held, dist)
        if args.fsdp:  # a forward without backward leaves FSDP's root gathered: shard it again
            from torch.distributed.fsdp import FSDPModule

            for mod in m.modules():
                if isinstance(mod, FSDPModule):
                    mod.reshard()
        return metrics

    def save(trainer_state: dict) -> None:
        model_state = _full_state(wrapped, model)
        if dist.main:
            trainer_state = {**trainer_state, "seed": t.seed}
            write_checkpoint(out, model_state, config, trainer_state, args.keep_checkpoints)
        dist.barrier()

    ck = Checkpointing(
        save=save,
        every=args.save_every,
        resume=resume_state,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
    )
    started = time.perf_counter()
    evaluation = Evaluation(evaluate, "mlm_accuracy", every_rank=True) if len(held_spans) else None
    log_dir = out if dist.main else None
    result = fit(
        wrapped, batches, steps_per_epoch * t.grad_accum, mlm_loss, targs, dist, evaluation, log_dir, ck
    )
    seconds = time.perf_counter() - started
    evals = [h for h in result.history if "dev_mlm_loss" in h]
    metrics = {k[4:]: v for k, v in evals[-1].items() if k.startswith("dev_")} if evals else {}
    if result.stopped_by in ("SIGTERM", "SIGINT"):
        if dist.main:
            print(f"stopped by {result.stopped_by} at step {result.steps}; resume with --resume")
        raise KeyboardInterrupt
    final = _full_state(wrapped, model)
    if dist.main:
        plain = BertForPreTraining(config)  # under FSDP `model` holds shards; save a whole copy
        plain.load_state_dict(final)
        plain.save_pretrained(out)
        tok.save_pretrained(out)
        from bertkit.evaluation.report import plot_learning_curves

        plot_learning_curves(out / "learning_curves.png", _read_history(out / "log.jsonl"))
        rate = seen_tokens * dist.world / max(result.seconds, 1e-9)
        summary: dict[str, Any] = {
            "steps": result.steps,
            "seconds": round(seconds, 1),
            "train_seconds": round(result.seconds, 1),
        }
        summary |= {"tokens_per_second": round(rate), "stopped_by": result.stopped_by, **metrics}
        if args.whole_word_mask:
            summary["whole_words"] = _word_source(train_docs, args.word_list)
        write_json(out / "pretrain_metrics.json", summary)
        print(f"pretrained {result.steps} steps in {seconds:.0f} s; held-out {metrics}; model in {out}")
    if rt is None:  # the process group this call joined
        dist.close()
    return metrics


def _read_words(path: str | None) -> list[str]:
    if path is None:
        return []
    from bertkit.tokenization.text import iter_text_lines

    return [w for w in iter_text_lines(path, strip_gutenberg=False) if w.strip()]


def _normalised(parts: list[dict], dist: Runtime, accum: int):
    """Attach to each micro-batch the divisor that turns its summed masked-LM loss into its share
    of the global token mean: all masked tokens of the step, over (processes × accumulation)."""
    count = torch.tensor([float(sum(int((p["labels"] != IGNORE).sum()) for p in parts))])
    if dist.world > 1:
        count = count.to(dist.device)
        torch.distributed.all_reduce(count)
    norm = max(count.item(), 1.0) / (dist.world * accum)
    for p in parts:
        p["mlm_norm"] = norm
        yield p


def mlm_loss(model, batch: dict) -> torch.Tensor:
    """Masked-LM cross-entropy, computed only at the masked positions (sparse), summed and
    divided by `mlm_norm` (see `_normalised`); plus the next-sentence loss when labelled."""
    labels = batch["labels"]
    masked = labels != IGNORE
    out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], masked_positions=masked)
    loss = F.cross_entropy(out.prediction_logits.float(), labels[masked], reduction="sum") / batch["mlm_norm"]
    if "next_sentence_label" in batch:
        loss = loss + F.cross_entropy(out.seq_relationship_logits.float(), batch["next_sentence_label"])
    return loss


def _held_out_batches(maker: InstanceMaker, n: int, micro: int, pad: int, dist: Runtime) -> list[dict]:
    """A fixed held-out set (epoch 0's masking), split across ranks."""
    picks = np.arange(min(n, len(maker.spans)))[dist.rank :: dist.world]
    return [
        collate([maker.make(0, int(i)) for i in picks[s : s + micro]], pad)
        for s in range(0, len(picks), micro)
    ]


def evaluate_mlm(model, batches: list[dict], dist: Runtime) -> dict[str, float]:
    """Held-out masked-LM loss (per masked token), accuracy, and next-sentence accuracy."""
    sums = torch.zeros(5, dtype=torch.float64)  # loss, correct, masked tokens, nsp correct, nsp count
    for batch in batches:
        batch = {k: v.to(dist.device) for k, v in batch.items()}
        labels = batch["labels"]
        masked = labels != IGNORE
        out = model(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], masked_positions=masked
        )
        logits, gold = out.prediction_logits.float(), labels[masked]
        sums[0] += F.cross_entropy(logits, gold, reduction="sum").item()
        sums[1] += (logits.argmax(-1) == gold).sum().item()
        sums[2] += len(gold)
        if "next_sentence_label" in batch:
            sums[3] += (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
            sums[4] += len(batch["next_sentence_label"])
    if dist.world > 1:
        sums = sums.to(dist.device)
        torch.distributed.all_reduce(sums)
        sums = sums.cpu()
    metrics = {
        "mlm_loss": (sums[0] / sums[2].clamp(min=1)).item(),
        "mlm_accuracy": (sums[1] / sums[2].clamp(min=1)).item(),
    }
    if sums[4] > 0:
        metrics["nsp_accuracy"] = (sums[3] / sums[4]).item()
    metrics["mlm_perplexity"] = math.exp(min(metrics["mlm_loss"], 50.0))
    return metrics


def _word_source(docs: ShardedCorpus, word_list: str | None) -> str:
    """What whole-word masking takes a word to be, in words, for the log."""
    found = ["WordPiece ## pieces"]
    if docs.segmenter:
        found.append(f"the shards' {docs.segmenter} word boundaries")
    if word_list:
        found.append(f"the words of {word_list}")
    if len(found) == 1:
        found.append("each CJK character alone (build the shards with --segmenter for Chinese words)")
    return ", ".join(found)


def _wrap(model: BertForPreTraining, dist: Runtime, fsdp: bool) -> torch.nn.Module:
    """DDP across processes, or FSDP2 (`fully_shard` each layer, then the whole) with --fsdp."""
    if dist.world == 1 and not fsdp:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        if dist.world == 1 and not torch.distributed.is_initialized():
            raise BertkitError("--fsdp needs torch.distributed: run under torchrun")
        for layer in model.bert.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _full_state(wrapped: torch.nn.Module, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state on CPU (gathered from every rank under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if wrapped is model and not torch.distributed.is_initialized():
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Full and offloaded: plain CPU tensors, not the DTensor/ShardedTensor the return type allows.
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return cast("dict[str, torch.Tensor]", full)


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

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
    config.json, model.safetensors, tokenizer files     the final BertForPreTraining (RoBERTa: ForMaskedLM)
    log.jsonl, tensorboard/, learning_curves.png        the training record
    pretrain_args.json                                  the run's settings (checked on --resume)
    data/                                               token shards and their manifest
    checkpoints/step-00001000/                          model, trainer_state.pt, data position
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bertkit.data.shards import build_shards
from bertkit.errors import BertkitError
from bertkit.fileio import save_safetensors, write_json
from bertkit.models.config import BertConfig, preset_names
from bertkit.models.heads import BertForMaskedLM, BertForPreTraining, pretraining_class
from bertkit.runtime import Runtime, local_runtime
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.tokenization.vocab import train_tokenizer
from bertkit.training import resume
from bertkit.training.loop import Checkpointing, Evaluation, TrainArgs, TrainResult, fit
from bertkit.training.masked_lm import Batches, Corpus, evaluate_mlm, held_out_batches, mlm_loss, word_source
from bertkit.training.pretrain_args import PretrainArgs
from bertkit.training.run import checkpoint_saver, full_state, resuming, stop_if_signalled, wrap

# ---- preparation ------------------------------------------------------------------------------


def resolve_config(args: PretrainArgs, tok: Tokenizer) -> BertConfig:
    if args.init_from:
        return BertConfig.from_pretrained(args.init_from)
    if args.config in preset_names():
        config = BertConfig.preset(args.config, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id)
    else:
        config = BertConfig.from_json_file(args.config)
    config.vocab_size, config.pad_token_id = tok.vocab_size, tok.pad_token_id
    return config


def prepare(args: PretrainArgs, dist: Runtime) -> tuple[Tokenizer, Path]:
    """The tokenizer (given, or trained into OUTPUT/tokenizer) and the shard directory (given,
    or built into OUTPUT/data; reused when its inputs are unchanged). Rank 0 does the work."""
    out = Path(args.output)
    tok_dir = Path(args.tokenizer) if args.tokenizer else out / "tokenizer"
    given_shards = len(args.corpus) == 1 and (Path(args.corpus[0]) / "manifest.json").is_file()
    shard_dir = Path(args.corpus[0]) if given_shards else out / "data"
    if dist.main:
        if not args.tokenizer and not (tok_dir / "tokenizer.json").is_file():
            v = args.vocab
            if v.model_type == "wordpiece" and _family_of(args) != "bert":  # RoBERTa's recipe
                v = replace(v, model_type="bpe")
            print(f"training a {v.model_type} vocabulary of {v.vocab_size} tokens on the corpus")
            train_tokenizer(args.corpus, v.vocab_size, tok_dir, v.lowercase, v.min_frequency,
                            v.limit_alphabet, alphabet_files=v.alphabet_files,
                            model_type=v.model_type)  # fmt: skip
        if not given_shards:
            build_shards(args.corpus, tok_dir, shard_dir, replace(args.shards, progress=args.train.progress))
    dist.barrier()
    return Tokenizer.from_pretrained(tok_dir), shard_dir


# ---- checkpoints ------------------------------------------------------------------------------


def checkpoints(output: Path) -> list[Path]:
    """Complete checkpoints of the run in `output`, oldest first."""
    return resume.checkpoints(output / "checkpoints")


def remove_partial_checkpoints(output: Path) -> list[Path]:
    return resume.remove_partial(output / "checkpoints")


def model_writer(model_state: dict, config: BertConfig) -> Callable[[Path], None]:
    """What writes a checkpoint's model: the (gathered) BertForPreTraining (or, for a family
    without next-sentence prediction, BertForMaskedLM) state under Hugging Face names, and its
    config."""
    from bertkit.models.checkpoint import bertkit_to_hf

    def write_model(stage: Path) -> None:
        save_safetensors(bertkit_to_hf(model_state, config.family), stage / "model.safetensors")
        config.architectures = [
            config.family.architecture(pretraining_class(config).__name__.removeprefix("Bert"))
        ]
        config.save_pretrained(stage)

    return write_model


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(bertkit-named model state, trainer state)."""
    from bertkit.models.checkpoint import ENCODER_PARTS, hf_to_bertkit, read_weights

    state, _ = read_weights(path)
    mapped, _ = hf_to_bertkit(state, BertConfig.from_pretrained(path).family)
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
    (default: a world of one on the environment's device; `bertkit pretrain` joins torchrun's
    process group and passes its runtime, as every training command does)."""
    _check_args(args)
    rt = rt or local_runtime()
    out = _open_output(args, rt)
    tok, shard_dir = prepare(args, rt)  # check → prepare data
    config = _model_config(args, tok)
    micro = _micro_batch(args.train, rt)
    data = Corpus.open(args, tok, shard_dir)
    model, resume_state = _build_model(args, config, out, rt)  # build the model
    wrapped = wrap(model.to(rt.device), rt, args.fsdp)
    if rt.main:
        write_json(out / "pretrain_args.json", args.settings())
        print(data.describe(args, rt))
    batches = Batches(data, args.train, micro, tok.pad_token_id, rt)
    held = held_out_batches(data.held_maker, args.eval_sequences, micro, tok.pad_token_id, rt)
    evaluation = Evaluation(_evaluator(held, rt, args.fsdp), "mlm_accuracy", every_rank=True)

    def gather() -> Callable[[Path], None]:  # on every rank: the whole model's state (FSDP gathers)
        return model_writer(full_state(wrapped, model), config)

    record = {"seed": args.train.seed}
    save = checkpoint_saver(out / "checkpoints", args.keep_checkpoints, rt, record, gather=gather)
    max_seconds = args.max_minutes * 60 if args.max_minutes else None
    ck = Checkpointing(save=save, every=args.save_every, resume=resume_state, max_seconds=max_seconds)
    targs = replace(args.train, keep_best=False, progress=args.train.progress and rt.main)
    started = time.perf_counter()
    steps = data.steps_per_epoch * args.train.grad_accum
    log_dir = out if rt.main else None
    epochs = resuming(batches, resume_state, args.train)
    result = fit(wrapped, epochs, steps, mlm_loss, targs, rt, evaluation if data.held else None, log_dir, ck)
    seconds = time.perf_counter() - started
    stop_if_signalled(result, rt)
    evals = [h for h in result.history if "dev_mlm_loss" in h]
    metrics = {k[4:]: v for k, v in evals[-1].items() if k.startswith("dev_")} if evals else {}
    final = full_state(wrapped, model)  # on every rank (FSDP gathers)
    if rt.main:  # write
        rate = batches.seen_tokens * rt.world / max(result.seconds, 1e-9)
        _write_output(out, config, final, tok, result, seconds, rate, metrics, args, data)
    return metrics


def _family_of(args: PretrainArgs) -> str:
    """The model_type a preset names (bert for a config file or --init-from: read later)."""
    if args.init_from or args.config not in preset_names():
        return "bert"
    return BertConfig.preset(args.config).model_type


def _check_args(args: PretrainArgs) -> None:
    if args.nsp and _family_of(args) != "bert":
        raise BertkitError(f"--nsp: {args.config} pretrains masked-LM alone (next sentence is BERT's)")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        raise BertkitError(f"--dropout must be in [0, 1), not {args.dropout}")
    if args.init_range is not None and not 0.0 < args.init_range < 1.0:
        raise BertkitError(f"--init-range must be in (0, 1), not {args.init_range}")


def _open_output(args: PretrainArgs, rt: Runtime) -> Path:
    """The output directory, checked (a run there needs --resume; a resumed run's settings must
    match) and ready; what an interrupted run left of a checkpoint removed."""
    out = Path(args.output)
    if args.resume:  # every rank checks, so that a refusal stops them all alike
        _check_resume(args, out)
    elif out.exists() and any(p.name not in ("data", "tokenizer") for p in out.iterdir()):
        raise BertkitError("output directory holds a run; pass --resume to continue it", out)
    rt.barrier()
    if rt.main:
        if args.resume:
            for p in remove_partial_checkpoints(out):
                print(f"removed an incomplete checkpoint left by an interrupted run: {p.name}")
        out.mkdir(parents=True, exist_ok=True)
    rt.barrier()
    return out


def _model_config(args: PretrainArgs, tok: Tokenizer) -> BertConfig:
    config = resolve_config(args, tok)
    if args.max_seq_length > config.max_length:
        raise BertkitError(
            f"--max-seq-length {args.max_seq_length} exceeds the model's {config.max_length} positions "
            f"(max_position_embeddings {config.max_position_embeddings})"
        )
    if config.vocab_size != tok.vocab_size:
        raise BertkitError(f"the model has {config.vocab_size} tokens, the tokenizer {tok.vocab_size}")
    return config


def _micro_batch(t: TrainArgs, rt: Runtime) -> int:
    """Sequences a rank takes a micro-batch: the global batch over processes × accumulation."""
    per_rank, rem = divmod(t.batch_size, rt.world * t.grad_accum)
    if rem or per_rank == 0:
        raise BertkitError(
            f"--batch-size {t.batch_size} must be a multiple of processes × --grad-accum "
            f"({rt.world} × {t.grad_accum})"
        )
    return per_rank


def _build_model(
    args: PretrainArgs, config: BertConfig, out: Path, rt: Runtime
) -> tuple[BertForPreTraining | BertForMaskedLM, dict | None]:
    """The model to train (new, from --init-from, or the last checkpoint's) and, when resuming,
    its trainer state. A different dropout or initial scale applies to this run only: the saved
    config keeps the model's own values, which are what fine-tuning should use."""
    torch.manual_seed(args.train.seed)
    train_config = copy.deepcopy(config)
    if args.dropout is not None:
        train_config.hidden_dropout_prob = train_config.attention_probs_dropout_prob = args.dropout
    if args.init_range is not None:
        train_config.initializer_range = args.init_range
    model = pretraining_class(train_config)(train_config)
    resume_state = None
    if args.resume and checkpoints(out):
        last = checkpoints(out)[-1]
        model_state, resume_state = load_checkpoint(last)
        model.load_state_dict(model_state)
        if rt.main:
            print(f"resuming from {last} (step {resume_state['step']})")
    elif args.init_from:
        model = pretraining_class(train_config).from_pretrained(args.init_from, config=train_config)
    if not args.nsp and isinstance(model, BertForPreTraining):
        # no next-sentence task: the pooler and NSP head get no gradient (DDP needs this said)
        assert model.bert.pooler is not None  # BertForPreTraining's encoder has one (the NSP head's input)
        for param in [*model.nsp.parameters(), *model.bert.pooler.parameters()]:
            param.requires_grad_(False)
    return model, resume_state


def _evaluator(held: list[dict], rt: Runtime, fsdp: bool) -> Callable[[torch.nn.Module], dict[str, float]]:
    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        metrics = evaluate_mlm(m, held, rt)
        if fsdp:  # a forward without backward leaves FSDP's root gathered: shard it again
            from torch.distributed.fsdp import FSDPModule

            for mod in m.modules():
                if isinstance(mod, FSDPModule):
                    mod.reshard()
        return metrics

    return evaluate


def _write_output(
    out: Path,
    config: BertConfig,
    state: dict[str, torch.Tensor],
    tok: Tokenizer,
    result: TrainResult,
    seconds: float,
    rate: float,
    metrics: dict[str, float],
    args: PretrainArgs,
    data: Corpus,
) -> None:
    """The final model (a whole copy: under FSDP the trained one holds shards), tokenizer,
    learning curves and pretrain_metrics.json."""
    plain = pretraining_class(config)(config)
    plain.load_state_dict(state)
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    from bertkit.evaluation.report import plot_learning_curves

    plot_learning_curves(out / "learning_curves.png", _read_history(out / "log.jsonl"))
    summary: dict[str, Any] = {"steps": result.steps, "seconds": round(seconds, 1)}
    summary |= {"train_seconds": round(result.seconds, 1), "tokens_per_second": round(rate)}
    summary |= {"stopped_by": result.stopped_by, **metrics}
    if args.whole_word_mask:
        summary["whole_words"] = word_source(data.train_docs, args.word_list, data.words)
    write_json(out / "pretrain_metrics.json", summary)
    print(f"pretrained {result.steps} steps in {seconds:.0f} s; held-out {metrics}; model in {out}")


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

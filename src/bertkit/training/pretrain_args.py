"""Pretraining's settings: `PretrainArgs` (each field a `bertkit pretrain` flag) and the training
settings pretraining starts from. Their own module, so that the masked-LM data (`masked_lm`)
and the run (`pretrain`) both read them without importing each other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bertkit.data.shards import ShardOptions
from bertkit.models.config import DEFAULT_PRESET, PRESETS
from bertkit.options import option
from bertkit.tokenization.vocab import VocabOptions
from bertkit.training.loop import TrainArgs


def pretrain_defaults() -> TrainArgs:
    """The training settings pretraining starts from (fine-tuning's are `TrainArgs()`)."""
    return TrainArgs(epochs=1.0, batch_size=128, lr=5e-4, warmup=0.05, eval_every=500, keep_best=False)


@dataclass
class PretrainArgs:
    corpus: list[str]
    output: str
    train: TrainArgs = field(default_factory=pretrain_defaults)  # batch_size: sequences a step, all ranks
    tokenizer: str | None = option(None, help="tokenizer directory (default: train one on the corpus)")
    vocab: VocabOptions = field(default_factory=VocabOptions)  # a vocabulary trained on the corpus
    config: str = option(
        DEFAULT_PRESET,
        help=f"preset ({', '.join(PRESETS)}; roberta-SIZE: RoBERTa's recipe, a byte-level BPE "
        "vocabulary, masked-LM alone) or config.json",
    )
    init_from: str | None = option(None, help="continue pretraining this model directory")
    max_seq_length: int = option(128, help="tokens per sequence (default {default})")
    dropout: float | None = option(
        None,
        help="hidden and attention dropout while pretraining (default: the config's, 0.1); e.g. 0 for "
        "short runs. The saved config keeps its own values for fine-tuning",
    )
    init_range: float | None = option(
        None,
        help="std of the random initial weights of this run (default: the config's initializer_range, "
        "0.02); the saved config keeps its own value, the std of heads fine-tuning adds",
    )
    max_minutes: float | None = option(None, help="stop (and checkpoint) after this training time")
    save_every: int = option(500, help="checkpoint every N steps ({default})")
    keep_checkpoints: int = option(2, help="checkpoints kept (default {default})")
    eval_sequences: int = option(1024, help="held-out sequences evaluated")
    nsp: bool = option(False, help="also train next-sentence prediction")
    whole_word_mask: bool = option(
        False,
        help="mask whole words (WordPiece ## pieces with the piece before; BPE pieces without Ġ likewise)",
    )
    word_list: str | None = option(
        None, help="--whole-word-mask: a word list (one a line); their characters mask together"
    )
    mlm_probability: float = option(0.15, help="share of tokens predicted")
    shards: ShardOptions = field(default_factory=ShardOptions)  # raw text: how it becomes shards
    fsdp: bool = option(False, help="shard parameters with FSDP (under torchrun)")
    resume: bool = option(False, help="continue from the last checkpoint in --output")
    extra: dict[str, Any] = field(default_factory=dict)

    # settings a resumed run must share with the run it resumes (and those of `train`)
    RESUME_KEYS = ("config", "max_seq_length", "nsp", "whole_word_mask", "word_list", "mlm_probability")
    RESUME_TRAIN_KEYS = ("batch_size", "grad_accum", "lr", "seed", "epochs", "max_steps")

    def settings(self) -> dict[str, Any]:
        """The run's settings, flat (pretrain_args.json)."""
        d = asdict(self)
        shards = {k: v for k, v in d["shards"].items() if k != "progress"}
        own = {k: v for k, v in d.items() if k not in ("train", "shards", "vocab")}
        return {**own, **d["vocab"], **shards, **d["train"]}

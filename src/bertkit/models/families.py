"""The BERT family: each member a small declared difference on the one encoder.

A `Family` says how a checkpoint's `model_type` departs from BERT: where its position ids
start, whether it has token types, a pooler or an embedding projection, which sequence-
classification head it uses, the activation its masked-LM head fixes, and the names its
config.json gives the fields. The weight names live in `checkpoint.RENAMES`, one table a family.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bertkit.errors import BertkitError

# The sequence-classification heads of the family (transformers' layouts):
#   pooled          dropout + linear on the pooler's tanh([CLS]) vector (BertForSequenceClassification)
#   cls-tanh        dropout, dense, tanh, dropout, out_proj on the first token (RobertaClassificationHead)
#   cls-gelu        the same with GELU (ElectraClassificationHead)
#   pre-classifier  pre_classifier, ReLU, dropout, classifier on the first token (DistilBERT)
CLASSIFIERS = ("pooled", "cls-tanh", "cls-gelu", "pre-classifier")


@dataclass(frozen=True)
class Family:
    model_type: str  # config.json's model_type
    class_prefix: str  # transformers' class names: f"{class_prefix}ForSequenceClassification"
    base: str  # the attribute holding the encoder in transformers' head models ("bert.", ...)
    names: str  # the weight-name table in checkpoint.RENAMES
    positions_after_padding: bool = False  # RoBERTa: real tokens count from pad_token_id + 1
    token_types: bool = True  # DistilBERT has no token-type embeddings
    pooler: bool = True  # the base model's dense + tanh on [CLS]
    classifier: str = "pooled"
    mlm_act: str | None = None  # the masked-LM head's activation where the family fixes it
    nsp: bool = False  # a next-sentence head (BERT's pretraining)
    # config.json field names where the family's differ from BERT's (ours -> theirs), and
    # BERT fields the family's config has no place for (not written)
    config_names: dict[str, str] = field(default_factory=dict)
    config_absent: tuple[str, ...] = ()
    # what a config.json of the family leaves out means (transformers' defaults)
    defaults: dict[str, object] = field(default_factory=dict)
    # a new model of the family (`roberta-mini`): its config fields beside the size; None: the
    # family is loaded and fine-tuned, not offered as a preset
    new_model: dict[str, object] | None = None

    def architecture(self, head: str) -> str:
        """transformers' class name for one of bertkit's heads ("ForMaskedLM", "Model", ...)."""
        return self.class_prefix + head


_ROBERTA = dict(
    base="roberta.",
    names="roberta",
    positions_after_padding=True,
    classifier="cls-tanh",
    mlm_act="gelu",
    defaults={"pad_token_id": 1},
)
_DISTILBERT_NAMES = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "intermediate_size": "hidden_dim",
    "hidden_act": "activation",
    "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "classifier_dropout": "seq_classif_dropout",
}

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("bert", "Bert", "bert.", "bert", nsp=True, new_model={}),
        Family("roberta", "Roberta", **_ROBERTA, new_model={"type_vocab_size": 1, "layer_norm_eps": 1e-5}),  # type: ignore[arg-type]
        Family("xlm-roberta", "XLMRoberta", **_ROBERTA),  # type: ignore[arg-type]
        Family("camembert", "Camembert", **_ROBERTA),  # type: ignore[arg-type]
        Family(
            "distilbert",
            "DistilBert",
            "distilbert.",
            "distilbert",
            token_types=False,
            pooler=False,
            classifier="pre-classifier",
            config_names=_DISTILBERT_NAMES,
            config_absent=("type_vocab_size", "layer_norm_eps", "position_embedding_type", "embedding_size"),
            defaults={"hidden_size": 768, "num_hidden_layers": 6, "classifier_dropout": 0.2},
        ),
        Family(
            "electra", "Electra", "electra.", "electra", pooler=False, classifier="cls-gelu", mlm_act="gelu"
        ),
    )
}

# Families people ask for that are not BERT with small deltas (another attention or layout).
NOT_YET = {
    "deberta": "disentangled relative-position attention",
    "deberta-v2": "disentangled relative-position attention",
    "modernbert": "rotary positions, pre-LayerNorm, local/global attention",
    "albert": "cross-layer parameter sharing",
    "xlnet": "permutation language modelling, two-stream attention",
}


def family(model_type: str, source: str | None = None) -> Family:
    """The family a config's model_type names; one line naming the supported ones otherwise."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    where = f"{source}: " if source else ""
    why = f" ({NOT_YET[model_type]}: not supported yet)" if model_type in NOT_YET else ""
    raise BertkitError(
        f"{where}model_type {model_type!r} is not a supported model family{why}; "
        f"supported: {', '.join(FAMILIES)}"
    )

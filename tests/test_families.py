"""Every BERT-family checkpoint, output for output with `transformers`, both ways.

For RoBERTa, XLM-RoBERTa, CamemBERT, DistilBERT and ELECTRA, a small random model of every head
transformers has for the family is built by transformers, saved and loaded by bertkit (through
`load_model`, which reads `architectures`), and one built by bertkit is saved and loaded by
transformers' Auto classes: outputs within 1e-5 (fp32), every weight used, none missing.
"""

from __future__ import annotations

import logging

import pytest
import torch

import bertkit
from bertkit import BertConfig
from bertkit.errors import BertkitError
from bertkit.models.heads import load_model

TOL = 1e-5
VOCAB = 99
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

# (transformers config class, its keyword arguments): small, with every dimension distinct so a
# transposed or mis-mapped tensor cannot load
SIZE = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48
)
FAMILIES = {
    "roberta": (
        "RobertaConfig",
        dict(SIZE, max_position_embeddings=40, type_vocab_size=1, layer_norm_eps=1e-5),
    ),
    "xlm-roberta": ("XLMRobertaConfig", dict(SIZE, max_position_embeddings=40, type_vocab_size=1)),
    "camembert": ("CamembertConfig", dict(SIZE, max_position_embeddings=40, type_vocab_size=1)),
    "distilbert": (
        "DistilBertConfig",
        dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=40),
    ),
    "electra": ("ElectraConfig", dict(SIZE, embedding_size=16, max_position_embeddings=40)),
}
# transformers' head classes per family (ELECTRA's masked-LM is its generator)
HEADS = [
    "Model",
    "ForMaskedLM",
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
]
CASES = [(f, h) for f in FAMILIES for h in HEADS]
NAMES = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")


def _hf_config(hf, family: str, labels: list[str] | None, regression: bool = False):
    cls_name, kw = FAMILIES[family]
    config = getattr(hf, cls_name)(**kw)
    if labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {v: k for k, v in enumerate(labels)}
    if regression:
        config.num_labels, config.problem_type = 1, "regression"
    return config


def _hf_class(hf, config, head: str):
    return getattr(hf, f"AutoModel{head.removeprefix('Model')}") if head != "Model" else hf.AutoModel


def _inputs(pad: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 13:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = pad  # as a tokenizer pads: RoBERTa's positions count the real tokens
    return {"input_ids": ids, "attention_mask": mask}


def _compare(ours, ref, pad: int, types: bool) -> float:
    x = _inputs(pad)
    given = dict(x)
    if types:  # two segments where the family has two token types
        given["token_type_ids"] = torch.zeros_like(x["input_ids"])
        given["token_type_ids"][:, 10:] = 1
    with torch.inference_mode():
        out = ours(x["input_ids"], x["attention_mask"], given.get("token_type_ids"))
        a = {n: getattr(out, n) for n in NAMES if getattr(out, n, None) is not None}
        b_out = ref(**given)
        b = {n: getattr(b_out, n) for n in NAMES if getattr(b_out, n, None) is not None}
    assert a and set(a) == set(b), (set(a), set(b))
    real = x["attention_mask"].bool()
    worst = 0.0
    for name, t in a.items():
        d = (t - b[name]).abs()
        if d.dim() >= 2 and d.shape[:2] == real.shape:  # per-token outputs: padded rows are don't-care
            d = d[real]
        worst = max(worst, d.max().item())
    return worst


def _two_types(config) -> bool:
    return getattr(config, "type_vocab_size", 0) == 2


@pytest.mark.parametrize("family,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_transformers_to_bertkit(family, head, hf, tmp_path, randomize):
    labels = LABELS if head in ("ForSequenceClassification", "ForTokenClassification") else None
    config = _hf_config(hf, family, labels)
    ref = _hf_class(hf, config, head).from_config(config)
    randomize(ref, 2, 0.1)
    ref.tie_weights()
    ref.eval().save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert type(ours).__name__ == f"Bert{head}", type(ours).__name__
    _, info = type(ours).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    worst = _compare(ours, ref, config.pad_token_id, _two_types(config))
    print(f"\ntransformers -> bertkit {family} {head}: max|diff| {worst:.2e}")
    assert worst <= TOL
    if labels:
        assert ours.config.id2label == dict(enumerate(labels))


@pytest.mark.parametrize("family,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_bertkit_to_transformers(family, head, hf, tmp_path, randomize):
    config = BertConfig.from_dict(_hf_config(hf, family, None).to_dict())
    assert config.model_type == family
    if head in ("ForSequenceClassification", "ForTokenClassification"):
        config.set_labels(LABELS)
    ours = getattr(bertkit, f"Bert{head}")(config)
    randomize(ours, 1, 0.1)
    ours.eval().save_pretrained(tmp_path)
    hf_cls = _hf_class(hf, None, head)
    ref, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert type(ref).__name__ == config.family.architecture(head)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    worst = _compare(ours, ref.eval(), config.pad_token_id, _two_types(ref.config))
    print(f"\nbertkit -> transformers {family} {head}: max|diff| {worst:.2e}")
    assert worst <= TOL


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_regression_and_pairs_heads(family, hf, tmp_path, randomize):
    """A one-score (regression) sequence head and sentence pairs: the same scores as transformers."""
    config = _hf_config(hf, family, None, regression=True)
    ref = hf.AutoModelForSequenceClassification.from_config(config)
    randomize(ref, 3, 0.1)
    ref.eval().save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert ours.config.num_labels == 1 and ours.config.problem_type == "regression"
    assert _compare(ours, ref, config.pad_token_id, _two_types(config)) <= TOL


def test_one_token_type_ignores_segment_ids(hf, tmp_path, randomize):
    """RoBERTa has one token type: pair inputs' segment ids (a BERT habit) change nothing."""
    config = _hf_config(hf, "roberta", None)
    ref = hf.AutoModel.from_config(config)
    randomize(ref, 4, 0.1)
    ref.eval().save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    x = _inputs(config.pad_token_id)
    types = torch.zeros_like(x["input_ids"])
    types[:, 8:] = 1
    with torch.inference_mode():
        a = ours(x["input_ids"], x["attention_mask"], types).last_hidden_state
        b = ref(**x).last_hidden_state
    real = x["attention_mask"].bool()
    assert (a - b)[real].abs().max().item() <= TOL


def test_roberta_positions_limit_the_length(hf, tmp_path):
    """RoBERTa's positions start after the padding id: 40 position embeddings hold 38 tokens."""
    config = BertConfig.from_dict(_hf_config(hf, "roberta", None).to_dict())
    assert config.max_length == 40 - config.pad_token_id - 1
    model = bertkit.BertModel(config).eval()
    model(torch.full((1, config.max_length), 7))
    with pytest.raises(ValueError, match="38 positions"):
        model(torch.full((1, config.max_length + 1), 7))


def test_distilbert_config_round_trips_in_its_own_names(hf, tmp_path):
    ref_config = _hf_config(hf, "distilbert", LABELS)
    ref_config.save_pretrained(tmp_path)
    config = BertConfig.from_pretrained(tmp_path)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (32, 2, 4)
    assert (config.intermediate_size, config.classifier_dropout) == (48, 0.2)
    written = config.to_dict()
    for theirs in ("dim", "n_layers", "n_heads", "hidden_dim", "seq_classif_dropout", "activation"):
        assert theirs in written
    for ours in ("hidden_size", "num_hidden_layers", "type_vocab_size", "layer_norm_eps"):
        assert ours not in written
    assert written["qa_dropout"] == ref_config.qa_dropout  # kept as it came


@pytest.mark.parametrize(
    "model_type,words",
    [("deberta-v2", "disentangled"), ("modernbert", "rotary"), ("gpt2", "supported: bert, roberta")],
)
def test_unsupported_model_type_is_one_line(model_type, words, tmp_path):
    (tmp_path / "config.json").write_text(f'{{"model_type": "{model_type}", "hidden_size": 64}}')
    with pytest.raises(BertkitError) as e:
        BertConfig.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and model_type in msg and words in msg and "config.json" in msg


def test_next_sentence_head_is_berts_alone(hf):
    config = BertConfig.from_dict(_hf_config(hf, "roberta", None).to_dict())
    with pytest.raises(BertkitError, match="roberta has no next-sentence head"):
        bertkit.BertForPreTraining(config)


def test_electra_discriminator_loads_as_encoder_and_names_its_unused_head(hf, tmp_path, caplog, randomize):
    config = _hf_config(hf, "electra", None)
    ref = hf.ElectraForPreTraining(config)
    randomize(ref, 5, 0.1)
    ref.eval().save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        ours = load_model(tmp_path)
    assert type(ours) is bertkit.BertModel
    assert "discriminator_predictions" in caplog.text
    x = _inputs(config.pad_token_id)
    with torch.inference_mode():
        a = ours(**x).last_hidden_state
        b = ref.electra(**x).last_hidden_state
    assert (a - b)[x["attention_mask"].bool()].abs().max().item() <= TOL


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("head", ["crf", "bilstm-crf"])
def test_own_ner_heads_train_save_and_reload_on_every_family(family, head, hf, tmp_path):
    """bertkit's CRF and BiLSTM-CRF taggers (no family has them in transformers) on each family:
    trained until the loss falls, saved, reloaded: the same emissions and the same tags."""
    from bertkit.tasks.ner import NerTagger

    config = BertConfig.from_dict(_hf_config(hf, family, LABELS).to_dict())
    torch.manual_seed(0)
    tagger = NerTagger(config, head)
    x = _inputs(config.pad_token_id)
    batch = {**x, "token_type_ids": torch.zeros_like(x["input_ids"])}
    mask = x["attention_mask"].bool()
    tags = (x["input_ids"] % 2) * mask  # a rule of the tokens: O or B-PER, a valid IOB2 path
    opt = torch.optim.Adam(tagger.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        assert tagger.crf is not None
        loss = tagger.crf.loss(tagger(batch), tags, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    tagger.eval().save_pretrained(tmp_path)
    again = NerTagger.from_pretrained(tmp_path, head=head)
    with torch.inference_mode():
        a, b = tagger(batch), again(batch)
    assert again.config.model_type == family
    assert (a - b)[mask].abs().max().item() == 0.0
    assert tagger.crf.decode(a, mask) == again.crf.decode(b, mask)  # type: ignore[union-attr]

"""Weight-for-weight, output-for-output parity with `transformers`' BERT.

Real weights (all-MiniLM-L6-v2) on real sentences, and a random `base` config with every head,
both ways through `save_pretrained`.
"""

from __future__ import annotations

import csv
import logging

import pytest
import torch

import bertkit
from bertkit import BertConfig

TOL = 1e-5


def _real_sentences(data) -> list[str]:
    """>= 2,000 sentences: SST-2 dev, CoNLL-2003 test, ChnSentiCorp dev."""
    with open(data / "en/glue/SST-2/dev.tsv", encoding="utf-8") as f:
        sst = [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    conll, words = [], []
    for line in open(data / "en/conll2003/test.txt", encoding="utf-8"):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                conll.append(" ".join(words))
            words = []
        else:
            words.append(parts[0])
    with open(data / "zh/chnsenticorp/dev.tsv", encoding="utf-8") as f:
        zh = [row["text_a"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return sst + conll[:1000] + zh[:300]


def test_minilm_matches_transformers_on_real_sentences(shared_data, minilm_dir, hf):
    sentences = _real_sentences(shared_data)
    assert len(sentences) >= 2000
    tok = hf.BertTokenizer.from_pretrained(str(minilm_dir))
    ours = bertkit.BertModel.from_pretrained(minilm_dir)
    ref = hf.BertModel.from_pretrained(str(minilm_dir)).eval()
    worst_hidden = worst_pooled = 0.0
    padded_batches = 0
    with torch.inference_mode():
        for i in range(0, len(sentences), 32):
            enc = tok(
                sentences[i : i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            padded_batches += int((enc["attention_mask"] == 0).any())
            a = ours(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
            b = ref(**enc)
            real = enc["attention_mask"].bool()
            worst_hidden = max(
                worst_hidden, (a.last_hidden_state - b.last_hidden_state)[real].abs().max().item()
            )
            worst_pooled = max(worst_pooled, (a.pooler_output - b.pooler_output).abs().max().item())
    print(
        f"\nMiniLM parity on {len(sentences)} sentences ({padded_batches} padded batches): "
        f"max|diff| last_hidden_state {worst_hidden:.2e}, pooler_output {worst_pooled:.2e}"
    )
    assert padded_batches > 0
    assert worst_hidden <= TOL, worst_hidden
    assert worst_pooled <= TOL, worst_pooled


HEADS = [
    ("BertModel", {}),
    ("BertForMaskedLM", {}),
    ("BertForPreTraining", {}),
    ("BertForNextSentencePrediction", {}),
    ("BertForSequenceClassification", {"labels": ["neg", "neu", "pos"]}),
    ("BertForTokenClassification", {"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}),
    ("BertForQuestionAnswering", {}),
]


def _outputs(out) -> dict[str, torch.Tensor]:
    names = (
        "last_hidden_state",
        "pooler_output",
        "logits",
        "prediction_logits",
        "seq_relationship_logits",
        "start_logits",
        "end_logits",
    )
    return {n: getattr(out, n) for n in names if getattr(out, n, None) is not None}


def _inputs(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, 7:] = 0
    types = torch.zeros_like(ids)
    types[:, 12:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _compare(ours, ref, vocab: int) -> float:
    x = _inputs(vocab)
    with torch.inference_mode():
        a = _outputs(ours(x["input_ids"], x["attention_mask"], x["token_type_ids"]))
        b = _outputs(ref(**x))
    assert set(a) <= set(b) and a, (set(a), set(b))
    real = x["attention_mask"].bool()
    worst = 0.0
    for name, t in a.items():
        d = (t - b[name]).abs()
        if d.dim() >= 2 and d.shape[:2] == real.shape:  # per-token outputs: padded rows are don't-care
            d = d[real]
        worst = max(worst, d.max().item())
    return worst


def _hf_config(hf, config: BertConfig, labels):
    kw = {k: v for k, v in config.to_dict().items() if k not in ("architectures", "model_type")}
    if labels:
        kw["id2label"] = dict(enumerate(labels))
        kw["label2id"] = {v: k for k, v in enumerate(labels)}
    return hf.BertConfig(**kw)


@pytest.fixture(scope="module")
def base_config() -> BertConfig:
    return BertConfig.preset("base", hidden_dropout_prob=0.1)


@pytest.mark.parametrize("cls_name,opts", HEADS, ids=[h[0] for h in HEADS])
def test_base_heads_bertkit_to_transformers(cls_name, opts, base_config, hf, tmp_path, randomize):
    config = BertConfig.from_dict(base_config.to_dict())
    if opts.get("labels"):
        config.set_labels(opts["labels"])
    ours = getattr(bertkit, cls_name)(config)
    randomize(ours, 1)
    ours.eval()
    ours.save_pretrained(tmp_path)
    ref, info = getattr(hf, cls_name).from_pretrained(tmp_path, output_loading_info=True)
    ref.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    worst = _compare(ours, ref, config.vocab_size)
    print(f"\nbertkit -> transformers {cls_name} (base): max|diff| {worst:.2e}")
    assert worst <= TOL
    if opts.get("labels"):
        assert ref.config.id2label == dict(enumerate(opts["labels"]))


@pytest.mark.parametrize("cls_name,opts", HEADS, ids=[h[0] for h in HEADS])
def test_base_heads_transformers_to_bertkit(cls_name, opts, base_config, hf, tmp_path, randomize):
    ref = getattr(hf, cls_name)(_hf_config(hf, base_config, opts.get("labels")))
    randomize(ref, 2)
    if hasattr(ref, "tie_weights"):
        ref.tie_weights()
    ref.eval()
    ref.save_pretrained(tmp_path)
    ours, info = getattr(bertkit, cls_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    worst = _compare(ours, ref, base_config.vocab_size)
    print(f"\ntransformers -> bertkit {cls_name} (base): max|diff| {worst:.2e}")
    assert worst <= TOL
    if opts.get("labels"):
        assert ours.config.id2label == dict(enumerate(opts["labels"]))


def test_head_loads_from_bare_encoder_and_reports_new_head(minilm_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        model, info = bertkit.BertForSequenceClassification.from_pretrained(
            minilm_dir, output_loading_info=True
        )
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert info["unexpected_keys"] == []
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "classifier.weight" in warnings[0]
    # the encoder weights are the MiniLM ones
    enc = bertkit.BertModel.from_pretrained(minilm_dir)
    assert torch.equal(model.bert.layers[3].attn.qkv.weight, enc.layers[3].attn.qkv.weight)


def test_unused_weights_reported_in_one_line(tmp_path, caplog):
    config = BertConfig.preset("tiny", vocab_size=99)
    bertkit.BertForPreTraining(config).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        _, info = bertkit.BertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == []
    assert len(info["unexpected_keys"]) == 7  # mlm dense w/b, norm w/b, bias; nsp w/b
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "mlm.dense.weight" in msg and "nsp.weight" in msg


def test_legacy_names_and_bin_weights_load(tmp_path, hf, randomize):
    """TF-era gamma/beta names, `bert.` prefix on a bare model, pytorch_model.bin via weights_only."""
    config = BertConfig.preset("tiny", vocab_size=120)
    ours = bertkit.BertModel(config)
    randomize(ours, 3)
    ours.eval()
    state = {
        ("bert." + k)
        .replace("LayerNorm.weight", "LayerNorm.gamma")
        .replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in ours.hf_state_dict().items()
    }
    state["bert.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    torch.save(state, tmp_path / "pytorch_model.bin")
    config.save_pretrained(tmp_path)
    loaded, info = bertkit.BertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    for (k, a), b in zip(ours.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_sdpa_matches_eager_reference_and_bf16_runs():
    config = BertConfig.preset("mini", vocab_size=500)
    model = bertkit.BertModel(config).eval()
    x = _inputs(500)
    with torch.inference_mode():
        fast = model(**x)
        model.set_attention_impl("eager")
        slow = model(**x)
        model.set_attention_impl("sdpa")
        model.to(torch.bfloat16)
        half = model(**x)
    real = x["attention_mask"].bool()
    assert (fast.last_hidden_state - slow.last_hidden_state)[real].abs().max() <= 1e-5
    cos = torch.nn.functional.cosine_similarity(half.pooler_output.float(), fast.pooler_output, dim=-1)
    assert cos.min() > 0.99


def test_padding_does_not_change_real_tokens():
    """A sentence gives the same states alone and padded inside a batch."""
    config = BertConfig.preset("tiny", vocab_size=300)
    model = bertkit.BertModel(config).eval()
    ids = torch.randint(5, 300, (1, 9))
    padded = torch.cat([ids, torch.zeros(1, 7, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 7)], dim=1).long()
    with torch.inference_mode():
        alone = model(ids).last_hidden_state
        inside = model(padded, mask).last_hidden_state[:, :9]
    assert (alone - inside).abs().max() <= 1e-5


def test_sparse_masked_lm_equals_dense_at_masked_positions():
    config = BertConfig.preset("tiny", vocab_size=300)
    model = bertkit.BertForMaskedLM(config).eval()
    x = _inputs(300)
    positions = torch.zeros_like(x["input_ids"], dtype=torch.bool)
    positions[0, 3] = positions[1, 5] = positions[2, 1] = True
    with torch.inference_mode():
        dense = model(**x).logits
        sparse = model(**x, masked_positions=positions).logits
    assert sparse.shape == (3, 300)
    assert torch.allclose(dense[positions], sparse, atol=1e-6)


def test_init_as_bert():
    config = BertConfig.preset("small", vocab_size=2000)
    model = bertkit.BertForSequenceClassification(config)
    w = model.bert.layers[0].ffn.up.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert torch.all(model.bert.layers[0].ffn.up.bias == 0)
    assert torch.all(model.bert.layers[1].attn_norm.weight == 1)
    assert torch.all(model.bert.embeddings.word.weight[config.pad_token_id] == 0)
    assert abs(model.classifier.weight.std().item() - 0.02) < 0.003

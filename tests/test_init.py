"""`bertkit init`: a random model directory sized to a tokenizer, usable by fine-tuning and
by `transformers`; an existing directory is never replaced without --overwrite."""

from __future__ import annotations

import torch

from bertkit.cli import main
from bertkit.models.heads import BertForPreTraining, BertForSequenceClassification
from bertkit.tokenization.tokenizer import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "的", "是", "好", "不", "很", "a", "##b"]


def test_init_writes_a_loadable_model_sized_to_the_tokenizer(tmp_path, hf, capsys):
    tok_dir = tmp_path / "tok"
    Tokenizer.from_vocab(VOCAB).save_pretrained(tok_dir)
    out = tmp_path / "model"
    args = ["init", "--config", "tiny", "--tokenizer", str(tok_dir), "--output", str(out)]
    assert main([*args, "--max-positions", "64", "--seed", "3"]) == 0
    model = BertForPreTraining.from_pretrained(out)
    assert model.config.vocab_size == len(VOCAB) and model.config.max_position_embeddings == 64
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 128
    assert Tokenizer.from_pretrained(out).tokenize("很好ab") == ["很", "好", "a", "##b"]

    ids = torch.tensor([[2, 5, 6, 7, 4, 3]])
    ref = hf.BertForPreTraining.from_pretrained(out).eval()
    with torch.no_grad():
        ours = model.eval()(ids).prediction_logits
        theirs = ref(ids).prediction_logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # a fine-tuning start: the encoder loads, the classifier is new
    clf = BertForSequenceClassification.from_pretrained(out)
    torch.testing.assert_close(clf.bert.embeddings.word.weight, model.bert.embeddings.word.weight)

    # same seed, same weights; an existing directory is kept unless --overwrite
    before = (out / "model.safetensors").read_bytes()
    assert main([*args, "--max-positions", "64", "--seed", "4"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    assert main([*args, "--max-positions", "64", "--seed", "3", "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() == before


def test_init_bad_tokenizer_dir_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["init", "--tokenizer", str(tmp_path / "missing"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err
    assert not out.exists()

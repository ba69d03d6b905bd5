"""Bad checkpoints give one-line errors that name the file and the problem; nothing executes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import bertkit
from bertkit import BertConfig, BertkitError
from bertkit.cli import main


@pytest.fixture
def good_dir(tmp_path):
    d = tmp_path / "model"
    bertkit.BertModel(BertConfig.preset("tiny", vocab_size=100)).save_pretrained(d)
    return d


def _error(directory) -> str:
    with pytest.raises(BertkitError) as e:
        bertkit.BertModel.from_pretrained(directory)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _cli_error(directory, capsys) -> str:
    assert main(["info", str(directory)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_good_dir_loads(good_dir, capsys):
    assert main(["info", str(good_dir)]) == 0
    assert "BertModel" in capsys.readouterr().out


def test_missing_directory(tmp_path, capsys):
    msg = _error(tmp_path / "nope")
    assert str(tmp_path / "nope") in msg and "no such model directory" in msg
    assert "no such model directory" in _cli_error(tmp_path / "nope", capsys)


def test_missing_config(good_dir, capsys):
    (good_dir / "config.json").unlink()
    assert "config.json: no such file" in _error(good_dir)
    _cli_error(good_dir, capsys)


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("hidden_size", "128", "positive integer"),
        ("num_attention_heads", 3, "not a multiple"),
        ("hidden_dropout_prob", "0.1", "number in [0, 1)"),
        ("hidden_act", "gelu_fancy", "one of"),
        ("id2label", {"zero": "A"}, "not an integer"),
        ("vocab_size", None, "positive integer"),
    ],
)
def test_config_with_wrong_types(good_dir, field, value, expected, capsys):
    cfg = json.loads((good_dir / "config.json").read_text())
    cfg[field] = value
    (good_dir / "config.json").write_text(json.dumps(cfg))
    msg = _error(good_dir)
    assert "config.json" in msg and expected in msg
    if field not in ("num_attention_heads",):
        assert repr(field) in msg
    _cli_error(good_dir, capsys)


def test_config_not_json(good_dir):
    (good_dir / "config.json").write_text('{"vocab_size": 100,\n  "hidden_size": }')
    msg = _error(good_dir)
    assert "config.json" in msg and "invalid JSON at line 2" in msg


def test_shapes_disagree_with_config(good_dir, capsys):
    cfg = json.loads((good_dir / "config.json").read_text())
    cfg["vocab_size"] = 200
    (good_dir / "config.json").write_text(json.dumps(cfg))
    msg = _error(good_dir)
    assert "model.safetensors" in msg and "(100, 128)" in msg and "(200, 128)" in msg
    _cli_error(good_dir, capsys)


@pytest.mark.parametrize(
    "field,value,message",
    [
        (
            "vocab_size",
            1234,
            "config.json says vocab_size 1234 but model.safetensors has 100 word embeddings",
        ),
        (
            "hidden_size",
            64,
            "config.json says hidden_size 64 but model.safetensors has 128 hidden dimensions",
        ),
        (
            "max_position_embeddings",
            128,
            "config.json says max_position_embeddings 128 but model.safetensors has 512 position embeddings",
        ),
        (
            "intermediate_size",
            256,
            "config.json says intermediate_size 256 but model.safetensors has 512 feed-forward "
            "(intermediate) dimensions",
        ),
        (
            "type_vocab_size",
            3,
            "config.json says type_vocab_size 3 but model.safetensors has 2 token type embeddings",
        ),
    ],
)
def test_shape_error_names_the_config_field(good_dir, field, value, message, capsys):
    cfg = json.loads((good_dir / "config.json").read_text())
    cfg[field] = value
    (good_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BertkitError) as e:
        bertkit.BertModel.from_pretrained(good_dir)
    assert e.value.path == str(good_dir / "model.safetensors")
    assert str(e.value).startswith(f"{good_dir / 'model.safetensors'}: {message} ('")
    assert message in _cli_error(good_dir, capsys)  # (the CLI passes the config it read itself)


def test_shape_error_names_a_config_given_in_code(good_dir):
    config = BertConfig.preset("tiny", vocab_size=300)
    with pytest.raises(BertkitError) as e:
        bertkit.BertModel.from_pretrained(good_dir, config=config)
    assert str(e.value) == (
        f"{good_dir / 'model.safetensors'}: the config given says vocab_size 300 but model.safetensors has "
        "100 word embeddings ('embeddings.word.weight' has shape (100, 128) but the model built from the "
        "config expects (300, 128))"
    )


def test_shape_error_names_num_labels(tmp_path):
    config = BertConfig.preset("tiny", vocab_size=100)
    config.set_labels(["a", "b", "c"])
    bertkit.BertForSequenceClassification(config).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "a", "1": "b"}, {"a": 0, "b": 1}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BertkitError) as e:
        bertkit.BertForSequenceClassification.from_pretrained(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'model.safetensors'}: config.json says num_labels 2 (the size of id2label) but "
        "model.safetensors has 3 classifier outputs (labels) ('classifier.bias' has shape (3,) but the "
        "model built from the config expects (2,))"
    )
    # A new head for new labels: the mismatch is skipped, the head freshly initialised.
    model, info = bertkit.BertForSequenceClassification.from_pretrained(
        tmp_path, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert sorted(info["mismatched_keys"]) == ["classifier.bias", "classifier.weight"]
    assert model.classifier.out_features == 2


def test_extra_layers_are_unused_weights_not_shape_errors(good_dir, caplog):
    cfg = json.loads((good_dir / "config.json").read_text())
    cfg["num_hidden_layers"] = 1
    (good_dir / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level("WARNING", logger="bertkit"):
        model = bertkit.BertModel.from_pretrained(good_dir)
    assert len(model.layers) == 1
    assert f"{good_dir}: weights not used by BertModel: layers.*.attn.proj.bias," in caplog.text


def test_truncated_safetensors(good_dir, capsys):
    path = good_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _error(good_dir)
    assert "model.safetensors" in msg and "not a readable safetensors file" in msg
    _cli_error(good_dir, capsys)


def test_no_weights(good_dir):
    (good_dir / "model.safetensors").unlink()
    assert "no model.safetensors or pytorch_model.bin" in _error(good_dir)


def test_malicious_pickle_is_refused_and_never_runs(good_dir, pickle_payload, capsys):
    payload, marker = pickle_payload
    (good_dir / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": payload}, good_dir / "pytorch_model.bin")
    msg = _error(good_dir)
    assert "pytorch_model.bin" in msg and "refused" in msg
    _cli_error(good_dir, capsys)
    assert not marker.exists()


def test_cli_process_exits_nonzero_without_traceback(good_dir):
    (good_dir / "model.safetensors").write_bytes(b"\x00" * 10)
    r = subprocess.run(
        [sys.executable, "-m", "bertkit.cli", "info", str(good_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "model.safetensors" in r.stderr
    assert r.stderr.strip().count("\n") == 0

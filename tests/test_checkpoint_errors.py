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

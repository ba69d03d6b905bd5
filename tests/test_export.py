"""ONNX export: ONNX Runtime against PyTorch fp32 on inputs of other batch sizes and lengths
than the export saw (dynamic axes), for a plain encoder, a classifier and a softmax NER model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import bertkit
from bertkit.heads import BertForSequenceClassification, BertForTokenClassification

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (dev extra) is not installed")

TEXTS = [
    "SOCCER - JAPAN GET LUCKY WIN , CHINA IN SURPRISE DEFEAT .",
    "Nadim Ladki",
    "AL-AIN , United Arab Emirates 1996-12-06",
    "the film is strictly routine .",
    "a tender , heartfelt family drama that never stoops to sentimentality and earns its emotional "
    "payoff honestly , with fine performances from the whole cast and a script that knows when to stop",
]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bertkit", *map(str, args)], capture_output=True, text=True)


def ort_vs_torch(path, model, model_dir, outputs) -> float:
    tok = bertkit.Tokenizer.from_pretrained(model_dir)
    enc = tok(TEXTS, padding=True, return_tensors="pt")  # 5 texts, other lengths than the export's
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == outputs
    keys = ("input_ids", "attention_mask", "token_type_ids")
    got = sess.run(None, {k: enc[k].numpy() for k in keys})
    with torch.inference_mode():
        out = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    real = enc["attention_mask"].bool().numpy()
    worst = 0.0
    for name, g in zip(outputs, got, strict=True):
        w = getattr(out, name).numpy()
        d = np.abs(g - w)
        worst = max(worst, float((d[real] if d.ndim == 3 else d).max()))
    return worst


def test_export_encoder(minilm_dir, tmp_path):
    out = tmp_path / "enc.onnx"
    r = run_cli("export", "--model", minilm_dir, "--output", out)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "enc.onnx.json").read_text())
    assert report["fp32_max_abs_diff"] <= 1e-4
    model = bertkit.BertModel.from_pretrained(minilm_dir).eval()
    assert ort_vs_torch(out, model, minilm_dir, ["last_hidden_state", "pooler_output"]) <= 1e-4


@pytest.mark.parametrize("task", ["classify", "ner"])
def test_export_heads(head_dir, tmp_path, task):
    cls, labels = (
        (BertForSequenceClassification, ["neg", "pos"])
        if task == "classify"
        else (BertForTokenClassification, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    )
    d = head_dir(tmp_path / task, cls, task, labels)
    model = cls.from_pretrained(d).eval()
    out = tmp_path / f"{task}.onnx"
    r = run_cli("export", "--model", d, "--output", out, "--int8")
    assert r.returncode == 0, r.stderr
    assert "int8 max |diff|" in r.stdout
    report = json.loads(out.with_suffix(".onnx.json").read_text())
    assert report["outputs"] == ["logits"] and report["int8"] is True
    # the file written is the int8 one; the fp32 parity was checked before it was written
    assert report["fp32_max_abs_diff"] <= 1e-4 and report["int8_max_abs_diff"] > 0
    r = run_cli("export", "--model", d, "--output", tmp_path / "fp32.onnx")
    assert r.returncode == 0, r.stderr
    assert ort_vs_torch(tmp_path / "fp32.onnx", model, d, ["logits"]) <= 1e-4


def test_export_bad_model_dir(tmp_path):
    r = run_cli("export", "--model", tmp_path / "missing", "--output", tmp_path / "x.onnx")
    assert r.returncode == 2 and "missing" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.onnx").exists()

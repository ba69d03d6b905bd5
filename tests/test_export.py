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
from bertkit.models.heads import BertForSequenceClassification, BertForTokenClassification

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


def test_export_bilstm_crf_emissions(tagger_dir, tmp_path):
    """The graph of a BiLSTM-CRF tagger holds the BiLSTM (packed by length in ONNX too): its
    emissions match PyTorch's on a batch of other lengths than the export saw."""
    from bertkit.tasks.ner import NerTagger

    d = tagger_dir(tmp_path / "bilstm", "bilstm-crf")
    out = tmp_path / "bilstm.onnx"
    r = run_cli("export", "--model", d, "--output", out)
    assert r.returncode == 0, r.stderr
    tagger = NerTagger.from_pretrained(d, head="bilstm-crf").eval()
    tok = bertkit.Tokenizer.from_pretrained(d)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    keys = ("input_ids", "attention_mask", "token_type_ids")
    (got,) = sess.run(None, {k: enc[k].numpy() for k in keys})
    with torch.inference_mode():
        want = tagger.emissions({k: enc[k] for k in keys}).numpy()
    real = enc["attention_mask"].bool().numpy()
    assert np.abs(got - want)[real].max() <= 1e-4


def test_backend_onnx_matches_torch(head_dir, tagger_dir, tmp_path):
    """`--backend onnx` predictions equal the PyTorch fp32 ones: a classifier (with a text
    longer than the model's windows) and a CRF tagger (Viterbi in PyTorch on ONNX emissions)."""
    long = " ".join(TEXTS * 30)  # > 512 tokens: several windows, logits averaged
    cases = [
        (
            "text-classification",
            head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["a", "b", "c"]),
        ),
        ("ner", tagger_dir(tmp_path / "crf", "crf")),
    ]
    for task, d in cases:
        r = run_cli("export", "--model", d, "--output", d / "model.onnx")
        assert r.returncode == 0, r.stderr
        want = bertkit.pipeline(task, model=d, precision="fp32")([*TEXTS, long])
        got = bertkit.pipeline(task, model=d, backend="onnx")([*TEXTS, long])
        if task == "ner":
            assert [[(e["start"], e["end"], e["label"]) for e in x] for x in got] == [
                [(e["start"], e["end"], e["label"]) for e in x] for x in want
            ]
            assert any(want), "the random tagger should find some entities"
        else:
            assert [p["label"] for p in got] == [p["label"] for p in want]
            for g, w in zip(got, want, strict=True):
                assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)


def test_backend_onnx_bad_input(head_dir, tmp_path):
    d = head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["neg", "pos"])
    src = tmp_path / "in.txt"
    src.write_text("a fine film\n")
    r = run_cli(
        "predict", "--model", d, "--input", src, "--output", tmp_path / "p.jsonl", "--backend", "onnx"
    )
    assert r.returncode == 2 and "bertkit export --model" in r.stderr and "Traceback" not in r.stderr
    # a graph from another directory (three labels, not two): refused, naming both
    other = head_dir(tmp_path / "other", BertForSequenceClassification, "classify", ["a", "b", "c"])
    assert run_cli("export", "--model", other, "--output", tmp_path / "other.onnx").returncode == 0
    r = run_cli(
        "predict", "--model", d, "--input", src, "--output", tmp_path / "p.jsonl",
        "--backend", "onnx", "--onnx-file", tmp_path / "other.onnx",
    )  # fmt: skip
    assert r.returncode == 2 and "3 scores" in r.stderr and "2 labels" in r.stderr, r.stderr
    assert not (tmp_path / "p.jsonl").exists()
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    r = run_cli(
        "predict", "--model", d, "--input", src, "--output", tmp_path / "p.jsonl",
        "--backend", "onnx", "--onnx-file", tmp_path / "junk.onnx",
    )  # fmt: skip
    assert r.returncode == 2 and "junk.onnx" in r.stderr and "Traceback" not in r.stderr, r.stderr

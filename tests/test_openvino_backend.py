"""`--backend openvino`: the model converted to OpenVINO at load time gives PyTorch fp32's
outputs (embeddings, a classifier over several windows, a CRF tagger with Viterbi in PyTorch,
batches of other sizes and lengths than the conversion traced); int8 is NNCF's quantized graph
calibrated on the given texts; the CLI paths and their bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import bertkit
from bertkit.inference.export import CHECK_TEXTS
from bertkit.models.heads import BertForSequenceClassification

pytest.importorskip("openvino", reason="openvino (dev extra) is not installed")
pytest.importorskip("nncf", reason="nncf (dev extra) is not installed")

TEXTS = CHECK_TEXTS  # the export's parity sentences: mixed lengths and scripts


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bertkit", *map(str, args)], capture_output=True, text=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_embeddings_match_torch(tiny_dir):
    """fp32 OpenVINO embeddings equal PyTorch fp32's, in input order, over several batches (a
    small token budget) run on OpenVINO's parallel requests, short batches on the compilation
    without fused attention and a long text (over SHORT tokens) on the other."""
    from bertkit.engine.openvino_runner import SHORT

    texts = [t[: 7 * (i + 1)] for i in range(12) for t in TEXTS][:40] + [" ".join(TEXTS * 4)]
    want = bertkit.pipeline("feature-extraction", model=tiny_dir, precision="fp32")(texts)
    pipe = bertkit.pipeline(
        "feature-extraction", model=tiny_dir, precision="fp32", backend="openvino", max_tokens=64
    )
    assert pipe.model.precision == "fp32" and pipe.model.streams >= 1
    got = pipe(texts)
    assert len(pipe.tokenizer(texts[-1:])["input_ids"][0]) > SHORT
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
    assert pipe(TEXTS[1]).shape == (want.shape[1],)  # one text: one vector


def test_heads_match_torch(head_dir, tagger_dir, tmp_path):
    """A classifier (a text longer than 512 tokens: windows averaged) and a CRF tagger give
    PyTorch fp32's predictions on OpenVINO."""
    long = " ".join(TEXTS * 30)
    clf = head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["a", "b", "c"])
    want = bertkit.pipeline("text-classification", model=clf, precision="fp32")([*TEXTS, long])
    got = bertkit.pipeline("text-classification", model=clf, precision="fp32", backend="openvino")(
        [*TEXTS, long]
    )
    assert [p["label"] for p in got] == [p["label"] for p in want]
    for g, w in zip(got, want, strict=True):
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)
    crf = tagger_dir(tmp_path / "crf", "crf")
    want = bertkit.pipeline("ner", model=crf, precision="fp32")(TEXTS)
    got = bertkit.pipeline("ner", model=crf, precision="fp32", backend="openvino")(TEXTS)
    spans = [[(e["start"], e["end"], e["label"]) for e in x] for x in want]
    assert any(spans), "the random tagger should find some entities"
    assert [[(e["start"], e["end"], e["label"]) for e in x] for x in got] == spans


def test_int8_quantizes_and_stays_close(tiny_dir, tmp_path):
    """int8: NNCF's graph holds FakeQuantize nodes, calibrated on the file's texts; embeddings
    stay close to fp32 (mean cosine ≥ 0.98 on this random model) but are not fp32's."""
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(TEXTS * 4) + "\n")
    want = bertkit.pipeline("feature-extraction", model=tiny_dir, precision="fp32")(TEXTS)
    pipe = bertkit.pipeline(
        "feature-extraction", model=tiny_dir, precision="fp32", backend="openvino", int8=True,
        calibration=calib,
    )  # fmt: skip
    assert pipe.model.precision == "int8"
    assert pipe.model.fake_quantize >= 4 * 2  # the tiny BERT: 2 layers, 4 products each at least
    got = pipe(TEXTS)
    c = cosines(got, want)
    assert c.mean() >= 0.98 and not np.allclose(got, want, atol=1e-5), c


def test_int8_calibrates_on_shipped_sentences_and_paragraphs(tiny_dir):
    """Without --calibration: the shipped texts as written and, every third, paragraphs of
    consecutive ones (longer than the model's positions: truncated), never random tokens."""
    from bertkit.engine import openvino_runner as ob

    texts = ob.shipped_calibration()
    shipped = set(ob.SHIPPED_CALIBRATION.read_text(encoding="utf-8").splitlines())
    assert len(texts) == ob.CALIBRATION_TEXTS and all(t in shipped for t in texts[0::3] + texts[1::3])
    paragraphs = texts[2::3]
    assert all(t not in shipped for t in paragraphs)
    assert np.median([len(t) for t in paragraphs]) > 4 * np.median([len(t) for t in texts[0::3]])
    want = bertkit.pipeline("feature-extraction", model=tiny_dir, precision="fp32")(TEXTS)
    opts = {"precision": "fp32", "backend": "openvino", "int8": True}
    pipe = bertkit.pipeline("feature-extraction", model=tiny_dir, **opts)
    assert pipe.model.fake_quantize >= 4 * 2
    assert cosines(pipe(TEXTS), want).mean() >= 0.98


def test_cli_predict_and_embed(head_dir, tiny_dir, tmp_path):
    """`bertkit predict --backend openvino` writes the torch backend's lines; `bertkit embed`
    the same vectors; NNCF's progress stays off standard output (predictions may go there)."""
    d = head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["neg", "pos"])
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    r = run_cli(
        "predict", "--model", d, "--input", src, "--output", tmp_path / "t.jsonl", "--precision", "fp32"
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "predict", "--model", d, "--input", src, "--output", tmp_path / "o.jsonl",
        "--precision", "fp32", "--backend", "openvino",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    torch_rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    ov_rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [x["label"] for x in ov_rows] == [x["label"] for x in torch_rows]
    r = run_cli(
        "predict", "--model", d, "--input", src, "--output", "-", "--backend", "openvino", "--int8",
        "--calibration", src,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["label"] in ("neg", "pos") for x in r.stdout.splitlines()] == [True] * len(TEXTS)
    for backend in ("torch", "openvino"):
        out = tmp_path / f"{backend}.npy"
        args = ("--input", src, "--output", out, "--precision", "fp32", "--backend", backend)
        r = run_cli("embed", "--model", tiny_dir, *args)
        assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "openvino.npy"), np.load(tmp_path / "torch.npy"), atol=2e-5)


def test_bad_input(head_dir, tiny_dir, tmp_path):
    d = head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["neg", "pos"])
    src, empty = tmp_path / "in.txt", tmp_path / "empty.txt"
    src.write_text("a fine film\n")
    empty.write_text("\n\n")
    r = run_cli(
        "predict", "--model", d, "--input", src, "--output", tmp_path / "p.jsonl",
        "--backend", "openvino", "--int8", "--calibration", empty,
    )  # fmt: skip
    assert r.returncode == 2 and "empty.txt" in r.stderr and "no texts" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "p.jsonl").exists()
    with pytest.raises(bertkit.BertkitError, match="runs classification, NER and QA models and embeddings"):
        bertkit.pipeline("fill-mask", model=tiny_dir, backend="openvino")
    with pytest.raises(bertkit.BertkitError, match="not 'feature-extraction'"):
        bertkit.pipeline("feature-extraction", model=tiny_dir, backend="onnx")


def test_cli_backends_are_the_engines():
    from bertkit.cli.flags import BACKENDS
    from bertkit.engine.runner import BACKENDS as ENGINE_BACKENDS

    assert ("auto", *BACKENDS) == ENGINE_BACKENDS

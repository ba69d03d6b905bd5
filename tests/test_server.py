"""The HTTP server against offline inference (same inputs, same answers), its limits and bad
requests (each a 4xx with a message, the server still up), and batching across clients."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import bertkit
from bertkit.models.heads import BertForSequenceClassification, BertForTokenClassification

fastapi = pytest.importorskip("fastapi", reason="fastapi is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from bertkit.serve.app import create_app  # noqa: E402
from bertkit.serve.limits import Limits, Serving  # noqa: E402

KEYED = {"authorization": "Bearer k-onnx"}  # the backends behind a key, as without one

SENTENCES = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "The European Commission said on Thursday it disagreed with German advice .",
]


@pytest.fixture(scope="module")
def clf_dir(head_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("srv") / "classify"
    return head_dir(d, BertForSequenceClassification, "classify", ["neg", "pos"])


@pytest.fixture(scope="module")
def ner_dir(head_dir, tmp_path_factory):
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
    return head_dir(tmp_path_factory.mktemp("srv") / "ner", BertForTokenClassification, "ner", labels)


def test_classify_and_embed_equal_offline(clf_dir):
    with TestClient(create_app(clf_dir)) as c:
        info = c.get("/v1/model").json()
        assert info["endpoints"] == ["classify", "embed"] and info["labels"] == ["neg", "pos"]
        r = c.post("/v1/classify", json={"texts": SENTENCES})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        want = bertkit.pipeline("text-classification", model=clf_dir)(SENTENCES)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
        r = c.post("/v1/embed", json={"texts": SENTENCES[:2], "pooling": "cls", "normalize": True})
        emb = np.array(r.json()["embeddings"])
        want = bertkit.pipeline("feature-extraction", model=clf_dir)(SENTENCES[:2], "cls", True)
        assert emb.shape == want.shape and np.allclose(emb, want, atol=1e-5)
        assert c.get("/health").json() == {"status": "ok"}


def test_ner_entities_with_offsets(ner_dir):
    with TestClient(create_app(ner_dir)) as c:
        r = c.post("/v1/ner", json={"texts": SENTENCES})
        assert r.status_code == 200, r.text
        got = r.json()["entities"]
        want = bertkit.pipeline("ner", model=ner_dir)(SENTENCES)
        assert [[(e["label"], e["start"], e["end"]) for e in s] for s in got] == [
            [(e["label"], e["start"], e["end"]) for e in s] for s in want
        ]
        for text, ents in zip(SENTENCES, got, strict=True):
            for e in ents:
                assert text[e["start"] : e["end"]] == e["text"]


def test_bad_requests_are_4xx_and_the_server_stays_up(clf_dir):
    limits = Limits(max_body_bytes=50_000, max_texts=8, max_chars=500)
    with TestClient(create_app(clf_dir, limits=limits)) as c:
        cases = [
            (b"{not json", 400, "invalid JSON"),
            (b'{"texts": ["caf\xe9"]}', 400, "not UTF-8"),
            (b"[1, 2]", 422, "JSON object"),
            (b'{"texts": "one string"}', 422, "list of strings"),
            (b'{"texts": [1, 2]}', 422, "list of strings"),
            (b'{"texts": []}', 422, "empty"),
            (b'{"text": ["wrong key"]}', 422, '"texts"'),
            (b'{"texts": ["a"], "text_pairs": ["b", "c"]}', 422, "text_pairs"),
            (json.dumps({"texts": ["x"] * 9}).encode(), 413, "limit is 8"),
            (json.dumps({"texts": ["y" * 501]}).encode(), 413, "limit is 500"),
            (json.dumps({"texts": ["z" * 60_000]}).encode(), 413, "bytes"),
        ]
        for body, status, words in cases:
            r = c.post("/v1/classify", content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (body[:40], r.text)
            assert words in r.json()["error"], (body[:40], r.json())
        r = c.post("/v1/fill-mask", json={"texts": ["a [MASK] b"]})
        assert r.status_code == 400 and "does not serve /v1/fill-mask" in r.json()["error"]
        r = c.post("/v1/embed", json={"texts": ["a"], "pooling": "max"})
        assert r.status_code == 422
        assert c.post("/v1/classify", json={"texts": ["still up"]}).status_code == 200
        metrics = c.get("/metrics").text
        assert 'bertkit_requests_total{endpoint="classify",status="413"} 3.0' in metrics


def test_concurrent_clients_share_batches(clf_dir):
    limits = Limits(max_wait_ms=50)
    with TestClient(create_app(clf_dir, limits=limits)) as c:
        want = {p["label"] for p in bertkit.pipeline("text-classification", model=clf_dir)(SENTENCES)}
        with ThreadPoolExecutor(16) as pool:
            rs = list(
                pool.map(lambda i: c.post("/v1/classify", json={"texts": [SENTENCES[i % 5]]}), range(64))
            )
        assert all(r.status_code == 200 for r in rs)
        assert {r.json()["predictions"][0]["label"] for r in rs} <= want
        text = c.get("/metrics").text
        count = float(text.split('bertkit_batch_texts_count{endpoint="classify"} ')[1].split()[0])
        assert count < 64  # 64 requests ran in fewer batches


def test_full_queue_is_503_with_retry_after(clf_dir):
    with TestClient(create_app(clf_dir, limits=Limits(max_queue=2))) as c:
        r = c.post("/v1/classify", json={"texts": ["a", "b", "c"]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "busy" in r.json()["error"]


def test_page_is_served(ner_dir):
    with TestClient(create_app(ner_dir)) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        for needle in ('id="text"', "/v1/model", "/v1/ner", "/v1/classify", "/v1/embed", "<mark"):
            assert needle in r.text
        assert c.get("/docs").status_code == 200  # OpenAPI page


def test_onnx_backend_serves_the_same_answers(clf_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime (dev extra) is not installed")
    from bertkit.engine.runner import InferenceOptions
    from bertkit.inference.export import export_onnx

    export_onnx(clf_dir, tmp_path / "clf.onnx")
    opts = InferenceOptions(backend="onnx", onnx_file=str(tmp_path / "clf.onnx"))
    app = create_app(clf_dir, opts, serving=Serving(api_key="k-onnx"))
    with TestClient(app, headers=KEYED) as c:
        got = c.post("/v1/classify", json={"texts": SENTENCES}).json()["predictions"]
        tei = c.post("/predict", json={"inputs": [[s] for s in SENTENCES]}).json()
        assert c.post("/v1/embed", json={"texts": SENTENCES[:1]}).status_code == 200  # PyTorch
        assert (
            c.post("/embed", json={"inputs": SENTENCES[:1]}, headers={"authorization": ""}).status_code == 401
        )
    want = bertkit.pipeline("text-classification", model=clf_dir, precision="fp32")(SENTENCES)
    assert [g["label"] for g in got] == [w["label"] for w in want] == [t[0]["label"] for t in tei]
    assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
    assert np.allclose([t[0]["score"] for t in tei], [w["score"] for w in want], atol=1e-5)


def test_openvino_backend_serves_the_same_answers(clf_dir):
    """`serve --backend openvino`: classification and embeddings on OpenVINO give PyTorch fp32's."""
    pytest.importorskip("openvino", reason="openvino (dev extra) is not installed")
    from bertkit.engine.runner import InferenceOptions
    from bertkit.runtime import RuntimeArgs, compute_init

    fp32 = compute_init(RuntimeArgs(precision="fp32"), distributed=False)
    app = create_app(
        clf_dir, InferenceOptions(backend="openvino"), runtime=fp32, serving=Serving(api_key="k-onnx")
    )
    with TestClient(app, headers=KEYED) as c:
        got = c.post("/v1/classify", json={"texts": SENTENCES}).json()["predictions"]
        vectors = c.post("/v1/embed", json={"texts": SENTENCES}).json()["embeddings"]
        openai = c.post("/v1/embeddings", json={"input": SENTENCES}).json()["data"]
        tei = c.post("/predict", json={"inputs": [[s] for s in SENTENCES]}).json()
    assert np.allclose([d["embedding"] for d in openai], vectors, atol=1e-6)
    assert [t[0]["label"] for t in tei] == [g["label"] for g in got]
    want = bertkit.pipeline("text-classification", model=clf_dir, precision="fp32")(SENTENCES)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)
    emb = bertkit.pipeline("feature-extraction", model=clf_dir, precision="fp32")(SENTENCES)
    assert np.allclose(vectors, emb, atol=1e-4)

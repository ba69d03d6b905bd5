"""The server's OpenAI and Text Embeddings Inference routes against offline inference (the same
inputs give the same vectors, labels, scores and rank order), their fields (truncation, raw
scores, token ids, base64), their error shapes, and a property-based run over the OpenAPI
document's request bodies: no 5xx, every error a JSON body in its route's shape."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

import bertkit
from bertkit.models.heads import BertForSequenceClassification

pytest.importorskip("fastapi", reason="fastapi is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from bertkit.runtime import RuntimeArgs, compute_init  # noqa: E402
from bertkit.serve.app import create_app as _create_app  # noqa: E402

FP32 = compute_init(RuntimeArgs(precision="fp32"), distributed=False)  # exact comparisons, any CPU


def create_app(model_dir, **kw):
    return _create_app(model_dir, runtime=FP32, **kw)


SENTENCES = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
]
QUERY = "a charming film"


@pytest.fixture(scope="module")
def clf_dir(head_dir, tmp_path_factory):
    return head_dir(
        tmp_path_factory.mktemp("api") / "clf", BertForSequenceClassification, "classify", ["neg", "pos"]
    )


@pytest.fixture(scope="module")
def scorer_dir(head_dir, tmp_path_factory):
    """A one-score (regression) pair model: a cross-encoder's layout."""
    d = head_dir(tmp_path_factory.mktemp("api") / "reg", BertForSequenceClassification, "classify", ["score"])
    config = json.loads((d / "config.json").read_text())
    config["bertkit"]["regression"] = True
    config["problem_type"] = "regression"
    (d / "config.json").write_text(json.dumps(config))
    return d


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_embeddings_in_every_dialect_equal_offline(tiny_dir):
    emb = bertkit.pipeline("feature-extraction", model=tiny_dir, precision="fp32")
    want, want_unit = emb(SENTENCES), emb(SENTENCES, normalize=True)
    with TestClient(create_app(tiny_dir)) as c:
        tei = c.post("/embed", json={"inputs": SENTENCES}).json()
        one = c.post("/embed", json={"inputs": SENTENCES[0]}).json()
        r = c.post("/v1/embeddings", json={"input": SENTENCES, "model": "anything"}).json()
        b64 = c.post("/v1/embeddings", json={"input": SENTENCES, "encoding_format": "base64"}).json()
        root = c.post("/", json={"inputs": SENTENCES[:2], "normalize": False}).json()
    assert np.allclose(tei, want_unit, atol=1e-5) and np.allclose(one, want_unit[:1], atol=1e-5)
    assert r["object"] == "list" and [d["index"] for d in r["data"]] == [0, 1, 2, 3]
    assert np.allclose([d["embedding"] for d in r["data"]], want, atol=1e-5)
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64["data"]]
    assert np.allclose(decoded, want, atol=1e-5) and cosine(decoded, want).min() >= 0.9999
    assert np.allclose(root, want[:2], atol=1e-5)
    tokens = sum(len(ids) for ids in emb.tokenizer(SENTENCES)["input_ids"])
    assert r["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_openai_token_ids_dimensions_and_models(tiny_dir):
    tok = bertkit.Tokenizer.from_pretrained(tiny_dir)
    ids = tok(SENTENCES[:2], add_special_tokens=False)["input_ids"]
    with TestClient(create_app(tiny_dir, serving=None)) as c:
        by_text = c.post("/v1/embeddings", json={"input": SENTENCES[:2]}).json()["data"]
        by_ids = c.post("/v1/embeddings", json={"input": ids}).json()["data"]
        one = c.post("/v1/embeddings", json={"input": ids[0]}).json()["data"]
        assert np.allclose([d["embedding"] for d in by_ids], [d["embedding"] for d in by_text], atol=1e-6)
        assert np.allclose(one[0]["embedding"], by_text[0]["embedding"], atol=1e-6)
        dim = len(by_text[0]["embedding"])
        assert c.post("/v1/embeddings", json={"input": "a", "dimensions": dim}).status_code == 200
        r = c.post("/v1/embeddings", json={"input": "a", "dimensions": 8})
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "dimensions" and "cannot shorten" in err["message"]
        assert err["type"] == "invalid_request_error"
        r = c.post("/v1/embeddings", json={"input": [[1, 10**9]]})
        assert r.status_code == 400 and "outside the vocabulary" in r.json()["error"]["message"]
        listed = c.get("/v1/models").json()
    assert listed["object"] == "list" and listed["data"][0]["id"] == str(tiny_dir)


def test_predict_gives_the_pipelines_scores_for_texts_and_pairs(clf_dir):
    clf = bertkit.pipeline("text-classification", model=clf_dir, precision="fp32")
    want = clf(SENTENCES)
    pair = clf(SENTENCES[0], text_pair=SENTENCES[1])
    with TestClient(create_app(clf_dir)) as c:
        one = c.post("/predict", json={"inputs": SENTENCES[0]}).json()
        batch = c.post("/predict", json={"inputs": [[s] for s in SENTENCES]}).json()
        mixed = c.post("/predict", json={"inputs": [[SENTENCES[0], SENTENCES[1]], [SENTENCES[2]]]}).json()
        raw = c.post("/predict", json={"inputs": SENTENCES[0], "raw_scores": True}).json()
        root = c.post("/", json={"inputs": SENTENCES[0]}).json()
        info = c.get("/info").json()
    for got, w in zip([one, *batch], [want[0], *want], strict=True):
        assert [p["label"] for p in got] == sorted(w["scores"], key=lambda k: -w["scores"][k])
        assert all(abs(p["score"] - w["scores"][p["label"]]) < 1e-5 for p in got)
    assert mixed[0][0]["label"] == pair["label"] and abs(mixed[0][0]["score"] - pair["score"]) < 1e-5
    assert mixed[1] == batch[2]
    logits = torch.tensor([[p["score"] for p in sorted(raw, key=lambda p: p["label"])]])
    assert torch.allclose(logits.softmax(-1)[0], torch.tensor([want[0]["scores"][k] for k in ("neg", "pos")]))
    assert root == one
    assert info["model_type"] == {
        "classifier": {"id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}}
    }
    assert info["max_input_length"] == 128 and info["max_batch_tokens"] == 16384


def test_rerank_orders_as_the_offline_pair_scores(clf_dir, scorer_dir):
    for d, key in ((scorer_dir, None), (clf_dir, "pos")):  # one score; the positive label's probability
        offline = bertkit.pipeline("text-classification", model=d, precision="fp32")(
            [QUERY] * len(SENTENCES), text_pair=SENTENCES
        )
        want = [o["score"] if key is None else o["scores"][key] for o in offline]
        with TestClient(create_app(d)) as c:
            got = c.post("/rerank", json={"query": QUERY, "texts": SENTENCES, "return_text": True}).json()
            root = c.post("/", json={"query": QUERY, "texts": SENTENCES}).json()
            kind = next(iter(c.get("/info").json()["model_type"]))
        assert [g["index"] for g in got] == sorted(range(len(want)), key=lambda i: -want[i])
        assert all(
            abs(g["score"] - want[g["index"]]) < 1e-5 and g["text"] == SENTENCES[g["index"]] for g in got
        )
        assert [g["index"] for g in root] == [g["index"] for g in got] and "text" not in root[0]
        assert kind == ("reranker" if key is None else "classifier")


def test_routes_a_model_cannot_serve_say_why(tiny_dir, head_dir, tmp_path):
    with TestClient(create_app(tiny_dir)) as c:
        for path, body in (("/rerank", {"query": "q", "texts": ["a"]}), ("/predict", {"inputs": "a"})):
            r = c.post(path, json=body)
            assert r.status_code == 424 and r.json()["error_type"] == "backend"
            assert "an encoder without a classifier" in r.json()["error"]
    three = head_dir(tmp_path / "three", BertForSequenceClassification, "classify", ["a", "b", "c"])
    with TestClient(create_app(three)) as c:
        r = c.post("/rerank", json={"query": "q", "texts": ["a"]})
        assert r.status_code == 424 and "3 labels" in r.json()["error"]
        assert c.post("/predict", json={"inputs": "a"}).status_code == 200


@pytest.fixture(scope="module")
def short_dir(tiny_dir, tmp_path_factory):
    """The tiny BERT as a sentence-transformers directory of 16 tokens (mean pooling)."""
    import shutil

    d = tmp_path_factory.mktemp("api") / "short"
    shutil.copytree(tiny_dir, d)
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (d / "modules.json").write_text(json.dumps(modules))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    return d


def test_truncation_fields(short_dir):
    emb = bertkit.pipeline("feature-extraction", model=short_dir, precision="fp32")
    long = " ".join(SENTENCES)
    tok = emb.tokenizer
    left = tok([long], truncation=True, max_length=16, truncation_side="left")
    want_left = emb.embed_features(
        [{"input_ids": left["input_ids"][0], "token_type_ids": left["token_type_ids"][0]}]
    )
    with TestClient(create_app(short_dir)) as c:
        assert c.get("/info").json()["max_input_length"] == 16
        r = c.post("/embed", json={"inputs": long})
        assert (
            r.status_code == 413
            and r.json()["error_type"] == "validation"
            and "at most 16" in r.json()["error"]
        )
        right = c.post("/embed", json={"inputs": long, "truncate": True, "normalize": False}).json()
        left_got = c.post(
            "/embed",
            json={"inputs": long, "truncate": True, "truncation_direction": "Left", "normalize": False},
        ).json()
        openai = c.post("/v1/embeddings", json={"input": long}).json()  # cut, as sentence-transformers cuts
    assert np.allclose(right, emb([long]), atol=1e-5) and np.allclose(left_got, want_left, atol=1e-5)
    assert not np.allclose(right, left_got, atol=1e-3)
    assert (
        np.allclose(openai["data"][0]["embedding"], right[0], atol=1e-5)
        and openai["usage"]["prompt_tokens"] == 16
    )


def test_tokenize_gives_ids_texts_and_offsets(tiny_dir):
    tok = bertkit.Tokenizer.from_pretrained(tiny_dir)
    text = "Peter Blackburn's lamb"
    with TestClient(create_app(tiny_dir)) as c:
        (got,) = c.post("/tokenize", json={"inputs": text}).json()
        (bare,) = c.post("/tokenize", json={"inputs": [text], "add_special_tokens": False}).json()
    assert [t["id"] for t in got] == tok(text)["input_ids"]
    assert got[0] == {"id": tok.cls_token_id, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert [t["id"] for t in bare] == tok(text, add_special_tokens=False)["input_ids"]
    assert all(t["text"] == text[t["start"] : t["stop"]] and not t["special"] for t in bare)


def test_error_shapes_of_each_dialect(clf_dir):
    with TestClient(create_app(clf_dir)) as c:
        r = c.post("/embed", json={"inputs": [1, 2]})
        assert (
            r.status_code == 422 and r.json()["error_type"] == "validation" and "inputs" in r.json()["error"]
        )
        r = c.post("/predict", json={"inputs": [["a", "b", "c"]]})
        assert r.status_code == 422 and "not 3 texts" in r.json()["error"]
        r = c.post("/embed", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and set(r.json()) == {"error", "error_type"}
        r = c.post("/embed", json={"inputs": []})
        assert r.status_code == 413 and "cannot be empty" in r.json()["error"]
        r = c.post("/v1/embeddings", json={"input": 3})
        err = r.json()["error"]
        assert (
            r.status_code == 400
            and set(err) == {"message", "type", "param", "code"}
            and err["param"] == "input"
        )
        r = c.post("/v1/embeddings", json={"input": []})
        assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
        assert c.post("/v1/classify", json={"texts": 3}).json() == {
            "error": '"texts" must be a list of strings'
        }
        surrogate = b'{"texts": ["ok", "\\ud800"], "inputs": ["\\ud800"], "input": ["\\ud800"]}'
        for path in ("/v1/classify", "/v1/embed", "/embed", "/v1/embeddings", "/tokenize"):
            r = c.post(path, content=surrogate, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500 and "error" in r.json(), (path, r.text)


def test_openapi_describes_every_routes_body(clf_dir):
    with TestClient(create_app(clf_dir)) as c:
        doc = c.get("/openapi.json").json()
    posts = {p: v["post"] for p, v in doc["paths"].items() if "post" in v}
    routes = {
        "/v1/classify",
        "/v1/embed",
        "/v1/embeddings",
        "/embed",
        "/predict",
        "/rerank",
        "/tokenize",
        "/",
    }
    assert set(posts) >= routes
    for path, op in posts.items():
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.split("/")[-1] in doc["components"]["schemas"], path
    assert "query" in doc["components"]["schemas"]["RerankRequest"]["properties"]


def test_openapi_bodies_never_get_a_5xx(clf_dir):
    """Bodies drawn from every POST route's declared schema, and arbitrary JSON: no 5xx, and every
    error a JSON body in the route's dialect."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    anything = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
    settings = hypothesis.settings(
        max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(hypothesis.HealthCheck)
    )
    with TestClient(create_app(clf_dir)) as c:
        doc = c.get("/openapi.json").json()
        posts = {p: v["post"] for p, v in doc["paths"].items() if "post" in v}
        for path, op in posts.items():
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            bodies = from_schema(schema, doc["components"]["schemas"], st)
            settings(hypothesis.given(body=bodies | anything)(_posts_safely(c, path)))()


def from_schema(schema: dict, defs: dict, st):
    """Values a JSON schema of the OpenAPI document admits (the subset pydantic writes: $ref,
    anyOf, enum/const, objects, arrays, strings, numbers, booleans, null)."""
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].split("/")[-1]], defs, st)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs, st) for s in schema["anyOf"]])
    if "enum" in schema or "const" in schema:
        return st.sampled_from(schema.get("enum", [schema.get("const")]))
    kind = schema.get("type")
    if kind == "object":
        props, required = schema.get("properties", {}), set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs, st) for k, v in props.items() if k in required},
            optional={k: from_schema(v, defs, st) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), defs, st), max_size=5)
    simple = {
        "string": st.text(max_size=40),
        "integer": st.integers(schema.get("minimum"), schema.get("maximum")),
        "number": st.floats(allow_nan=False, allow_infinity=False),
        "boolean": st.booleans(),
        "null": st.none(),
    }
    return simple.get(kind, st.none() | st.text(max_size=5))


def _posts_safely(c, path: str):
    def check(body):
        r = c.post(path, json=body)
        assert r.status_code < 500, (path, body, r.text)
        if r.status_code != 200:
            err = r.json()
            if path.startswith("/v1/embeddings"):
                assert isinstance(err["error"]["message"], str), err
            elif path.startswith("/v1/"):
                assert set(err) == {"error"}, err
            else:
                assert set(err) == {"error", "error_type"}, err

    return check

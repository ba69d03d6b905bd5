"""The clients people already use, unmodified, against `bertkit serve` on loopback with an API
key: OpenAI's Python client, huggingface_hub's InferenceClient (TEI's /embed and /predict) and
langchain-huggingface's HuggingFaceEndpointEmbeddings (TEI's POST /). Their answers must equal
offline inference: cosine >= 0.9999, the same labels, the same rerank order."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

import bertkit
from bertkit.models.heads import BertForSequenceClassification

pytest.importorskip("fastapi", reason="fastapi is not installed")
openai = pytest.importorskip("openai", reason="openai (dev extra) is not installed")
hub_inference = pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed")
lc_hf = pytest.importorskip(
    "langchain_huggingface", reason="langchain-huggingface (dev extra) is not installed"
)

from huggingface_hub.errors import HfHubHTTPError  # noqa: E402

from bertkit.runtime import RuntimeArgs, compute_init  # noqa: E402
from bertkit.serve.app import create_app  # noqa: E402
from bertkit.serve.limits import Serving  # noqa: E402

KEY = "sk-bertkit-test-key"
FP32 = compute_init(RuntimeArgs(precision="fp32"), distributed=False)
SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The European Commission said on Thursday it disagreed with German advice.",
    "unflinchingly bleak and desperate",
]


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def minilm_server(minilm_dir, loopback):
    app = create_app(minilm_dir, runtime=FP32, serving=Serving(api_key=KEY, model_name="all-MiniLM-L6-v2"))
    with loopback(app) as url:
        yield url


@pytest.fixture(scope="module")
def offline(minilm_dir):
    return bertkit.pipeline("feature-extraction", model=minilm_dir, precision="fp32")(SENTENCES)


def test_openai_client(minilm_server, offline):
    client = openai.OpenAI(base_url=f"{minilm_server}/v1", api_key=KEY, max_retries=0)
    default = client.embeddings.create(model="all-MiniLM-L6-v2", input=SENTENCES)  # the client asks base64
    floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=SENTENCES, encoding_format="float")
    for response in (default, floats):
        got = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
        assert cosines(got, offline).min() >= 0.9999
    assert default.model == "all-MiniLM-L6-v2" and default.usage.prompt_tokens > len(SENTENCES)
    assert [m.id for m in client.models.list()] == ["all-MiniLM-L6-v2"]
    bad = openai.OpenAI(base_url=f"{minilm_server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="x", input="a")


def test_huggingface_hub_inference_client(minilm_server, offline):
    client = hub_inference.InferenceClient(model=f"{minilm_server}/embed", token=KEY)
    got = np.vstack([client.feature_extraction(s) for s in SENTENCES])
    assert got.shape == (len(SENTENCES), 384) and cosines(got, offline).min() >= 0.9999
    bad = hub_inference.InferenceClient(model=f"{minilm_server}/embed", token="wrong")
    with pytest.raises(HfHubHTTPError) as e:
        bad.feature_extraction("a")
    assert e.value.response.status_code == 401


def test_langchain_endpoint_embeddings(minilm_server, offline):
    lc = lc_hf.HuggingFaceEndpointEmbeddings(model=minilm_server, huggingfacehub_api_token=KEY)
    docs = lc.embed_documents(SENTENCES)
    query = lc.embed_query(SENTENCES[0])
    assert cosines(docs, offline).min() >= 0.9999 and cosines([query], offline[:1]).min() >= 0.9999


def test_text_classification_and_rerank_by_their_clients(head_dir, tmp_path, loopback):
    """A classifier through InferenceClient.text_classification; a one-score pair model through
    /rerank (TEI's clients post it as it is): the labels and the order of offline inference."""
    clf = head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["neg", "pos"])
    want = bertkit.pipeline("text-classification", model=clf, precision="fp32")(SENTENCES)
    with loopback(create_app(clf, runtime=FP32, serving=Serving(api_key=KEY))) as url:
        client = hub_inference.InferenceClient(model=f"{url}/predict", token=KEY)
        got = [client.text_classification(s) for s in SENTENCES]
    tops = [g[0] if isinstance(g, list) else g for g in got]  # one element, or the list of labels
    assert [t.label for t in tops] == [w["label"] for w in want]
    assert np.allclose([t.score for t in tops], [w["score"] for w in want], atol=1e-5)

    reg = head_dir(tmp_path / "reg", BertForSequenceClassification, "classify", ["score"])
    config = json.loads((reg / "config.json").read_text())
    config["bertkit"]["regression"], config["problem_type"] = True, "regression"
    (reg / "config.json").write_text(json.dumps(config))
    query = "a man plays music"
    scores = bertkit.pipeline("text-classification", model=reg, precision="fp32")(
        [query] * len(SENTENCES), text_pair=SENTENCES
    )
    with loopback(create_app(reg, runtime=FP32, serving=Serving(api_key=KEY))) as url:
        r = httpx.post(
            f"{url}/rerank",
            json={"query": query, "texts": SENTENCES},
            headers={"authorization": f"Bearer {KEY}"},
        )
    order = sorted(range(len(SENTENCES)), key=lambda i: -scores[i]["score"])
    assert [x["index"] for x in r.json()] == order

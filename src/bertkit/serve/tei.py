"""Text Embeddings Inference's API, the contract its clients (huggingface_hub's InferenceClient,
langchain-huggingface, LlamaIndex's TEI embeddings) are written against:

    POST /embed    {"inputs": str | [str], "normalize": true, "truncate": false,
                    "truncation_direction": "Right" | "Left"} -> [[float, ...], ...]
    POST /predict  {"inputs": str | [str, str] | [[str], [str, str], ...], "raw_scores": false,
                    "truncate": false} -> [{"label", "score"}, ...] by score (a batch: a list of those)
    POST /rerank   {"query", "texts": [str], "raw_scores": false, "return_text": false,
                    "truncate": false} -> [{"index", "score", "text"?}, ...], highest score first
    POST /tokenize {"inputs", "add_special_tokens": true} -> [[{"id", "text", "special", "start", "stop"}]]
    GET /info      model_id, model_dtype, model_type, max_input_length, max_batch_tokens, ...
    POST /         /embed, /predict or /rerank, as the model's kind serves (TEI's route for
                   clients that know only the server's address)

/predict runs a fine-tuned classifier (probabilities as the model was trained: softmax, or
sigmoid for multi-label; `raw_scores` gives logits); /rerank a sentence-pair model: the score of
(query, text) is the output of a one-score (regression) model, or the probability of the positive
label of a two-class one (`--rerank-label`). Inputs over the limit are refused unless `truncate`.
Errors: `{"error", "error_type"}`, validation 413, tokenizer 422, overloaded 429, backend 424.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import torch
from fastapi import FastAPI, Request
from pydantic import BaseModel

from bertkit.engine.runner import engine_dtype
from bertkit.errors import HTTPError
from bertkit.serve.model import EMBEDDING
from bertkit.serve.native import check_texts, read_json
from bertkit.serve.schemas import (
    EmbedRequest,
    PredictRequest,
    RerankRequest,
    TokenizeRequest,
    openapi_body,
    parse,
)
from bertkit.serve.server import Server


def add_routes(app: FastAPI, server: Server) -> list[type[BaseModel]]:
    api = Tei(server)
    routes: list[tuple[str, type[BaseModel], Any]] = [
        ("embed", EmbedRequest, api.embed),
        ("predict", PredictRequest, api.predict),
        ("rerank", RerankRequest, api.rerank),
        ("tokenize", TokenizeRequest, api.tokenize),
    ]
    for name, body, work in routes:
        add(app, server, name, body, work)

    @app.post("/", openapi_extra=openapi_body(PredictRequest), name="tei-root")
    async def root(request: Request):
        """What the model's kind serves: /embed, /predict, or /rerank for a body with a query."""
        return await server.answer(request, "root", api.root)

    @app.get("/info")
    async def info():
        """The model and the server's limits, as TEI describes them."""
        return api.info()

    return [body for _, body, _ in routes]


def add(app: FastAPI, server: Server, name: str, body: type[BaseModel], work: Any) -> None:
    async def handler(request: Request):
        return await server.answer(request, name, work)

    handler.__doc__ = body.__doc__
    app.post(f"/{name}", name=name, openapi_extra=openapi_body(body))(handler)


class Tei:
    def __init__(self, server: Server):
        self.server, self.model, self.limits = server, server.model, server.limits

    async def embed(self, raw: bytes) -> tuple[Any, Any]:
        req = parse(EmbedRequest, raw, 422)
        texts = self._texts(req.inputs)
        side = req.truncation_direction.lower()
        feats, counts = self.model.encode(
            texts, limit=self.model.embedder.max_length, truncate=req.truncate, side=side
        )
        timed = await self.server.run("embed", [(f, None, req.normalize) for f in feats], sum(counts))
        return [v.tolist() for v in timed.results], timed

    async def predict(self, raw: bytes) -> tuple[Any, Any]:
        req = parse(PredictRequest, raw, 422)
        names = self.model.labels
        if not names:
            raise HTTPError(
                424,
                f"{self.model.name} is {self.model.what()}: /predict needs a model fine-tuned "
                "with --task classify",
                kind="backend",
            )
        single, seqs = sequences(req.inputs)
        check_texts([s[0] for s in seqs], "inputs", self.limits)  # --max-texts counts sequences
        check_texts([s[1] for s in seqs if len(s) == 2], "inputs", self.limits)
        logits, timed = await self._logits(seqs, req.truncate, req.truncation_direction)
        scores = torch.stack(logits) if req.raw_scores else self.model.probabilities(logits)
        out = [ranked(names, row.tolist()) for row in scores]
        return (out[0] if single else out), timed

    async def rerank(self, raw: bytes) -> tuple[Any, Any]:
        req = parse(RerankRequest, raw, 422)
        at = self.model.rerank_index
        if at is None:
            raise HTTPError(424, self.model.why_not_rerank(), kind="backend")
        if not req.texts:
            raise HTTPError(413, "Input validation error: `texts` cannot be empty", param="texts")
        check_texts(req.texts, "texts", self.limits)
        check_texts([req.query], "query", self.limits)
        logits, timed = await self._logits(
            [[req.query, t] for t in req.texts], req.truncate, req.truncation_direction
        )
        scores = torch.stack(logits) if req.raw_scores else self.model.probabilities(logits)
        ranks = [{"index": i, "score": float(row[at])} for i, row in enumerate(scores)]
        if req.return_text:
            for r in ranks:
                r["text"] = req.texts[r["index"]]
        return sorted(ranks, key=lambda r: -r["score"]), timed

    async def tokenize(self, raw: bytes) -> tuple[Any, Any]:
        req = parse(TokenizeRequest, raw, 422)
        texts = self._texts(req.inputs)
        return self.model.tokens(texts, req.add_special_tokens), None

    async def root(self, raw: bytes) -> tuple[Any, Any]:
        body = read_json(raw)
        if self.model.kind == EMBEDDING:
            return await self.embed(raw)
        if "query" in body and self.model.rerank_index is not None:
            return await self.rerank(raw)
        return await self.predict(raw)

    def info(self) -> dict:
        m, lim = self.model, self.limits
        if m.kind == EMBEDDING:
            kind: dict = {"embedding": {"pooling": m.embedder.pooling}}
        else:
            labels = m.labels or []
            kind = {
                m.kind: {
                    "id2label": {str(i): n for i, n in enumerate(labels)},
                    "label2id": {n: i for i, n in enumerate(labels)},
                }
            }
        return {
            "model_id": m.name,
            "model_sha": None,
            "model_dtype": str(engine_dtype(m.runtime)).removeprefix("torch."),
            "model_type": kind,
            "max_concurrent_requests": lim.max_concurrent_requests,
            "max_input_length": m.embedder.max_length if m.kind == EMBEDDING else m.score_length,
            "max_batch_tokens": lim.max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": lim.max_texts,
            "auto_truncate": False,
            "tokenization_workers": 1,
            "version": importlib.metadata.version("bertkit"),
        }

    # ---- helpers -------------------------------------------------------------------------------

    def _texts(self, inputs: str | list[str]) -> list[str]:
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not texts:
            raise HTTPError(413, "Input validation error: `inputs` cannot be empty", param="inputs")
        check_texts(texts, "inputs", self.limits)
        return texts

    async def _logits(self, seqs: list[list[str]], truncate: bool, direction: str) -> tuple[list, Any]:
        texts, pairs = [s[0] for s in seqs], [s[1] if len(s) == 2 else None for s in seqs]
        limit = self.model.score_length
        feats, counts = self.model.encode(
            texts, pairs, limit=limit, truncate=truncate, side=direction.lower()
        )
        timed = await self.server.run("scores", feats, sum(counts))
        return timed.results, timed


def sequences(inputs: str | list[str] | list[list[str]]) -> tuple[bool, list[list[str]]]:
    """TEI's /predict inputs -> (one input?, [[text] or [text, pair], ...])."""
    if isinstance(inputs, str):
        return True, [[inputs]]
    if not inputs:
        raise HTTPError(413, "Input validation error: `inputs` cannot be empty", param="inputs")
    if isinstance(inputs[0], str):  # one text, or one pair
        seqs, single = [inputs], True
    else:
        seqs, single = inputs, False
    for s in seqs:
        if len(s) not in (1, 2):
            raise HTTPError(
                422, f"inputs: a sequence is a text or a pair of texts, not {len(s)} texts", param="inputs"
            )
    return single, [list(s) for s in seqs]


def ranked(names: list[str], scores: list[float]) -> list[dict]:
    """[{"label", "score"}, ...], highest score first."""
    pairs = sorted(zip(names, scores, strict=True), key=lambda p: -p[1])
    return [{"label": n, "score": float(x)} for n, x in pairs]

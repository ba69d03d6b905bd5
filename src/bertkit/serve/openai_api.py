"""OpenAI's embeddings API, as its clients call it (`OpenAI(base_url=".../v1").embeddings.create`):

    POST /v1/embeddings {"input": str | [str] | [int] | [[int]], "model", "encoding_format":
        "float" | "base64", "dimensions", "user"}
        -> {"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
            "usage": {"prompt_tokens", "total_tokens"}}
    GET /v1/models -> {"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}

The vectors are the model's sentence embeddings (its pooling and normalisation, as /embed and
/v1/embed give them); texts over the model's limit are cut there, as sentence-transformers cuts
them. Token ids are wrapped in the tokenizer's special tokens. Any `model` name is answered (the
server serves one); `dimensions` other than the model's own is refused, since no model here was
trained to be shortened. Errors: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from pydantic import BaseModel

from bertkit.errors import HTTPError
from bertkit.serve.native import check_texts
from bertkit.serve.schemas import EmbeddingsRequest, openapi_body, parse
from bertkit.serve.server import Server


def add_routes(app: FastAPI, server: Server) -> list[type[BaseModel]]:
    model, created = server.model, int(time.time())

    async def work(raw: bytes) -> tuple[Any, Any]:
        req = parse(EmbeddingsRequest, raw, 400)
        dim = model.embedder.dim
        if req.dimensions is not None and req.dimensions != dim:
            raise HTTPError(
                400,
                f"dimensions: {model.name} gives {dim}-dimensional embeddings and cannot shorten "
                "them (it was not trained to be truncated)",
                param="dimensions",
            )
        feats, counts = inputs(server, req.input)
        timed = await server.run("embed", [(f, None, None) for f in feats], sum(counts))
        data = [
            {"object": "embedding", "index": i, "embedding": encoded(v, req.encoding_format)}
            for i, v in enumerate(timed.results)
        ]
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return {"object": "list", "data": data, "model": model.name, "usage": usage}, timed

    @app.post("/v1/embeddings", openapi_extra=openapi_body(EmbeddingsRequest))
    async def embeddings(request: Request):
        """OpenAI's embeddings: vectors for a text, texts or token ids."""
        return await server.answer(request, "embeddings", work)

    @app.get("/v1/models")
    async def models():
        """The served model, as OpenAI lists models."""
        entry = {"id": model.name, "object": "model", "created": created, "owned_by": "bertkit"}
        return {"object": "list", "data": [entry]}

    return [EmbeddingsRequest]


def inputs(server: Server, given: Any) -> tuple[list[dict], list[int]]:
    """The request's `input` as engine features and token counts."""
    model, limit = server.model, server.model.embedder.max_length
    if isinstance(given, str):
        given = [given]
    if not given:
        raise HTTPError(400, "input is empty: give a text, a list of texts or token ids", param="input")
    if isinstance(given[0], int):
        given = [given]
    if isinstance(given[0], list):
        if len(given) > server.limits.max_texts:
            raise HTTPError(
                413, f"input has {len(given)} token lists; the limit is {server.limits.max_texts}"
            )
        return model.encode_ids(given, limit)
    check_texts(given, "input", server.limits)
    return model.encode(given, limit=limit)


def encoded(vector: np.ndarray, fmt: str) -> Any:
    """A vector as OpenAI sends it: floats, or base64 of its little-endian float32 bytes."""
    if fmt == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()

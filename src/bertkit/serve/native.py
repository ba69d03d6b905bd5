"""bertkit's own routes, as they have always been:

    POST /v1/classify   {"texts", "text_pairs"}    -> {"predictions": [{"label", "score", "scores"}]}
    POST /v1/ner        {"texts"}                  -> {"entities": [[{"text", "label", "start", "end"}]]}
    POST /v1/qa         {"questions", "contexts"}  -> {"answers": [{"answer", "start", "end", "score"}]}
    POST /v1/embed      {"texts", "pooling", "normalize"} -> {"embeddings": [[float, ...]]}
    POST /v1/fill-mask  {"texts", "top_k"}         -> {"fills": [[{"token", "score", "sequence"}]]}
    GET /v1/model

A route exists when the model can serve it: a task's for a directory fine-tuned for that task,
/v1/embed for any directory (the encoder's hidden states, pooled), /v1/fill-mask for one with
masked-LM weights; the others answer 400. Errors are `{"error": message}`. Long texts are never
silently cut: classification aggregates overlapping windows, NER merges window predictions, QA
slides over the context; embeddings truncate at the model's limit as sentence-transformers does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast, overload

from fastapi import FastAPI, Request
from pydantic import BaseModel

from bertkit.engine.embeddings import POOLINGS
from bertkit.errors import HTTPError
from bertkit.inference.pipelines import TOP_K
from bertkit.serve.limits import Limits
from bertkit.serve.schemas import FillMaskRequest, NativeEmbedRequest, openapi_body, task_request
from bertkit.serve.server import Server
from bertkit.tasks import registry


def add_routes(app: FastAPI, server: Server) -> list[type[BaseModel]]:
    """A POST route per task, /v1/embed, /v1/fill-mask; GET /v1/model. Returns the body models."""
    limits, model = server.limits, server.model
    bodies: list[type[BaseModel]] = []

    def route(endpoint: str, body: type[BaseModel], parse: Callable[[dict], tuple]) -> None:
        async def work(raw: bytes) -> tuple[Any, Any]:
            items, tokens, wrap = parse(read_json(raw))
            timed = await server.run(endpoint, items, tokens)
            return wrap(timed.results), timed

        async def handler(request: Request):
            return await server.answer(request, endpoint, work)

        app.post(f"/v1/{endpoint}", name=endpoint, openapi_extra=openapi_body(body))(handler)
        bodies.append(body)

    def task_parse(cls: Any) -> Callable[[dict], tuple]:
        def parse(body: dict) -> tuple:
            items = task_items(cls, body, limits)
            texts = [t for it in items for t in (it if isinstance(it, tuple) else (it,)) if t]
            return items, model.count(texts), lambda r: {cls.response_key: r}

        return parse

    for cls in registry.TASKS.values():  # /v1/classify, /v1/ner, /v1/qa
        route(cls.name, task_request(cls), task_parse(cls))
    route("embed", NativeEmbedRequest, lambda body: embed_parse(server, body))
    route("fill-mask", FillMaskRequest, lambda body: fill_parse(server, body))

    @app.get("/v1/model")
    async def describe():
        """The model: its task, kind, routes, labels and size."""
        return model.describe()

    return bodies


def read_json(raw: bytes) -> dict:
    """The request body as a JSON object."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise HTTPError(400, f"request body is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise HTTPError(400, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(body, dict):
        raise HTTPError(422, "the body must be a JSON object")
    return body


@overload
def texts_of(body: dict, key: str, limits: Limits) -> list[str]: ...
@overload
def texts_of(body: dict, key: str, limits: Limits, required: bool) -> list[str] | None: ...
def texts_of(body: dict, key: str, limits: Limits, required: bool = True) -> list[str] | None:
    """The list of texts in field `key`, within the limits."""
    v = body.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
        raise HTTPError(422, f'"{key}" must be a list of strings', param=key)
    if not v:
        raise HTTPError(422, f'"{key}" is empty: give at least one text', param=key)
    check_texts(v, key, limits)
    return v


def check_texts(v: list[str], key: str, limits: Limits) -> None:
    """413 for more texts than a request may have, or a text longer than one may be."""
    if len(v) > limits.max_texts:
        raise HTTPError(
            413, f'"{key}" has {len(v)} texts; the limit is {limits.max_texts} per request', param=key
        )
    for i, t in enumerate(v):
        if not t.isascii():  # a lone surrogate ("\ud800") is valid JSON but no text
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise HTTPError(
                    422, f'"{key}"[{i}] is not valid Unicode (character {e.start})', param=key
                ) from None
        if len(t) > limits.max_chars:
            raise HTTPError(
                413,
                f'"{key}"[{i}] has {len(t)} characters; the limit is {limits.max_chars} per text',
                param=key,
            )


def task_items(cls: Any, body: dict, limits: Limits) -> list:
    """A task's request as its items, from the fields the task names (`request_fields`): the
    first field's texts, or with more fields (text pairs, questions and contexts) tuples of the
    texts at the same place, a left-out optional field giving None."""
    keys = (*cls.request_fields, *cls.optional_request_fields)
    columns: list[list[str] | None] = [texts_of(body, k, limits) for k in cls.request_fields]
    columns += [texts_of(body, k, limits, required=False) for k in cls.optional_request_fields]
    first = cast("list[str]", columns[0])  # a required field
    for key, column in zip(keys[1:], columns[1:], strict=True):
        if column is not None and len(column) != len(first):
            raise HTTPError(422, f'"{key}" has {len(column)} texts for {len(first)} "{keys[0]}"')
    if len(keys) == 1:
        return first
    return list(zip(*(c if c is not None else [None] * len(first) for c in columns), strict=True))


def embed_parse(server: Server, body: dict) -> tuple:
    normalize, pooling = body.get("normalize"), body.get("pooling")
    if normalize is not None and not isinstance(normalize, bool):
        raise HTTPError(422, '"normalize" must be true or false')
    if pooling is not None and pooling not in POOLINGS:
        raise HTTPError(422, '"pooling" must be ' + " or ".join(f'"{p}"' for p in POOLINGS))
    texts = texts_of(body, "texts", server.limits)
    feats, counts = server.model.encode(texts, limit=server.model.embedder.max_length)
    items = [(f, pooling, normalize) for f in feats]
    return items, sum(counts), lambda r: {"embeddings": [v.tolist() for v in r]}


def fill_parse(server: Server, body: dict) -> tuple:
    k = body.get("top_k", TOP_K)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise HTTPError(422, '"top_k" must be an integer from 1 to 100')
    texts = texts_of(body, "texts", server.limits)
    return [(t, k) for t in texts], server.model.count(texts), lambda r: {"fills": r}

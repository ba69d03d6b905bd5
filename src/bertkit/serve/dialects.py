"""The three APIs the server speaks, and how each of them says no.

    native  bertkit's own /v1/classify, /v1/ner, /v1/qa, /v1/embed, /v1/fill-mask, /v1/model:
            {"error": message}
    openai  /v1/embeddings, /v1/models: {"error": {"message", "type", "param", "code"}}
    tei     Text Embeddings Inference's /embed, /predict, /rerank, /tokenize, /info and POST /:
            {"error": message, "error_type": "validation" | "tokenizer" | "overloaded" | "backend"
            | "unhealthy" | "unauthorized"}

An `HTTPError` carries the status, the message, TEI's error type (`kind`) and the field at fault
(`param`); `error_response` renders it in the dialect of the route it happened on.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from bertkit.errors import HTTPError

NATIVE, OPENAI, TEI = "native", "openai", "tei"
OPENAI_ROUTES = ("/v1/embeddings", "/v1/models")
TEI_ROUTES = ("/embed", "/predict", "/rerank", "/tokenize", "/info")

# OpenAI's error types by status; its clients raise by status (AuthenticationError for 401, ...)
_OPENAI_TYPES = {401: "invalid_request_error", 429: "rate_limit_error"}
_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 413: "request_too_large"}


def dialect_of(path: str, method: str = "POST") -> str:
    """Which API a request is in, by its route: POST / is TEI's (GET / is the page)."""
    path = path.rstrip("/") or "/"
    if path in OPENAI_ROUTES:
        return OPENAI
    if path in TEI_ROUTES or (path == "/" and method == "POST"):
        return TEI
    return NATIVE


def error_body(dialect: str, e: HTTPError) -> dict:
    if dialect == OPENAI:
        kind = _OPENAI_TYPES.get(e.status, "server_error" if e.status >= 424 else "invalid_request_error")
        code = _OPENAI_CODES.get(e.status)
        return {"error": {"message": e.message, "type": kind, "param": e.param, "code": code}}
    if dialect == TEI:
        return {"error": e.message, "error_type": e.kind}
    return {"error": e.message}


def error_response(dialect: str, e: HTTPError) -> JSONResponse:
    return JSONResponse(error_body(dialect, e), status_code=e.status, headers=e.headers)

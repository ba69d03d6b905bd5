"""Who may call the server and what each call leaves behind.

- API keys (`--api-key`, `--api-key-file`): every route but the page (GET /), /health, /ready
  and the OpenAPI docs (and /metrics with --public-metrics) wants `Authorization: Bearer KEY`;
  anything else is 401 in the route's dialect. Keys are compared in constant time (their SHA-256
  digests, so a key of another length takes as long) and never logged.
- Request ids: `x-request-id` from the request (up to 128 letters, digits and `-_.:`), or a new
  one; echoed on the response with `x-total-time` (ms; the routes that batch add
  `x-queue-time` and `x-inference-time`, as TEI sends them), and logged with the method, path,
  status and time, one line per request (logger bertkit.serve).
- CORS (`--cors-allow-origin`): browsers may call from those origins only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import sys
import time
import uuid
from pathlib import Path

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bertkit.errors import BertkitError, HTTPError
from bertkit.serve.dialects import dialect_of, error_response
from bertkit.serve.limits import Serving

log = logging.getLogger("bertkit.serve")
PUBLIC = ("/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
TIMING = ("x-request-id", "x-total-time", "x-queue-time", "x-inference-time")


def load_keys(serving: Serving) -> list[str]:
    """The keys of --api-key and --api-key-file (one a line; blank lines and # comments skipped)."""
    keys = [serving.api_key] if serving.api_key else []
    if serving.api_key_file:
        path = Path(serving.api_key_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise BertkitError(f"cannot read the API keys: {e}", path) from None
        found = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not found:
            raise BertkitError("no API key in the file (expected one key a line)", path)
        keys += found
    for k in keys:
        if any(c.isspace() for c in k):
            raise BertkitError("an API key may not contain spaces")
    return keys


def protect(app: FastAPI, keys: list[str], serving: Serving) -> None:
    """The request-id and key gate around every route, and CORS outside it (a preflight is
    answered before the gate, and a 401 still carries the CORS headers a browser needs)."""
    public = PUBLIC + (("/metrics",) if serving.public_metrics else ())
    app.add_middleware(Gate, keys=keys, public=public)
    if serving.cors_allow_origin:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=serving.cors_allow_origin,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=list(TIMING),
        )


class Gate:
    """ASGI middleware: the request id, the API key, the timing header and the log line."""

    def __init__(self, app: ASGIApp, keys: list[str], public: tuple[str, ...]):
        self.app, self.public = app, public
        self.digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def allowed(self, path: str, method: str, headers: dict[bytes, bytes]) -> bool:
        if not self.digests or path in self.public or (path == "/" and method == "GET"):
            return True
        scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        digest = hashlib.sha256(given.strip().encode("latin-1")).digest()
        ok = False
        for d in self.digests:  # every key compared: the time says nothing of which one matched
            ok |= hmac.compare_digest(digest, d)
        return ok and scheme.lower() == "bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 0
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        path, method = scope["path"], scope["method"]

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                h = MutableHeaders(scope=message)
                h["x-request-id"] = rid
                h["x-total-time"] = f"{1000 * (time.perf_counter() - t0):.2f}"
            await send(message)

        if self.allowed(path, method, headers):
            await self.app(scope, receive, send_with_id)
        else:
            e = HTTPError(
                401,
                "a valid API key is needed: send 'Authorization: Bearer KEY'",
                kind="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error_response(dialect_of(path, method), e)(scope, receive, send_with_id)
        took = 1000 * (time.perf_counter() - t0)
        log.info("request %s %s %s %d %.1f ms", rid, method, path, status, took)


def log_to_stderr() -> None:
    """The per-request lines on stderr, beside uvicorn's own."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

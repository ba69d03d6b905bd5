"""The server's engine side (`Server`): one micro-batcher per engine function on a single engine
thread, readiness after a warm-up pass, the bound on requests in flight, the metrics, and
`answer`, which turns a request into a response in its route's dialect, never a traceback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bertkit.errors import BertkitError, HTTPError
from bertkit.serve.batcher import Batcher, Metrics, Timed
from bertkit.serve.dialects import TEI, dialect_of, error_response
from bertkit.serve.limits import Limits, Serving
from bertkit.serve.model import ServedModel

log = logging.getLogger("bertkit.serve")
Work = Callable[[bytes], Awaitable[tuple[Any, Timed | None]]]


class Server:
    """The app's engine side: one micro-batcher per engine function on a single engine thread,
    readiness, the in-flight bound, the metrics, and `answer`, which turns a request into a
    response in its route's dialect and never into a traceback."""

    def __init__(self, model: ServedModel, limits: Limits, serving: Serving):
        self.model, self.limits, self.serving, self.metrics = model, limits, serving, Metrics()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertkit-engine")
        self.batchers: dict[str, Batcher] = {}
        self.ready = False
        self.warm_error: str | None = None
        self.in_flight = 0
        self._warming: asyncio.Task | None = None

    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        for name, fn in self.model.fns.items():
            self.batchers[name] = Batcher(name, fn, self.limits, self.executor, self.metrics)
            self.batchers[name].start()
        self._warming = asyncio.get_running_loop().create_task(self._warm())
        yield
        for b in self.batchers.values():  # uvicorn has drained in-flight requests by now
            if b.task:
                b.task.cancel()
        if self._warming:
            self._warming.cancel()
        self.executor.shutdown(wait=True)

    async def _warm(self) -> None:
        """Ready once a pass through every engine function has run (on the engine thread)."""
        t0 = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.model.warm)
        except Exception as e:  # live but never ready: /ready says why
            log.error("warm-up failed: %s: %s", type(e).__name__, e)
            self.warm_error = f"{type(e).__name__}: {e}"
            return
        self.ready = True
        log.info("ready: warmed up in %.1f s", time.perf_counter() - t0)

    async def run(self, endpoint: str, items: list, tokens: int) -> Timed:
        """Items through the engine function `endpoint`, batched with other requests'."""
        if endpoint not in self.batchers:
            have = ", ".join(f"/v1/{e}" for e in sorted(self.batchers) if e != "scores")
            raise HTTPError(400, f"this model does not serve /v1/{endpoint} (it serves {have})")
        self.metrics.tokens.labels(endpoint).inc(tokens)
        return await self.batchers[endpoint].submit(items, tokens)

    async def answer(self, request: Request, route: str, work: Work) -> Response:
        """The response to one request of `route`: `work(body)` gives the payload and its timings."""
        t0 = time.perf_counter()
        dialect = dialect_of(request.url.path, request.method)
        headers: dict[str, str] = {}
        if self.in_flight >= self.limits.max_concurrent_requests:
            e = HTTPError(
                429,
                f"{self.in_flight} requests in flight; the limit is {self.limits.max_concurrent_requests}",
                kind="overloaded",
            )
            return self._done(route, t0, error_response(dialect, e))
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            payload, timed = await work(await read_body(request, self.limits))
            if timed is not None:
                headers["x-queue-time"] = f"{1000 * timed.queue:.2f}"
                headers["x-inference-time"] = f"{1000 * timed.inference:.2f}"
            response: Response = JSONResponse(payload, headers=headers)
        except HTTPError as e:
            response = error_response(dialect, e)
        except BertkitError as e:
            response = error_response(dialect, HTTPError(422, str(e), kind="tokenizer"))
        except Exception as e:  # never a traceback to the client; the server stays up
            log.exception("internal error on %s", route)
            status = 424 if dialect == TEI else 500  # TEI's "backend" error
            response = error_response(
                dialect, HTTPError(status, f"internal error: {type(e).__name__}: {e}", kind="backend")
            )
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
        return self._done(route, t0, response)

    def _done(self, route: str, t0: float, response: Response) -> Response:
        self.metrics.requests.labels(route, str(response.status_code)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
        return response


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, read no further than the body limit."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
        raise HTTPError(413, f"request body of {size} bytes; the limit is {limits.max_body_bytes}")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body_bytes:
            raise HTTPError(413, f"request body over the limit of {limits.max_body_bytes} bytes")
    return raw

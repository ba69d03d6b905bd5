"""`bertkit serve --model DIR`: HTTP inference on FastAPI + uvicorn, batched dynamically, in three
dialects (`dialects`): bertkit's own routes (`native`), OpenAI's embeddings API (`openai_api`) and
Text Embeddings Inference's (`tei`); plus the page at /, /health (live), /ready (warmed up),
/metrics (Prometheus) and the OpenAPI document at /docs and /openapi.json.

Requests wait in a bounded queue per engine function (503 with Retry-After when full); one worker
per function takes what has arrived within --max-wait-ms, up to --max-batch-tokens tokens and
--batch-texts texts, and runs it as one batch through the inference engine on the one engine
thread, so concurrent clients share batches (`batcher`). More than --max-concurrent-requests
requests in flight are refused (429). Limits: request body size (413), texts per request (413),
characters per text (413); bad JSON, non-UTF-8 bodies and wrong types are 4xx. With --api-key
every route but the page, /health, /ready and the docs wants `Authorization: Bearer KEY` (`access`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

from bertkit.engine.runner import InferenceOptions
from bertkit.runtime import Runtime
from bertkit.serve import access, native, openai_api, tei
from bertkit.serve.limits import Limits, Serving
from bertkit.serve.model import ServedModel
from bertkit.serve.schemas import add_schemas
from bertkit.serve.server import Server


def create_app(
    model_dir: str | Path,
    options: InferenceOptions | None = None,
    limits: Limits | None = None,
    runtime: Runtime | None = None,
    serving: Serving | None = None,
) -> FastAPI:
    """The FastAPI app serving `model_dir` in the three dialects, with the page, /health, /ready,
    /metrics, the API keys, request ids and CORS of `serving`."""
    limits, serving = limits or Limits(), serving or Serving()
    keys = access.load_keys(serving)  # bad key files fail here, before the model loads
    opts = options or InferenceOptions.from_env()
    model = ServedModel(model_dir, opts, runtime, serving.model_name, serving.rerank_label)
    server = Server(model, limits, serving)
    lifespan = contextlib.asynccontextmanager(server.lifespan)
    app = FastAPI(title="bertkit", description=__doc__.split("\n\n")[0], lifespan=lifespan)
    bodies = [
        *native.add_routes(app, server),
        *openai_api.add_routes(app, server),
        *tei.add_routes(app, server),
    ]
    _info_routes(app, server)
    schema = app.openapi
    app.openapi = lambda: app.openapi_schema or add_schemas(schema(), bodies)  # type: ignore[method-assign]
    access.protect(app, keys, serving)
    app.state.server = server
    return app


def _info_routes(app: FastAPI, server: Server) -> None:
    """The page, /health, /ready and /metrics (Prometheus)."""

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse((Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        """Live: the server answers (it may still be warming up)."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        """Ready: a warm-up pass has run through the model (503 until then)."""
        if server.ready:
            return {"status": "ready"}
        why = server.warm_error
        body = {"status": "failed" if why else "warming up", **({"error": why} if why else {})}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def prometheus():
        data, kind = server.metrics.render()
        return Response(data, media_type=kind)


def run(
    model_dir: str,
    host: str,
    port: int,
    options: InferenceOptions,
    limits: Limits,
    runtime: Runtime | None = None,
    serving: Serving | None = None,
) -> None:
    import uvicorn

    serving = serving or Serving()
    app = create_app(model_dir, options, limits, runtime, serving)
    access.log_to_stderr()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=30,
        timeout_keep_alive=serving.keep_alive,  # (uvicorn's 5 s raced httpx's 5 s under load)
    )

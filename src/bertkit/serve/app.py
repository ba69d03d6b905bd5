"""`bertkit serve --model DIR`: HTTP inference on FastAPI + uvicorn, batched dynamically.

    POST /v1/classify   {"texts", "text_pairs"}    -> {"predictions": [{"label", "score", "scores"}]}
    POST /v1/ner        {"texts"}                  -> {"entities": [[{"text", "label", "start", "end"}]]}
    POST /v1/embed      {"texts", "pooling", "normalize"} -> {"embeddings": [[float, ...]]}
    POST /v1/fill-mask  {"texts", "top_k"}         -> {"fills": [[{"token", "score", "sequence"}]]}
    POST /v1/qa         {"questions", "contexts"}  -> {"answers": [{"answer", "start", "end", "score"}]}
    GET /health, GET /v1/model, GET /metrics (Prometheus), GET /docs (OpenAPI)

An endpoint exists when the model can serve it: classify / ner / qa for a directory fine-tuned
for that task, embed for any BERT directory (the encoder's hidden states, pooled), fill-mask for a
directory with masked-LM weights; the others answer 400. Errors are `{"error": message}`.

Requests wait in a bounded queue per endpoint (503 with Retry-After when full); one worker per
endpoint takes what has arrived within --max-wait-ms (up to --batch-texts texts) and runs it as
one batch through the inference engine in a worker thread, so concurrent clients share batches.
Limits: request body size (413), texts per request (413), characters per text (413); bad JSON,
non-UTF-8 bodies and wrong types are 400/422. Long texts are never silently cut: classification
aggregates overlapping windows, NER merges window predictions, QA slides over the context;
embeddings truncate at the model's limit as sentence-transformers does (documented per endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast, overload

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from bertkit.engine.embeddings import POOLINGS
from bertkit.engine.runner import InferenceOptions, encoders
from bertkit.errors import BertkitError, HTTPError
from bertkit.hub import resolve
from bertkit.inference.pipelines import TOP_K
from bertkit.runtime import Runtime, local_runtime
from bertkit.serve.limits import Limits
from bertkit.tasks import registry


class Batcher:
    """Requests of one endpoint -> batches: `fn(items) -> results` runs in the engine thread."""

    def __init__(self, name: str, fn, limits: Limits, executor: ThreadPoolExecutor, metrics):
        self.name, self.fn, self.limits, self.executor, self.metrics = name, fn, limits, executor, metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.waiting = 0  # texts queued
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._worker())

    async def submit(self, items: list) -> list:
        if self.waiting + len(items) > self.limits.max_queue:
            raise HTTPError(503, f"server busy: {self.waiting} texts queued", {"Retry-After": "1"})
        future = asyncio.get_running_loop().create_future()
        self.waiting += len(items)
        self.metrics.queue.labels(self.name).set(self.waiting)
        await self.queue.put((items, future))
        return await future

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            jobs, n = [first], len(first[0])
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while n < self.limits.batch_texts:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
                jobs.append(job)
                n += len(job[0])
            items = [x for job, _ in jobs for x in job]
            self.waiting -= len(items)
            self.metrics.queue.labels(self.name).set(self.waiting)
            self.metrics.batch.labels(self.name).observe(len(items))
            try:
                results = await loop.run_in_executor(self.executor, self.fn, items)
            except Exception as e:  # a failed batch fails its requests, not the server
                for _, fut in jobs:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            s = 0
            for job, fut in jobs:
                if not fut.done():
                    fut.set_result(results[s : s + len(job)])
                s += len(job)


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bertkit_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "bertkit_request_seconds", "request latency", ["endpoint"], registry=self.registry
        )
        self.batch = Histogram(
            "bertkit_batch_texts",
            "texts per engine batch",
            ["endpoint"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.queue = Gauge("bertkit_queue_texts", "texts waiting", ["endpoint"], registry=self.registry)


class ServedModel:
    """The pipelines one model directory can serve, each a function of a list of items."""

    def __init__(self, model_dir: Path, options: InferenceOptions, runtime: Runtime | None = None):
        from bertkit.engine.embeddings import EmbeddingPipeline
        from bertkit.inference.pipelines import FillMaskPipeline, Pipeline
        from bertkit.models.config import BertConfig

        self.dir = model_dir
        self.config = BertConfig.from_pretrained(model_dir)
        self.runtime = rt = runtime or local_runtime()
        self.task = None  # the task of a fine-tuned directory, served at /v1/<task name>
        self.fns: dict[str, Any] = {}
        if registry.is_task_dir(model_dir):
            self.pipe = Pipeline(model_dir, rt, options)
            self.pipe.task = self.task = self.pipe.task.serving()
            self.fns[self.task.name] = self._task_fn
        # One copy of the weights (an ONNX-backed pipeline has no PyTorch encoder to share).
        shared = next(iter(encoders(self.pipe.model)), None) if self.fns else None
        self.embedder = EmbeddingPipeline(model_dir, rt, options=options, encoder=shared)
        self.fns["embed"] = self._embed_fn
        if _has_mlm_weights(model_dir):
            self.filler = FillMaskPipeline(model_dir, rt, options=options)
            self.fns["fill-mask"] = self._fill_fn

    def _task_fn(self, items: list) -> list:
        assert self.task is not None
        return [self.task.present(p) for p in self.pipe.run(self.task.examples_of(items))]

    def _embed_fn(self, items: list) -> list:
        out: list = [None] * len(items)
        for key in {(pooling, normalize) for _, pooling, normalize in items}:  # one pass per setting
            idx = [i for i, it in enumerate(items) if it[1:] == key]
            vectors = self.embedder([items[i][0] for i in idx], *key)
            for i, v in zip(idx, vectors, strict=True):
                out[i] = v.tolist()
        return out

    def _fill_fn(self, items: list) -> list:
        out = []
        for text, k in items:
            r = self.filler(text, top_k=k)
            out.append([r] if r and isinstance(r[0], dict) else r)
        return out

    def describe(self) -> dict:
        c = self.config
        return {
            "model": str(self.dir),
            "task": self.task.name if self.task else None,
            "device": str(self.runtime.device),
            "endpoints": sorted(self.fns),
            "labels": [c.id2label[i] for i in sorted(c.id2label)] if c.id2label else None,
            "max_length": c.max_length,
            "hidden_size": c.hidden_size,
            "layers": c.num_hidden_layers,
        }


def _has_mlm_weights(model_dir: Path) -> bool:
    from safetensors import safe_open

    path = model_dir / "model.safetensors"
    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as f:
        return any(k.startswith(("cls.predictions", "mlm.")) for k in f.keys())  # noqa: SIM118


@overload
def _texts(body: dict, key: str, limits: Limits) -> list[str]: ...
@overload
def _texts(body: dict, key: str, limits: Limits, required: bool) -> list[str] | None: ...
def _texts(body: dict, key: str, limits: Limits, required: bool = True) -> list[str] | None:
    v = body.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
        raise HTTPError(422, f'"{key}" must be a list of strings')
    if not v:
        raise HTTPError(422, f'"{key}" is empty: give at least one text')
    if len(v) > limits.max_texts:
        raise HTTPError(413, f'"{key}" has {len(v)} texts; the limit is {limits.max_texts} per request')
    for i, t in enumerate(v):
        if len(t) > limits.max_chars:
            raise HTTPError(
                413, f'"{key}"[{i}] has {len(t)} characters; the limit is {limits.max_chars} per text'
            )
    return v


def create_app(
    model_dir: str | Path,
    options: InferenceOptions | None = None,
    limits: Limits | None = None,
    runtime: Runtime | None = None,
):
    """The FastAPI app serving `model_dir`: a POST route per endpoint the model serves (the task's,
    /v1/embed, /v1/fill-mask), each through its micro-batcher on the one engine thread; the page,
    /health, /v1/model and /metrics."""
    limits = limits or Limits()
    model = ServedModel(resolve(model_dir), options or InferenceOptions.from_env(), runtime)
    server = _Server(model, limits)
    lifespan = contextlib.asynccontextmanager(server.lifespan)
    app = FastAPI(title="bertkit", description=__doc__.split("\n\n")[0], lifespan=lifespan)

    def route(endpoint: str, parse: Callable[[dict], tuple]) -> None:
        async def handler(request: Request) -> Response:
            return await server.serve(endpoint, request, parse)

        app.post(f"/v1/{endpoint}", name=endpoint)(handler)

    def task_parse(cls: Any) -> Callable[[dict], tuple]:
        return lambda body: (_task_items(cls, body, limits), lambda r: {cls.response_key: r})

    for cls in registry.TASKS.values():  # /v1/classify, /v1/ner, /v1/qa
        route(cls.name, task_parse(cls))
    route("embed", lambda body: _embed_parse(body, limits))
    route("fill-mask", lambda body: _fill_parse(body, limits))
    _info_routes(app, model, server.metrics)
    return app


class _Server:
    """The app's engine side: one micro-batcher per endpoint on a single engine thread, the
    request metrics, and `serve`, which turns a request into a response and never a traceback."""

    def __init__(self, model: ServedModel, limits: Limits):
        self.model, self.limits, self.metrics = model, limits, Metrics()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertkit-engine")
        self.batchers: dict[str, Batcher] = {}

    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        for name, fn in self.model.fns.items():
            self.batchers[name] = Batcher(name, fn, self.limits, self.executor, self.metrics)
            self.batchers[name].start()
        yield
        for b in self.batchers.values():  # uvicorn has drained in-flight requests by now
            if b.task:
                b.task.cancel()
        self.executor.shutdown(wait=True)

    async def serve(self, endpoint: str, request: Request, parse: Callable[[dict], tuple]) -> Response:
        t0 = time.perf_counter()
        try:
            if endpoint not in self.batchers:
                have = ", ".join(f"/v1/{e}" for e in sorted(self.batchers))
                raise HTTPError(400, f"this model does not serve /v1/{endpoint} (it serves {have})")
            body = await _read_json(request, self.limits)
            items, wrap = parse(body)
            result = await self.batchers[endpoint].submit(items)
            status, payload, headers = 200, wrap(result), {}
        except HTTPError as e:
            status, payload, headers = e.status, {"error": e.message}, e.headers
        except BertkitError as e:
            status, payload, headers = 422, {"error": str(e)}, {}
        except Exception as e:  # never a traceback to the client; the server stays up
            status, payload, headers = 500, {"error": f"internal error: {type(e).__name__}: {e}"}, {}
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return JSONResponse(payload, status_code=status, headers=headers)


async def _read_json(request: Request, limits: Limits) -> dict:
    """The request body as a JSON object, read no further than the body limit."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
        raise HTTPError(413, f"request body of {size} bytes; the limit is {limits.max_body_bytes}")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body_bytes:
            raise HTTPError(413, f"request body over the limit of {limits.max_body_bytes} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise HTTPError(400, f"request body is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise HTTPError(400, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(body, dict):
        raise HTTPError(422, "the body must be a JSON object")
    return body


def _task_items(cls: Any, body: dict, limits: Limits) -> list:
    """A task's request as its items, from the fields the task names (`request_fields`): the
    first field's texts, or with more fields (text pairs, questions and contexts) tuples of the
    texts at the same place, a left-out optional field giving None."""
    keys = (*cls.request_fields, *cls.optional_request_fields)
    columns: list[list[str] | None] = [_texts(body, k, limits) for k in cls.request_fields]
    columns += [_texts(body, k, limits, required=False) for k in cls.optional_request_fields]
    first = cast("list[str]", columns[0])  # a required field
    for key, column in zip(keys[1:], columns[1:], strict=True):
        if column is not None and len(column) != len(first):
            raise HTTPError(422, f'"{key}" has {len(column)} texts for {len(first)} "{keys[0]}"')
    if len(keys) == 1:
        return first
    return list(zip(*(c if c is not None else [None] * len(first) for c in columns), strict=True))


def _embed_parse(body: dict, limits: Limits) -> tuple:
    normalize, pooling = body.get("normalize"), body.get("pooling")
    if normalize is not None and not isinstance(normalize, bool):
        raise HTTPError(422, '"normalize" must be true or false')
    if pooling is not None and pooling not in POOLINGS:
        raise HTTPError(422, '"pooling" must be ' + " or ".join(f'"{p}"' for p in POOLINGS))
    texts = _texts(body, "texts", limits)
    return [(t, pooling, normalize) for t in texts], lambda r: {"embeddings": r}


def _fill_parse(body: dict, limits: Limits) -> tuple:
    k = body.get("top_k", TOP_K)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise HTTPError(422, '"top_k" must be an integer from 1 to 100')
    return [(t, k) for t in _texts(body, "texts", limits)], lambda r: {"fills": r}


def _info_routes(app: FastAPI, model: ServedModel, metrics: Metrics) -> None:
    """The page, /health, /v1/model and /metrics (Prometheus)."""

    @app.get("/", include_in_schema=False)
    async def page():
        from fastapi.responses import HTMLResponse

        return HTMLResponse((Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/model")
    async def describe():
        return model.describe()

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def run(
    model_dir: str,
    host: str,
    port: int,
    options: InferenceOptions,
    limits: Limits,
    runtime: Runtime | None = None,
) -> None:
    import uvicorn

    app = create_app(model_dir, options, limits, runtime)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30)

"""Dynamic batching: the requests of one endpoint wait in a queue; its worker takes what has
arrived within --max-wait-ms, up to --max-batch-tokens tokens and --batch-texts texts (a request
is never split; one over the budget runs alone), and runs it as one batch on the engine thread.
And the Prometheus metrics the server keeps."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bertkit.errors import HTTPError
from bertkit.serve.limits import Limits


@dataclass
class Timed:
    """A request's results and where its time went (seconds)."""

    results: list
    queue: float
    inference: float


@dataclass
class _Job:
    items: list
    tokens: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """Requests of one endpoint -> batches: `fn(items) -> results` runs in the engine thread."""

    def __init__(self, name: str, fn, limits: Limits, executor: ThreadPoolExecutor, metrics: Metrics):
        self.name, self.fn, self.limits, self.executor, self.metrics = name, fn, limits, executor, metrics
        self.jobs: deque[_Job] = deque()
        self.arrived = asyncio.Event()
        self.waiting = 0  # texts queued
        self.waiting_tokens = 0  # and their tokens
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._worker())

    async def submit(self, items: list, tokens: int = 0) -> Timed:
        """Queue a request's items (`tokens` of them in all) and wait for their results."""
        if self.waiting + len(items) > self.limits.max_queue:
            raise HTTPError(
                503, f"server busy: {self.waiting} texts queued", {"Retry-After": "1"}, kind="overloaded"
            )
        job = _Job(items, tokens, asyncio.get_running_loop().create_future())
        self.jobs.append(job)
        self._count(len(items), tokens)
        self.arrived.set()
        return await job.future

    def _count(self, n: int, tokens: int) -> None:
        self.waiting += n
        self.waiting_tokens += tokens
        self.metrics.queue.labels(self.name).set(self.waiting)

    def _full(self) -> bool:
        return self.waiting >= self.limits.batch_texts or self.waiting_tokens >= self.limits.max_batch_tokens

    def _take(self) -> list[_Job]:
        """The queued requests that fit one batch, oldest first (at least one)."""
        batch = [self.jobs.popleft()]
        texts, tokens = len(batch[0].items), batch[0].tokens
        while self.jobs:
            nxt = self.jobs[0]
            if texts + len(nxt.items) > self.limits.batch_texts:
                break
            if tokens + nxt.tokens > self.limits.max_batch_tokens:
                break
            batch.append(self.jobs.popleft())
            texts, tokens = texts + len(nxt.items), tokens + nxt.tokens
        return batch

    async def _gather(self) -> list[_Job]:
        """Wait for a first request, then for more until the batch is full or --max-wait-ms passed."""
        loop = asyncio.get_running_loop()
        while not self.jobs:
            self.arrived.clear()
            await self.arrived.wait()
        deadline = loop.time() + self.limits.max_wait_ms / 1000
        while not self._full() and (left := deadline - loop.time()) > 0:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                break
        return self._take()

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            items, tokens = [x for job in jobs for x in job.items], sum(j.tokens for j in jobs)
            self._count(-len(items), -tokens)
            self.metrics.batch.labels(self.name).observe(len(items))
            self.metrics.batch_tokens.labels(self.name).observe(tokens)
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.fn, items)
            except Exception as e:  # a failed batch fails its requests, not the server
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            took, s = time.perf_counter() - start, 0
            for job in jobs:
                waited = start - job.arrived
                self.metrics.queue_seconds.labels(self.name).observe(waited)
                if not job.future.done():
                    job.future.set_result(Timed(results[s : s + len(job.items)], waited, took))
                s += len(job.items)


class Metrics:
    """Requests and their latency by endpoint and status, texts and tokens per engine batch, time
    waited in the queue, tokens read, texts queued."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertkit_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram("bertkit_request_seconds", "request latency", ["endpoint"], registry=r)
        self.batch = Histogram(
            "bertkit_batch_texts",
            "texts per engine batch",
            ["endpoint"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "bertkit_batch_tokens",
            "tokens per engine batch",
            ["endpoint"],
            buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
            registry=r,
        )
        self.queue_seconds = Histogram(
            "bertkit_queue_seconds", "time a request waited for its batch", ["endpoint"], registry=r
        )
        self.tokens = Counter("bertkit_tokens", "tokens in requests", ["endpoint"], registry=r)
        self.queue = Gauge("bertkit_queue_texts", "texts waiting", ["endpoint"], registry=r)
        self.in_flight = Gauge("bertkit_requests_in_flight", "requests being answered", registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

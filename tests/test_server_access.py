"""Who may call the server and what a call leaves behind: API keys on every route but the public
ones (401 in each dialect's shape, for no key, a wrong key and a key of another length), keys
never logged, request ids echoed and logged, timing headers, CORS for the configured origin only,
/ready only after the warm-up, 429 over the in-flight bound, and token-budget batching."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bertkit.errors import BertkitError
from bertkit.models.heads import BertForSequenceClassification

pytest.importorskip("fastapi", reason="fastapi is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from bertkit.serve.app import create_app  # noqa: E402
from bertkit.serve.batcher import Batcher, Metrics  # noqa: E402
from bertkit.serve.limits import Limits, Serving  # noqa: E402
from bertkit.serve.model import ServedModel  # noqa: E402

KEY, OTHER = "k3y-0f-the-first-client", "second-key"
PROTECTED = [  # (method, path, body) of every route that wants the key
    ("POST", "/v1/classify", {"texts": ["a"]}),
    ("POST", "/v1/embed", {"texts": ["a"]}),
    ("GET", "/v1/model", None),
    ("POST", "/v1/embeddings", {"input": "a"}),
    ("GET", "/v1/models", None),
    ("POST", "/embed", {"inputs": "a"}),
    ("POST", "/predict", {"inputs": "a"}),
    ("POST", "/rerank", {"query": "q", "texts": ["a"]}),
    ("POST", "/tokenize", {"inputs": "a"}),
    ("GET", "/info", None),
    ("POST", "/", {"inputs": "a"}),
    ("GET", "/metrics", None),
]
PUBLIC = ["/", "/health", "/ready", "/docs", "/openapi.json"]


@pytest.fixture(scope="module")
def clf_dir(head_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("access") / "clf"
    return head_dir(d, BertForSequenceClassification, "classify", ["neg", "pos"])


def shape_of(path: str, body: dict) -> str:
    if path in ("/v1/embeddings", "/v1/models"):
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["code"] == "invalid_api_key"
        return "openai"
    if path in ("/embed", "/predict", "/rerank", "/tokenize", "/info", "/"):
        assert body["error_type"] == "unauthorized", body
        return "tei"
    assert set(body) == {"error"}, body
    return "native"


def test_every_route_but_the_public_ones_wants_a_key(clf_dir, tmp_path, caplog):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# clients\n{OTHER}\n\n")
    caplog.set_level(logging.INFO, logger="bertkit.serve")
    with TestClient(create_app(clf_dir, serving=Serving(api_key=KEY, api_key_file=str(keys)))) as c:
        shapes = set()
        for method, path, body in PROTECTED:
            for given in (None, "x" * len(KEY), KEY[:-1], KEY + "x", f"Basic {KEY}"):
                headers = (
                    {} if given is None else {"authorization": given if " " in given else f"Bearer {given}"}
                )
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (path, given, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                shapes.add(shape_of(path, r.json()))
            for good in (KEY, OTHER):
                r = c.request(method, path, json=body, headers={"authorization": f"Bearer {good}"})
                assert r.status_code == 200, (path, r.text)
        for path in PUBLIC:
            assert c.get(path).status_code == 200, path
    assert shapes == {"openai", "tei", "native"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "request " in logged and KEY not in logged and OTHER not in logged


def test_public_metrics_and_bad_key_files(clf_dir, tmp_path):
    with TestClient(create_app(clf_dir, serving=Serving(api_key=KEY, public_metrics=True))) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/info").status_code == 401
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n")
    with pytest.raises(BertkitError, match="empty.txt: no API key"):
        create_app(clf_dir, serving=Serving(api_key_file=str(empty)))
    with pytest.raises(BertkitError, match="missing.txt: cannot read"):
        create_app(clf_dir, serving=Serving(api_key_file=str(tmp_path / "missing.txt")))


def test_request_ids_and_timing_headers(clf_dir, caplog):
    caplog.set_level(logging.INFO, logger="bertkit.serve")
    with TestClient(create_app(clf_dir)) as c:
        r = c.post("/embed", json={"inputs": "a"}, headers={"x-request-id": "trace-42"})
        made = c.post("/embed", json={"inputs": "a"}).headers["x-request-id"]
        bad = c.get("/health", headers={"x-request-id": "no spaces allowed"}).headers["x-request-id"]
        failed = c.post("/embed", json={"inputs": 1}, headers={"x-request-id": "trace-43"})
    assert r.headers["x-request-id"] == "trace-42"
    assert all(float(r.headers[h]) >= 0 for h in ("x-queue-time", "x-inference-time", "x-total-time"))
    assert len(made) == 32 and int(made, 16) >= 0 and bad != "no spaces allowed" and len(bad) == 32
    assert failed.headers["x-request-id"] == "trace-43" and failed.status_code == 422
    lines = [r.getMessage() for r in caplog.records if "trace-4" in r.getMessage()]
    assert any("POST /embed 200" in ln for ln in lines) and any("POST /embed 422" in ln for ln in lines)


def test_cors_only_for_the_configured_origin(clf_dir):
    allowed = "https://app.example.com"
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    with TestClient(create_app(clf_dir, serving=Serving(api_key=KEY, cors_allow_origin=[allowed]))) as c:
        ok = c.options("/embed", headers={"origin": allowed, **preflight})
        no = c.options("/embed", headers={"origin": "https://evil.example", **preflight})
        denied = c.post("/embed", json={"inputs": "a"}, headers={"origin": allowed})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
    assert no.status_code == 400 and "access-control-allow-origin" not in no.headers
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == allowed
    with TestClient(create_app(clf_dir)) as c:
        r = c.options("/embed", headers={"origin": allowed, **preflight})
        assert "access-control-allow-origin" not in r.headers


def test_ready_after_warm_up_and_429_over_the_in_flight_bound(clf_dir, monkeypatch):
    """The warm-up holds the engine thread: /health is live, /ready is not, a request waits in
    the queue (one in flight), and a second one over --max-concurrent-requests 1 is refused."""
    release = threading.Event()
    warm = ServedModel.warm
    monkeypatch.setattr(ServedModel, "warm", lambda self: (release.wait(60), warm(self)))
    app = create_app(clf_dir, limits=Limits(max_concurrent_requests=1))
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "warming up"
        first = pool.submit(c.post, "/embed", json={"inputs": "waits for the warm-up"})
        deadline = time.monotonic() + 30
        while app.state.server.in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = c.post("/embed", json={"inputs": "one too many"})
        assert second.status_code == 429 and second.json()["error_type"] == "overloaded"
        assert c.post("/v1/embeddings", json={"input": "x"}).json()["error"]["type"] == "rate_limit_error"
        release.set()
        assert first.result(60).status_code == 200
        deadline = time.monotonic() + 30
        while c.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.get("/ready").json() == {"status": "ready"}


def test_batches_are_cut_by_tokens_and_texts():
    """Requests of known token counts queued together: each batch stays within --max-batch-tokens
    and --batch-texts (a request over the budget alone), in arrival order, none split."""
    seen: list[list] = []

    def fn(items):
        seen.append(items)
        return [x * 10 for x in items]

    async def main():
        limits = Limits(max_batch_tokens=100, batch_texts=4, max_wait_ms=50)
        with ThreadPoolExecutor(1) as pool:
            b = Batcher("t", fn, limits, pool, Metrics())
            b.start()
            jobs = [([1], 60), ([2], 30), ([3], 30), ([4, 5], 20), ([6, 7, 8], 10), ([9], 250), ([10], 5)]
            results = await asyncio.gather(*(b.submit(items, tokens) for items, tokens in jobs))
            assert b.task is not None
            b.task.cancel()
            return jobs, results

    jobs, results = asyncio.run(main())
    assert [r.results for r in results] == [[x * 10 for x in items] for items, _ in jobs]
    tokens = {tuple(items): t for items, t in jobs}
    batches = [[tuple(j) for j, _ in jobs if j[0] in batch] for batch in seen]
    assert [x for batch in seen for x in batch] == list(range(1, 11))  # arrival order, none split
    for batch in batches:
        assert sum(tokens[j] for j in batch) <= 100 or len(batch) == 1
        assert sum(len(j) for j in batch) <= 4 or len(batch) == 1
    assert [(9,)] in batches and len(seen) >= 4


def test_keep_alive_and_sigterm_drains_what_is_in_flight(tiny_dir, tmp_path):
    """`bertkit serve --keep-alive 2`: a connection idle 0.5 s is still served, one idle 3 s has
    been closed by the server. Then SIGTERM while a request waits for its batch (--max-wait-ms
    3000): the request is still answered, then the app shuts down and the process exits."""
    import http.client
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "bertkit", "serve", "--model", str(tiny_dir), "--port", str(port)]
    log = (tmp_path / "serve.log").open("w+")  # (a pipe left unread would fill with the request lines)
    proc = subprocess.Popen([*cmd, "--max-wait-ms", "3000", "--keep-alive", "2"], stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        socks = []
        for idle in (0, 0.5):
            time.sleep(idle)
            conn.request("GET", "/health")
            assert conn.getresponse().read() == b'{"status":"ok"}', f"not served after {idle} s idle"
            socks.append(conn.sock)
        assert socks[0] is socks[1], "the connection was not kept alive"
        time.sleep(3)
        assert conn.sock.recv(1) == b"", "the server kept a connection idle over --keep-alive"
        conn.close()
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, url + "/v1/embed", json={"texts": ["in flight"]}, timeout=60)
            while "bertkit_requests_in_flight 1.0" not in httpx.get(url + "/metrics").text:
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGTERM)
            r = pending.result(60)
        assert r.status_code == 200 and len(r.json()["embeddings"][0]) > 0
        # uvicorn drains, shuts the app down, then exits by the signal it was sent (or 0)
        assert proc.wait(60) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        log.close()

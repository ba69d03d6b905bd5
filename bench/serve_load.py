"""Load and abuse test of `bertkit serve` over loopback, against a reference server that calls a
`transformers` pipeline one request at a time, both measured in the same run.

    python bench/serve_load.py --model out/sst2                  # a fine-tuned classifier directory
    python bench/serve_load.py --model out/sst2 --requests 1000 --clients 16

Each server runs in its own process (uvicorn on 127.0.0.1). --clients concurrent clients send
--requests requests of real sentences (SST-2 dev and CoNLL-2003 test, file order), a mix of single
texts and batches of 2-16; every answer is compared with offline `bertkit predict` on the same
texts (labels equal). Reports requests/s, texts/s, p50/p99 latency and errors for both servers,
then sends the abuse cases (a 10 MB body, 10,000 texts, invalid JSON, wrong types, non-UTF-8
bytes, an empty list, a 1-million-character text) to bertkit's server and reports each status and
the server's peak RSS before and after. Markdown out; --json writes everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = """
import sys, json
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
import transformers, uvicorn
pipe = transformers.pipeline("text-classification", model=sys.argv[1], device="cpu")
app = FastAPI()
@app.post("/v1/classify")
async def classify(request: Request):
    body = await request.json()
    out = pipe(body["texts"], truncation=True)  # one request at a time, as a plain pipeline server does
    return JSONResponse({"predictions": [{"label": o["label"], "score": o["score"]} for o in out]})
@app.get("/health")
async def health():
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def data_dir() -> Path:
    return Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def sentences() -> list[str]:
    from bertkit.data import load_examples

    d = data_dir()
    sst = [e.text for e in load_examples("classify", d / "en/glue/SST-2/dev.tsv")]
    conll = [" ".join(e.tokens) for e in load_examples("ner", d / "en/conll2003/test.txt")]
    return sst + conll


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit(f"server failed to start: {proc.stderr.read()[-2000:]}")
    raise SystemExit("server did not come up in 5 minutes")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(port: int, plan: list[list[str]], clients: int) -> dict:
    import httpx

    latencies, errors, answers = [], 0, [None] * len(plan)
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(len(plan)):
        queue.put_nowait(i)

    async def client(http):
        nonlocal errors
        while not queue.empty():
            i = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                r = await http.post(f"http://127.0.0.1:{port}/v1/classify", json={"texts": plan[i]})
                if r.status_code != 200:
                    errors += 1
                else:
                    answers[i] = [p["label"] for p in r.json()["predictions"]]
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    seconds = time.perf_counter() - t0
    lat = sorted(latencies)
    texts = sum(len(p) for p in plan)
    return {
        "seconds": seconds,
        "requests_per_s": len(plan) / seconds,
        "texts_per_s": texts / seconds,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "errors": errors,
        "answers": answers,
    }


def abuse(port: int) -> list[dict]:
    import httpx

    url = f"http://127.0.0.1:{port}/v1/classify"
    cases = [
        ("10 MB body", json.dumps({"texts": ["x" * 1000] * 10_000}).encode()),
        ("10,000 texts", json.dumps({"texts": ["a short text"] * 10_000}).encode()),
        ("invalid JSON", b'{"texts": ["unterminated'),
        ("wrong types", b'{"texts": [1, {"a": 2}]}'),
        ("non-UTF-8 bytes", b'{"texts": ["caf\xe9"]}'),
        ("empty list", b'{"texts": []}'),
        ("1 million characters", json.dumps({"texts": ["w" * 1_000_000]}).encode()),
    ]
    out = []
    for name, body in cases:
        r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=120)
        out.append({"case": name, "status": r.status_code, "error": r.json().get("error", "")[:100]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="fine-tuned classifier directory")
    p.add_argument("--requests", type=int, default=5000, help="requests per server (default 5000)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    import bertkit

    pool = sentences()
    rng = random.Random(args.seed)
    plan, at = [], 0
    for _ in range(args.requests):
        n = 1 if rng.random() < 0.6 else rng.randint(2, 16)
        plan.append([pool[(at + k) % len(pool)] for k in range(n)])
        at += n
    offline = bertkit.pipeline("text-classification", model=args.model)
    flat = [t for req in plan for t in req]
    want_flat = [q["label"] for q in offline(flat)]
    want, s = [], 0
    for req in plan:
        want.append(want_flat[s : s + len(req)])
        s += len(req)

    result = {"requests": args.requests, "clients": args.clients, "texts": len(flat)}
    ours_port, ref_port = free_port(), free_port()
    ours = start(
        [sys.executable, "-m", "bertkit", "serve", "--model", args.model, "--port", str(ours_port)], ours_port
    )
    try:
        rss_start = peak_rss_mb(ours.pid)
        run = asyncio.run(load(ours_port, plan, args.clients))
        wrong = sum(a != w for a, w in zip(run.pop("answers"), want, strict=True))
        result["bertkit"] = {**run, "wrong_answers": wrong}
        rss_before_abuse = peak_rss_mb(ours.pid)
        result["abuse"] = abuse(ours_port)
        alive = subprocess.run(["curl", "-s", f"http://127.0.0.1:{ours_port}/health"], capture_output=True)
        result["rss_mb"] = {
            "start": rss_start,
            "after_load": rss_before_abuse,
            "after_abuse": peak_rss_mb(ours.pid),
        }
        result["alive_after_abuse"] = b"ok" in alive.stdout
    finally:
        ours.terminate()
        ours.wait(60)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(REFERENCE)
    ref = start([sys.executable, f.name, args.model, str(ref_port)], ref_port)
    try:
        run = asyncio.run(load(ref_port, plan, args.clients))
        run.pop("answers")
        result["transformers_pipeline"] = run
    finally:
        ref.terminate()
        ref.wait(60)
    ratio = result["bertkit"]["requests_per_s"] / result["transformers_pipeline"]["requests_per_s"]
    result["throughput_ratio"] = ratio

    print(f"\n{args.requests} requests ({len(flat)} texts), {args.clients} concurrent clients, loopback\n")
    print("| server | requests/s | texts/s | p50 ms | p99 ms | errors | wrong answers |")
    print("|---|---|---|---|---|---|---|")
    for name in ("bertkit", "transformers_pipeline"):
        r = result[name]
        print(
            f"| {name} | {r['requests_per_s']:,.1f} | {r['texts_per_s']:,.1f} | {r['p50_ms']:,.0f} | "
            f"{r['p99_ms']:,.0f} | {r['errors']} | {r.get('wrong_answers', '-')} |"
        )
    print(f"\nbertkit / transformers pipeline server: {ratio:.2f}x requests/s\n")
    print("| abuse case | status | message |\n|---|---|---|")
    for a in result["abuse"]:
        print(f"| {a['case']} | {a['status']} | {a['error']} |")
    rss = result["rss_mb"]
    print(
        f"\npeak RSS: {rss['start']:.0f} MB at start, {rss['after_load']:.0f} MB after the load, "
        f"{rss['after_abuse']:.0f} MB after the abuse; alive afterwards: {result['alive_after_abuse']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Load and abuse test of `bertkit serve` over loopback, against a reference server that calls a
`transformers` pipeline one request at a time, both measured in the same run.

    python bench/serve_load.py --model out/sst2                  # a fine-tuned classifier directory
    python bench/serve_load.py --model out/sst2 --requests 1000 --clients 16

Each server runs in its own process (uvicorn on 127.0.0.1). --clients concurrent clients send
--requests requests of real sentences (SST-2 dev and CoNLL-2003 test, file order), a mix of single
texts and batches of 2-16; every answer is compared with offline `bertkit predict` at the same
precision on the same texts (labels equal; the largest score difference is reported). bertkit's
server runs once per --precisions entry (fp32, like the reference pipeline; then its default).
Reports requests/s, texts/s, p50/p99 latency and errors for every server, then sends the abuse
cases (a 10 MB body, 10,000 texts, invalid JSON, wrong types, non-UTF-8
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
from dataclasses import replace
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
    from bertkit.tasks.registry import load_examples

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
                    answers[i] = [{"label": p["label"], "score": p["score"]} for p in r.json()["predictions"]]
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
    p.add_argument(
        "--precisions",
        default="fp32,auto",
        help="bertkit servers to run, one after the other (default fp32,auto: fp32 like the reference, "
        "then bertkit's default)",
    )
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
    flat = [t for req in plan for t in req]
    result = {"requests": args.requests, "clients": args.clients, "texts": len(flat), "servers": {}}
    first = True
    for precision in args.precisions.split(","):
        # Offline `predict` with the same precision: the answers every response must equal.
        offline = bertkit.pipeline("text-classification", model=args.model, precision=precision)
        offline.task = replace(offline.task, windows=True)  # as the server covers long texts
        want = offline(flat)
        del offline
        port = free_port()
        cmd = [sys.executable, "-m", "bertkit", "serve", "--model", args.model, "--port", str(port)]
        ours = start([*cmd, "--precision", precision], port)
        try:
            rss_start = peak_rss_mb(ours.pid)
            run = asyncio.run(load(port, plan, args.clients))
            got = [a for ans in run.pop("answers") for a in (ans or [])]
            run |= compare(got, want) if len(got) == len(flat) else {"wrong_answers": "incomplete"}
            rss = {"start": rss_start, "after_load": peak_rss_mb(ours.pid)}
            if first:
                result["abuse"] = abuse(port)
                alive = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/health"], capture_output=True)
                rss["after_abuse"] = peak_rss_mb(ours.pid)
                result["alive_after_abuse"] = b"ok" in alive.stdout
            result["servers"][f"bertkit {precision}"] = {**run, "peak_rss_mb": rss}
        finally:
            ours.terminate()
            ours.wait(60)
        first = False
    ref_port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(REFERENCE)
    ref = start([sys.executable, f.name, args.model, str(ref_port)], ref_port)
    try:
        run = asyncio.run(load(ref_port, plan, args.clients))
        run.pop("answers")
        result["servers"]["transformers pipeline"] = run
    finally:
        ref.terminate()
        ref.wait(60)
    base = result["servers"]["transformers pipeline"]["requests_per_s"]
    for r in result["servers"].values():
        r["vs_reference"] = r["requests_per_s"] / base

    print(f"\n{args.requests} requests ({len(flat)} texts), {args.clients} concurrent clients, loopback\n")
    cols = "server | requests/s | texts/s | p50 ms | p99 ms | errors | answers ≠ offline | max score diff"
    print(f"| {cols} | vs reference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in result["servers"].items():
        diff = f"{r['max_score_diff']:.1e}" if "max_score_diff" in r else "-"
        print(
            f"| {name} | {r['requests_per_s']:,.1f} | {r['texts_per_s']:,.1f} | {r['p50_ms']:,.0f} | "
            f"{r['p99_ms']:,.0f} | {r['errors']} | {r.get('wrong_answers', '-')} | {diff} | "
            f"{r['vs_reference']:.2f}x |"
        )
    for name, r in result["servers"].items():
        for w in r.get("disagreements", []):
            print(f"\n{name}: {w}")
    print("\n| abuse case | status | message |\n|---|---|---|")
    for a in result["abuse"]:
        print(f"| {a['case']} | {a['status']} | {a['error']} |")
    for name, r in result["servers"].items():
        rss = r.get("peak_rss_mb")
        if rss:
            print(f"\n{name} peak RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    print(f"alive after the abuse: {result['alive_after_abuse']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def compare(got: list[dict], want: list[dict]) -> dict:
    """Labels must be equal; scores are compared too. A disagreement is listed with both scores."""
    wrong = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g["label"] != w["label"]]
    same = [(g, w) for g, w in zip(got, want, strict=True) if g["label"] == w["label"]]
    diff = max((abs(g["score"] - w["score"]) for g, w in same), default=0.0)
    notes = [
        f"text {i}: server {got[i]['label']} ({got[i]['score']:.4f}), offline {want[i]['label']} "
        f"({want[i]['score']:.4f})"
        for i in wrong[:10]
    ]
    return {"wrong_answers": len(wrong), "max_score_diff": diff, "disagreements": notes}


if __name__ == "__main__":
    main()

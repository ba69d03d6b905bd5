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

    python bench/serve_load.py --mode embeddings --model $M     # M: all-MiniLM-L6-v2's directory
    python bench/serve_load.py --mode batching --model $M --precisions auto

--mode embeddings: one bertkit server with an API key, the same requests through bertkit's
/v1/embed, OpenAI's /v1/embeddings and TEI's /embed in alternating rounds; every vector against
offline inference (cosine), texts/s of each route against /v1/embed's. --mode batching: one text a
request, every tenth a long IMDB review (512 tokens once cut; the model without its
sentence-transformers length), a server whose batches are bounded by --batch-texts alone against
--max-batch-tokens (p50/p99 latency of short and long texts, texts/s). Every mode prints the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
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


def start(cmd: list[str], port: int, probe: str = "/health") -> subprocess.Popen:
    import httpx

    # The log goes to a file: a pipe nobody reads fills with the request lines and blocks the server.
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server failed to start: {log.read()[-2000:]}")
    raise SystemExit("server did not come up in 5 minutes")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# How each route takes texts and gives its answers (a label and score per text, or a vector).
ROUTES = {
    "/v1/classify": (
        lambda t: {"texts": t},
        lambda j: [{"label": p["label"], "score": p["score"]} for p in j["predictions"]],
    ),
    "/v1/embed": (lambda t: {"texts": t}, lambda j: j["embeddings"]),
    "/v1/embeddings": (
        lambda t: {"input": t, "model": "bench"},
        lambda j: [d["embedding"] for d in sorted(j["data"], key=lambda d: d["index"])],
    ),
    "/embed": (lambda t: {"inputs": t, "truncate": True}, lambda j: j),
}


async def load(
    port: int, plan: list[list[str]], clients: int, path: str = "/v1/classify", key: str | None = None
) -> dict:
    """`plan`'s requests to `path` from `clients` concurrent clients: rates, latencies, answers."""
    import httpx

    body_of, answers_of = ROUTES[path]
    headers = {"authorization": f"Bearer {key}"} if key else {}
    latencies, answers = [0.0] * len(plan), [None] * len(plan)
    errors: dict[str, int] = {}  # what went wrong (a status and body, or an exception): how often
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(len(plan)):
        queue.put_nowait(i)

    async def client(http):
        while not queue.empty():
            i = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                r = await http.post(f"http://127.0.0.1:{port}{path}", json=body_of(plan[i]), headers=headers)
                if r.status_code == 200:
                    answers[i] = answers_of(r.json())
                else:
                    kind = f"{r.status_code} {r.text[:200]}"
                    errors[kind] = errors.get(kind, 0) + 1
            except httpx.HTTPError as e:
                kind = f"{type(e).__name__}: {e}"[:200]
                errors[kind] = errors.get(kind, 0) + 1
            latencies[i] = time.perf_counter() - t0

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    seconds = time.perf_counter() - t0
    texts = sum(len(p) for p in plan)
    return {
        "seconds": seconds,
        "requests_per_s": len(plan) / seconds,
        "texts_per_s": texts / seconds,
        **percentiles(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "answers": answers,
        "latencies": latencies,
    }


def print_errors(name: str, runs: list[dict]) -> None:
    """Each kind of error `runs` (of `load`) had, and how often in all."""
    for kind in sorted({k for r in runs for k in r["error_kinds"]}):
        print(f"{name}: {sum(r['error_kinds'].get(kind, 0) for r in runs)} x {kind}")


def percentiles(latencies: list[float]) -> dict:
    lat = sorted(latencies)
    return {
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
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
    p.add_argument(
        "--model",
        required=True,
        help="fine-tuned classifier directory (classify), or any directory: all-MiniLM-L6-v2 "
        "(embeddings, batching)",
    )
    p.add_argument(
        "--mode",
        choices=("classify", "embeddings", "batching"),
        default="classify",
        help="classify (default): /v1/classify against a transformers pipeline server; embeddings: "
        "/v1/embed, /v1/embeddings and /embed of one server with an API key, in alternating rounds; "
        "batching: --max-batch-tokens against --batch-texts alone on short sentences mixed with long reviews",
    )
    p.add_argument(
        "--rounds", type=int, default=2, help="embeddings: rounds over the three routes (default 2)"
    )
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
    print(cpu_line())
    {"classify": classify_mode, "embeddings": embeddings_mode, "batching": batching_mode}[args.mode](args)


def cpu_line() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    kept = [
        f for f in flags if f.startswith(("avx512_bf16", "avx512_vnni", "amx")) or f in ("avx2", "avx512f")
    ]
    return f"CPU: {model} ({' '.join(kept)}), {os.cpu_count()} cores"


def request_plan(pool: list[str], requests: int, seed: int) -> list[list[str]]:
    """60 % single texts, the rest batches of 2-16, in the pool's order."""
    rng = random.Random(seed)
    plan, at = [], 0
    for _ in range(requests):
        n = 1 if rng.random() < 0.6 else rng.randint(2, 16)
        plan.append([pool[(at + k) % len(pool)] for k in range(n)])
        at += n
    return plan


def classify_mode(args: argparse.Namespace) -> None:
    import bertkit

    plan = request_plan(sentences(), args.requests, args.seed)
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
            run.pop("latencies")
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
        run.pop("answers"), run.pop("latencies")
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


def bertkit_server(model: str, precision: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
    """`bertkit serve` in its own process, once warmed up (/ready)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bertkit", "serve", "--model", model, "--port", str(port)]
    return start([*cmd, "--precision", precision, *extra], port, probe="/ready"), port


def embeddings_mode(args: argparse.Namespace) -> None:
    """/v1/embed, /v1/embeddings and /embed of one server with an API key, the same requests, in
    alternating rounds; every vector against offline inference at the same precision."""
    import secrets

    import numpy as np

    import bertkit

    plan = request_plan(sentences(), args.requests, args.seed)
    flat = [t for req in plan for t in req]
    key, routes = "bench-" + secrets.token_hex(8), ["/v1/embed", "/v1/embeddings", "/embed"]
    result: dict = {"requests": args.requests, "clients": args.clients, "texts": len(flat), "runs": {}}
    for precision in args.precisions.split(","):
        want = bertkit.pipeline("feature-extraction", model=args.model, precision=precision)(flat)
        server, port = bertkit_server(args.model, precision, ["--api-key", key])
        runs: dict = {r: [] for r in routes}
        try:
            for n in range(args.rounds):
                for path in routes[n % 3 :] + routes[: n % 3]:  # each route first once in three rounds
                    run = asyncio.run(load(port, plan, args.clients, path, key))
                    run.pop("latencies")
                    got = [v for ans in run.pop("answers") for v in (ans or [])]
                    if len(got) == len(flat):
                        g = np.asarray(got, dtype=np.float64)
                        cos = (g * want).sum(-1) / np.linalg.norm(g, axis=-1) / np.linalg.norm(want, axis=-1)
                        run |= {"min_cosine": float(cos.min()), "below_0.9999": int((cos < 0.9999).sum())}
                    runs[path].append(run)
        finally:
            server.terminate()
            server.wait(60)
        result["runs"][precision] = runs
    print(f"\n{args.requests} requests ({len(flat)} texts), {args.clients} clients, API key on, loopback\n")
    print("| precision | route | texts/s (median) | p50 ms | p99 ms | errors | min cosine | vs /v1/embed |")
    print("|---|---|---|---|---|---|---|---|")
    for precision, runs in result["runs"].items():
        base = statistics.median(r["texts_per_s"] for r in runs["/v1/embed"])
        for path, rs in runs.items():
            rate = statistics.median(r["texts_per_s"] for r in rs)
            p50, p99 = (statistics.median(r[k] for r in rs) for k in ("p50_ms", "p99_ms"))
            errors, cos = sum(r["errors"] for r in rs), min(r.get("min_cosine", float("nan")) for r in rs)
            print(
                f"| {precision} | `{path}` | {rate:,.1f} | {p50:,.0f} | {p99:,.0f} | {errors} | {cos:.6f} "
                f"| {rate / base:.3f}x |"
            )
            print_errors(path, rs)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def long_reviews(n: int, min_chars: int = 2500) -> list[str]:
    from bertkit.tasks.registry import load_examples

    reviews = load_examples("classify", data_dir() / "en/imdb/aclImdb.tar.gz/aclImdb/test")
    return [e.text for e in reviews if len(e.text) >= min_chars][:n]


def encoder_copy(model: str) -> str:
    """The directory without its sentence-transformers files: texts run to the model's 512 tokens."""
    d = Path(tempfile.mkdtemp(prefix="bench-encoder-"))
    for f in Path(model).iterdir():
        if f.is_file() and f.name not in ("modules.json", "sentence_bert_config.json"):
            (d / f.name).symlink_to(f.resolve())
    return str(d)


def batching_mode(args: argparse.Namespace) -> None:
    """One text a request, every tenth a long IMDB review (512 tokens once cut): the server's
    batches bounded by texts alone, against the token budget."""
    short, long = sentences(), long_reviews(args.requests // 10 + 1)
    plan = [[long[i // 10]] if i % 10 == 9 else [short[i % len(short)]] for i in range(args.requests)]
    model, precision = encoder_copy(args.model), args.precisions.split(",")[-1]
    configs = {
        "--batch-texts 256 alone": ["--max-batch-tokens", str(10**9)],
        "--max-batch-tokens 16384 (default)": [],
        "--max-batch-tokens 4096": ["--max-batch-tokens", "4096"],
    }
    result: dict = {"requests": args.requests, "long_share": 0.1, "configs": {}}
    for name, extra in configs.items():
        server, port = bertkit_server(model, precision, extra)
        try:
            run = asyncio.run(load(port, plan, args.clients, "/v1/embed"))
            run["peak_rss_mb"] = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(60)
        lat, answers = run.pop("latencies"), run.pop("answers")
        run["short"] = percentiles([t for i, t in enumerate(lat) if i % 10 != 9])
        run["long"] = percentiles([t for i, t in enumerate(lat) if i % 10 == 9])
        run["answered"] = sum(a is not None for a in answers)
        result["configs"][name] = run
    print(
        f"\n{args.requests} requests of one text (10 % IMDB reviews of >= 512 tokens), "
        f"{args.clients} clients\n"
    )
    print(
        "| server batches | texts/s | p50 / p99 ms short | p50 / p99 ms long | errors | peak RSS MB |\n"
        "|---|---|---|---|---|---|"
    )
    for name, r in result["configs"].items():
        s, lg = r["short"], r["long"]
        print(
            f"| {name} | {r['texts_per_s']:,.1f} | {s['p50_ms']:,.0f} / {s['p99_ms']:,.0f} | "
            f"{lg['p50_ms']:,.0f} / {lg['p99_ms']:,.0f} | {r['errors']} | {r['peak_rss_mb']:,.0f} |"
        )
    for name, r in result["configs"].items():
        print_errors(name, [r])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

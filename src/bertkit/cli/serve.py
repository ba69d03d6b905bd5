"""`bertkit serve`: a model over HTTP (FastAPI + uvicorn) with dynamic batching."""

from __future__ import annotations

import argparse

from bertkit.cli import flags


def add_parser(sub) -> None:
    sv = sub.add_parser(
        "serve",
        help="serve a model over HTTP (FastAPI + uvicorn) with dynamic batching",
        description="Serve /v1/classify, /v1/ner, /v1/qa (fine-tuned directories), /v1/embed (any "
        "BERT directory) and /v1/fill-mask (masked-LM weights), plus /health, /v1/model, /metrics "
        "and OpenAPI docs at /docs. Requests are batched across clients through the inference engine.",
    )
    sv.add_argument("--model", required=True, help="model directory")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    lim = sv.add_argument_group("limits and batching")
    lim.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body limit (413 above)")
    lim.add_argument("--max-texts", type=int, default=256, help="texts per request (413 above)")
    lim.add_argument("--max-chars", type=int, default=20_000, help="characters per text (413 above)")
    lim.add_argument("--max-queue", type=int, default=4096, help="texts queued per endpoint (503 above)")
    lim.add_argument("--batch-texts", type=int, default=256, help="texts per engine batch (default 256)")
    lim.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests (default 5)"
    )
    flags.add_engine(sv, flags.BACKENDS)
    flags.add_runtime(sv)
    sv.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bertkit.serve.app import Limits, run

    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        max_queue=args.max_queue,
        batch_texts=args.batch_texts,
        max_wait_ms=args.max_wait_ms,
    )
    run(args.model, args.host, args.port, flags.engine(args), limits, flags.runtime(args))

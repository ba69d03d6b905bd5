"""`bertkit serve`: a model over HTTP (FastAPI + uvicorn) with dynamic batching."""

from __future__ import annotations

import argparse

from bertkit.cli import flags
from bertkit.cli.options import add_options, build
from bertkit.options import options_of
from bertkit.serve.limits import Limits, Serving


def add_parser(sub) -> None:
    sv = sub.add_parser(
        "serve",
        help="serve a model over HTTP (FastAPI + uvicorn) with dynamic batching",
        description="Serve a model in three dialects: bertkit's /v1/classify, /v1/ner, /v1/qa "
        "(fine-tuned directories), /v1/embed (any directory) and /v1/fill-mask (masked-LM weights); "
        "OpenAI's /v1/embeddings and /v1/models; Text Embeddings Inference's /embed, /predict, "
        "/rerank, /tokenize, /info and POST /. Plus the page at /, /health (live), /ready (warmed "
        "up), /metrics and OpenAPI docs at /docs. Requests are batched across clients through the "
        "inference engine.",
    )
    flags.add_model(sv, "the model")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_options(sv.add_argument_group("limits and batching"), Limits(), options_of(Limits))
    add_options(sv.add_argument_group("access and naming"), Serving(), options_of(Serving))
    flags.add_engine(sv, flags.BACKENDS)
    flags.add_runtime(sv)
    sv.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bertkit.serve.app import run

    limits, serving = build(args, Limits()), build(args, Serving())
    run(args.model, args.host, args.port, flags.engine(args), limits, flags.runtime(args), serving)

"""`bertkit embed` (sentence embeddings to .npy) and `bertkit fill-mask`."""

from __future__ import annotations

import argparse
import json
import sys

from bertkit.cli import flags
from bertkit.engine.embeddings import POOLINGS
from bertkit.inference.pipelines import TOP_K


def add_parser(sub) -> None:
    em = sub.add_parser(
        "embed",
        help="sentence embeddings of texts, to a .npy file",
        description="Embed each text (one per line, every line a row; or JSON lines with a 'text' "
        "field) with a BERT or sentence-transformers directory: mean or [CLS] pooling of the last "
        "hidden states, optionally L2-normalised. Writes a float32 (N, hidden) .npy file.",
    )
    flags.add_model(em, "the model (a BERT-family or sentence-transformers one)")
    em.add_argument("--input", default="-", help="text file, or - for standard input (default)")
    em.add_argument("--output", required=True, help=".npy file to write")
    em.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=None,
        help="default: what a sentence-transformers directory declares, else mean",
    )
    em.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise (default: what a sentence-transformers directory declares, else off)",
    )
    em.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="truncate texts to this many tokens (default: the directory's setting, else the model's limit)",
    )
    flags.add_engine(em, ("torch", "openvino"))
    flags.add_runtime(em)
    em.set_defaults(func=embed)

    fm = sub.add_parser(
        "fill-mask",
        help="print the top-k fillers of each [MASK] in a text",
        description="Load a pretrained (masked-LM) directory and print the most likely tokens for "
        "each mask token in each TEXT ([MASK]; <mask> for the RoBERTa family).",
    )
    flags.add_model(fm, "a model with a masked-LM head")
    fm.add_argument("--top-k", type=int, default=TOP_K, help=f"fillers shown per mask (default {TOP_K})")
    fm.add_argument("--json", action="store_true", help="one JSON line per text instead of a table")
    fm.add_argument("text", nargs="+", help="text with one or more mask tokens")
    flags.add_engine(fm)
    flags.add_runtime(fm)
    fm.set_defaults(func=fill_mask)


def embed(args: argparse.Namespace) -> None:
    from bertkit.engine.embeddings import EmbeddingPipeline, embed_file

    rt = flags.runtime(args)
    pipe = EmbeddingPipeline(
        args.model, rt, args.pooling, args.normalize, args.max_length, options=flags.engine(args)
    )
    n, dim = embed_file(pipe, args.input, args.output)
    norm = ", normalised" if pipe.normalize else ""
    print(
        f"{n} embeddings of {dim} ({pipe.pooling} pooling{norm}, {rt.describe()}) written to {args.output}",
        file=sys.stderr,
    )


def fill_mask(args: argparse.Namespace) -> None:
    from bertkit.inference.pipelines import FillMaskPipeline

    pipe = FillMaskPipeline(args.model, flags.runtime(args), top_k=args.top_k, options=flags.engine(args))
    for text in args.text:
        result = pipe(text)
        rows = [result] if result and isinstance(result[0], dict) else result
        if args.json:
            print(json.dumps({"text": text, "fills": rows}, ensure_ascii=False))
            continue
        print(text)
        for i, row in enumerate(rows, 1):
            shown = "  ".join(f"{r['token']} {r['score']:.3f}" for r in row)
            print(f"  [MASK] {i}: {shown}")

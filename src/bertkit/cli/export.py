"""`bertkit export`: a model directory to ONNX, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import argparse

from bertkit.cli import flags
from bertkit.inference.export import OPSET


def add_parser(sub) -> None:
    ex = sub.add_parser(
        "export",
        help="export a model directory to ONNX, checked against PyTorch with ONNX Runtime",
        description="Export to ONNX (dynamic batch and sequence axes). ONNX Runtime's outputs are "
        "compared with PyTorch's on real sentences before the file is written: fp32 must agree to "
        "1e-4. A classifier/NER/QA directory exports its head's logits, any other its hidden states.",
    )
    flags.add_model(ex, "the model")
    ex.add_argument("--output", required=True, help=".onnx file to write (+ a .json check beside it)")
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    ex.add_argument("--int8", action="store_true", help="ONNX Runtime dynamic int8 quantization, per channel")
    ex.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bertkit.inference.export import export_onnx

    check = export_onnx(args.model, args.output, int8=args.int8, opset=args.opset)
    diff = check["fp32_max_abs_diff"]
    line = f"ONNX Runtime vs PyTorch on {check['texts']} sentences: fp32 max |diff| {diff:.1e}"
    if args.int8:
        line += f", int8 max |diff| {check['int8_max_abs_diff']:.1e}"
    print(f"{line}\nwrote {args.output} (outputs: {', '.join(check['outputs'])})")

"""Every predicting path of a multi-label directory gives the same label sets on a whole file.

    python bench/multilabel_paths.py --model out/goemotions --data ../shared/data/en/goemotions/test.tsv \
        --text-column 0 --label-column 1

Loads the directory in `transformers` (problem_type, logits against bertkit's on the first
texts), then predicts every text of `--data` through `bertkit.pipeline`, `bertkit predict`, the
server's `/v1/classify` and `--backend onnx` (after `bertkit export`), all in fp32, and counts
the texts whose label sets differ from the pipeline's. Prints one line per path.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import bertkit
from bertkit.data.examples import ReaderOptions
from bertkit.runtime import RuntimeArgs, compute_init, cpu_description
from bertkit.tasks import registry
from bertkit.tasks.inputs import reader_opts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a multi-label fine-tuned directory")
    p.add_argument("--data", required=True, help="a labelled file in the model's format")
    p.add_argument("--text-column", default=None, help="text column (name or 0-based index)")
    p.add_argument("--label-column", default=None, help="label column (name or 0-based index)")
    args = p.parse_args()
    print(cpu_description())
    import transformers as hf

    model = Path(args.model)
    task = registry.from_dir(model)
    opts = reader_opts(task, ReaderOptions(text_column=args.text_column, label_column=args.label_column))
    texts = [e.text for e in registry.load_examples("classify", args.data, opts=opts)]
    ref = hf.BertForSequenceClassification.from_pretrained(model).eval()
    ours = bertkit.BertForSequenceClassification.from_pretrained(model)
    enc = bertkit.Tokenizer.from_pretrained(model)(
        texts[:64], padding=True, truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        diff = float((ours(**enc).logits - ref(**enc).logits).abs().max())
    print(f"transformers: problem_type {ref.config.problem_type!r}, max |logit diff| {diff:.2e} (64 texts)")
    want = [
        p["labels"] for p in bertkit.pipeline("text-classification", model=model, precision="fp32")(texts)
    ]
    print(f"pipeline: {len(want)} texts, {sum(map(len, want))} labels predicted")
    with tempfile.TemporaryDirectory() as tmp:
        src, dest = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        cli = [sys.executable, "-m", "bertkit", "predict", "--model", str(model), "--input", str(src)]
        subprocess.run([*cli, "--output", str(dest), "--precision", "fp32"], check=True)
        got = {"bertkit predict": [json.loads(x)["labels"] for x in dest.read_text().splitlines()]}
        from fastapi.testclient import TestClient

        from bertkit.serve.app import create_app

        with TestClient(create_app(model, runtime=compute_init(RuntimeArgs(precision="fp32")))) as c:
            answers = [c.post("/v1/classify", json={"texts": texts[i : i + 256]}).json()["predictions"]
                       for i in range(0, len(texts), 256)]  # fmt: skip
        got["server /v1/classify"] = [a["labels"] for part in answers for a in part]
        onnx = Path(tmp) / "model.onnx"
        subprocess.run(
            [sys.executable, "-m", "bertkit", "export", "--model", str(model), "--output", str(onnx)],
            check=True,
        )
        pipe = bertkit.pipeline("text-classification", model=model, backend="onnx", onnx_file=onnx)
        got["--backend onnx"] = [p["labels"] for p in pipe(texts)]
    for name, labels in got.items():
        differ = sum(sorted(a) != sorted(b) for a, b in zip(labels, want, strict=True))
        print(f"{name}: {differ} of {len(texts)} texts with other label sets than the pipeline's")


if __name__ == "__main__":
    main()

"""Does `/rerank` order texts as the model's pair scores do offline? A cross-encoder fine-tuned by
bertkit (a one-score regression on STS-B, or two classes on MRPC) served by `bertkit serve` with
an API key; each query is a dev pair's first sentence with its own second sentence and --others
second sentences of other pairs; the server's order is compared with the order of offline
`bertkit.pipeline` pair scores (same precision), and the scores themselves.

    python bench/rerank_check.py --model out/stsb-cross --data ../shared/data/en/glue/STS-B/dev.tsv
    python bench/rerank_check.py --model out/mrpc-cross --data ../shared/data/en/glue/MRPC/dev.tsv
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a sentence-pair classifier or regression directory")
    p.add_argument("--data", required=True, help="a GLUE pair file (STS-B or MRPC dev.tsv)")
    p.add_argument("--queries", type=int, default=200, help="queries (default 200)")
    p.add_argument("--others", type=int, default=9, help="texts of other pairs per query (default 9)")
    p.add_argument("--precision", default="fp32", help="server and offline precision (default fp32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the candidates")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    import httpx

    import bertkit
    from bertkit.tasks.registry import load_examples
    from serve_load import bertkit_server, cpu_line

    print(cpu_line())
    pairs = [(e.text, e.pair) for e in load_examples("classify", args.data)]
    rng = random.Random(args.seed)
    key = "rerank-bench-key"
    server, port = bertkit_server(args.model, args.precision, ["--api-key", key])
    try:
        info = httpx.get(f"http://127.0.0.1:{port}/info", headers={"authorization": f"Bearer {key}"}).json()
        kind, labels = next(iter(info["model_type"].items()))
        offline = bertkit.pipeline("text-classification", model=args.model, precision=args.precision)
        same, worst, rows = 0, 0.0, []
        for q in range(min(args.queries, len(pairs))):
            query, own = pairs[q]
            texts = [own, *(pairs[i][1] for i in rng.sample(range(len(pairs)), args.others) if i != q)]
            got = httpx.post(
                f"http://127.0.0.1:{port}/rerank",
                json={"query": query, "texts": texts},
                headers={"authorization": f"Bearer {key}"},
                timeout=120,
            ).json()
            preds = offline([query] * len(texts), text_pair=texts)
            want = [pr["score"] if "scores" not in pr else score_of(pr, labels) for pr in preds]
            order = sorted(range(len(texts)), key=lambda i: -want[i])
            same += [g["index"] for g in got] == order
            worst = max(worst, max(abs(g["score"] - want[g["index"]]) for g in got))
            rows.append({"query": query, "server": [g["index"] for g in got], "offline": order})
    finally:
        server.terminate()
        server.wait(60)
    n = len(rows)
    print(f"\n{args.model} ({kind}), {n} queries of {args.others + 1} texts, {args.precision}")
    print(f"same order as offline: {same} / {n}; largest score difference {worst:.1e}")
    if args.json:
        out = {
            "model": args.model,
            "kind": kind,
            "queries": n,
            "same_order": same,
            "max_diff": worst,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


def score_of(pred: dict, labels: dict) -> float:
    """A two-class model's score: the probability of the label /rerank scores by (1, positive,
    entailment, else the last; the server's own choice, as `bertkit serve` makes it)."""
    from bertkit.serve.model import POSITIVE

    names = list(labels["label2id"])
    chosen = next((n for n in POSITIVE if n in names), names[-1])
    return pred["scores"][chosen]


if __name__ == "__main__":
    main()

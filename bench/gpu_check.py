"""bertkit on a GPU machine in one call: parity, fine-tuning, pretraining, torchrun, embed/serve, speed.

For a lent GPU machine (an H200) that has Python 3.12, torch (CUDA), transformers, accelerate,
tokenizers, numpy, scikit-learn, tqdm, tensorboard and httpx, but no package registry, no
`../shared/data` and no MiniLM package. Everything it needs comes with the working tree:

1. Here, on a machine with `../shared/data`, copy the small inputs (about 3 MB: SST-2 and
   CoNLL-2003 subsets, a few Gutenberg books) into an ignored folder of the checkout:

       python bench/gpu_check.py --prepare runs/gpu_data

   (`runs/` is git-ignored: the data is carried, never committed.)

2. On the GPU machine, from the repository root, carrying `runs/gpu_data`
   (device tool: `run` with carry ["runs/gpu_data"], timeout_s 540):

       set -o pipefail; PYTHONUNBUFFERED=1 PYTHONPATH=src python bench/gpu_check.py \\
           --data runs/gpu_data --out $OUT 2>&1 | tee $OUT/log

   With `--wheels .whl` (and ".whl" carried) it first installs fastapi/uvicorn/matplotlib where
   they are missing (see the end of --help). About 3-5 minutes; it starts no new step after
   --time-limit (450 s) and rewrites $OUT/summary.json and $OUT/summary.md after every step, so a
   cut-off run still reports. Exit status 1 if any check failed.

3. The same steps, tiny, on a CPU (a smoke test; torchrun uses gloo):

       PYTHONPATH=src python bench/gpu_check.py --device cpu --quick \\
           --data runs/gpu_data --out runs/gpu_check_cpu

Each step prints one line `[PASS|FAIL|SKIP|WARN] name: result (seconds)`; a failing CLI step's
stderr goes into the summary. Steps: env, tokenizer, parity, init, finetune_classify,
finetune_ner, pretrain, torchrun, embed, serve, speed_inference, speed_training.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from gpu_checks import environment, parity, serving, speed, training
from gpu_checks.common import DEFAULT_SOURCE, QUICK, REQUIRED, CheckFailed, Ctx, Sizes
from gpu_checks.data import prepare

WHEELS_HELP = """\
serve needs fastapi + uvicorn, and finetune/pretrain write plots with matplotlib; the GPU machine
may lack them and has no registry. Carry wheels for its Python 3.12 (`.whl/` is git-ignored):

    pip download --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl fastapi uvicorn matplotlib
    rm -f .whl/numpy-*.whl        # the GPU machine has numpy; this keeps the carry small

then carry [".whl", "runs/gpu_data"] and add `--wheels .whl`: the modules above that do not import
are installed with `pip install --no-index --find-links .whl` before the checks. Without them
serve is skipped with a line that says so.
"""
NEEDS = {
    "parity": ("tok",),
    "init": ("tok",),
    "finetune_classify": ("init",),
    "finetune_ner": ("init",),
    "pretrain": ("tok",),
    "torchrun": ("init",),
    "embed": ("base",),
    "serve": ("classify",),
    "speed_inference": ("base",),
    "speed_training": ("classify",),  # bertkit's side is finetune_classify's run
}
MAKES = {"tok": "tokenizer", "base": "parity", "init": "init", "classify": "finetune_classify"}


CHECKS = {
    "env": environment.check_env,
    "tokenizer": parity.check_tokenizer,
    "parity": parity.check_parity,
    "init": training.check_init,
    "finetune_classify": lambda ctx: training.check_finetune(ctx, "classify"),
    "finetune_ner": lambda ctx: training.check_finetune(ctx, "ner"),
    "pretrain": training.check_pretrain,
    "torchrun": training.check_torchrun,
    "embed": serving.check_embed,
    "serve": serving.check_serve,
    "speed_inference": speed.check_speed_inference,
    "speed_training": speed.check_speed_training,
}


def run_check(ctx: Ctx, name: str) -> None:
    t0 = time.perf_counter()
    missing = [d for d in NEEDS.get(name, ()) if d not in ctx.dirs]
    if missing:
        res = {
            "status": "skip",
            "line": f"needs what {', '.join(MAKES[d] for d in missing)} makes (not made)",
        }
    elif time.monotonic() > ctx.deadline:
        res = {"status": "skip", "line": f"out of time (--time-limit {ctx.args.time_limit:.0f} s)"}
    else:
        try:
            res = CHECKS[name](ctx)
        except CheckFailed as e:
            res = {"status": "fail", "line": str(e), "error": e.error, "details": e.details}
        except Exception as e:  # noqa: BLE001 - one failing check must not stop the others
            res = {
                "status": "fail",
                "line": f"{type(e).__name__}: {e}"[:400],
                "error": traceback.format_exc()[-4000:],
            }
    res = {"name": name, "seconds": round(time.perf_counter() - t0, 1), "details": {}, **res}
    print(f"[{res['status'].upper()}] {name}: {res['line']} ({res['seconds']} s)", flush=True)
    ctx.results.append(res)
    write_summary(ctx)


def write_summary(ctx: Ctx) -> None:
    counts = {k: sum(r["status"] == k for r in ctx.results) for k in ("pass", "fail", "skip", "warn")}
    data = {
        "command": shlex.join(["python", *sys.argv]), "device": ctx.device, "quick": ctx.args.quick,
        "sizes": asdict(ctx.sizes), "counts": counts, "ok": counts["fail"] == 0, "checks": ctx.results,
    }  # fmt: skip
    (ctx.out / "summary.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    (ctx.out / "summary.md").write_text(summary_markdown(ctx, counts), encoding="utf-8")


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(ctx: Ctx, counts: dict) -> str:
    env = next((r["details"] for r in ctx.results if r["name"] == "env"), {})
    where = env.get("gpu") or ctx.device
    lines = [f"# bertkit GPU check: {where}", "", f"`{shlex.join(['python', *sys.argv])}`", ""]
    lines += [
        ", ".join(f"{v} {k}" for k, v in counts.items()),
        "",
        "| check | status | result | s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['name']} | {r['status'].upper()} | {md_cell(r['line'])} | {r['seconds']} |"
        for r in ctx.results
    ]
    if "speed_inference" in ctx.facts:
        lines += inference_table(ctx.facts["speed_inference"])
    if "speed_training" in ctx.facts:
        lines += training_table(ctx.facts["speed_training"])
    for r in ctx.results:
        if r["status"] == "fail" and r.get("error"):
            lines += ["", f"## {r['name']}: failure", "", "```text", r["error"].strip(), "```"]
    return "\n".join(lines) + "\n"


def inference_table(rows: dict) -> list[str]:
    lines = [
        "",
        "## Inference (texts/s, best of runs; transformers: BertModel, bf16, SDPA, padded to batch max)",
        "",
    ]
    lines += [
        "| corpus | texts | tokens | bertkit | transformers, as given | transformers, sorted "
        "| bertkit / best |"
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    for n, r in rows.items():
        t = r["texts"]
        lines.append(
            f"| {n} | {t} | {r['tokens']} | {t / r['bertkit']:,.0f} | {t / r['hf_as_given']:,.0f} | "
            f"{t / r['hf_sorted']:,.0f} | {r['ratio_vs_best_hf']:.2f}x |"
        )
    return lines


def training_table(st: dict) -> list[str]:
    lines = [
        "",
        "## Training (SST-2 subset, same steps, batch, lr, max_length)",
        "",
        "| run | s | examples/s | tokens/s |",
    ]
    lines += ["|---|---|---|---|"]
    for n in ("bertkit", "trainer"):
        lines.append(
            f"| {n} | {st[n]['seconds']:.1f} | {st[n]['examples_per_second']:,.0f} "
            f"| {st[n]['tokens_per_second']:,.0f} |"
        )
    lines.append(f"\nbertkit / Trainer: **{st['ratio']:.2f}x**")
    return lines


def install_wheels(ctx: Ctx, wheels: Path) -> None:
    missing = [m for m in ("fastapi", "uvicorn", "matplotlib") if importlib.util.find_spec(m) is None]
    if not missing:
        ctx.facts["wheels"] = "nothing missing"
        return
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--find-links",
        str(wheels.resolve()),
        *missing,
    ]
    env = dict(os.environ, PIP_BREAK_SYSTEM_PACKAGES="1")  # a distribution's Python refuses otherwise
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    ctx.facts["wheels"] = {"installed": missing, "rc": r.returncode, "tail": (r.stdout + r.stderr)[-2000:]}
    importlib.invalidate_caches()
    status = "PASS" if r.returncode == 0 else "FAIL"
    print(f"[{status}] wheels: pip install {' '.join(missing)}: exit {r.returncode}", flush=True)


def selected(only: list[str] | None, skip: list[str]) -> list[str]:
    names = set(only or CHECKS) - set(skip)
    todo = set(names)
    for name in names:  # what the chosen checks need, made first
        stack = list(NEEDS.get(name, ()))
        while stack:
            maker = MAKES[stack.pop()]
            todo.add(maker)
            stack += NEEDS.get(maker, ())
    return [n for n in CHECKS if n in todo]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, epilog=WHEELS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_prepare_args(p)
    add_run_args(p)
    add_control_args(p)
    args = p.parse_args(argv)
    unknown = set(args.only or []) | set(args.skip)
    if unknown - set(CHECKS):
        p.error(f"unknown checks {', '.join(sorted(unknown - set(CHECKS)))}; known: {', '.join(CHECKS)}")
    if not args.prepare and not (args.data and args.out):
        p.error("give --data DIR --out DIR (or --prepare DEST)")
    return args


def add_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prepare", metavar="DEST", help="copy the small inputs from --source into DEST and exit")
    p.add_argument(
        "--source",
        default=str(DEFAULT_SOURCE),
        help="--prepare: the shared data folder (default ../shared/data)",
    )
    p.add_argument(
        "--text-mb",
        type=float,
        default=3.0,
        help="--prepare: MB of book text, split over the authors (default 3)",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder that --prepare wrote (carried to the GPU machine)")
    p.add_argument("--out", help="folder for summary.json, summary.md and logs/ (created)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny models, few steps and texts: a smoke test (e.g. with --device cpu)",
    )
    p.add_argument(
        "--precision",
        choices=["bf16", "fp32"],
        default="bf16",
        help="training precision of finetune/pretrain/Trainer (default bf16)",
    )


def add_control_args(p: argparse.ArgumentParser) -> None:
    """Which checks run, for how long, where their files go, and how bertkit is started."""
    p.add_argument(
        "--only",
        type=lambda v: v.split(","),
        help=f"comma-separated checks to run (and what they need): {', '.join(CHECKS)}",
    )
    p.add_argument(
        "--skip", type=lambda v: v.split(","), default=[], help="comma-separated checks not to run"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=450,
        help="start no new step after this many seconds (default 450)",
    )
    p.add_argument(
        "--work", help="folder for models and runs, kept (default: a temporary folder, removed at the end)"
    )
    p.add_argument(
        "--keep-work", action="store_true", help="keep the temporary work folder and print where it is"
    )
    p.add_argument(
        "--wheels",
        help="folder of wheels: pip-install fastapi/uvicorn/matplotlib from it where missing (see below)",
    )
    p.add_argument(
        "--cli",
        default="-m bertkit",
        help="how python runs the bertkit command line (default '-m bertkit'; a script path works too)",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare), Path(args.source), int(args.text_mb * 1e6))
        return 0
    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    absent = [r for r in REQUIRED if not (data / r).exists()]
    if absent:
        print(
            f"gpu_check: {data} lacks {', '.join(absent)}: run --prepare DEST here and carry DEST",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda"):  # fp32 parity means fp32 matrix products, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    ctx = Ctx(
        args,
        QUICK if args.quick else Sizes(),
        args.device,
        data,
        out,
        work,
        time.monotonic() + args.time_limit,
    )
    if args.wheels:
        install_wheels(ctx, Path(args.wheels))
    try:
        for name in selected(args.only, args.skip):
            run_check(ctx, name)
    finally:
        if args.work or args.keep_work:
            print(f"work folder kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    counts = {k: sum(r["status"] == k for r in ctx.results) for k in ("pass", "fail", "skip", "warn")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; summary in {out / 'summary.md'}", flush=True)
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""The serving checks: `bertkit embed` on CPU and the device, and `bertkit serve` over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import torch

from .common import ROOT, CheckFailed, Ctx, bertkit_cmd, child_env, mean_cos, run_cli, stop
from .data import read_sst2


def check_embed(ctx: Ctx) -> dict:
    texts = [t for t in read_sst2(ctx.data / "sst2/dev.tsv")[0] if t.strip()][: ctx.sizes.compare_texts]
    src = ctx.work / "embed-input.txt"
    src.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    vecs = {}
    for name, device, precision in (
        ("cpu_fp32", "cpu", "fp32"),
        ("fp32", ctx.device, "fp32"),
        ("bf16", ctx.device, "bf16"),
    ):
        dest = ctx.work / f"embed-{name}.npy"
        args = [
            "embed", "--model", ctx.dirs["base"], "--input", src, "--output", dest,
            "--device", device, "--precision", precision,
        ]  # fmt: skip
        run_cli(ctx, f"embed_{name}", bertkit_cmd(ctx, *args), 180)
        vecs[name] = torch.from_numpy(np.load(dest))
    if (
        not vecs["fp32"].shape
        == vecs["bf16"].shape
        == vecs["cpu_fp32"].shape
        == (len(texts), vecs["fp32"].shape[1])
    ):
        raise CheckFailed(f"shapes {[tuple(v.shape) for v in vecs.values()]} for {len(texts)} texts")
    c32, c16 = mean_cos(vecs["fp32"], vecs["cpu_fp32"]), mean_cos(vecs["bf16"], vecs["cpu_fp32"])
    ok = c32[1] >= 0.999 and c16[0] >= 0.99
    line = f"{len(texts)} SST-2 sentences -> {tuple(vecs['fp32'].shape)}; cosine to CPU fp32: "
    line += f"{ctx.device} fp32 min {c32[1]:.6f} "
    line += f"(≥ 0.999), {ctx.device} bf16 mean {c16[0]:.5f} / min {c16[1]:.5f}"
    return {"status": "pass" if ok else "fail", "line": line, "details": {"cos_fp32": c32, "cos_bf16": c16}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode("utf-8", "replace")[:500]}


def wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise CheckFailed(f"bertkit serve exited with {proc.returncode} before answering /health")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise CheckFailed(f"bertkit serve did not answer {url} within {timeout:.0f} s")


def check_serve(ctx: Ctx) -> dict:
    probe = subprocess.run(
        [sys.executable, "-c", "import fastapi, uvicorn"], env=child_env(ctx), capture_output=True
    )
    if probe.returncode != 0:
        return {
            "status": "skip",
            "line": "fastapi/uvicorn do not import: serve not checked (carry wheels, --wheels: see --help)",
        }
    port, log_path = free_port(), ctx.out / "logs" / "serve.log"
    cmd = bertkit_cmd(
        ctx,
        "serve",
        "--model",
        ctx.dirs["classify"],
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--device",
        ctx.device,
    )
    texts = read_sst2(ctx.data / "sst2/dev.tsv")[0][:8]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=child_env(ctx), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_ready(proc, url + "/health", 120)
            (c_status, c_body), (e_status, e_body) = (
                post(url + "/v1/classify", {"texts": texts}),
                post(url + "/v1/embed", {"texts": texts}),
            )
        except CheckFailed as e:
            e.error = log_path.read_text(encoding="utf-8")[-4000:] if log_path.exists() else None
            raise
        finally:
            stop(proc)
    n_pred, n_emb = len(c_body.get("predictions", [])), len(e_body.get("embeddings", []))
    ok = c_status == e_status == 200 and n_pred == n_emb == len(texts)
    line = f"port {port}: /v1/classify {c_status} ({n_pred} predictions), "
    line += f"/v1/embed {e_status} ({n_emb} vectors); stopped"
    d = {"classify": c_body if c_status != 200 else c_body["predictions"][:2], "embed_status": e_status}
    return {"status": "pass" if ok else "fail", "line": line, "details": d}

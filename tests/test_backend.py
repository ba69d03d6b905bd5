"""`--backend auto`: the table's choice for each CPU kind (chosen with the BERTKIT_CPU_*
overrides), the fallbacks and their one line, the CLI's line on stderr; the OpenVINO
conversion cached on disk (a second load converts nothing and gives the same outputs)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import bertkit
import bertkit.engine.backend as backend_mod
import bertkit.runtime as runtime_mod
from bertkit.engine.backend import AUTO, choose
from bertkit.engine.runner import MAX_TOKENS, InferenceOptions
from bertkit.runtime import Runtime

CPU_FP32 = Runtime(torch.device("cpu"), "fp32")


@pytest.fixture
def kind(monkeypatch):
    """Sets the CPU kind through the overrides (code paths only) and says OpenVINO is installed."""

    def set_kind(name: str) -> None:
        monkeypatch.setenv("BERTKIT_CPU_AMX", "1" if name == "amx" else "0")
        monkeypatch.setenv("BERTKIT_CPU_BF16", "0" if name == "avx2" else "1")
        for f in (runtime_mod.cpu_has_amx, runtime_mod.cpu_has_bf16):
            f.cache_clear()

    monkeypatch.setattr(backend_mod, "installed", lambda b, int8=False: True)
    yield set_kind
    for f in (runtime_mod.cpu_has_amx, runtime_mod.cpu_has_bf16):
        f.cache_clear()


@pytest.mark.parametrize("cpu", sorted(AUTO))
@pytest.mark.parametrize("int8", [False, True])
def test_auto_follows_the_table(kind, cpu, int8, caplog):
    kind(cpu)
    caplog.set_level(logging.INFO, logger="bertkit.engine.backend")
    o = InferenceOptions(backend="auto", int8=int8)
    got = choose(o, Runtime(torch.device("cpu"), "auto"))
    assert got == AUTO[cpu][int(int8)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"backend: {got} (auto: ") and cpu in lines[0], lines
    resolved = o.on(got)
    assert (resolved.backend, resolved.max_tokens) == (got, MAX_TOKENS[got])
    assert o.on(got).int8 == int8 and o.backend == "auto"  # the asked-for options unchanged


def test_auto_falls_back_to_torch(kind, monkeypatch, caplog):
    kind("avx512_bf16")
    caplog.set_level(logging.INFO, logger="bertkit.engine.backend")
    auto = InferenceOptions(backend="auto")
    assert choose(auto, CPU_FP32, runs=("torch",)) == "torch"  # fill-mask
    monkeypatch.setattr(backend_mod, "installed", lambda b, int8=False: False)
    assert choose(auto, CPU_FP32) == "torch"
    assert "pip install 'bertkit[openvino]'" in caplog.records[-1].getMessage()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert choose(auto, Runtime(torch.device("cuda", 0), "auto")) == "torch"  # a GPU: torch
    # forced backends stay, but one the caller cannot run falls back with a line
    assert choose(InferenceOptions(backend="onnx"), CPU_FP32, runs=("torch", "onnx")) == "onnx"
    assert choose(InferenceOptions(backend="openvino"), CPU_FP32, runs=("torch",)) == "torch"
    assert "openvino does not run this model" in caplog.records[-1].getMessage()
    assert InferenceOptions(backend="auto", max_tokens=100).on("openvino").max_tokens == 100


def test_the_cli_prints_its_choice(minilm_dir, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("one sentence\nand another one\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "BERTKIT_BACKEND"}
    env.update(BERTKIT_CPU_AMX="1", BERTKIT_CPU_BF16="1")  # amx: the torch engine, no conversion
    out = tmp_path / "e.npy"
    args = [sys.executable, "-m", "bertkit", "embed", "--model", minilm_dir, "--input", src, "--output", out]
    r = subprocess.run(list(map(str, args)), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    chosen = [ln for ln in r.stderr.splitlines() if ln.startswith("backend: ")]
    assert chosen == ["backend: torch (auto: the fastest for bf16 on amx CPUs)"], r.stderr
    assert np.load(out).shape == (2, 384)


def test_openvino_conversion_is_cached(tiny_dir, tmp_path, monkeypatch):
    ov = pytest.importorskip("openvino", reason="openvino (dev extra) is not installed")
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    texts = ["a first sentence", "the second one is longer than the first", "x"]
    first = bertkit.pipeline("feature-extraction", model=tiny_dir, backend="openvino", precision="fp32")
    want = first(texts)
    graphs = list((tmp_path / "cache" / "openvino").glob("*/model.xml"))
    assert len(graphs) == 1 and not list((tmp_path / "cache" / "openvino").glob(".*partial*"))

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(ov, "convert_model", no_conversion)
    again = bertkit.pipeline("feature-extraction", model=tiny_dir, backend="openvino", precision="fp32")
    assert np.allclose(again(texts), want, atol=1e-6)
    # other precision: another entry (and a conversion)
    with pytest.raises(AssertionError, match="converted again"):
        bertkit.pipeline("feature-extraction", model=tiny_dir, backend="openvino", precision="bf16")

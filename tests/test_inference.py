"""The inference engine against references: transformers' BertModel (fp32, every real token),
bf16 against fp32 (cosine, argmax), sentence-transformers' embeddings for all-MiniLM-L6-v2, and
the embed command's file handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bertkit
from bertkit.engine.embeddings import pool
from bertkit.engine.fused import PrepackedLinear
from bertkit.engine.fused import can_prepack as _can_prepack
from bertkit.engine.runner import InferenceOptions, prepare
from bertkit.errors import BertkitError
from bertkit.models.heads import BertForSequenceClassification
from bertkit.runtime import Runtime, cpu_flags
from bertkit.tokenization.tokenizer import Tokenizer

DATA = Path(os.environ.get("BERTKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# Real sentences of mixed lengths (SST-2 dev when the shared data is there).
FALLBACK = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the production "
    "'s austere locales .",
    "a",
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday to discuss the 2026 budget of the European Union.",
    "中文字符也应当按字切分。",
    "it 's slow -- very , very slow .",
]

CPU_FP32 = Runtime(torch.device("cpu"), "fp32")
CPU_BF16 = Runtime(torch.device("cpu"), "bf16")


def sentences(n: int = 96) -> list[str]:
    path = DATA / "en/glue/SST-2/dev.tsv"
    if not path.is_file():
        return FALLBACK
    lines = path.read_text(encoding="utf-8").splitlines()[1 : n + 1]
    return [ln.split("\t")[0] for ln in lines] + FALLBACK


def encode(tok: Tokenizer, texts: list[str]):
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]


def test_packed_fp32_matches_transformers(minilm_dir, hf):
    """Padding-free batches give transformers' hidden states at every real token (fp32)."""
    texts = sentences()
    ids, mask, types = encode(Tokenizer.from_pretrained(minilm_dir), texts)
    ref = hf.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager").eval()
    ours = prepare(bertkit.BertModel.from_pretrained(minilm_dir), InferenceOptions(), CPU_FP32)
    assert ours.packed
    with torch.inference_mode():
        a = ref(ids, attention_mask=mask, token_type_ids=types)
        b = ours(ids, mask, types)
    real = mask.bool()
    assert (a.last_hidden_state - b.last_hidden_state)[real].abs().max() <= 1e-4
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-4
    assert (b.last_hidden_state[~real] == 0).all()  # padding positions skipped, not computed


def test_bf16_agrees_with_fp32(minilm_dir):
    """bf16 weights: pooled embeddings cosine >= 0.999 and the same class on a classification head."""
    texts = sentences()
    ids, mask, types = encode(Tokenizer.from_pretrained(minilm_dir), texts)
    torch.manual_seed(0)
    config = bertkit.BertConfig.from_pretrained(minilm_dir)
    config.set_labels(list("abcde"))
    fp32 = BertForSequenceClassification.from_pretrained(minilm_dir, config=config)
    bf16 = BertForSequenceClassification.from_pretrained(minilm_dir, config=config)
    bf16.load_state_dict(fp32.state_dict())
    prepare(fp32, InferenceOptions(), CPU_FP32)
    prepare(bf16, InferenceOptions(), CPU_BF16)
    assert bf16.bert.embeddings.word.weight.dtype == torch.bfloat16
    assert bf16.classifier.weight.dtype == torch.float32  # heads stay fp32
    with torch.inference_mode():
        a, b = fp32(ids, mask, types), bf16(ids, mask, types)
        ea = pool(fp32.bert(ids, mask, types).last_hidden_state, mask, "mean")
        eb = pool(bf16.bert(ids, mask, types).last_hidden_state, mask, "mean")
    assert b.logits.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(ea, eb, dim=-1)
    assert cos.min() >= 0.999, cos.min()
    margin = a.logits.topk(2).values
    clear = (margin[:, 0] - margin[:, 1]) > 0.05  # near-ties may flip in any precision
    assert (a.logits.argmax(-1) == b.logits.argmax(-1))[clear].all()


def test_prepacked_fused_layers_no_less_accurate(minilm_dir):
    """bf16 weights reordered once for oneDNN, GELU and residual adds fused into the products: no
    further from fp32 than plain bf16 F.linear (one rounding where plain bf16 rounds twice)."""
    if not _can_prepack(torch.device("cpu"), torch.bfloat16):
        pytest.skip("no oneDNN bf16 weight prepacking here (this torch build, or a CPU without AVX512)")
    texts = sentences(32)
    ids, mask, types = encode(Tokenizer.from_pretrained(minilm_dir), texts)
    ref = prepare(bertkit.BertModel.from_pretrained(minilm_dir), InferenceOptions(prepack=False), CPU_FP32)
    plain = prepare(bertkit.BertModel.from_pretrained(minilm_dir), InferenceOptions(prepack=False), CPU_BF16)
    packed = prepare(bertkit.BertModel.from_pretrained(minilm_dir), InferenceOptions(), CPU_BF16)
    assert isinstance(packed.layers[0].ffn.up, PrepackedLinear)
    assert isinstance(plain.layers[0].ffn.up, torch.nn.Linear)
    with torch.inference_mode():
        r, a, b = (m(ids, mask, types).last_hidden_state.float() for m in (ref, plain, packed))
    real = mask.bool()
    err_plain, err_packed = (a - r)[real].abs(), (b - r)[real].abs()
    assert err_packed.mean() <= 1.05 * err_plain.mean(), (err_packed.mean(), err_plain.mean())
    assert err_packed.max() <= 1.25 * err_plain.max(), (err_packed.max(), err_plain.max())


def test_embeddings_match_sentence_transformers(minilm_dir):
    st = pytest.importorskip(
        "sentence_transformers", reason="sentence-transformers (dev extra) is not installed"
    )
    texts = sentences()
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    pipe = bertkit.pipeline("feature-extraction", model=minilm_dir, precision="fp32")
    assert (pipe.pooling, pipe.normalize, pipe.max_length) == ("mean", True, 256)  # from the ST files
    ours = pipe(texts)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    cos = (ours * ref).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() >= 0.9999, cos.min()
    # results come back in input order, whatever the length-sorted batching did
    assert np.allclose(pipe(texts[3]), ours[3], atol=1e-5)
    long = " ".join(texts) * 3  # past 256 tokens: truncated, as sentence-transformers does
    ref_long = st.SentenceTransformer(str(minilm_dir), device="cpu").encode([long])
    assert float((pipe([long]) * ref_long).sum()) >= 0.9999


def test_bf16_and_int8_embeddings_close(minilm_dir):
    texts = sentences(48)
    base = bertkit.pipeline("feature-extraction", model=minilm_dir, precision="fp32")(texts)
    bf16 = bertkit.pipeline("feature-extraction", model=minilm_dir, precision="bf16")(texts)
    assert (base * bf16).sum(-1).min() >= 0.999  # both normalised: the dot product is the cosine
    # int8 (bertkit.engine.int8, SmoothQuant-calibrated) is lossier: measured mean 0.9988, min 0.9940
    # on 2,048 SST-2 train sentences (OpenVINO's NNCF int8 0.9970 / 0.9587)
    for precision in ("auto", "fp32"):
        int8 = bertkit.pipeline("feature-extraction", model=minilm_dir, int8=True, precision=precision)(texts)
        cos = (base * int8).sum(-1)
        assert cos.mean() >= 0.998 and cos.min() >= 0.99, (precision, cos.mean(), cos.min())


INT8_COSINES = """
import json, sys
import bertkit
texts = json.load(open(sys.argv[2], encoding="utf-8"))
base = bertkit.pipeline("feature-extraction", model=sys.argv[1], precision="fp32")(texts)
int8 = bertkit.pipeline("feature-extraction", model=sys.argv[1], int8=True)(texts)
cos = (base * int8).sum(-1)
print(cos.mean(), cos.min())
"""


@pytest.mark.skipif("avx2" not in cpu_flags(), reason="the CPU has no AVX2 (oneDNN's AVX2 kernels)")
def test_int8_embeddings_close_on_avx2_kernels(minilm_dir, tmp_path):
    """int8 as a CPU without VNNI or bf16 units runs it: oneDNN held to its AVX2 kernels (whose
    u8 x s8 products add pairs in 16 bits), on any x86 CPU. Measured on 2,048 SST-2 train
    sentences: mean 0.9986, min 0.9944 (7-bit activations gave 0.9956 / 0.9764)."""
    src = tmp_path / "texts.json"
    src.write_text(json.dumps(sentences(48)), encoding="utf-8")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    args = [sys.executable, "-c", INT8_COSINES, str(minilm_dir), str(src)]
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mean, low = map(float, r.stdout.split())
    assert mean >= 0.998 and low >= 0.99, (mean, low)


def test_engine_options_are_checked(minilm_dir):
    with pytest.raises(BertkitError, match="precision"):
        bertkit.pipeline("feature-extraction", model=minilm_dir, precision="fp8")
    with pytest.raises(BertkitError, match="pooling"):
        bertkit.pipeline("feature-extraction", model=minilm_dir, pooling="max")
    with pytest.raises(BertkitError, match="streams"):
        bertkit.pipeline("feature-extraction", model=minilm_dir, streams=-1)
    assert bertkit.pipeline("feature-extraction", model=minilm_dir, streams=1).model.streams == 1


def run_cli(*args, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "bertkit", *map(str, args)], capture_output=True, text=True, input=stdin
    )


def test_embed_command(minilm_dir, tmp_path):
    texts = ["a first sentence", "", "the third one, longer than the others by a few words"]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    r = run_cli("embed", "--model", minilm_dir, "--input", src, "--output", out, "--precision", "fp32")
    assert r.returncode == 0, r.stderr
    got = np.load(out)
    assert got.shape == (3, 384)  # every line a row, the empty one included
    want = bertkit.pipeline("feature-extraction", model=minilm_dir, precision="fp32")(texts)
    assert np.allclose(got, want, atol=1e-5)
    # JSON lines from standard input, [CLS] pooling, not normalised
    jl = "\n".join(json.dumps({"text": t}) for t in texts[:2])
    r = run_cli(
        "embed", "--model", minilm_dir, "--output", out, "--pooling", "cls", "--no-normalize", stdin=jl
    )
    assert r.returncode == 0, r.stderr
    assert np.load(out).shape == (2, 384) and abs(float(np.linalg.norm(np.load(out)[0])) - 1) > 1e-3


def test_embed_bad_input_keeps_old_output(minilm_dir, tmp_path):
    out = tmp_path / "emb.npy"
    np.save(out, np.ones((1, 2), dtype=np.float32))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no text field"}\n', encoding="utf-8")
    r = run_cli("embed", "--model", minilm_dir, "--input", bad, "--output", out)
    assert r.returncode == 2 and "line 2" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr
    assert np.load(out).shape == (1, 2)  # the file already there is untouched
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    r = run_cli("embed", "--model", minilm_dir, "--input", latin, "--output", out)
    assert r.returncode == 2 and str(latin) in r.stderr and "Traceback" not in r.stderr

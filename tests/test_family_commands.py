"""Every command on a RoBERTa-family model (byte-level BPE) and a DistilBERT one (WordPiece):
finetune (classify, NER, QA), evaluate, predict, search, embed (also a sentence-transformers
directory), serve, export with the ONNX backend, int8, and distill. The models are small random
"pretrained" encoders built here; the data is made up so that a few steps learn it."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import bertkit
from bertkit import BertConfig, BertModel, Tokenizer
from bertkit.cli import main
from bertkit.tasks import registry
from bertkit.tokenization.vocab import train_tokenizer

NAMES = ["Peter", "Maria", "John", "Anna"]
PLACES = ["Paris", "Berlin", "Rome", "Madrid"]
FILLER = "the a good bad film plot was dull long great acting script visited in May and with".split()
FAST = ["--batch-size", "8", "--quiet", "--precision", "fp32"]


def _sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [(rng.choice(FILLER), "O") for _ in range(rng.randint(1, 3))]
        words += [(rng.choice(NAMES), "B-PER"), ("visited", "O"), (rng.choice(PLACES), "B-LOC")]
        words += [(rng.choice(FILLER), "O") for _ in range(rng.randint(0, 2))]
        out.append(words)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("family-data")
    rng = random.Random(0)
    rows = []
    for _ in range(96):
        label = rng.choice(["pos", "neg"])
        word = "great" if label == "pos" else "dull"
        rows.append((f"the film was {word} and {rng.choice(FILLER)}", label))
    (d / "clf.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    conll = "".join("".join(f"{w} {t}\n" for w, t in s) + "\n" for s in _sentences(80, 1))
    (d / "ner.txt").write_text(conll)
    squad = []
    for i, s in enumerate(_sentences(60, 2)):
        context = " ".join(w for w, _ in s)
        place = next(w for w, t in s if t == "B-LOC")
        qa = {
            "id": str(i),
            "question": "where",
            "answers": [{"text": place, "answer_start": context.index(place)}],
        }
        squad.append({"context": context, "qas": [qa]})
    (d / "qa.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": squad}]}))
    lines = [" ".join(w for w, _ in s) for s in _sentences(200, 3)] + [t for t, _ in rows]
    (d / "corpus.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="module", params=["roberta", "distilbert"])
def family_dir(request, data, tiny_dir, tmp_path_factory):
    """A small random bare encoder of the family, saved with its tokenizer."""
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "roberta":
        tok = train_tokenizer(str(data / "corpus.txt"), 300, d, model_type="bpe")
        config = BertConfig.from_dict(
            dict(
                model_type="roberta",
                vocab_size=tok.vocab_size,
                pad_token_id=tok.pad_token_id,
                max_position_embeddings=130,
                type_vocab_size=1,
                layer_norm_eps=1e-5,
            )  # fmt: skip
        )
    else:
        tok = Tokenizer.from_pretrained(tiny_dir)
        tok.save_pretrained(d)
        config = BertConfig.from_dict(dict(model_type="distilbert", vocab_size=tok.vocab_size))
    for k, v in dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    ).items():
        setattr(config, k, v)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(d)
    return d


def _finetune(task: str, model, train, out, *more) -> None:
    argv = ["finetune", "--task", task, "--model", str(model), "--train", str(train), "--dev", str(train),
            "--output", str(out), "--lr", "3e-3", *FAST, *more]  # fmt: skip
    assert main(argv) == 0


@pytest.fixture(scope="module")
def classifier(family_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "out"
    _finetune("classify", family_dir, data / "clf.tsv", out, "--epochs", "4")
    return out


def test_finetuned_classifier_learns_and_loads_in_transformers(classifier, family_dir, hf):
    metrics = json.loads((classifier / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] >= 0.9, metrics["dev"]
    family = BertConfig.from_pretrained(family_dir).model_type
    ref = hf.AutoModelForSequenceClassification.from_pretrained(str(classifier)).eval()
    assert ref.config.model_type == family
    texts = ["the film was great", "the film was dull and long"]
    enc = Tokenizer.from_pretrained(classifier)(texts, padding=True, return_tensors="pt")
    ours = bertkit.pipeline("text-classification", model=classifier, precision="fp32")(texts)
    with torch.inference_mode():
        probs = ref(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.softmax(-1)
    for row, p in zip(ours, probs.tolist(), strict=True):
        assert [row["scores"][ref.config.id2label[i]] for i in range(2)] == pytest.approx(p, abs=1e-5)


def test_ner_finetune_and_predict_give_one_tag_per_word(family_dir, data, tmp_path):
    out = tmp_path / "ner"
    _finetune("ner", family_dir, data / "ner.txt", out, "--epochs", "12", "--head", "crf")
    assert json.loads((out / "metrics.json").read_text())["dev"]["f1"] >= 0.8
    lines = ["the Peter visited Paris in May", "the plot was dull", "a good Anna visited Rome"]
    src, dest = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n")
    assert main(["predict", "--model", str(out), "--input", str(src), "--output", str(dest)]) == 0
    rows = [json.loads(x) for x in dest.read_text().splitlines()]
    assert [len(r["tags"]) for r in rows] == [len(x.split()) for x in lines]
    assert rows[0]["tags"][:4] == ["O", "B-PER", "O", "B-LOC"]


def test_qa_finetune_answers(family_dir, data, tmp_path):
    out = tmp_path / "qa"
    _finetune(
        "qa", family_dir, data / "qa.json", out, "--epochs", "6", "--max-length", "64", "--stride", "16"
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dev"]["f1"] >= 50, metrics["dev"]


def test_evaluate_reproduces_the_dev_metrics(classifier, data, tmp_path):
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(classifier),
                "--data",
                str(data / "clf.tsv"),
                "--output",
                str(tmp_path),
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "metrics.json").read_text())
    dev = json.loads((classifier / "metrics.json").read_text())["dev"]
    assert again["accuracy"] == pytest.approx(dev["accuracy"])


def test_search_runs_a_grid(family_dir, data, tmp_path):
    argv = ["search", "--task", "classify", "--model", str(family_dir), "--train", str(data / "clf.tsv"),
            "--folds", "2", "--output", str(tmp_path / "s"), "--max-steps", "2", "--grid", "lr=1e-3,3e-3",
            "--batch-size", "8", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((tmp_path / "s" / "best.json").read_text())


def test_embed_equals_sentence_transformers(family_dir, tmp_path, hf):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers (test oracle) missing")
    from sentence_transformers.sentence_transformer import modules

    word = modules.Transformer(str(family_dir), max_seq_length=64)
    pool = modules.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    model = st.SentenceTransformer(modules=[word, pool, modules.Normalize()], device="cpu")
    model.save(str(tmp_path / "st"))
    texts = ["Peter visited Paris", "the film was great and long", "a"]
    want = model.encode(texts, convert_to_numpy=True)
    got = bertkit.pipeline("feature-extraction", model=tmp_path / "st", precision="fp32")(texts)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5


def test_serve_classifies(classifier):
    pytest.importorskip("fastapi", reason="fastapi (serve extra) is not installed")
    from fastapi.testclient import TestClient

    from bertkit.serve.app import create_app

    texts = ["the film was great", "dull"]
    with TestClient(create_app(classifier)) as c:
        r = c.post("/v1/classify", json={"texts": texts})
        assert r.status_code == 200, r.text
        want = bertkit.pipeline("text-classification", model=classifier)(texts)
        assert [p["label"] for p in r.json()["predictions"]] == [w["label"] for w in want]


def test_export_onnx_backend_and_int8_agree_with_torch(classifier, family_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime (dev extra) is not installed")
    import shutil

    from bertkit.inference.export import export_onnx

    d = tmp_path / "clf"
    shutil.copytree(classifier, d)
    check = export_onnx(d, d / "model.onnx")
    assert check["fp32_max_abs_diff"] <= 1e-4
    texts = ["the film was great", "the film was dull and long", "great", "dull acting"]
    want = bertkit.pipeline("text-classification", model=d, precision="fp32")(texts)
    onnx = bertkit.pipeline("text-classification", model=d, backend="onnx")(texts)
    int8 = bertkit.pipeline("text-classification", model=d, int8=True)(texts)
    for w, o, q in zip(want, onnx, int8, strict=True):
        assert o["label"] == w["label"] and o["score"] == pytest.approx(w["score"], abs=1e-4)
        assert q["label"] == w["label"]
    encoder = tmp_path / "enc.onnx"
    assert export_onnx(family_dir, encoder)["fp32_max_abs_diff"] <= 1e-4  # a bare encoder too


@pytest.mark.parametrize("student", [["--student-layers", "1"], ["--student", "tiny"]])
def test_distill_a_student_of_the_same_family(classifier, data, tmp_path, student):
    """From the teacher's layers, or a random preset of the teacher's family and vocabulary."""
    out = tmp_path / "student"
    argv = ["distill", "--task", "classify", "--teacher", str(classifier), "--train", str(data / "clf.tsv"),
            "--dev", str(data / "clf.tsv"), "--output", str(out), *student, "--epochs", "2",
            "--lr", "3e-3", *FAST]  # fmt: skip
    assert main(argv) == 0
    teacher, student_config = BertConfig.from_pretrained(classifier), BertConfig.from_pretrained(out)
    assert student_config.model_type == teacher.model_type
    assert student_config.num_hidden_layers == (1 if "--student-layers" in student else 2)
    assert registry.from_dir(out).labels == registry.from_dir(classifier).labels


def test_openvino_backend_agrees_with_torch(classifier):
    pytest.importorskip("openvino", reason="openvino (dev extra) is not installed")
    texts = ["the film was great", "the film was dull and long", "great", "dull acting"]
    want = bertkit.pipeline("text-classification", model=classifier, precision="fp32")(texts)
    got = bertkit.pipeline("text-classification", model=classifier, backend="openvino")(texts)
    for w, g in zip(want, got, strict=True):
        assert g["label"] == w["label"] and g["score"] == pytest.approx(w["score"], abs=1e-3)

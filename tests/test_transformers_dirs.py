"""Directories fine-tuned and saved by transformers, used as they are: the task read from
`architectures`, `id2label` and `problem_type`, by every command that takes a fine-tuned
directory. The models are small random ones transformers builds here: a BERT sentiment
classifier (WordPiece), a RoBERTa NER tagger (byte-level BPE trained here), a DistilBERT
multi-label classifier and a DistilBERT QA model."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

import bertkit
from bertkit.cli import main
from bertkit.errors import BertkitError
from bertkit.tasks import registry
from bertkit.tokenization.vocab import train_tokenizer

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["a good film", "the plot was dull and long", "great acting , bad script", "Paris in May"]
WORDS = "the a good bad film plot was dull long great acting script Paris May Peter Smith visited".split()


def _wordpiece_files(tiny_dir, dest):
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, dest / name)


@pytest.fixture(scope="module")
def dirs(hf, tiny_dir, tmp_path_factory, randomize):
    root = tmp_path_factory.mktemp("hfdirs")
    vocab = bertkit.Tokenizer.from_pretrained(tiny_dir).vocab_size
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    out = {}

    bert = hf.BertConfig(
        vocab_size=vocab, **small, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    )
    model = hf.BertForSequenceClassification(bert)
    randomize(model, 1, 0.2)
    model.save_pretrained(root / "bert-clf")
    _wordpiece_files(tiny_dir, root / "bert-clf")
    out["bert-clf"] = root / "bert-clf"

    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))) * 20 + "\n")
    tok = train_tokenizer(str(corpus), 300, root / "roberta-ner", model_type="bpe")
    roberta = hf.RobertaConfig(
        vocab_size=tok.vocab_size, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, **small
    )
    roberta.id2label, roberta.label2id = dict(enumerate(TAGS)), {t: i for i, t in enumerate(TAGS)}
    model = hf.RobertaForTokenClassification(roberta)
    randomize(model, 2, 0.2)
    model.save_pretrained(root / "roberta-ner")
    out["roberta-ner"] = root / "roberta-ner"

    distil = dict(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
    labels = ["sports", "politics", "tech"]
    config = hf.DistilBertConfig(**distil, problem_type="multi_label_classification")
    config.id2label, config.label2id = dict(enumerate(labels)), {t: i for i, t in enumerate(labels)}
    model = hf.DistilBertForSequenceClassification(config)
    randomize(model, 3, 0.2)
    model.save_pretrained(root / "distil-multi")
    _wordpiece_files(tiny_dir, root / "distil-multi")
    out["distil-multi"] = root / "distil-multi"

    model = hf.DistilBertForQuestionAnswering(hf.DistilBertConfig(**distil))
    randomize(model, 4, 0.2)
    model.save_pretrained(root / "distil-qa")
    _wordpiece_files(tiny_dir, root / "distil-qa")
    out["distil-qa"] = root / "distil-qa"
    return out


def test_registry_reads_the_task_and_says_so_in_one_line(dirs, caplog):
    with caplog.at_level(logging.INFO, logger="bertkit.tasks"):
        clf = registry.from_dir(dirs["bert-clf"])
        ner = registry.from_dir(dirs["roberta-ner"])
        multi = registry.from_dir(dirs["distil-multi"])
        qa = registry.from_dir(dirs["distil-qa"])
    assert (clf.name, clf.labels) == ("classify", ["neg", "pos"])
    assert (ner.name, ner.labels, ner.tag_scheme) == ("ner", TAGS, "iob2")
    assert type(multi).__name__ == "MultiLabelTask" and multi.thresholds == [0.5, 0.5, 0.5]
    assert qa.name == "qa"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all("\n" not in x and "fine-tuned by transformers" in x for x in lines)
    assert "RobertaForTokenClassification" in lines[1] and "IOB2" in lines[1]
    assert "threshold 0.5" in lines[2]


def test_a_bare_encoder_is_not_a_task_dir(tiny_dir):
    assert not registry.is_task_dir(tiny_dir)
    with pytest.raises(BertkitError, match="not a fine-tuned model"):
        registry.from_dir(tiny_dir)


@pytest.mark.parametrize("name", ["bert-clf", "distil-multi"])
def test_pipeline_scores_are_transformers_probabilities(dirs, hf, name):
    d = dirs[name]
    got = bertkit.pipeline("text-classification", model=d, precision="fp32")(TEXTS)
    ref = hf.AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    enc = bertkit.Tokenizer.from_pretrained(d)(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = ref(**enc).logits
    probs = logits.sigmoid() if name == "distil-multi" else logits.softmax(-1)
    labels = ref.config.id2label
    for row, p in zip(got, probs.tolist(), strict=True):
        for i, want in enumerate(p):
            assert row["scores"][labels[i]] == pytest.approx(want, abs=1e-5)


def test_predict_ner_gives_one_tag_per_word_from_a_bpe_tagger(dirs, hf, tmp_path):
    d = dirs["roberta-ner"]
    lines = ["Peter Smith visited Paris", "the plot was dull", "a good film in May ."]
    src, dest = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n")
    assert main(["predict", "--model", str(d), "--input", str(src), "--output", str(dest)]) == 0
    rows = [json.loads(x) for x in dest.read_text().splitlines()]
    assert [len(r["tags"]) for r in rows] == [len(x.split()) for x in lines]
    # the tags are transformers' argmax at each word's first piece, made valid IOB2
    tok = hf.AutoTokenizer.from_pretrained(str(d), add_prefix_space=True)
    ref = hf.AutoModelForTokenClassification.from_pretrained(str(d)).eval()
    for line, row in zip(lines, rows, strict=True):
        enc = tok(line.split(), is_split_into_words=True, return_tensors="pt")
        with torch.inference_mode():
            best = ref(**enc).logits[0].argmax(-1).tolist()
        firsts, seen = [], set()
        for t, w in enumerate(enc.word_ids()):
            if w is not None and w not in seen:
                seen.add(w)
                firsts.append(TAGS[best[t]])
        assert [tag.split("-")[-1] for tag in row["tags"]] == [tag.split("-")[-1] for tag in firsts]


def test_evaluate_a_transformers_classifier(dirs, tmp_path):
    data = tmp_path / "dev.tsv"
    data.write_text(
        "text\tlabel\n" + "".join(f"{t}\t{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(TEXTS))
    )
    out = tmp_path / "ev"
    assert (
        main(["evaluate", "--model", str(dirs["bert-clf"]), "--data", str(data), "--output", str(out)]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    gold = ["pos" if i % 2 else "neg" for i in range(len(TEXTS))]
    pred = [p["label"] for p in bertkit.pipeline("text-classification", model=dirs["bert-clf"])(TEXTS)]
    assert metrics["accuracy"] == pytest.approx(sum(map(str.__eq__, gold, pred)) / len(gold))


def test_qa_pipeline_answers_from_the_context(dirs):
    qa = bertkit.pipeline("question-answering", model=dirs["distil-qa"], precision="fp32")
    context = "Peter Smith visited Paris in May"
    answer = qa(question="who visited Paris", context=context)
    assert context[answer["start"] : answer["end"]] == answer["answer"]


def test_serve_answers_for_a_transformers_tagger(dirs):
    pytest.importorskip("fastapi", reason="fastapi (serve extra) is not installed")
    from fastapi.testclient import TestClient

    from bertkit.serve.app import create_app

    d = dirs["roberta-ner"]
    texts = ["Peter Smith visited Paris", "the plot was dull"]
    with TestClient(create_app(d)) as c:
        r = c.post("/v1/ner", json={"texts": texts})
        assert r.status_code == 200, r.text
        want = bertkit.pipeline("ner", model=d)(texts)
        got = r.json()["entities"]
        assert [[(e["label"], e["start"], e["end"]) for e in s] for s in got] == [
            [(e["label"], e["start"], e["end"]) for e in s] for s in want
        ]


def test_export_a_transformers_classifier(dirs, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (dev extra) is not installed")
    from bertkit.inference.export import export_onnx

    d = tmp_path / "clf"
    shutil.copytree(dirs["bert-clf"], d)
    export_onnx(d, d / "model.onnx")
    enc = bertkit.Tokenizer.from_pretrained(d)(TEXTS, padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(d / "model.onnx"))
    names = [i.name for i in sess.get_inputs()]
    (logits,) = sess.run(["logits"], {k: enc[k] for k in names})
    ours = bertkit.pipeline("text-classification", model=d, precision="fp32")(TEXTS)
    assert [o["label"] for o in ours] == [["neg", "pos"][i] for i in logits.argmax(-1)]


def test_distill_from_a_transformers_teacher(dirs, tmp_path):
    data = tmp_path / "train.tsv"
    rows = [(t, "pos" if "good" in t or "great" in t else "neg") for t in TEXTS * 6]
    data.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    out = tmp_path / "student"
    argv = ["distill", "--task", "classify", "--teacher", str(dirs["bert-clf"]), "--train", str(data),
            "--dev", str(data), "--output", str(out), "--student-layers", "1", "--epochs", "1",
            "--batch-size", "8", "--quiet", "--precision", "fp32"]  # fmt: skip
    assert main(argv) == 0
    assert registry.from_dir(out).labels == ["neg", "pos"]
    assert bertkit.BertConfig.from_pretrained(out).num_hidden_layers == 1


@pytest.mark.parametrize("name,field,value,words", [
    ("bert-clf", "vocab_size", 50, "vocab_size is 50"),
    ("roberta-ner", "pad_token_id", 0, "pad_token_id is 0"),
])  # fmt: skip
def test_a_tokenizer_that_does_not_fit_the_model_is_one_line(
    dirs, tmp_path, capsys, name, field, value, words
):
    d = tmp_path / name
    shutil.copytree(dirs[name], d)
    config = json.loads((d / "config.json").read_text())
    config[field] = value
    (d / "config.json").write_text(json.dumps(config))
    src = tmp_path / "in.txt"
    src.write_text("a good film\n")
    assert (
        main(["predict", "--model", str(d), "--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 2
    )
    errors = [x for x in capsys.readouterr().err.splitlines() if "error" in x]  # (after the one-line note)
    assert (
        len(errors) == 1
        and words in errors[0]
        and "tokenizer.json" in errors[0]
        and "config.json" in errors[0]
    )
    assert not (tmp_path / "o.jsonl").exists()

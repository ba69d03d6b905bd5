"""Distillation: which teacher layers the student copies, the loss against hand computations, the
teacher's logits cached once, unlabeled texts, a student that learns its teacher, and output
directories that transformers loads with the same logits."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bertkit
from bertkit.cli import main
from bertkit.data.batching import IGNORE
from bertkit.models.config import BertConfig
from bertkit.models.heads import BertForSequenceClassification
from bertkit.tasks import registry
from bertkit.tasks.classify import ClassifyTask
from bertkit.tasks.ner import NerTagger, NerTask, words_of
from bertkit.tokenization.tokenizer import Tokenizer
from bertkit.training import distill as D
from bertkit.training import distill_losses as L
from bertkit.training import distill_student as S
from bertkit.training import distill_teacher as TL

TAGS = ["O", "B-PER", "I-PER", "B-LOC"]
POS, NEG = ["good", "great", "wonderful", "brilliant"], ["bad", "awful", "dull", "boring"]
FILLER = ["the", "film", "was", "a", "story", "with", "some", "very", "and", "plot", "today"]


def make_teacher(
    dest: Path, tiny_dir: Path, info: dict, labels: list[str], layers: int = 4, dropout: float = 0.1
) -> Path:
    """A fine-tuned-looking directory: the tiny BERT's vocabulary, `layers` random layers, a head."""
    config = BertConfig.from_pretrained(tiny_dir)
    config.num_hidden_layers = layers
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    config.set_labels(labels)
    config.extra["bertkit"] = info
    torch.manual_seed(3)
    if info["task"] == "ner":
        NerTagger(config, info.get("head", "softmax")).save_pretrained(dest)
    else:
        BertForSequenceClassification(config).save_pretrained(dest)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, dest / name)
    return dest


def _sentiment(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(POS if label == "pos" else NEG), *rng.sample(FILLER, 5)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def _tsv(path: Path, rows) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


def _conll(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        lines += [f"{w} O" for w in rng.sample(FILLER, 3)] + [
            "peter B-PER",
            "smith I-PER",
            "in O",
            "paris B-LOC",
            "",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


FAST = ["--batch-size", "8", "--quiet", "--precision", "fp32"]
TRAIN = 120  # toy training texts: 15 batches of 8 an epoch


# --------------------------------------------------------------------------- the student


def test_evenly_spaced_layers_end_on_the_teachers_top_layer():
    assert L.evenly_spaced(6, 3) == [1, 3, 5]
    assert L.evenly_spaced(12, 6) == [1, 3, 5, 7, 9, 11]
    assert L.evenly_spaced(4, 2) == [1, 3]
    assert L.evenly_spaced(4, 4) == [0, 1, 2, 3]
    assert L.evenly_spaced(2, 1) == [1]
    assert L.evenly_spaced(6, 4) == [0, 2, 3, 5]


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_student_copies_the_chosen_teacher_layers_and_all_else(tiny_dir, tmp_path, head):
    info = {"task": "ner", "head": head} if head == "crf" else {"task": "classify"}
    labels = TAGS if head == "crf" else ["neg", "pos"]
    t_dir = make_teacher(tmp_path / "t", tiny_dir, info, labels, layers=4)
    task = registry.from_dir(t_dir)
    tok = Tokenizer.from_pretrained(t_dir)
    plan = S.plan_student(S.DistillArgs(student_layers=2), t_dir, tok)
    assert plan.picked == [1, 3]
    student, config = S.build_student(plan, task, t_dir, None)
    teacher = task.load_model(t_dir)
    assert config.num_hidden_layers == 2 and L.encoder_of(student).config is config
    s, t = student.state_dict(), teacher.state_dict()
    prefix = "model.bert.layers." if head == "crf" else "bert.layers."
    for j, i in enumerate([1, 3]):
        inner = [k[len(f"{prefix}{i}.") :] for k in t if k.startswith(f"{prefix}{i}.")]
        assert inner
        for name in inner:
            assert torch.equal(s[f"{prefix}{j}.{name}"], t[f"{prefix}{i}.{name}"]), name
    for k, v in s.items():
        if ".layers." not in k:
            assert torch.equal(v, t[k]), k  # embeddings, pooler, classifier, CRF: the teacher's
    assert not any(k.startswith((f"{prefix}2.", f"{prefix}3.")) for k in s)


def test_student_copying_every_layer_has_no_layer_loss(tiny_dir, tmp_path):
    """The mapping pairs each student layer with the teacher layer it was copied from: a full copy
    (in eval mode) matches every hidden state and attention probability exactly."""
    t_dir = make_teacher(tmp_path / "t", tiny_dir, {"task": "classify"}, ["neg", "pos"], layers=4)
    task = registry.from_dir(t_dir)
    tok = Tokenizer.from_pretrained(t_dir)
    settings = S.DistillArgs(student_layers=4, layer_loss="both")
    plan = S.plan_student(settings, t_dir, tok)
    student, _ = S.build_student(plan, task, t_dir, None)
    model = S.wrap_student(student, plan, task, settings, None).eval()
    hidden, attention = L.layer_pairs(4, 4, "both")
    teacher = task.load_model(t_dir)
    loss = L.LayerLoss(task, teacher, hidden, attention, 2)
    batch = _batch(tok, ["a good film", "the plot was dull and very long"])
    with torch.no_grad():
        out, h, qkv = model(batch)
        assert len(h) == 5 and len(qkv) == 4
        assert float(loss(h, qkv, batch)) == pytest.approx(0.0, abs=1e-10)
    # a 2-layer copy is compared with teacher layers 2 and 4 (indices 1, 3): not zero, but those
    # pairs alone, checked against the teacher's own hidden states
    assert L.layer_pairs(2, 4, "hidden")[0] == [(0, 0), (1, 2), (2, 4)]
    assert L.layer_pairs(2, 4, "attention")[1] == [(0, 1), (1, 3)]


def _batch(tok, texts, labels=None):
    enc = tok(texts, padding=True, return_tensors="pt")
    batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    if labels is not None:
        batch["labels"] = torch.tensor(labels)
    return batch


# --------------------------------------------------------------------------- the loss


def test_kl_term_is_t_squared_kl_div():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g) * 3
    for T in (1.0, 2.0, 4.0):
        by_hand = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="sum")
        assert float(L.kl_term(s, t, T)) == pytest.approx(T * T * float(by_hand), rel=1e-5)
        p, q = F.softmax(t / T, -1), F.softmax(s / T, -1)  # KL(p || q) from its definition
        assert float(L.kl_term(s, t, T)) == pytest.approx(T * T * float((p * (p / q).log()).sum()), rel=1e-4)
    assert float(L.kl_term(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    task = ClassifyTask(["a", "b", "c"])
    batch = {"input_ids": torch.zeros(5, 4, dtype=torch.long), "loss_norm": 10.0}
    assert float(L.soft_loss(task, s, t, batch, 2.0)) == pytest.approx(float(L.kl_term(s, t, 2.0)) / 10)


def test_multilabel_soft_targets_are_bce_against_the_teachers_sigmoid():
    from bertkit.tasks.multilabel import MultiLabelTask

    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    T = 2.0
    p = torch.sigmoid(t / T)
    q = torch.sigmoid(s / T)
    by_hand = -(p * q.log() + (1 - p) * (1 - q).log()).mean(-1).sum() * T * T
    task = MultiLabelTask(["x", "y", "z"])
    batch = {"input_ids": torch.zeros(4, 2, dtype=torch.long), "loss_norm": 4.0}
    assert float(L.soft_loss(task, s, t, batch, T)) == pytest.approx(float(by_hand) / 4, rel=1e-5)


def test_ner_soft_loss_only_at_first_sub_tokens():
    task = NerTask(TAGS)
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    labels = torch.tensor([[IGNORE, 1, IGNORE, 2, IGNORE], [IGNORE, 0, 3, IGNORE, IGNORE]])
    batch = {"input_ids": torch.zeros(2, 5, dtype=torch.long), "labels": labels, "loss_norm": 3.0}
    got = float(L.soft_loss(task, s, t, batch, 2.0))
    where = labels != IGNORE
    assert got == pytest.approx(float(L.kl_term(s[where], t[where], 2.0)) / 3.0)
    s2, t2 = s.clone(), t.clone()
    s2[~where], t2[~where] = 100.0, -100.0  # sub-tokens, special tokens, padding: not compared
    assert float(L.soft_loss(task, s2, t2, batch, 2.0)) == pytest.approx(got)
    s2[0, 1, 0] += 1.0
    assert float(L.soft_loss(task, s2, t2, batch, 2.0)) != pytest.approx(got)


@pytest.mark.parametrize("kind", ["classify", "softmax", "crf"])
def test_alpha_one_is_the_fine_tuning_loss(tiny_dir, tmp_path, kind):
    if kind == "classify":
        t_dir = make_teacher(tmp_path / "t", tiny_dir, {"task": "classify"}, ["neg", "pos"])
    else:
        t_dir = make_teacher(tmp_path / "t", tiny_dir, {"task": "ner", "head": kind}, TAGS)
    task = registry.from_dir(t_dir)
    tok = Tokenizer.from_pretrained(t_dir)
    plan = S.plan_student(S.DistillArgs(), t_dir, tok)
    student, _ = S.build_student(plan, task, t_dir, None)
    model = S.wrap_student(student, plan, task, S.DistillArgs(), None).eval()  # no dropout
    from bertkit.data.batching import pad_batch
    from bertkit.data.examples import TokenExample

    if kind == "classify":
        batch = _batch(tok, ["a good film", "dull"], [1, 0])
    else:
        ex = [TokenExample(["peter", "smith", "in", "paris"], ["B-PER", "I-PER", "O", "B-LOC"], "", [], 1)]
        feats = task.features(tok, ex * 2)
        batch = pad_batch(feats, tok.pad_token_id, ["labels"])
    batch["loss_norm"] = 2.0
    with torch.no_grad():
        batch["teacher_logits"] = task.outputs(task.load_model(t_dir), batch) * 3  # far from the student
        plain = task.loss(student, batch)
        assert float(L.DistillLoss(task, 1.0, 2.0)(model, batch)) == pytest.approx(float(plain), rel=1e-6)
        mixed = float(L.DistillLoss(task, 0.5, 2.0)(model, batch))
        outputs = task.outputs(student, batch)
        soft = L.soft_loss(task, outputs, batch["teacher_logits"], batch, 2.0)
        assert mixed == pytest.approx(0.5 * float(plain) + 0.5 * float(soft), rel=1e-5)
        assert float(soft) > 0


def test_rows_only_the_teacher_labelled_carry_no_hard_loss(tiny_dir, tmp_path):
    t_dir = make_teacher(tmp_path / "t", tiny_dir, {"task": "classify"}, ["neg", "pos"])
    task = registry.from_dir(t_dir)
    tok = Tokenizer.from_pretrained(t_dir)
    model = task.load_model(t_dir).eval()
    batch = _batch(tok, ["a good film", "dull", "the plot"], [1, 0, 0])
    batch |= {"loss_norm": 3.0, "labelled": torch.tensor([True, False, True])}
    with torch.no_grad():
        out = task.outputs(model, batch)
        hard = float(L.hard_loss(task, model, out, batch))
        batch["labels"] = torch.tensor([1, 1, 0])  # the unlabeled row's (blank) label: no matter
        assert float(L.hard_loss(task, model, out, batch)) == pytest.approx(hard)
        ce = F.cross_entropy(out[[0, 2]], torch.tensor([1, 0]), reduction="sum") / 3.0
        assert hard == pytest.approx(float(ce), rel=1e-6)
        batch["labelled"] = torch.tensor([False, False, False])
        assert float(L.hard_loss(task, model, out, batch)) == 0.0
    # unlabeled features get the task's blank labels (NER: O at each word's first sub-token)
    ner = NerTask(TAGS)
    feats = D.unlabeled_features(ner, tok, [words_of("Peter visited Paris")])
    assert feats[0]["labels"] == [0 if w >= 0 else IGNORE for w in feats[0]["words"]]
    assert D.unlabeled_features(task, tok, task.examples_of(["a good film"]))[0]["labels"] == 0


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def sentiment(tiny_dir, tmp_path_factory):
    """A 4-layer teacher fine-tuned on a toy task (a keyword decides) and the data."""
    d = tmp_path_factory.mktemp("distill")
    base = d / "base"
    config = BertConfig.from_pretrained(tiny_dir)
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    bertkit.BertModel(config).save_pretrained(base)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, base / name)
    train, dev = _tsv(d / "train.tsv", _sentiment(TRAIN, 1)), _tsv(d / "dev.tsv", _sentiment(24, 2))
    test = _tsv(d / "test.tsv", _sentiment(48, 3))
    teacher = d / "teacher"
    argv = ["finetune", "--task", "classify", "--model", str(base), "--train", str(train), "--dev", str(dev),
            "--output", str(teacher), "--epochs", "3", "--lr", "1e-3", *FAST]  # fmt: skip
    assert main(argv) == 0
    return {"teacher": teacher, "train": train, "dev": dev, "test": test, "dir": d}


def _distill(s: dict, out: Path, *more: str) -> int:
    argv = ["distill", "--task", "classify", "--teacher", str(s["teacher"]), "--train", str(s["train"]),
            "--dev", str(s["dev"]), "--test", str(s["test"]), "--output", str(out), *FAST, *more]  # fmt: skip
    return main(argv)


@pytest.fixture(scope="module")
def student(sentiment):
    out = sentiment["dir"] / "student"
    assert _distill(sentiment, out, "--student-layers", "2", "--epochs", "3", "--lr", "1e-3") == 0
    return out


def _texts(path: Path) -> list[str]:
    return [line.split("\t")[0] for line in path.read_text().splitlines()[1:]]


def test_student_learns_the_teacher_and_loads_in_transformers(sentiment, student, hf):
    out = student
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher"]["test"]["accuracy"] >= 0.9, metrics["teacher"]  # a (near) perfect teacher
    d = metrics["distill"]
    assert d["student_layers"] == 2 and d["layers_copied"] == [1, 3] and d["teacher_layers"] == 4
    assert d["temperature"] == 2.0 and d["alpha"] == 0.5 and d["layer_loss"] == "none"
    assert d["student_size"]["parameters"] < d["teacher_size"]["parameters"]
    assert d["student_size"]["bytes"] == 4 * d["student_size"]["parameters"]
    for name in ("report/test/report.md", "tokenizer.json", "train_args.json"):
        assert (out / name).is_file(), name
    assert not (out / S.PROJECTION).exists() and not list(out.parent.glob(".student.*"))
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["bertkit"]["task"] == "classify"
    # the student answers as its teacher does, far better than chance (one class in two)
    texts = _texts(sentiment["test"])
    mine = bertkit.pipeline("text-classification", model=out, precision="fp32")(texts)
    theirs = bertkit.pipeline("text-classification", model=sentiment["teacher"], precision="fp32")(texts)
    agree = sum(a["label"] == b["label"] for a, b in zip(mine, theirs, strict=True)) / len(texts)
    assert agree >= 0.85, agree
    assert metrics["test"]["accuracy"] >= 0.8, metrics["test"]
    ref = hf.BertForSequenceClassification.from_pretrained(out).eval()
    ours = bertkit.BertForSequenceClassification.from_pretrained(out)
    enc = Tokenizer.from_pretrained(out)(texts[:4], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(ours(**enc).logits, ref(**enc).logits, atol=1e-5)


def test_every_predicting_path_takes_the_student(sentiment, student, tmp_path):
    from bertkit.engine.int8 import available
    from bertkit.inference.export import export_onnx

    texts = _texts(sentiment["test"])[:12]
    want = [
        p["label"] for p in bertkit.pipeline("text-classification", model=student, precision="fp32")(texts)
    ]
    src, dest = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(student), "--input", str(src), "--output", str(dest)]) == 0
    assert [json.loads(x)["label"] for x in dest.read_text().splitlines()] == want
    onnx_dir = tmp_path / "onnx"
    shutil.copytree(student, onnx_dir)
    export_onnx(onnx_dir, onnx_dir / "model.onnx")
    assert [
        p["label"] for p in bertkit.pipeline("text-classification", model=onnx_dir, backend="onnx")(texts)
    ] == want
    if available():
        int8 = bertkit.pipeline("text-classification", model=student, int8=True)(texts)
        assert sum(p["label"] == w for p, w in zip(int8, want, strict=True)) >= len(want) - 1


def test_cache_is_written_once_and_a_resumed_run_reuses_it(sentiment, tmp_path, monkeypatch):
    calls = {"write": 0, "loss": 0}
    real_write, real_loss = TL.write_teacher_logits, L.DistillLoss.__call__

    def write(*a, **kw):
        calls["write"] += 1
        return real_write(*a, **kw)

    def dying(self, model, batch):
        calls["loss"] += 1
        if calls["loss"] == 18:  # in the second epoch (15 batches an epoch)
            raise KeyboardInterrupt
        return real_loss(self, model, batch)

    monkeypatch.setattr(TL, "write_teacher_logits", write)
    monkeypatch.setattr(L.DistillLoss, "__call__", dying)
    out = tmp_path / "out"
    assert _distill(sentiment, out, "--epochs", "2", "--save-every", "5", "--lr", "1e-3") == 130
    assert calls["write"] == 1  # once for every epoch
    cache = tmp_path / "out-checkpoints"
    assert (cache / TL.CACHE).is_file() and (cache / "step-00000015").is_dir()
    assert _distill(sentiment, out, "--epochs", "2", "--save-every", "5", "--lr", "1e-3", "--resume") == 0
    assert calls["write"] == 1  # the resumed run read the cache
    assert (out / "model.safetensors").is_file() and not cache.exists()
    # the resumed run ends where an uninterrupted one does
    monkeypatch.setattr(L.DistillLoss, "__call__", real_loss)
    whole = tmp_path / "whole"
    assert _distill(sentiment, whole, "--epochs", "2", "--lr", "1e-3") == 0
    assert calls["write"] == 2
    a, b = (bertkit.BertForSequenceClassification.from_pretrained(p).state_dict() for p in (out, whole))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_unlabeled_texts_join_the_training(sentiment, tmp_path):
    unlabeled = tmp_path / "more.txt"
    unlabeled.write_text("\n".join(t for t, _ in _sentiment(30, 9)) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--unlabeled", str(unlabeled), "--student", "tiny", "--layer-loss", "both", "--epochs", "1"]
    assert _distill(sentiment, out, *argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distill"]["unlabeled_examples"] == 30 and metrics["train"]["examples"] == TRAIN
    assert metrics["distill"]["student"] == "tiny" and metrics["distill"]["layers_copied"] is None
    # the task's own format, its labels unused
    table = _tsv(tmp_path / "more.tsv", _sentiment(20, 8))
    argv = ["--unlabeled", str(table), "--unlabeled-format", "tsv", "--max-steps", "2"]
    assert _distill(sentiment, tmp_path / "again", *argv) == 0
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert metrics["distill"]["unlabeled_examples"] == 20


def test_a_wider_student_learns_a_projection_that_is_not_saved(sentiment, tmp_path, hf):
    out = tmp_path / "out"
    assert _distill(sentiment, out, "--student", "mini", "--layer-loss", "hidden", "--max-steps", "3") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 256 and config["num_hidden_layers"] == 4
    assert not (out / S.PROJECTION).exists()
    hf.BertForSequenceClassification.from_pretrained(out)


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_ner_student_loads_in_transformers(tiny_dir, tmp_path, hf, head):
    t_dir = make_teacher(tmp_path / "t", tiny_dir, {"task": "ner", "head": head}, TAGS)
    train, dev = _conll(tmp_path / "train.txt", 24, 1), _conll(tmp_path / "dev.txt", 8, 2)
    unlabeled = tmp_path / "news.txt"
    unlabeled.write_text("Peter Smith visited Paris.\nThe film was good in Paris\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["distill", "--task", "ner", "--teacher", str(t_dir), "--train", str(train), "--dev", str(dev),
            "--unlabeled", str(unlabeled), "--output", str(out), "--epochs", "1", *FAST]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "f1" in metrics["teacher"]["dev"] and metrics["distill"]["student_layers"] == 2
    assert metrics["distill"]["unlabeled_examples"] == 2
    assert (out / "ner_head.safetensors").is_file() == (head == "crf")
    ref = hf.BertForTokenClassification.from_pretrained(out).eval()
    tagger = bertkit.pipeline("ner", model=out, precision="fp32")
    batch = _batch(Tokenizer.from_pretrained(out), ["Peter Smith visited Paris"])
    with torch.inference_mode():
        assert (tagger.model.emissions(batch) - ref(**batch).logits).abs().max() <= 1e-5


# --------------------------------------------------------------------------- bad input


def _other_vocab_dir(tmp_path: Path) -> Path:
    d = tmp_path / "other"
    tok = Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"])
    tok.save_pretrained(d)
    bertkit.BertModel(BertConfig.preset("tiny", vocab_size=tok.vocab_size)).save_pretrained(d)
    return d


@pytest.mark.parametrize(
    "more, message",
    [
        (["--task", "ner"], "--task ner, but the teacher was fine-tuned for classify"),
        (["--student-layers", "5"], "--student-layers 5: the teacher has 4 layers"),
        (["--student", "OTHER"], "another vocabulary"),
        (["--student", "huge"], "neither a model directory nor a preset"),
        (["--alpha", "1.5"], "--alpha must be between 0 and 1"),
        (["--student", "mini", "--layer-loss", "attention"], "attention heads"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tiny_dir, tmp_path, capsys, more, message):
    t_dir = make_teacher(tmp_path / "t", tiny_dir, {"task": "classify"}, ["neg", "pos"], layers=4)
    data = _tsv(tmp_path / "train.tsv", _sentiment(8, 1))
    more = [str(_other_vocab_dir(tmp_path)) if m == "OTHER" else m for m in more]
    task = ["--task", "classify"] if "--task" not in more else []
    out = tmp_path / "out"
    argv = ["distill", *task, "--teacher", str(t_dir), "--train", str(data), "--dev", str(data),
            "--output", str(out), *FAST, *more]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and message in err and "Traceback" not in err, err
    assert (
        not out.exists() and not list(tmp_path.glob(".out*")) and not (tmp_path / "out-checkpoints").exists()
    )


def test_two_processes_equal_one(tiny_dir, tmp_path):
    """torchrun with 2 processes (gloo) takes the one-process steps: gold and unlabeled rows mixed,
    soft targets from the cache, hidden-state and attention losses (dropout off, fp32)."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    t_dir = make_teacher(tmp_path / "t", tiny_dir, {"task": "classify"}, ["neg", "pos"], dropout=0.0)
    train, dev = _tsv(tmp_path / "train.tsv", _sentiment(45, 1)), _tsv(tmp_path / "dev.tsv", _sentiment(8, 2))
    unlabeled = tmp_path / "more.txt"
    unlabeled.write_text("\n".join(t for t, _ in _sentiment(14, 9)) + "\n", encoding="utf-8")

    def args(out: Path) -> list[str]:
        return ["distill", "--task", "classify", "--teacher", str(t_dir), "--train", str(train), "--dev",
                str(dev), "--unlabeled", str(unlabeled), "--output", str(out), "--layer-loss", "both",
                "--device", "cpu", "--precision", "fp32", "--batch-size", "8", "--epochs", "1",
                "--lr", "2e-3", "--quiet"]  # fmt: skip

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "bertkit", *args(tmp_path / "one")]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "bertkit", *args(tmp_path / "two")]  # fmt: skip
    for cmd in (one, two):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
    wa, wb = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "two"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-5
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    # 45 + 14 features, 8 a batch: the last batch's 3 split 2 + 1, so each rank's divisor matters
    assert ma["train"]["steps"] == mb["train"]["steps"] == 8
    assert ma["teacher"] == mb["teacher"] and mb["distill"]["unlabeled_examples"] == 14
    assert not list(tmp_path.glob(".two.*")), "rank 1 must not stage an output, the cache is gone"

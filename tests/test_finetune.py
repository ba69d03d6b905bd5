"""Fine-tuning: the loop, label alignment, QA spans, the CLI end to end, clean failure."""

from __future__ import annotations

import json
import re
import string

import pytest
import torch

import bertkit
from bertkit import BertConfig, Tokenizer
from bertkit.cli import main
from bertkit.data.batching import IGNORE, length_grouped_order, pad_batch, sorted_order
from bertkit.data.examples import QAExample, TokenExample
from bertkit.runtime import Runtime
from bertkit.tasks.ner import NerTask
from bertkit.tasks.qa import QATask
from bertkit.training.loop import Evaluation, TrainArgs, fit

FP32 = Runtime(torch.device("cpu"), "fp32")


@pytest.fixture(scope="module")
def tok(tiny_dir):
    """The tiny BERT's tokenizer (conftest's own uncased WordPiece vocabulary)."""
    return Tokenizer.from_pretrained(tiny_dir)


def _toy_batches(n=64, T=12, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, T), generator=g)
    labels = (ids[:, 1] > vocab // 2).long()  # learnable rule: the first word decides
    return ids, labels


def _toy_model():
    torch.manual_seed(0)
    config = BertConfig.preset(
        "tiny", vocab_size=50, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    return bertkit.BertForSequenceClassification(config)


def _loss(model, batch):
    return torch.nn.functional.cross_entropy(model(batch["input_ids"]).logits, batch["labels"])


def test_grad_accumulation_equals_big_batch():
    ids, labels = _toy_batches()
    args = dict(max_steps=3, lr=1e-3, warmup=0, progress=False, tensorboard=False, max_grad_norm=None)
    big, small = _toy_model(), _toy_model()

    def batches(bs):
        return lambda epoch: (
            {"input_ids": ids[i : i + bs], "labels": labels[i : i + bs]} for i in range(0, 64, bs)
        )

    fit(big, batches(32), 2, _loss, TrainArgs(batch_size=32, **args), FP32)
    fit(small, batches(16), 4, _loss, TrainArgs(batch_size=16, grad_accum=2, **args), FP32)
    for (name, a), b in zip(big.state_dict().items(), small.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize(
    ("epochs", "min_steps", "max_steps", "want"),
    [(1, None, None, 2), (1, 5, None, 5), (3, 5, None, 6), (1, 5, 3, 3), (0.5, 0, None, 1)],
)
def test_min_steps_adds_epochs_and_max_steps_wins(epochs, min_steps, max_steps, want):
    ids, labels = _toy_batches()
    passes = []

    def batches(epoch):
        passes.append(epoch)
        return ({"input_ids": ids[i : i + 32], "labels": labels[i : i + 32]} for i in range(0, 64, 32))

    steps = {"epochs": epochs, "min_steps": min_steps, "max_steps": max_steps}
    args = TrainArgs(**steps, progress=False, tensorboard=False)
    result = fit(_toy_model(), batches, 2, _loss, args, FP32)
    assert result.steps == want and passes == list(range(-(-want // 2)))


def test_fit_learns_keeps_best_and_is_reproducible():
    ids, labels = _toy_batches(n=256)

    def batches(epoch):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(256, generator=g)
        for i in range(0, 256, 32):
            j = order[i : i + 32]
            yield {"input_ids": ids[j], "labels": labels[j]}

    def evaluate(model):
        return {"accuracy": (model(ids).logits.argmax(-1) == labels).float().mean().item()}

    args = TrainArgs(epochs=6, lr=2e-3, progress=False, tensorboard=False, seed=7)
    runs = []
    for _ in range(2):
        model = _toy_model()
        result = fit(model, batches, 8, _loss, args, FP32, Evaluation(evaluate, "accuracy"))
        evals = [h["dev_accuracy"] for h in result.history if "dev_accuracy" in h]
        assert result.best_metrics["accuracy"] == max(evals)
        with torch.no_grad():
            assert evaluate(model)["accuracy"] == pytest.approx(max(evals))  # best weights restored
        runs.append(evals)
    assert max(runs[0]) > 0.9
    assert runs[0] == runs[1]  # same seed, same run


def test_batching_orders():
    lengths = [5, 40, 7, 33, 12, 3, 25, 18] * 20
    batches = length_grouped_order(lengths, 8, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches != length_grouped_order(lengths, 8, seed=2)
    plain = length_grouped_order(lengths, 8, seed=1, group=False)
    assert sorted(i for b in plain for i in b) == list(range(len(lengths)))

    def padding(bs):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in bs)

    assert padding(batches) < padding(plain) / 2  # grouping is what saves the padding
    inf = list(sorted_order(lengths, max_tokens=200))
    assert sorted(i for b in inf for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 200 or len(b) == 1 for b in inf)
    batch = pad_batch(
        [
            {"input_ids": [1, 2, 3], "token_type_ids": [0, 0, 0], "labels": [4, -100, 5]},
            {"input_ids": [1], "token_type_ids": [0], "labels": [6]},
        ],
        0,
        ["labels"],
    )
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[4, IGNORE, 5], [6, IGNORE, IGNORE]]


def test_ner_labels_first_subtoken_and_windows_cover_every_word(tok, shared_data):
    from bertkit.data import read_conll

    examples = read_conll(shared_data / "en/conll2003/valid.txt")[:300]
    labels = sorted({t for e in examples for t in e.tags})
    for max_length in (128, 16):  # 16 forces many sentences into overlapping windows
        task = NerTask(labels, max_length=max_length, stride=4)
        feats = task.features(tok, examples)
        seen: dict[tuple[int, int], set] = {}
        for f in feats:
            assert len(f["input_ids"]) <= max_length
            e = examples[f["example"]]
            for t, w in enumerate(f["words"]):
                if w >= 0:
                    # the token is the word's first wordpiece, labelled with the word's tag
                    assert tok.convert_ids_to_tokens(f["input_ids"][t]) == tok.tokenize(e.tokens[w])[0]
                    assert f["labels"][t] == labels.index(e.tags[w])
                    seen.setdefault((f["example"], w), set()).add(t)
                else:
                    assert f["labels"][t] == IGNORE
        missing = [
            (i, w)
            for i, e in enumerate(examples)
            for w, tkn in enumerate(e.tokens)
            if tok.tokenize(tkn) and (i, w) not in seen
        ]
        assert not missing
        # The windows of a sentence, in order: one if its wordpieces fit between [CLS] and [SEP],
        # else as many as it takes, each starting `stride` pieces before the previous one ended.
        room, stride = max_length - 2, task.stride
        windows: dict[int, list[list[int]]] = {}
        for f in feats:
            windows.setdefault(f["example"], []).append(f["input_ids"][1:-1])
        assert sorted(windows) == list(range(len(examples)))
        for i, e in enumerate(examples):
            n = len(tok(list(e.tokens), is_split_into_words=True, add_special_tokens=False)["input_ids"])
            assert len(windows[i]) == (1 if n <= room else 1 + -(-(n - room) // (room - stride))), i
            for a, b in zip(windows[i], windows[i][1:], strict=False):
                assert a[-stride:] == b[:stride], i
        if max_length == 16:
            assert sum(len(w) > 1 for w in windows.values()) >= 50  # many sentences were cut


def test_ner_softmax_decoding_argmax_and_constrained(tok, tiny_dir):
    """decode="argmax" is each word's most probable tag; "constrained" (the default) the most
    probable valid IOB2 sequence, by brute force over the short sentences' paths. A random head
    on a random encoder predicts invalid IOB2 often, so the two must differ somewhere."""
    import itertools

    from bertkit.tasks.ner import NerTagger, words_of

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    config = BertConfig.from_pretrained(tiny_dir)
    config.set_labels(labels)
    torch.manual_seed(3)
    tagger = NerTagger(config).eval()
    with torch.no_grad():
        tagger.model.classifier.weight.mul_(50.0)  # confident, varied per-word choices
    sentences = ["Angela Merkel met Emmanuel Macron in Paris", "Rain in Spain", "Bonn", "Ich bin ein Bonner"]
    examples = [words_of(s) for s in sentences]
    argmax_task = NerTask(labels, decode="argmax")
    task = NerTask(labels)
    assert task.decode == "constrained" and NerTask.from_info(task.info(), config).decode == "constrained"
    feats = task.features(tok, examples, with_labels=False)
    by_argmax = argmax_task.predict(tagger, feats, examples, tok.pad_token_id)
    by_viterbi = task.predict(tagger, feats, examples, tok.pad_token_id)
    changed = 0
    for e, f, a, v in zip(examples, feats, by_argmax, by_viterbi, strict=True):
        batch = {k: torch.tensor([f[k]]) for k in ("input_ids", "token_type_ids")}
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        with torch.no_grad():
            lp = tagger.emissions(batch)[0].log_softmax(-1)  # (T, C)
        lp = lp[[t for t, w in enumerate(f["words"]) if w >= 0]]  # (W, C) at each word's first token
        assert a["tags"] == [labels[k] for k in lp.argmax(-1).tolist()]
        paths = torch.tensor(list(itertools.product(range(len(labels)), repeat=len(e.tokens))))  # (P, W)
        opens = [labels[t].startswith("I-") for t in range(len(labels))]  # I-X needs B-X or I-X before
        same = [[labels[p][2:] == labels[t][2:] for t in range(len(labels))] for p in range(len(labels))]
        valid = torch.tensor(  # labels[0] is O: what comes before the first word
            [
                not any(opens[t] and not same[p][t] for p, t in zip([0, *q[:-1]], q, strict=True))
                for q in paths.tolist()
            ]
        )
        scores = lp.gather(1, paths.T).sum(0)  # (P,) summed word log-probabilities of each path
        assert v["tags"] == [labels[k] for k in paths[valid][scores[valid].argmax()].tolist()]
        changed += v["tags"] != a["tags"]
    assert changed > 0
    with pytest.raises(bertkit.BertkitError, match="NER decoding"):
        NerTask(labels, decode="beam")


def _squad_from_text(sentences: list[str]) -> list[QAExample]:
    """SQuAD-format examples built from real text: the answer is a known word span of the context."""
    out = []
    for i, context in enumerate(sentences):
        words = context.split()
        if len(words) < 6:
            continue
        answer = " ".join(words[2:4])
        start = context.index(answer)
        out.append(
            QAExample(
                str(i),
                f"Which words follow {words[0]} {words[1]}?",
                context,
                [{"text": answer, "answer_start": start}],
                None,
            )
        )
    return out


def test_qa_features_and_decoding_recover_gold_spans(tok, shared_data):
    from bertkit.data import read_conll

    docs = [e.text for e in read_conll(shared_data / "en/conll2003/test.txt")[:200]]
    # long contexts: several sentences together, so the answer often sits in a later window
    contexts = [" ".join(docs[i : i + 6]) for i in range(0, 180, 6)]
    examples = _squad_from_text(contexts)
    task = QATask(max_length=64, doc_stride=24)
    feats = task.features(tok, examples)
    assert len(feats) > len(examples)  # windows were needed
    for f in feats:
        e = examples[f["example"]]
        s, t = f["start_positions"], f["end_positions"]
        if s == 0:
            continue
        assert e.context[f["offsets"][s][0] : f["offsets"][t][1]].lower() == e.answers[0]["text"].lower()

    class Oracle(torch.nn.Module):
        """Logits peaked at the gold span of each window: decoding must give back the answer."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.lookup = {tuple(f["input_ids"]): (f["start_positions"], f["end_positions"]) for f in feats}

        def forward(self, ids, mask, types):
            start = torch.full(ids.shape, -10.0)
            end = torch.full(ids.shape, -10.0)
            for b in range(ids.shape[0]):
                s, t = self.lookup[tuple(ids[b][mask[b].bool()].tolist())]
                if s:
                    start[b, s], end[b, t] = 10.0, 10.0
            return type("O", (), {"start_logits": start, "end_logits": end})

    preds = task.predict(Oracle(), feats, examples, tok.pad_token_id)
    metrics = task.metrics(examples, preds)
    assert metrics["exact_match"] == 100.0 and metrics["f1"] == 100.0


def _write_squad(path, examples):
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": e.context,
                        "qas": [{"id": e.id, "question": e.question, "answers": e.answers}],
                    }
                    for e in examples
                ],
            }
        ],
    }
    path.write_text(json.dumps(data))


def read_tags(path) -> list[str]:
    """The tags (last column) of a CoNLL file, in order."""
    lines = open(path, encoding="utf-8").read().splitlines()
    return [line.split()[-1] for line in lines if line.strip() and not line.startswith("-DOCSTART-")]


def _slice(src, dst, lines):
    dst.write_text("".join(open(src, encoding="utf-8").readlines()[:lines]), encoding="utf-8")
    return dst


def test_cli_classify_end_to_end_and_loads_in_transformers(tiny_dir, shared_data, tmp_path, hf, capsys):
    train = _slice(shared_data / "en/glue/SST-2/train.tsv", tmp_path / "train.tsv", 301)
    dev = _slice(shared_data / "en/glue/SST-2/dev.tsv", tmp_path / "dev.tsv", 101)
    out = tmp_path / "out"
    rc = main(
        (
            f"finetune --task classify --model {tiny_dir} --train {train} --dev {dev} --test {dev} "
            f"--output {out} --epochs 1 --batch-size 16 --quiet"
        ).split()
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "mcc"} <= set(metrics["dev"]) and "test" in metrics
    for name in ("report.md", "confusion_matrix.png", "learning_curves.png", "errors.jsonl", "metrics.json"):
        assert (out / "report/dev" / name).is_file(), name
    assert not list(tmp_path.glob(".out.partial-*"))
    ours = bertkit.BertForSequenceClassification.from_pretrained(out)
    ref = hf.BertForSequenceClassification.from_pretrained(out).eval()
    assert ref.config.id2label == {0: "0", 1: "1"}
    enc = Tokenizer.from_pretrained(out)(["a fine film", "bad"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        a = ours(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits
        b = ref(**enc).logits
    assert (a - b).abs().max() <= 1e-5
    # predictions from the pipeline equal the model's argmax
    clf = bertkit.pipeline("text-classification", model=out)
    preds = clf(["a fine film", "bad"])
    assert [p["label"] for p in preds] == [ours.config.id2label[int(i)] for i in a.argmax(-1)]
    # evaluate reproduces the dev metrics from the saved directory
    assert main(["evaluate", "--model", str(out), "--data", str(dev), "--output", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(metrics["dev"]["accuracy"])


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_cli_ner_end_to_end(tiny_dir, shared_data, tmp_path, hf, head, capsys):
    train = _slice(shared_data / "en/conll2003/train.txt", tmp_path / "train.txt", 1500)
    dev = _slice(shared_data / "en/conll2003/valid.txt", tmp_path / "dev.txt", 600)
    out = tmp_path / "out"
    rc = main(
        [
            "finetune",
            "--task",
            "ner",
            "--head",
            head,
            "--model",
            str(tiny_dir),
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--output",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--quiet",
            "--unknown-label",
            "O",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"precision", "recall", "f1"} <= set(metrics["dev"])
    # transformers loads the directory; for softmax its logits are ours
    ref = hf.BertForTokenClassification.from_pretrained(out).eval()
    tagger = bertkit.pipeline("ner", model=out, precision="fp32")
    enc = Tokenizer.from_pretrained(out)(["Peter Blackburn visited Paris"], return_tensors="pt")
    batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode():
        assert (tagger.model.emissions(batch) - ref(**batch).logits).abs().max() <= 1e-5
    if head == "crf":
        assert (out / "ner_head.safetensors").is_file()
    # predict: JSON lines with entities whose offsets point into the text
    src = tmp_path / "in.txt"
    src.write_text("EU rejects German call to boycott British lamb .\nPeter Blackburn\n")
    assert (
        main(["predict", "--model", str(out), "--input", str(src), "--output", str(tmp_path / "p.jsonl")])
        == 0
    )
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == src.read_text().splitlines()
    # the barely trained tagger tags some words as entities (else the checks below check nothing)
    assert sum(len(row["entities"]) for row in rows) >= 2, rows
    types = {tag[2:] for tag in read_tags(train) if tag != "O"}  # PER LOC ORG MISC
    for row in rows:
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", row["text"])]
        assert len(row["tags"]) == len(words)
        # the tags are valid IOB2 (both heads decode under that constraint), over the training
        # types; the entities are exactly their chunks, as text slices from the first word's
        # start to the last word's end
        chunks: list[list] = []
        for w, tag in enumerate(row["tags"]):
            assert tag == "O" or (tag[:2] in ("B-", "I-") and tag[2:] in types), tag
            if tag.startswith("B-"):
                chunks.append([tag[2:], w, w])
            elif tag.startswith("I-"):
                assert chunks and chunks[-1][0] == tag[2:] and chunks[-1][2] == w - 1, row["tags"]
                chunks[-1][2] = w
        want = [(label, words[a][0], words[b][1]) for label, a, b in chunks]
        assert [(e["label"], e["start"], e["end"]) for e in row["entities"]] == want
        for ent in row["entities"]:
            assert row["text"][ent["start"] : ent["end"]] == ent["text"] and ent["label"] in types


def _squad_by_hand(preds: dict[str, str], golds: dict[str, list[str]]) -> tuple[float, float]:
    """SQuAD v1.1 exact match and F1 in percent, written out here as the official script has
    them (lower-case; drop punctuation, then the words a/an/the; best over the gold answers)."""

    def words(s: str) -> list[str]:
        s = "".join(c for c in s.lower() if c not in set(string.punctuation))
        return [w for w in s.split() if w not in ("a", "an", "the")]

    def f1(p: list[str], g: list[str]) -> float:
        same = sum(min(p.count(w), g.count(w)) for w in set(p))
        return 0.0 if same == 0 else 2 * same / (len(p) + len(g))

    em = sum(max(words(preds[q]) == words(g) for g in gs) for q, gs in golds.items())
    f = sum(max(f1(words(preds[q]), words(g)) for g in gs) for q, gs in golds.items())
    return 100.0 * em / len(golds), 100.0 * f / len(golds)


def test_cli_qa_end_to_end(tiny_dir, shared_data, tmp_path):
    from bertkit.data import read_conll

    docs = [e.text for e in read_conll(shared_data / "en/conll2003/test.txt")[:120]]
    examples = _squad_from_text([" ".join(docs[i : i + 3]) for i in range(0, 120, 3)])
    _write_squad(tmp_path / "train.json", examples)
    out = tmp_path / "out"
    rc = main(
        [
            "finetune",
            "--task",
            "qa",
            "--model",
            str(tiny_dir),
            "--train",
            str(tmp_path / "train.json"),
            "--dev",
            str(tmp_path / "train.json"),
            "--output",
            str(out),
            "--epochs",
            "6",
            "--quiet",
            "--max-length",
            "96",
            "--stride",
            "32",
            "--lr",
            "1e-3",
            "--batch-size",
            "8",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())["dev"]
    # The dev predictions, back from the report: errors.jsonl lists each wrong one (its text is
    # none of the gold answers), any other is a gold answer itself.
    errors = [json.loads(x) for x in (out / "report/dev/errors.jsonl").read_text().splitlines()]
    golds = {e.id: [a["text"] for a in e.answers] for e in examples}
    wrong = {row["id"]: row["predicted"] for row in errors}
    assert len(wrong) == len(errors) and set(wrong) <= set(golds)
    for row in errors:
        assert row["answers"] == golds[row["id"]] and row["predicted"] not in golds[row["id"]]
    preds = {qid: wrong.get(qid, answers[0]) for qid, answers in golds.items()}
    em, f1 = _squad_by_hand(preds, golds)
    assert metrics["exact_match"] == pytest.approx(em, abs=1e-9)
    assert metrics["f1"] == pytest.approx(f1, abs=1e-9)
    # the answer is the two words after the question's two: the tiny model learns most of them
    assert metrics["exact_match"] >= 50.0
    qa = bertkit.pipeline("question-answering", model=out)
    ans = qa(question=examples[0].question, context=examples[0].context)
    assert examples[0].context[ans["start"] : ans["end"]] == ans["answer"]


def test_bad_input_exits_cleanly_and_writes_nothing(tiny_dir, tmp_path, capsys):
    bad = tmp_path / "train.tsv"
    bad.write_text("sentence\tlabel\ngood film\t1\nno label here\n")
    out = tmp_path / "out"
    rc = main(
        (
            f"finetune --task classify --model {tiny_dir} --train {bad} --dev {bad} --output {out} --quiet"
        ).split()
    )
    err = capsys.readouterr().err
    assert rc == 2 and "train.tsv" in err and "line 3" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_interrupted_run_leaves_no_complete_looking_output(tiny_dir, shared_data, tmp_path, monkeypatch):
    from bertkit.tasks import classify

    train = _slice(shared_data / "en/glue/SST-2/train.tsv", tmp_path / "train.tsv", 101)
    calls = {"n": 0}
    real_loss = classify.ClassifyTask.loss

    def dying_loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_loss(self, model, batch)

    monkeypatch.setattr(classify.ClassifyTask, "loss", dying_loss)
    out = tmp_path / "out"
    rc = main(
        (
            f"finetune --task classify --model {tiny_dir} --train {train} --dev {train} "
            f"--output {out} --batch-size 8 --quiet"
        ).split()
    )
    assert rc == 130
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_tokens_example_offsets_roundtrip():
    from bertkit.tasks.ner import words_of

    e = words_of("Angela  Merkel visited 北京 today.")
    assert e.tokens == ["Angela", "Merkel", "visited", "北", "京", "today", "."]
    assert all(e.text[s:t] == w for w, (s, t) in zip(e.tokens, e.offsets, strict=True))
    assert isinstance(e, TokenExample)

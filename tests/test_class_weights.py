"""--class-weights (weighted cross-entropy for classification and NER) and --head-lr-mult (the task
layers' own AdamW groups): the weights, the losses by hand, the weights files and their errors,
the optimizer's groups through the schedule and a resume, and both flags through the CLI."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

import bertkit
from bertkit import BertConfig, Tokenizer
from bertkit.cli import main
from bertkit.data.batching import IGNORE
from bertkit.data.examples import TokenExample
from bertkit.errors import BertkitError
from bertkit.runtime import Runtime
from bertkit.tasks import weights
from bertkit.tasks.classify import ClassifyTask
from bertkit.tasks.ner import NerTagger, NerTask
from bertkit.training.loop import Checkpointing, Stepper, TrainArgs, fit

FP32 = Runtime(torch.device("cpu"), "fp32")
TAGS = ["B-LOC", "B-PER", "I-PER", "O"]


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return Tokenizer.from_pretrained(tiny_dir)


def _sklearn(labels: list[str], y: list) -> list[float]:
    return compute_class_weight("balanced", classes=np.array(labels), y=np.array(y)).tolist()


# ---- auto weights ---------------------------------------------------------------------------------


def test_auto_weights_are_sklearn_balanced_and_average_one():
    rng = random.Random(0)
    y = [rng.choice([0, 0, 0, 0, 0, 1, 1, 2, 3, 3]) for _ in range(500)]
    w = weights.balanced(weights.counts(y, 4))
    assert w == pytest.approx(_sklearn([0, 1, 2, 3], y), rel=1e-12)
    freq = np.bincount(y) / len(y)
    assert float(freq @ np.array(w)) == pytest.approx(1.0)  # an average target weighs 1
    assert w[0] < w[1] and w[2] > w[3]  # rarer classes weigh more
    # a class absent from the targets weighs 1 and the others stay normalised over those present
    w = weights.balanced([6, 0, 2])
    assert w == pytest.approx([8 / (2 * 6), 1.0, 8 / (2 * 2)])
    assert 6 / 8 * w[0] + 2 / 8 * w[2] == pytest.approx(1.0)


def test_classify_prepare_counts_the_training_features():
    labels = ["neg", "neu", "pos"]
    y = [0] * 12 + [1] * 3 + [2] * 5
    task = ClassifyTask(labels, class_weighting="auto")
    assert task.class_weights is None
    task.prepare([{"input_ids": [2, 3], "labels": i} for i in y], batch_size=4)
    assert task.class_weights == pytest.approx(_sklearn([0, 1, 2], y), rel=1e-12)
    assert task.info()["class_weights"] == task.class_weights and task.info()["class_weighting"] == "auto"
    plain = ClassifyTask(labels)
    plain.prepare([{"input_ids": [2, 3], "labels": i} for i in y], batch_size=4)
    assert plain.class_weights is None and plain.info()["class_weighting"] == "none"


def test_ner_auto_counts_tags_at_labelled_first_subtokens_only(tok):
    # words the tiny vocabulary splits into several pieces: the pieces after the first carry
    # IGNORE and must not be counted (every word has one first piece at max_length 128)
    sentences = [
        (["Zxqv", "Blackburnian", "visited", "Pqrstuvw"], ["B-PER", "I-PER", "O", "B-LOC"]),
        (["the", "film", "was", "quixotically", "good"], ["O", "O", "O", "O", "O"]),
        (["Kohl", "met", "Yeltsinovich"], ["B-PER", "O", "B-PER"]),
    ]
    examples = [TokenExample(ws, ts, " ".join(ws), [], i) for i, (ws, ts) in enumerate(sentences)]
    task = NerTask(TAGS, class_weighting="auto")
    feats = task.features(tok, examples)
    assert sum(x == IGNORE for f in feats for x in f["labels"]) > 2 * len(feats) + 3  # pieces exist
    task.prepare(feats, batch_size=2)
    words = [TAGS.index(t) for _, ts in sentences for t in ts]  # one per word
    assert task.class_weights == pytest.approx(_sklearn(list(range(4)), words), rel=1e-12)
    all_positions = [x for f in feats for x in f["labels"] if x >= 0] + [3] * 5  # a wrong count differs
    assert task.class_weights != pytest.approx(_sklearn(list(range(4)), all_positions))


# ---- the weighted losses by hand --------------------------------------------------------------------


def _config(labels: list[str]) -> BertConfig:
    config = BertConfig.preset("tiny", vocab_size=60)
    config.set_labels(labels)
    return config


def test_weighted_classification_loss_is_the_weighted_sum_over_loss_norm():
    torch.manual_seed(0)
    labels = ["a", "b", "c"]
    model = bertkit.BertForSequenceClassification(_config(labels)).eval()
    w = [0.5, 2.0, 3.5]
    task = ClassifyTask(labels, class_weights=w)
    ids = torch.randint(5, 60, (6, 9))
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": y,
        "loss_norm": 12.0,  # say the whole batch (all ranks) has 12 examples
    }
    with torch.no_grad():
        got = task.loss(model, batch)
    with torch.no_grad():
        logits = model(ids, batch["attention_mask"], batch["token_type_ids"]).logits.float()
        nll = -logits.log_softmax(-1)[torch.arange(6), y]
        by_hand = sum(w[int(c)] * float(v) for c, v in zip(y, nll, strict=True)) / 12.0
        ref = F.cross_entropy(logits, y, weight=torch.tensor(w), reduction="sum") / 12.0
    assert float(got) == pytest.approx(by_hand, rel=1e-5)
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    # neither the unweighted loss nor PyTorch's weighted mean (divided by the weight sum)
    assert float(got) != pytest.approx(float(nll.sum()) / 12.0, rel=1e-3)
    weighted_mean = F.cross_entropy(logits, y, weight=torch.tensor(w))
    assert float(got) != pytest.approx(float(weighted_mean), rel=1e-3)
    # and without a loss_norm, the batch's own example count
    del batch["loss_norm"]
    with torch.no_grad():
        assert float(task.loss(model, batch)) == pytest.approx(by_hand * 12.0 / 6, rel=1e-5)


def test_weighted_ner_loss_skips_ignored_positions():
    torch.manual_seed(0)
    tagger = NerTagger(_config(TAGS)).eval()
    w = [3.0, 0.25, 1.5, 0.75]
    task = NerTask(TAGS, class_weights=w)
    task.words_per_batch = 7.0
    ids = torch.randint(5, 60, (2, 8))
    y = torch.tensor(
        [
            [IGNORE, 1, 2, IGNORE, 3, 0, IGNORE, IGNORE],
            [IGNORE, 3, IGNORE, IGNORE, 1, IGNORE, IGNORE, IGNORE],
        ]
    )
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": y}
    with torch.no_grad():
        got = float(task.loss(tagger, batch))
        unweighted = float(NerTask(TAGS).loss(tagger, {**batch, "loss_norm": 7.0}))
    with torch.no_grad():
        lp = tagger(batch).float().log_softmax(-1)
    by_hand = 0.0
    for b in range(2):
        for t in range(8):
            if y[b, t] != IGNORE:
                by_hand -= w[int(y[b, t])] * float(lp[b, t, y[b, t]])
    assert got == pytest.approx(by_hand / 7.0, rel=1e-5)  # over words_per_batch, as without weights
    # the ignored positions count for nothing, whatever their (invalid) labels would say
    every = sum(-w[int(c) % 4] * float(lp[b, t, int(c) % 4]) for b in range(2) for t, c in enumerate(y[b]))
    assert got != pytest.approx(every / 7.0, rel=1e-3)
    assert got != pytest.approx(unweighted, rel=1e-3)


def test_weights_refused_where_they_do_not_apply_and_not_needed_to_load(tmp_path):
    with pytest.raises(BertkitError) as e:
        NerTask(TAGS, head="crf", class_weighting="auto")
    assert str(e.value) == "--class-weights works with the softmax head, not --head crf"
    with pytest.raises(BertkitError, match="softmax head, not --head bilstm-crf"):
        NerTask(TAGS, head="bilstm-crf", class_weights=[1.0] * 4)
    with pytest.raises(BertkitError) as e:
        ClassifyTask(None, class_weighting="auto")
    assert str(e.value) == "--class-weights works with single-label classification, not --regression"
    from bertkit.tasks.qa import QATask

    with pytest.raises(BertkitError, match="--class-weights works with --task classify and ner, not qa"):
        QATask.from_settings({"class_weighting": "auto", "stride": None}, [], "t")
    assert QATask.from_settings({"class_weighting": None, "stride": None}, [], "t").doc_stride == 128
    with pytest.raises(BertkitError, match="3 class weights for 4 labels"):
        NerTask(TAGS, class_weights=[1.0, 2.0, 3.0])
    # a saved task names a weights file that is gone: loading it reads nothing
    config = _config(["x", "y"])
    info = {"task": "classify", "class_weighting": str(tmp_path / "gone.tsv"), "class_weights": [1.0, 2.0]}
    task = ClassifyTask.from_info(info, config)
    assert task.class_weights == [1.0, 2.0] and task.labels == ["x", "y"]
    assert ClassifyTask.from_info({"task": "classify"}, config).class_weights is None  # older models


# ---- weights files ----------------------------------------------------------------------------------


def test_weights_file_forms(tmp_path):
    labels = ["neg", "neu", "pos"]
    tsv = tmp_path / "w.tsv"
    tsv.write_text("pos\t2.5\n\nneg\t0.5\r\nneu\t1\n", encoding="utf-8")
    assert weights.read_weights(tsv, labels) == [0.5, 1.0, 2.5]  # in label order
    js = tmp_path / "w.json"
    js.write_text('{\n  "pos": 2.5,\n  "neu": 1,\n  "neg": 5e-1\n}\n', encoding="utf-8")
    assert weights.read_weights(js, labels) == [0.5, 1.0, 2.5]
    bom = tmp_path / "bom.json"
    bom.write_text('\ufeff{"neg": 1, "neu": 2, "pos": 3}', encoding="utf-8")
    assert weights.read_weights(bom, labels) == [1.0, 2.0, 3.0]
    # through the task: prepare resolves the file (the training features are not counted)
    task = ClassifyTask(labels, class_weighting=str(js))
    task.prepare([{"input_ids": [1], "labels": 0}], batch_size=1)
    assert task.class_weights == [0.5, 1.0, 2.5]


POSITIVE = "must be a positive number, not"
BAD_FILES = [
    ("w.tsv", "neg\t1\nNEG\t2\npos\t1\n", "line 2: 'NEG' is not a label of the model (neg, pos)"),
    ("w.tsv", "neg\t1\n", "no weight for the label 'pos' (every label needs one)"),
    ("w.tsv", "neg\t1\npos\tmany\n", "line 2: the weight of 'pos' is not a number: 'many'"),
    ("w.tsv", "neg\t0\npos\t1\n", "line 1: the weight of 'neg' must be a positive number, not '0'"),
    ("w.tsv", "neg\t1\n\npos\t-2\n", "line 3: the weight of 'pos' must be a positive number, not '-2'"),
    ("w.tsv", "neg\tnan\npos\t1\n", "line 1: the weight of 'neg' must be a positive number, not 'nan'"),
    ("w.tsv", "neg\t1\npos\t2\nneg\t3\n", "line 3: 'neg' is given twice (first on line 1)"),
    ("w.tsv", "neg 1\npos\t2\n", "line 1: expected label<TAB>weight, got 'neg 1'"),
    ("w.json", '{"neg": 1,\n "pos": 2,\n "x": 3}', "line 3: 'x' is not a label of the model (neg, pos)"),
    ("w.json", '{\n"neg": 1\n}', "no weight for the label 'pos' (every label needs one)"),
    ("w.json", '{"neg": 1,\n"pos": "2"}', "line 2: the weight of 'pos' is not a number: '2'"),
    ("w.json", '{"neg": true,\n"pos": 2}', "line 1: the weight of 'neg' is not a number: True"),
    ("w.json", '{"neg": 1,\n\n"pos": -0.5}', f"line 3: the weight of 'pos' {POSITIVE} -0.5"),
    ("w.json", '{"neg": 1,\n"pos": Infinity}', f"line 2: the weight of 'pos' {POSITIVE} inf"),
    ("w.json", '{"neg": 1,\n"pos": 2,\n"neg": 3}', "line 3: 'neg' is given twice (first on line 1)"),
    (
        "w.json",
        '{"neg": 1,\n"pos": 2,,\n}',
        "line 2: not valid JSON (Expecting property name enclosed in double quotes)",
    ),  # noqa: E501
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_FILES)
def test_bad_weights_files_name_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BertkitError) as e:
        weights.read_weights(path, ["neg", "pos"])
    assert str(e.value) == f"{path}: {message}"


def test_unreadable_weights_file(tmp_path):
    with pytest.raises(BertkitError) as e:
        weights.read_weights(tmp_path / "nope.tsv", ["a"])
    want = "cannot read the class weights: No such file or directory"
    assert str(e.value) == f"{tmp_path / 'nope.tsv'}: {want}"


# ---- --head-lr-mult ---------------------------------------------------------------------------------


def _names(model, group) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _toy_batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, 10), generator=g)
    return {"input_ids": ids, "labels": (ids[:, 1] > 30).long()}


def _toy_loss(model, batch):
    return F.cross_entropy(model(batch["input_ids"]).logits, batch["labels"])


def test_head_groups_carry_lr_times_mult_through_the_schedule():
    torch.manual_seed(0)
    model = bertkit.BertForSequenceClassification(_config(["a", "b"]))
    lr, mult, total, warmup = 1e-3, 5.0, 8, 3
    args = TrainArgs(lr=lr, head_lr_mult=mult, warmup=warmup, weight_decay=0.02, progress=False)
    stepper = Stepper(model, args, FP32, total)
    groups = stepper.optimizer.param_groups
    assert len(groups) == 4
    names = [_names(model, g) for g in groups]
    assert names[2] == {"classifier.weight"} and names[3] == {"classifier.bias"}
    assert all(n.startswith("bert.") for n in names[0] | names[1])
    assert names[0] | names[1] | names[2] | names[3] == {n for n, _ in model.named_parameters()}
    assert [g["weight_decay"] for g in groups] == [0.02, 0.0, 0.02, 0.0]
    assert all(p.ndim >= 2 for g in groups[::2] for p in g["params"])
    assert all(p.ndim == 1 for g in groups[1::2] for p in g["params"])

    def factor(step):  # optim.linear_schedule
        return (step + 1) / warmup if step < warmup else (total - step) / (total - warmup)

    before = model.classifier.weight.detach().clone()
    for step in range(1, 7):
        stepper.forward_backward(_toy_loss, _toy_batch(seed=step))
        assert stepper.update()
        lrs = [g["lr"] for g in stepper.optimizer.param_groups]
        assert lrs[0] == lrs[1] == pytest.approx(lr * factor(step))
        assert lrs[2] == lrs[3] == pytest.approx(lr * mult * factor(step))
        assert lrs[2] / lrs[0] == pytest.approx(mult)
        assert stepper.report()["lr"] == pytest.approx(lrs[0])  # the log shows the encoder's rate
    assert not torch.equal(before, model.classifier.weight)  # the head did train

    # 1 (the default): the two groups of a plain run, everything at lr
    plain = Stepper(model, TrainArgs(lr=lr, warmup=warmup), FP32, total).optimizer.param_groups
    assert len(plain) == 2 and {g["lr"] for g in plain} == {lr * factor(0)}


@pytest.mark.parametrize("head", ["softmax", "bilstm-crf"])
def test_head_groups_of_a_ner_tagger(head):
    tagger = NerTagger(_config(TAGS), head=head)
    groups = Stepper(tagger, TrainArgs(lr=1e-4, head_lr_mult=10), FP32, 4).optimizer.param_groups
    head_names = _names(tagger, groups[2]) | _names(tagger, groups[3])
    want = {n for n, _ in tagger.named_parameters() if not n.startswith("model.bert.")}
    assert head_names == want and "model.classifier.weight" in want
    if head != "softmax":
        assert {"crf.transitions", "crf.start_transitions", "lstm.lstm.weight_ih_l0"} <= want
    assert [g["lr"] / groups[0]["lr"] for g in groups] == pytest.approx([1, 1, 10, 10])


def test_resume_builds_the_same_groups_and_continues_exactly():
    """Four optimizer groups through a checkpoint (the state as `resume.read_trainer_state`
    reads it): the resumed run ends with the uninterrupted run's weights and optimizer."""
    data = [_toy_batch(seed=s) for s in range(2)]
    args = TrainArgs(max_steps=4, lr=1e-3, head_lr_mult=4, warmup=1, progress=False, tensorboard=False)
    saved: dict[int, tuple[dict, dict]] = {}

    def model():
        torch.manual_seed(0)
        return bertkit.BertForSequenceClassification(_config(["a", "b"]))

    def save(m):
        def keep(state):
            buf = io.BytesIO()
            torch.save(state, buf)
            buf.seek(0)
            saved[state["step"]] = (torch.load(buf, weights_only=True), copy.deepcopy(m.state_dict()))

        return keep

    whole = model()
    ck = Checkpointing(save(whole), 2)
    fit(whole, lambda epoch: iter(data), 2, _toy_loss, args, FP32, checkpointing=ck)
    state, weights_at_2 = saved[2]
    assert len(state["optimizer"]["param_groups"]) == 4
    resumed = model()
    resumed.load_state_dict(weights_at_2)
    ck = Checkpointing(save(resumed), 2, resume=state)
    fit(resumed, lambda epoch: iter(data), 2, _toy_loss, args, FP32, checkpointing=ck)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # the head moved with its own rate: a run with multiplier 1 ends elsewhere
    other = model()
    fit(other, lambda epoch: iter(data), 2, _toy_loss, dataclasses.replace(args, head_lr_mult=1.0), FP32)
    assert not torch.allclose(other.classifier.weight, whole.classifier.weight)


def test_resume_refuses_another_head_lr_mult(tmp_path):
    from bertkit.training.resume import write_checkpoint
    from bertkit.training.run import Resumable, resume_from, run_settings

    def checkpoint(root, args_saved):
        write_checkpoint(root, {"step": 1, "run": {"args": args_saved}}, lambda d: None, 1)
        return Resumable(root, resume=True)

    run5 = run_settings(TrainArgs(head_lr_mult=5.0), FP32)
    run1 = run_settings(TrainArgs(), FP32)
    ck = checkpoint(tmp_path / "a", run1)
    with pytest.raises(BertkitError, match=r"--resume with head-lr-mult 5.0, but the run used 1.0"):
        resume_from(ck, run5, 10, FP32)
    assert resume_from(ck, run1, 10, FP32)[1]["step"] == 1
    # a checkpoint from before the setting existed ran with 1
    old = checkpoint(tmp_path / "b", {k: v for k, v in run1.items() if k != "head_lr_mult"})
    assert resume_from(old, run1, 10, FP32)[1]["step"] == 1
    with pytest.raises(BertkitError, match=r"--resume with head-lr-mult 5.0, but the run used 1.0"):
        resume_from(old, run5, 10, FP32)


# ---- the command line -------------------------------------------------------------------------------

WORDS = "good bad film movie plot actor great dull story funny boring fine the a very".split()


def _classify_file(path, counts: dict[str, int], seed=0) -> list[str]:
    rng = random.Random(seed)
    labels = [label for label, n in counts.items() for _ in range(n)]
    rng.shuffle(labels)
    rows = [" ".join(rng.choices(WORDS, k=rng.randint(3, 9))) + f"\t{y}" for y in labels]
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return labels


def test_cli_finetune_with_auto_weights_and_head_lr_mult(tiny_dir, tmp_path):
    train = tmp_path / "train.tsv"
    y = _classify_file(train, {"neg": 22, "neu": 4, "pos": 10})
    out = tmp_path / "out"
    argv = f"finetune --task classify --model {tiny_dir} --train {train} --dev {train} --output {out}"
    argv += " --epochs 1 --batch-size 8 --quiet --precision fp32 --class-weights auto --head-lr-mult 5"
    assert main(argv.split()) == 0
    section = json.loads((out / "config.json").read_text())["bertkit"]
    assert section["class_weighting"] == "auto"
    assert section["class_weights"] == pytest.approx(_sklearn(["neg", "neu", "pos"], y), rel=1e-12)
    assert json.loads((out / "train_args.json").read_text())["head_lr_mult"] == 5.0
    clf = bertkit.pipeline("text-classification", model=out)  # prediction needs none of it
    assert clf("a good film")["label"] in ("neg", "neu", "pos")


def test_cli_ner_weights_file_and_refusals(tiny_dir, tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("Kohl B-PER\nmet O\nYeltsin B-PER\nin O\nBonn B-LOC\n\nthe O\nfilm O\n\n")
    wfile = tmp_path / "w.json"
    wfile.write_text('{"B-LOC": 3, "B-PER": 2,\n "O": 0.5}', encoding="utf-8")
    base = f"finetune --task ner --model {tiny_dir} --train {train} --dev {train} --quiet --max-steps 2"
    assert main([*f"{base} --output {tmp_path / 'out'} --class-weights {wfile}".split()]) == 0
    section = json.loads((tmp_path / "out/config.json").read_text())["bertkit"]
    assert section["class_weights"] == [3.0, 2.0, 0.5] and section["class_weighting"] == str(wfile)
    capsys.readouterr()
    # a bad file: one line naming the file and line, nothing written
    wfile.write_text('{"B-LOC": 3, "B-PER": 2,\n "O": 0}', encoding="utf-8")
    assert main([*f"{base} --output {tmp_path / 'bad'} --class-weights {wfile}".split()]) == 2
    err = capsys.readouterr().err
    assert err == f"bertkit: error: {wfile}: line 2: the weight of 'O' must be a positive number, not 0\n"
    assert not (tmp_path / "bad").exists()
    # a CRF head: refused before anything is trained
    assert main([*f"{base} --output {tmp_path / 'crf'} --head crf --class-weights auto".split()]) == 2
    err = capsys.readouterr().err
    assert err == "bertkit: error: --class-weights works with the softmax head, not --head crf\n"


def test_cli_search_takes_both_flags_and_refuses_a_crf_grid_point_first(tiny_dir, tmp_path, capsys):
    train = tmp_path / "train.tsv"
    _classify_file(train, {"neg": 12, "pos": 4})
    out = tmp_path / "search"
    argv = f"search --task classify --model {tiny_dir} --train {train} --dev {train} --output {out}"
    argv += " --grid head_lr_mult=1,10 --max-steps 2 --batch-size 8 --class-weights auto --quiet"
    assert main(argv.split()) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["grid_points"] == 2 and best["params"]["head_lr_mult"] in (1.0, 10.0)
    ner = tmp_path / "ner.txt"
    ner.write_text("Kohl B-PER\nmet O\n\n", encoding="utf-8")
    argv = f"search --task ner --model {tiny_dir} --train {ner} --dev {ner} --output {tmp_path / 's2'}"
    assert main([*argv.split(), "--grid", "head=softmax,crf", "--class-weights", "auto"]) == 2
    assert "--class-weights works with the softmax head, not --head crf" in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()

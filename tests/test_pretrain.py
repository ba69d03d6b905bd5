"""`bertkit pretrain` end to end on real text: a loadable BertForPreTraining that `transformers`
reads with identical logits, checkpoints that survive SIGKILL at any moment, exact resume in
fp32, 2 processes under torchrun equal to 1, and clear errors for bad input."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bertkit
from bertkit import Tokenizer
from bertkit.cli import main
from bertkit.training.pretrain import checkpoints, load_checkpoint

SMALL = ["--config", "tiny", "--max-seq-length", "64", "--batch-size", "8", "--quiet", "--workers", "1"]


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> Path:
    """The opening of four Gutenberg books (licence header included, to be stripped)."""
    books = sorted((shared_data / "en/gutenberg/books").rglob("*.txt.gz"))[:4]
    d = tmp_path_factory.mktemp("corpus")
    for i, book in enumerate(books):
        with gzip.open(book, "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(700)]
        (d / f"book{i}.txt").write_text("".join(lines), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> tuple[Path, Path]:
    """A trained 1,000-token vocabulary and the corpus' shards, shared by the tests below."""
    d = tmp_path_factory.mktemp("prepared")
    rc = main(["tokenizer", "train", str(corpus), "--vocab-size", "1000", "--output", str(d / "tok")])
    assert rc == 0
    rc = main(["shards", "--corpus", str(corpus), "--tokenizer", str(d / "tok"), "--output", str(d / "data")])
    assert rc == 0
    return d / "tok", d / "data"


def _log(out: Path) -> dict[int, dict]:
    """The last record of each step in log.jsonl (a resumed run logs again from its checkpoint)."""
    steps: dict[int, dict] = {}
    for line in (out / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        steps.setdefault(entry["step"], {}).update(entry)
    return steps


def test_pretrain_end_to_end_loads_in_transformers(corpus, tmp_path, hf, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--corpus", str(corpus), "--output", str(out), "--vocab-size", "1000", *SMALL]
    rc = main([*args, "--max-steps", "24", "--save-every", "8", "--eval-every", "8", "--log-every", "1"]
              + ["--nsp", "--whole-word-mask", "--lr", "1e-3", "--heldout", "0.2"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    log = _log(out)
    # It learns: the mean loss of the last 4 steps is below that of the first 4 (single
    # batches of 8 are noisy; one step against one step failed once by 0.01 at margin 0.3).
    first, last = (sum(log[i]["loss"] for i in steps) / 4 for steps in (range(1, 5), range(21, 25)))
    assert last < first - 0.2, (first, last)
    assert {"dev_mlm_loss", "dev_mlm_accuracy", "dev_nsp_accuracy"} <= set(log[24])
    assert [p.name for p in checkpoints(out)] == ["step-00000016", "step-00000024"]  # keeps 2
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "learning_curves.png",
        "pretrain_metrics.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "data" / "manifest.json").is_file() and (out / "tokenizer" / "vocab.txt").is_file()

    from bertkit.models.heads import BertForPreTraining

    ours = BertForPreTraining.from_pretrained(out).eval()
    ids = torch.tensor([[2, 40, 41, 4, 42, 3, 50, 51, 3]])
    types = torch.tensor([[0] * 6 + [1] * 3])
    theirs, info = hf.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    mlm = hf.BertForMaskedLM.from_pretrained(out).eval()
    with torch.no_grad():
        a = ours(ids, token_type_ids=types)
        b = theirs.eval()(ids, token_type_ids=types)
        torch.testing.assert_close(a.prediction_logits, b.prediction_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.seq_relationship_logits, b.seq_relationship_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            a.prediction_logits, mlm(ids, token_type_ids=types).logits, rtol=0, atol=1e-5
        )

    capsys.readouterr()
    assert main(["fill-mask", "--model", str(out), "--json", "--top-k", "3", "she said [MASK] to him"]) == 0
    fills = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fills"][0]
    assert len(fills) == 3 and fills[0]["score"] >= fills[1]["score"] >= fills[2]["score"]
    assert "[MASK]" not in fills[0]["sequence"]

    # a finished run is not started over by accident
    assert main([*args, "--max-steps", "24"]) == 2
    assert "--resume" in capsys.readouterr().err


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "bertkit", *args]
    return subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env)


def _steps_logged(out: Path) -> int:
    try:
        return max(_log(out))
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return 0


def test_sigkill_at_random_steps_then_resume_equals_an_uninterrupted_run(prepared, tmp_path):
    """Five SIGKILLs at random steps (some inside a checkpoint write, which happens every 3
    steps), each followed by --resume: every checkpoint on disk is complete, each resume starts
    at the last one, and in fp32 the losses and final weights equal an uninterrupted run's."""
    tok, data = prepared
    common = ["pretrain", "--corpus", str(data), "--tokenizer", str(tok), *SMALL, "--precision", "fp32"]
    common += [
        "--max-steps",
        "30",
        "--save-every",
        "3",
        "--eval-every",
        "1000",
        "--log-every",
        "1",
        "--seed",
        "3",
    ]
    ref = tmp_path / "ref"
    assert _start([*common, "--output", str(ref)], tmp_path / "ref.log").wait(timeout=600) == 0

    out = tmp_path / "killed"
    rng = random.Random(0)
    targets = sorted(rng.sample(range(3, 28), 5))
    resumed_from = []
    for target in targets:
        proc = _start([*common, "--output", str(out), "--resume"], tmp_path / "killed.log")
        deadline = time.time() + 300
        while _steps_logged(out) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.random() * 0.3)  # land anywhere in the step, or in a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for ck in checkpoints(out):  # every checkpoint on disk is whole
            state, trainer = load_checkpoint(ck)
            assert trainer["step"] == int(ck.name.split("-")[1])
            assert all(torch.isfinite(v).all() for v in state.values())
        resumed_from.append(checkpoints(out)[-1].name if checkpoints(out) else None)
    proc = _start([*common, "--output", str(out), "--resume"], tmp_path / "killed.log")
    assert proc.wait(timeout=600) == 0
    text = (tmp_path / "killed.log").read_text()
    for name in filter(None, resumed_from):
        assert f"resuming from {out / 'checkpoints' / name}" in text
    assert "Traceback" not in text

    a, b = _log(ref), _log(out)
    assert sorted(a) == sorted(b) == list(range(1, 31))
    assert [a[s]["loss"] for s in a] == [b[s]["loss"] for s in a]  # bit for bit
    from safetensors.torch import load_file

    wa, wb = load_file(ref / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no partial left


def test_two_processes_under_torchrun_equal_one(prepared, tmp_path):
    """Same global batch: 2 gloo processes (4 sequences each, DDP) and 1 process (8)
    end with the same parameters after 6 fp32 steps (dropout off: ranks draw their own masks)."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    tok, data = prepared
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
                               "intermediate_size": 128, "hidden_dropout_prob": 0.0,
                               "attention_probs_dropout_prob": 0.0, "vocab_size": 1000}))  # fmt: skip
    common = ["pretrain", "--corpus", str(data), "--tokenizer", str(tok), "--config", str(cfg), "--nsp"]
    common += [
        "--max-seq-length",
        "64",
        "--batch-size",
        "8",
        "--max-steps",
        "6",
        "--precision",
        "fp32",
        "--quiet",
    ]
    common += ["--save-every", "3", "--eval-every", "3", "--seed", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "bertkit", *common, "--output", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "bertkit"]
    cmd = [*launcher, *common, "--output", str(tmp_path / "two")]
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    from safetensors.torch import load_file

    a, b = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    from bertkit import BertConfig
    from bertkit.models.heads import BertForPreTraining

    torch.manual_seed(5)  # the run's initial weights, to show that training moved them
    start = BertForPreTraining(BertConfig.from_pretrained(tmp_path / "one")).hf_state_dict()
    assert set(a) == set(b) == set(start)
    assert sum(not torch.allclose(a[k], start[k]) for k in a) > len(a) // 2
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    la, lb = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert la[6]["dev_mlm_loss"] == pytest.approx(lb[6]["dev_mlm_loss"], rel=1e-4)

    # resuming the 2-process run from its step-3 checkpoint ends bit for bit where it ended
    again = tmp_path / "two-resumed"
    shutil.copytree(tmp_path / "two", again)
    shutil.rmtree(checkpoints(again)[-1])
    (again / "model.safetensors").unlink()
    resumed = subprocess.run([*launcher, *common, "--output", str(again), "--resume"], env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0 and "(step 3)" in resumed.stdout, resumed.stderr[-3000:]
    r = load_file(again / "model.safetensors")
    assert all(torch.equal(r[k], b[k]) for k in b)


@pytest.mark.parametrize(
    "case",
    ["empty corpus", "binary file", "not utf-8", "no [MASK] in vocab", "sequence longer than positions"],
)
def test_bad_input_is_a_clear_error_and_leaves_no_model(case, prepared, tmp_path, capsys):
    tok, _ = prepared
    src = tmp_path / "corpus"
    src.mkdir()
    args = ["pretrain", "--corpus", str(src), "--output", str(tmp_path / "run"), *SMALL, "--max-steps", "2"]
    expect = {
        "empty corpus": "no text",
        "binary file": "binary",
        "not utf-8": "line 2",
        "no [MASK] in vocab": "[MASK]",
        "sequence longer than positions": "max_position_embeddings 512",
    }[case]
    if case == "empty corpus":
        (src / "a.txt").write_text("\n\n   \n")
    elif case == "binary file":
        (src / "a.bin").write_bytes(b"some text\n\x00\x01\x02\xff\x00binary\n")
    elif case == "not utf-8":
        (src / "a.txt").write_bytes("fine line\nbad \xe9 line\n".encode("latin-1"))
    else:
        (src / "a.txt").write_text("the cat sat on the mat.\n" * 50)
    if case == "no [MASK] in vocab":
        bad = tmp_path / "tok"
        shutil.copytree(tok, bad)
        (bad / "tokenizer.json").unlink()
        vocab = [t for t in (bad / "vocab.txt").read_text().splitlines() if t != "[MASK]"]
        (bad / "vocab.txt").write_text("\n".join(vocab) + "\n")
        args += ["--tokenizer", str(bad)]
    elif case == "sequence longer than positions":
        args += ["--tokenizer", str(tok), "--max-seq-length", "1024"]
    else:
        args += ["--tokenizer", str(tok)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err, err
    run = tmp_path / "run"
    assert not (run / "model.safetensors").exists() and not (run / "config.json").exists()
    assert not run.exists() or not checkpoints(run)


def test_sigterm_saves_a_checkpoint_and_exits_130(prepared, tmp_path):
    tok, data = prepared
    out = tmp_path / "run"
    args = ["pretrain", "--corpus", str(data), "--tokenizer", str(tok), *SMALL, "--output", str(out)]
    args += ["--max-steps", "400", "--save-every", "1000", "--eval-every", "1000", "--log-every", "1"]
    proc = _start(args, tmp_path / "log")
    deadline = time.time() + 300
    while _steps_logged(out) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    text = (tmp_path / "log").read_text()
    assert "stopped by SIGTERM" in text and "Traceback" not in text
    (last,) = checkpoints(out)  # the step in hand was finished and saved
    assert int(last.name.split("-")[1]) >= 3
    assert not (out / "model.safetensors").exists()  # not mistaken for a finished run


def test_planted_pickle_in_a_checkpoint_is_refused(prepared, tmp_path, pickle_payload, capsys):
    tok, data = prepared
    out = tmp_path / "run"
    args = ["pretrain", "--corpus", str(data), "--tokenizer", str(tok), *SMALL, "--output", str(out)]
    args += ["--max-steps", "2", "--save-every", "1", "--eval-every", "1000"]
    assert main(args) == 0
    payload, marker = pickle_payload
    last = checkpoints(out)[-1]
    torch.save({"step": 2, "payload": payload}, last / "trainer_state.pt")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(last / "trainer_state.pt") in err and "Traceback" not in err
    assert not marker.exists()


def test_resume_from_the_final_checkpoint_trains_no_further(prepared, tmp_path):
    """Killed after its last checkpoint but before the final model was written: --resume only
    writes the model."""
    tok, data = prepared
    out = tmp_path / "run"
    args = ["pretrain", "--corpus", str(data), "--tokenizer", str(tok), *SMALL, "--output", str(out)]
    args += ["--max-steps", "4", "--save-every", "2", "--eval-every", "1000", "--log-every", "1"]
    assert main(args) == 0
    from safetensors.torch import load_file

    before = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    assert main([*args, "--resume"]) == 0
    assert max(_log(out)) == 4
    after = load_file(out / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "flag, value, bad, keys, default, interval",
    [
        ("--dropout", "0", "1.5", ("hidden_dropout_prob", "attention_probs_dropout_prob"), 0.1, "[0, 1)"),
        ("--init-range", "0.05", "0", ("initializer_range",), 0.02, "(0, 1)"),
    ],
)
def test_run_only_options_leave_the_saved_config(
    prepared, tmp_path, capsys, flag, value, bad, keys, default, interval
):
    """--dropout 0 and --init-range 0.05 change the training (fp32 losses differ from the default
    run with the same seed and batches) but not the saved config, which fine-tuning reads (dropout,
    and the std of the heads it adds)."""
    tok, data = prepared
    base = ["pretrain", "--corpus", str(data), "--tokenizer", str(tok), *SMALL, "--precision", "fp32"]
    base += ["--max-steps", "3", "--eval-every", "1000", "--log-every", "1", "--seed", "5"]
    assert main([*base, "--output", str(tmp_path / "default")]) == 0
    assert main([*base, "--output", str(tmp_path / "changed"), flag, value]) == 0
    a, b = _log(tmp_path / "default"), _log(tmp_path / "changed")
    assert all(a[s]["loss"] != b[s]["loss"] for s in (1, 2, 3))
    config = json.loads((tmp_path / "changed" / "config.json").read_text())
    assert all(config[k] == default for k in keys)
    capsys.readouterr()
    assert main([*base, "--output", str(tmp_path / "bad"), flag, bad]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be in {interval}, not {float(bad)}" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_roberta_recipe_bpe_masked_lm_loads_in_transformers(corpus, tmp_path, hf, capsys):
    """--config roberta-tiny: a byte-level BPE vocabulary trained on the corpus, masked-LM alone
    (whole words by the Ġ rule), saved as RobertaForMaskedLM that transformers loads with the
    same logits; fill-mask takes <mask>; --nsp is refused."""
    out = tmp_path / "run"
    small = [a if a != "tiny" else "roberta-tiny" for a in SMALL]
    args = ["pretrain", "--corpus", str(corpus), "--output", str(out), "--vocab-size", "1000", *small]
    assert main([*args, "--nsp", "--max-steps", "2"]) == 2
    assert "next sentence is BERT's" in capsys.readouterr().err
    rc = main(
        [
            *args,
            "--max-steps",
            "16",
            "--whole-word-mask",
            "--lr",
            "1e-3",
            "--heldout",
            "0.2",
            "--log-every",
            "1",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert "pieces without a leading Ġ" in capsys.readouterr().out
    log = _log(out)
    assert sum(log[i]["loss"] for i in (13, 14, 15, 16)) < sum(log[i]["loss"] for i in (1, 2, 3, 4))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "roberta" and config["architectures"] == ["RobertaForMaskedLM"]
    assert config["max_position_embeddings"] == 512 + config["pad_token_id"] + 1
    tok = Tokenizer.from_pretrained(out)
    assert tok.kind == "bpe" and tok.mask_token == "<mask>" and not (out / "vocab.txt").exists()
    enc = tok(["she said <mask> to him", "a longer line of the book"], padding=True, return_tensors="pt")
    ours = bertkit.BertForMaskedLM.from_pretrained(out).eval()
    ref = hf.AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        a = ours(enc["input_ids"], enc["attention_mask"]).logits
        b = ref(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    real = enc["attention_mask"].bool()
    assert (a - b)[real].abs().max() <= 1e-5
    capsys.readouterr()
    assert main(["fill-mask", "--model", str(out), "--json", "--top-k", "2", "she said <mask> to him"]) == 0
    fills = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fills"][0]
    assert len(fills) == 2 and "<mask>" not in fills[0]["sequence"]

"""Grid search with k-fold CV: every grid point scored, results written, resumable after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bertkit.errors import BertkitError
from bertkit.training.search import folds, parse_grid


def test_parse_grid_and_errors():
    assert parse_grid(["lr=1e-5,2e-5", "batch-size=8"]) == {"lr": [1e-5, 2e-5], "batch_size": [8]}
    with pytest.raises(BertkitError, match="KEY one of"):
        parse_grid(["learning=1"])
    with pytest.raises(BertkitError, match="type int"):
        parse_grid(["batch_size=eight"])


def test_folds_are_stratified_partitions():
    from bertkit.data.examples import TextExample

    examples = [TextExample(f"t{i}", None, "a" if i % 3 else "b", i) for i in range(30)]
    splits = folds(examples, 3, seed=1)
    held = [e.line for _, te in splits for e in te]
    assert sorted(held) == list(range(30))  # every example held out exactly once
    for tr, te in splits:
        assert len(tr) + len(te) == 30
        assert sum(e.label == "b" for e in te) in (3, 4)  # 10 "b" over 3 folds: stratified


def _cmd(tiny_dir, train, out):
    return [
        sys.executable,
        "-m",
        "bertkit.cli",
        "search",
        "--task",
        "classify",
        "--model",
        str(tiny_dir),
        "--train",
        str(train),
        "--folds",
        "2",
        "--output",
        str(out),
        "--max-steps",
        "3",
        "--batch-size",
        "8",
        "--grid",
        "lr=1e-4,3e-4,1e-3",
        "--grid",
        "warmup=0,0.1",
        "--text-column",
        "sentence1",
        "--pair-column",
        "sentence2",
        "--label-column",
        "label",
    ]


def test_search_kfold_survives_kill_and_resume(tiny_dir, shared_data, tmp_path):
    lines = (shared_data / "en/glue/RTE/train.tsv").read_text(encoding="utf-8").splitlines()[:61]
    train = tmp_path / "rte.tsv"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "search"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _cmd(tiny_dir, train, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    seen = []
    deadline = time.time() + 300
    for line in proc.stdout:  # kill it once the second grid point has finished
        seen.append(line)
        if sum("fold 2/2" in x for x in seen) == 2 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sum("fold 2/2" in x for x in seen) == 2, "".join(seen)
    assert not (out / "best.json").exists()
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'search.db'}")
    finished = len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE]))
    assert finished >= 1
    r = subprocess.run(_cmd(tiny_dir, train, out), capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # only the grid points not finished before the kill ran (the one cut off mid-way among them)
    assert r.stdout.count("fold 2/2") == 6 - finished, r.stdout
    best = json.loads((out / "best.json").read_text())
    assert best["grid_points"] == 6 and best["folds"] == 2
    rows = (out / "results.md").read_text().splitlines()
    assert len(rows) == 2 + 6
    scores = [float(row.split("|")[3]) for row in rows[2:]]
    assert scores == sorted(scores, reverse=True) and best["mean_accuracy"] == pytest.approx(
        scores[0], abs=1e-4
    )

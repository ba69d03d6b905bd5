"""Models by Hub name: `org/name[@revision]` resolved through a Hugging Face cache laid out here
as the hub lays it out (`models--org--name/snapshots/REV/…`, `refs/main`), with
HF_HUB_OFFLINE=1 (nothing is downloaded); an uncached name offline is one line, exit 2.
Each check runs in a fresh process: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bertkit.hub import is_name

REV = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def cache(head_dir, tmp_path_factory):
    """HF_HOME holding `acme/tiny-sentiment` at main (REV) and at a tag v1 (OTHER, other labels)."""
    from bertkit import BertForSequenceClassification

    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / "models--acme--tiny-sentiment"
    main = head_dir(repo / "snapshots" / REV, BertForSequenceClassification, "classify", ["neg", "pos"])
    tagged = repo / "snapshots" / OTHER
    shutil.copytree(main, tagged)
    config = json.loads((tagged / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "good"}
    config["label2id"] = {"bad": 0, "good": 1}
    (tagged / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    (repo / "refs" / "v1").write_text(OTHER)
    return home


def _run(code: str, home, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd)


def test_names_resolve_offline_through_the_cache(cache, tmp_path):
    code = (
        "import bertkit\n"
        "from bertkit.hub import resolve\n"
        "print(resolve('acme/tiny-sentiment').name)\n"
        "print(resolve('acme/tiny-sentiment@v1').name)\n"
        "p = bertkit.pipeline('text-classification', model='acme/tiny-sentiment')\n"
        "print(sorted(p(['a good film'])[0]['scores']))\n"
        "v1 = bertkit.pipeline('text-classification', model='acme/tiny-sentiment@v1')\n"
        "print(sorted(v1(['x'])[0]['scores']))\n"
        "print(bertkit.Tokenizer.from_pretrained('acme/tiny-sentiment').vocab_size > 100)\n"
        "print(type(bertkit.BertForSequenceClassification.from_pretrained('acme/tiny-sentiment')).__name__)\n"
    )
    r = _run(code, cache, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:6] == [
        REV,
        OTHER,
        "['neg', 'pos']",
        "['bad', 'good']",
        "True",
        "BertForSequenceClassification",
    ]


def test_cli_takes_a_name(cache, tmp_path):
    src, dest = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("a good film\n")
    code = (
        "from bertkit.cli import main\n"
        f"raise SystemExit(main(['predict', '--model', 'acme/tiny-sentiment', '--input', {str(src)!r}, "
        f"'--output', {str(dest)!r}]))\n"
    )
    r = _run(code, cache, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(dest.read_text())["label"] in ("neg", "pos")


def test_a_folder_wins_over_a_name(cache, tmp_path):
    """A folder `acme/tiny-sentiment` in the working directory is used, not the cache's model."""
    local = tmp_path / "acme" / "tiny-sentiment"
    shutil.copytree(cache / "hub" / "models--acme--tiny-sentiment" / "snapshots" / OTHER, local)
    r = _run("from bertkit.hub import resolve; print(resolve('acme/tiny-sentiment'))", cache, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "acme/tiny-sentiment"


def test_an_uncached_name_offline_is_one_line(cache, tmp_path):
    code = "from bertkit.cli import main\nraise SystemExit(main(['info', 'acme/not-here']))\n"
    r = _run(code, cache, tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "acme/not-here" in lines[0] and "offline" in lines[0] and "cache" in lines[0]


@pytest.mark.parametrize(
    "text,name",
    [("roberta-base", True), ("org/model@v2", True), ("./x", False), ("/abs/dir", False), ("a/b/c", False)],
)
def test_what_reads_as_a_name(text, name):
    assert is_name(text) == name

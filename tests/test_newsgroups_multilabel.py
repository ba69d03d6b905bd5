"""bench/newsgroups_multilabel.py on a tiny 20news-bydate-like tar: labels from the Newsgroups
header and the folders, copies merged, headers removed, test copies of train messages dropped, and
dev holding only labels that the train left keeps."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "newsgroups_multilabel.py"
GROUPS = ["alt.atheism", "rec.autos", "sci.med", "sci.space"]

CROSS = (  # posted to two of the folders and one group outside them; filed in both folders
    "From: a@b.edu\nMessage-ID: <cross@b.edu>\nNewsgroups: alt.atheism,\n\tsci.space ,\n"
    "  talk.bizarre\nSubject: Re: stars\nLines: 3\n\nThe stars\n\n\tare  far.\n"
)
NO_ID = "From: c@d.com\nSubject: hello\n\nSame body, no Message-ID, two folders.\n"
MESSAGES = {
    "20news-bydate-train/alt.atheism/1": CROSS,
    "20news-bydate-train/sci.space/2": CROSS.replace("\n", "\r\n"),
    "20news-bydate-train/alt.atheism/3": NO_ID,
    "20news-bydate-train/sci.med/4": NO_ID,
    "20news-bydate-train/sci.med/5": "Newsgroups: sci.med,misc.outside\nSubject: x\n\nOnly sci.med here.\n",
    "20news-bydate-train/sci.space/6": "Newsgroups: sci.med\n\nFiled in sci.space, posted to sci.med.\n",
    "20news-bydate-train/alt.atheism/7": "Subject: empty\nOrganization: none\n\n \n\t\n",
    "20news-bydate-train/rec.autos/8": "Subject: cars\n\nThe one rec.autos message of train.\n",
    **{
        f"20news-bydate-train/alt.atheism/{i}": f"Subject: {i}\n\nAtheism message {i}.\n"
        for i in range(9, 15)
    },
    "20news-bydate-test/sci.med/20": CROSS,  # in train already
    "20news-bydate-test/sci.space/21": "Subject: t\nNewsgroups: sci.space, sci.med\n\nA test\ttext.\n",
    "20news-bydate-test/rec.autos/22": "Subject: u\n\nA test car.\n",
}
TRAIN = {
    "The stars are far.": {"alt.atheism", "sci.space"},
    "Same body, no Message-ID, two folders.": {"alt.atheism", "sci.med"},
    "Only sci.med here.": {"sci.med"},
    "Filed in sci.space, posted to sci.med.": {"sci.med", "sci.space"},
    "The one rec.autos message of train.": {"rec.autos"},
    **{f"Atheism message {i}.": {"alt.atheism"} for i in range(9, 15)},
}
TEST = {"A test text.": {"sci.med", "sci.space"}, "A test car.": {"rec.autos"}}


@pytest.fixture
def tar(tmp_path: Path) -> Path:
    path = tmp_path / "20news-bydate.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name, text in MESSAGES.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def build(tar: Path, out: Path, *flags: str) -> str:
    cmd = [sys.executable, str(SCRIPT), "--tar", str(tar), "--output", str(out), *flags]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def read(path: Path) -> dict[str, set[str]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(len(r) == 2 for r in rows)
    texts = {text: set(labels.split(",")) for text, labels in rows}
    assert len(texts) == len(rows)  # no text twice
    return texts


def test_labels_copies_headers_and_test_overlap(tar: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    printed = build(tar, out, "--dev-share", "0")
    assert (out / "labels.txt").read_text(encoding="utf-8").split("\n") == [*GROUPS, ""]
    assert read(out / "train.tsv") == TRAIN
    assert read(out / "test.tsv") == TEST
    assert (out / "dev.tsv").read_text(encoding="utf-8") == ""
    assert "test messages also in train, dropped from test: 1" in printed
    assert "train (by date): 14 files, 1 with an empty body skipped, 2 copies merged" in printed
    assert not list(out.glob(".*"))  # no temporary file left


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dev_labels_all_in_train(tar: Path, tmp_path: Path, seed: int) -> None:
    out = tmp_path / "out"
    build(tar, out, "--dev-share", "0.5", "--seed", str(seed))
    train, dev = read(out / "train.tsv"), read(out / "dev.tsv")
    assert {**train, **dev} == TRAIN and not train.keys() & dev.keys()
    assert len(dev) >= 1
    assert set().union(*dev.values()) <= set().union(*train.values())
    assert "The one rec.autos message of train." in train
    assert read(out / "test.tsv") == TEST


def test_all_picked_for_dev_keeps_each_label_in_train(tar: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    printed = build(tar, out, "--dev-share", "1")
    train, dev = read(out / "train.tsv"), read(out / "dev.tsv")
    assert set().union(*train.values()) == set(GROUPS)
    assert set().union(*dev.values()) <= set(GROUPS) and {**train, **dev} == TRAIN
    assert f"picked for dev but kept in train (a label the rest of train lacked): {len(train)}" in printed


def test_bertkit_reads_the_files_back(tar: Path, tmp_path: Path) -> None:
    from bertkit.tasks.registry import load_examples  # (in-process: torch is imported once per run)

    out = tmp_path / "out"
    build(tar, out, "--dev-share", "0.3")
    opts = {"multi_label": True, "text_column": "0", "label_column": "1", "labels_file": out / "labels.txt"}
    for split in ("train", "dev", "test"):
        got = {e.text: set(e.label) for e in load_examples("classify", out / f"{split}.tsv", **opts)}
        assert got == read(out / f"{split}.tsv")


def test_hierarchy_adds_shared_prefixes(tar: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(tar, out, "--dev-share", "0", "--hierarchy")
    assert (out / "labels.txt").read_text(encoding="utf-8").split() == sorted([*GROUPS, "sci"])
    for split, want in (("train", TRAIN), ("test", TEST)):
        got = read(out / f"{split}.tsv")
        assert got.keys() == want.keys()
        for text, labels in got.items():  # "sci" on every sci.* text, nothing else added
            assert labels == want[text] | ({"sci"} if want[text] & {"sci.med", "sci.space"} else set())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_long_tail_keeps_a_shrinking_share_per_group(tar: Path, tmp_path: Path, seed: int) -> None:
    import random

    out = tmp_path / "out"
    build(tar, out, "--dev-share", "0", "--long-tail", "10", "--seed", str(seed))
    train = read(out / "train.tsv")
    assert train.items() <= TRAIN.items() and read(out / "test.tsv").items() <= TEST.items()
    first = random.Random(seed).sample(GROUPS, len(GROUPS))[0]  # keeps all; the others r^-10: 3
    for group in GROUPS:
        mine = [t for t, labels in TRAIN.items() if group in labels]
        kept = [t for t in mine if t in train]
        assert len(kept) == len(mine) if group == first else len(kept) >= min(3, len(mine))
    atheism = [t for t, labels in TRAIN.items() if labels == {"alt.atheism"}]
    kept = sum(t in train for t in atheism)  # of 8 atheism messages, 3 kept unless it came first
    assert kept == 6 if first == "alt.atheism" else kept <= 3

"""Folder-per-label classification data (IMDB, 20 Newsgroups), from directories and tar archives."""

from __future__ import annotations

import io
import tarfile

import pytest

from bertkit.data import read_folder_classification
from bertkit.errors import BertkitError
from bertkit.tasks.registry import load_examples


def _tar(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_directory_and_archive_give_the_same_examples(tmp_path):
    files = {
        "ds/train/pos/1.txt": b"great film",
        "ds/train/neg/2.txt": "terrible \xe9".encode(),
        "ds/train/pos/3.txt": b"loved it",
        "ds/README": b"not an example",
        "ds/test/pos/9.txt": b"x",
    }
    for name, data in files.items():
        (tmp_path / "dir" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dir" / name).write_bytes(data)
    _tar(tmp_path / "ds.tar.gz", files)
    from_dir = read_folder_classification(tmp_path / "dir/ds/train")
    from_tar = load_examples("classify", tmp_path / "ds.tar.gz/ds/train")
    key = lambda es: sorted((e.label, e.text) for e in es)  # noqa: E731
    assert (
        key(from_dir) == key(from_tar) == [("neg", "terrible é"), ("pos", "great film"), ("pos", "loved it")]
    )


def test_bad_folder_data(tmp_path):
    _tar(tmp_path / "bad.tar.gz", {"d/a/1.txt": b"\xff\xfe bad"})
    with pytest.raises(BertkitError, match=r"bad\.tar\.gz: d/a/1\.txt: not UTF-8"):
        read_folder_classification(tmp_path / "bad.tar.gz/d")
    with pytest.raises(BertkitError, match="no examples"):
        read_folder_classification(tmp_path / "bad.tar.gz/nothing")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(BertkitError, match="not a readable tar archive"):
        read_folder_classification(tmp_path / "junk.tar.gz/x")
    with pytest.raises(BertkitError, match="no such directory"):
        read_folder_classification(tmp_path / "missing")


def test_real_20newsgroups_counts(shared_data):
    archive = shared_data / "en/20newsgroups/20news-bydate.tar.gz"
    train = read_folder_classification(archive / "20news-bydate-train")
    assert len(train) == 11314 and len({e.label for e in train}) == 20

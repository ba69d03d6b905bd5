"""Atomic writes: a failed write leaves the old file whole and no temporary behind; a finished
one has the mode a plain open() gives; an OSError without a file name names the target."""

import errno
import os

import pytest

from bertkit.fileio import atomic_open, atomic_path, write_json


def _plain_mode(tmp_path) -> int:
    probe = tmp_path / "probe"
    probe.write_text("x")
    return probe.stat().st_mode & 0o777


def test_atomic_open_replaces_whole_and_keeps_plain_mode(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with atomic_open(target) as f:
        f.write("new")
        assert target.read_text() == "old"  # not visible until the block ends
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == _plain_mode(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "probe"]


@pytest.mark.parametrize("opener", ["open", "path"])
def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path, opener):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        if opener == "open":
            with atomic_open(target, "wb") as f:
                f.write(b"half")
                raise RuntimeError("boom")
        else:
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_atomic_path_renames_what_a_library_wrote(tmp_path):
    target = tmp_path / "sub" / "w.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights"
    assert [p.name for p in target.parent.iterdir()] == ["w.bin"]


def test_unnamed_os_error_names_the_target(tmp_path):
    target = tmp_path / "m.json"
    with pytest.raises(OSError) as info:
        with atomic_open(target) as f:
            f.write("{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(target)
    assert not target.exists()
    write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'

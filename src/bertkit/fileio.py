"""Atomic writes: nothing already written is lost or left half-written.

Every file bertkit writes goes to a temporary name in the same directory and is renamed over
the target only once it is complete (rename is atomic on POSIX filesystems).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bertkit.errors import BertkitError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publishable(tmp: str) -> None:
    """mkstemp makes files 0600; give the finished file the mode a plain open() would (0666 less
    the umask), so other users and services can read models and reports."""
    os.chmod(tmp, 0o666 & ~_umask())


def _naming(e: BaseException, path: Path) -> BaseException:
    """An OSError from a write (a full disk...) often names no file: name the one being written."""
    if isinstance(e, OSError) and e.filename is None and e.errno is not None:
        return OSError(e.errno, e.strerror, os.fspath(path))
    return e


@contextlib.contextmanager
def _published(tmp: str, path: Path) -> Iterator[None]:
    """Rename the finished `tmp` over `path` once the block succeeds; on any failure remove it
    and raise the error naming `path`."""
    try:
        yield
        _publishable(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        named = _naming(e, path)
        if named is e:
            raise
        raise named from None


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with _published(tmp, path):
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a library that writes by file name
    (safetensors, tokenizers); rename it to `path` once the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    with _published(tmp, path):
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def check_new_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing, non-empty output directory unless it may be replaced."""
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise BertkitError(
            "output directory exists and is not empty (pass --overwrite to replace it)", output
        )


def staging_dir(output: Path, overwrite: bool) -> Path:
    """A fresh hidden directory beside `output` for the run to write into."""
    check_new_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    for old in output.parent.glob(f".{output.name}.partial-*"):  # left by a killed run
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    stage = output.parent / f".{output.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    return stage


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def publish(stage: Path, output: Path) -> None:
    """Move the finished run into place; an old output (with --overwrite) goes only afterwards."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        os.replace(output, old)
    os.replace(stage, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_output(output: Path, overwrite: bool = False) -> Iterator[Path]:
    """Write a whole output directory into a hidden staging directory and move it into place
    only when the block completes; on any failure the stage is removed and `output` untouched."""
    stage = staging_dir(output, overwrite)
    try:
        yield stage
        publish(stage, output)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """safetensors' `save_file`, atomically; its I/O failures (a full disk...) become OSError
    with the errno and the file name, like every other failed write."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata or {"format": "pt"})
        except SafetensorError as e:
            m = re.search(r"I/O error: (.*) \(os error (\d+)\)", str(e))
            if m is None:
                raise
            raise OSError(int(m.group(2)), m.group(1), os.fspath(path)) from None

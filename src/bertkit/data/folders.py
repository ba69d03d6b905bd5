"""Classification data stored as one file per example in a folder per class
(`split/<label>/<file>`), the layout of IMDB (aclImdb) and 20 Newsgroups, read from a directory
or straight from a .tar/.tar.gz archive: `data/aclImdb.tar.gz/aclImdb/train` names the
`aclImdb/train` folder inside the archive."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from bertkit.data.examples import TextExample
from bertkit.errors import BertkitError

ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def split_archive_path(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(archive, folder inside it) when `path` runs through a tar archive, else None."""
    p = Path(path)
    for parent in [p, *p.parents]:
        if parent.is_file() and str(parent).endswith(ARCHIVES):
            return parent, str(PurePosixPath(*p.relative_to(parent).parts)) if p != parent else ""
        if parent.exists():
            return None
    return None


def is_folder_dataset(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() or split_archive_path(path) is not None


def _decode(data: bytes, name: str, where: str | os.PathLike) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BertkitError(f"{name}: not UTF-8 text (byte {e.start})", where) from None


def read_folder_classification(path: str | os.PathLike) -> list[TextExample]:
    """One example per file; the label is the name of the folder the file sits in. Folders
    without files (and files directly in `path`, such as README or vocabularies) are skipped."""
    found = split_archive_path(path)
    examples: list[TextExample] = []
    if found is None:
        root = Path(path)
        if not root.is_dir():
            raise BertkitError("no such directory (or tar archive)", path)
        for label_dir in sorted(d for d in root.iterdir() if d.is_dir()):
            for f in sorted(label_dir.iterdir()):
                if f.is_file():
                    text = _decode(f.read_bytes(), f.name, label_dir)
                    examples.append(TextExample(text, None, label_dir.name, len(examples) + 1))
    else:
        archive, inner = found
        prefix = inner.rstrip("/") + "/" if inner else ""
        try:
            with tarfile.open(archive) as tar:
                for m in tar:
                    if not m.isfile() or not m.name.startswith(prefix):
                        continue
                    parts = PurePosixPath(m.name[len(prefix) :]).parts
                    if len(parts) != 2:
                        continue
                    member = tar.extractfile(m)
                    assert member is not None  # a regular file (checked above) has contents
                    data = member.read()  # read only: nothing is written to disk
                    examples.append(
                        TextExample(_decode(data, m.name, archive), None, parts[0], len(examples) + 1)
                    )
        except (tarfile.TarError, EOFError, OSError) as e:
            raise BertkitError(f"not a readable tar archive ({e})", archive) from None
    if not examples:
        raise BertkitError("no examples: expected files in one folder per label", path)
    empty = next((e for e in examples if not e.text.strip()), None)
    if empty is not None:
        raise BertkitError(f"example {empty.line} (label {empty.label!r}) is empty", path)
    return examples

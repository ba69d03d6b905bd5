"""A trained task's examples from files: the reader options it was trained with (unless the
command line says otherwise), and `bertkit predict`'s JSON or plain-text lines."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from bertkit.data.examples import ReaderOptions
from bertkit.errors import BertkitError
from bertkit.tasks.base import Task


def reader_opts(task: Task, opts: ReaderOptions | None) -> ReaderOptions:
    """The reader options for a trained model's files: what it was trained with (regression,
    multi-label labels) unless the command line says otherwise (a value given: not None, not False)."""
    fields = dataclasses.asdict(opts or ReaderOptions()).items()
    given = {k: v for k, v in fields if v is not None and v is not False}  # 0 is a column
    return dataclasses.replace(task.reader_options(), **given)


def read_inputs(task: Task, source: str) -> list:
    """`bertkit predict`'s input: JSON lines or plain text lines, one example each."""
    try:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BertkitError(f"cannot read input ({e})", source) from None
    examples = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        obj = None
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BertkitError(f"line {n}: invalid JSON ({e.msg})", source) from None
        examples.append(task.example_from_line(obj, line, n, source))
    return examples

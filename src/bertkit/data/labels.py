"""Labels: reading a label cell (a name, a regression number or, for multi-label, a set of names
or ids), label files, the label vocabulary of a training set, and checking that a dev/test file
holds only labels seen in training."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bertkit.data.cleaning import PathLike, json_type, numbered_lines
from bertkit.data.examples import TextExample, TokenExample
from bertkit.errors import BertkitError


@dataclass(frozen=True)
class LabelSets:
    """How a multi-label cell reads: a JSON list (`["joy", "love"]`, a JSON-lines array or a cell
    starting with `[`), or names joined by `separator` (`joy,love`); empty means no label. With
    `names` (a label file's lines, or a trained model's labels) every label must be one of them,
    and a number that is not itself a name is an id: the 0-based line of `names` (GoEmotions'
    `4,27` with `emotions.txt`)."""

    separator: str = ","
    names: tuple[str, ...] | None = None
    source: str = "the label file"  # where `names` came from, for error messages

    def parse(self, raw: Any, n: int, path: PathLike) -> tuple[str, ...]:
        values = self._values(raw, n, path)
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (str, int))]
        if bad:
            raise BertkitError(f"line {n}: a label must be a name or an id, found {json_type(bad[0])}", path)
        names = [str(v).strip() for v in values]
        return tuple(dict.fromkeys(self._name(v, n, path) for v in names if v))

    def _values(self, raw: Any, n: int, path: PathLike) -> list:
        if raw is None:
            return []
        if isinstance(raw, str) and raw.strip().startswith("["):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as e:
                raise BertkitError(
                    f"line {n}: malformed JSON list of labels ({e.msg} at column {e.colno})", path
                ) from None
        if isinstance(raw, str):
            return raw.split(self.separator)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return [raw]
        if not isinstance(raw, list):
            raise BertkitError(
                f"line {n}: labels must be a list of names or ids, found {json_type(raw)}", path
            )
        return raw

    def _name(self, value: str, n: int, path: PathLike) -> str:
        if self.names is None or value in self._known:
            return value
        if value.isdigit():
            if int(value) < len(self.names):
                return self.names[int(value)]
            raise BertkitError(
                f"line {n}: label id {value} out of range: {self.source} has {len(self.names)} labels "
                f"(ids 0-{len(self.names) - 1})",
                path,
            )
        shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
        raise BertkitError(f"line {n}: label {value!r} is not in {self.source} ({shown})", path)

    @functools.cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(self.names or ())


def read_label_file(path: PathLike) -> list[str]:
    """The label names of a label file: one a line (blank lines skipped), none repeated."""
    seen: dict[str, int] = {}
    for n, name in numbered_lines(path):
        if name in seen:
            raise BertkitError(f"line {n}: label {name!r} repeats line {seen[name]}", path)
        seen[name] = n
    return list(seen)


def parse_label(
    raw: Any, regression: bool, n: int, path: PathLike, sets: LabelSets | None = None
) -> str | float | tuple[str, ...]:
    """The label of line `n` from its cell or JSON value: a name, a finite number (`regression`)
    or, with `sets`, a tuple of names."""
    if sets is not None:
        return sets.parse(raw, n, path)
    if isinstance(raw, (dict, list)) or raw is None:
        raise BertkitError(f"line {n}: label must be a string or a number, found {json_type(raw)}", path)
    value = str(raw).strip()
    if not value:
        raise BertkitError(f"line {n}: empty label", path)
    if not regression:
        return value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BertkitError(f"line {n}: regression label {value!r} is not a finite number", path)
    return number


def label_vocab(examples: Iterable[TextExample | TokenExample]) -> list[str]:
    """The sorted set of labels (tags for token examples); unlabelled examples add nothing."""
    labels: set[str] = set()
    for ex in examples:
        if isinstance(ex, TokenExample):
            labels.update(ex.tags or ())
        elif isinstance(ex.label, float):
            raise ValueError("regression labels have no vocabulary")
        elif isinstance(ex.label, tuple):
            labels.update(ex.label)
        elif ex.label is not None:
            labels.add(ex.label)
    return sorted(labels)


def check_labels(
    examples: Sequence[TextExample | TokenExample],
    label2id: Mapping[str, int],
    path: PathLike,
    map_unknown_to: str | None = None,
) -> list[TextExample | TokenExample]:
    """Check that every label of a dev/test file was seen in training (is in `label2id`).

    An unseen label is an error naming the file, line and label, unless `map_unknown_to` (itself a
    known label, e.g. "O") is given: then unseen labels become it in the returned copies.
    """
    if map_unknown_to is not None and map_unknown_to not in label2id:
        raise BertkitError(f"map_unknown_to={map_unknown_to!r} is not a training label", path)
    names = sorted(label2id)
    known = (
        "training labels: "
        + ", ".join(names[:20])
        + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    )
    out: list[TextExample | TokenExample] = []
    for ex in examples:
        if isinstance(ex, TokenExample) and ex.tags is not None:
            bad = [i for i, t in enumerate(ex.tags) if t not in label2id]
            if bad and map_unknown_to is None:
                i = bad[0]
                raise BertkitError(
                    f"line {ex.line}: tag {ex.tags[i]!r} (token {i + 1}, {ex.tokens[i]!r}) never occurs "
                    f"in the training data ({known})",
                    path,
                )
            if bad and map_unknown_to is not None:  # (else raised just above)
                ex = replace(ex, tags=[t if t in label2id else map_unknown_to for t in ex.tags])
        elif isinstance(ex, TextExample) and isinstance(ex.label, tuple):
            unseen = [x for x in ex.label if x not in label2id]
            if unseen and map_unknown_to is None:
                raise BertkitError(
                    f"line {ex.line}: label {unseen[0]!r} never occurs in the training data ({known})", path
                )
            if unseen and map_unknown_to is not None:  # (else raised just above)
                mapped = (x if x in label2id else map_unknown_to for x in ex.label)
                ex = replace(ex, label=tuple(dict.fromkeys(mapped)))
        elif isinstance(ex, TextExample) and isinstance(ex.label, str) and ex.label not in label2id:
            if map_unknown_to is None:
                raise BertkitError(
                    f"line {ex.line}: label {ex.label!r} never occurs in the training data ({known})", path
                )
            ex = replace(ex, label=map_unknown_to)
        out.append(ex)
    return out

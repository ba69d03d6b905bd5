"""Class weights for the classification and NER losses (`--class-weights none|auto|FILE`).

A task keeps two settings: `class_weighting`, what the user asked for ("none", "auto" or the path
of a file), and `class_weights`, the resolved weights (one float per label, in label order, or
None), which `Task.prepare` fills in from the training features and `info()` saves with the
run's settings. Prediction never reads either: a loaded model needs neither the file nor them.

auto: scikit-learn's "balanced" convention, w_c = n / (k * n_c), with n the labelled training
targets (classification: features, one per window; NER: first sub-tokens that carry a tag), n_c
those of class c and k the number of classes that occur. Equivalently, the weights are inversely
proportional to the class frequencies f_c = n_c / n, normalised so that sum_c f_c * w_c = 1: an
average target weighs 1, so the loss keeps its scale (and its sum / loss_norm convention). A label
that never occurs in the training features (a class missing from one cross-validation fold) gets
1.0: it is never a target there, so its weight does not change the loss.

FILE: `label<TAB>weight` lines (blank lines skipped), or a JSON object {"label": weight}. Every
label of the model needs a positive, finite weight; a label the model lacks, a label given twice,
a weight that is not a number or not positive is an error naming the file and line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from bertkit.errors import BertkitError

NONE, AUTO = "none", "auto"


def counts(targets: Iterable[int], n_classes: int) -> list[int]:
    """How often each class id occurs among `targets`."""
    out = [0] * n_classes
    for t in targets:
        out[t] += 1
    return out


def balanced(class_counts: Sequence[int]) -> list[float]:
    """w_c = n / (k * n_c) over the k classes that occur (sklearn's "balanced"); 1.0 for the others."""
    n, k = sum(class_counts), sum(1 for c in class_counts if c > 0)
    return [n / (k * c) if c > 0 else 1.0 for c in class_counts]


def resolve(spec: str, labels: Sequence[str], targets: Iterable[int]) -> list[float] | None:
    """The weights `spec` ("auto" or a file) gives; auto counts the training targets' class ids."""
    if spec == AUTO:
        return balanced(counts(targets, len(labels)))
    return read_weights(spec, labels)


def check_length(weights: list[float] | None, labels: Sequence[str] | None) -> None:
    """Resolved weights must give one weight per label."""
    if weights is not None and (labels is None or len(weights) != len(labels)):
        raise BertkitError(f"{len(weights)} class weights for {len(labels or [])} labels")


def read_weights(path: str | Path, labels: Sequence[str]) -> list[float]:
    """A weights file (`label<TAB>weight` lines or a JSON object) as weights in `labels`' order."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM is no label
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise BertkitError(f"cannot read the class weights: {reason}", path) from None
    is_json = text.lstrip().startswith("{")
    entries = _json_entries(text, path) if is_json else _tsv_entries(text, path)
    known = set(labels)
    given: dict[str, tuple[float, int]] = {}
    for label, value, line in entries:
        if label not in known:
            raise _error(path, line, f"{label!r} is not a label of the model ({', '.join(labels)})")
        if label in given:
            raise _error(path, line, f"{label!r} is given twice (first on line {given[label][1]})")
        given[label] = (_weight(value, not is_json, label, line, path), line)
    for label in labels:
        if label not in given:
            raise BertkitError(f"no weight for the label {label!r} (every label needs one)", path)
    return [given[label][0] for label in labels]


def _error(path: str | Path, line: int, message: str) -> BertkitError:
    return BertkitError(f"line {line}: {message}", path)


def _weight(value: object, text: bool, label: str, line: int, path: str | Path) -> float:
    """A weight from a TSV line's text (`text`) or a JSON value (a JSON string is no number)."""
    number = value
    if text and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise _error(path, line, f"the weight of {label!r} is not a number: {value!r}")
    if not (math.isfinite(number) and number > 0):
        raise _error(path, line, f"the weight of {label!r} must be a positive number, not {value!r}")
    return float(number)


def _tsv_entries(text: str, path: str | Path) -> list[tuple[str, object, int]]:
    entries: list[tuple[str, object, int]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        parts = raw.split("\t")
        if len(parts) != 2:
            raise _error(path, n, f"expected label<TAB>weight, got {raw!r}")
        entries.append((parts[0].strip(), parts[1], n))
    return entries


def _skip(text: str, i: int) -> int:
    """The index of the first character at or after `i` that is not JSON whitespace."""
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i


def _json_entries(text: str, path: str | Path) -> list[tuple[str, object, int]]:
    """A JSON object's (key, value, line of the key), in file order (json.loads keeps no lines)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BertkitError(f"line {e.lineno}: not valid JSON ({e.msg})", path) from None
    if not isinstance(obj, dict):
        raise BertkitError('line 1: expected a JSON object {"label": weight, ...}', path)
    # The text is a valid JSON object: walk it again, key by key, to know each key's line.
    decoder = json.JSONDecoder()
    entries: list[tuple[str, object, int]] = []
    i = _skip(text, 0) + 1  # past "{"
    while True:
        i = _skip(text, i)
        if text[i] == "}":
            return entries
        line = text.count("\n", 0, i) + 1
        key, i = decoder.parse_string(text, i + 1)  # type: ignore[attr-defined]
        value, i = decoder.raw_decode(text, _skip(text, _skip(text, i) + 1))  # past ":"
        entries.append((key, value, line))
        i = _skip(text, i)
        if text[i] == ",":
            i += 1

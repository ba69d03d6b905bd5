"""The SQuAD reader: SQuAD v1.1 JSON, questions on paragraphs with their answers' places, read
into `QAExample`s. A problem is a one-line `BertkitError` naming the file and the place in the
JSON, e.g. `data[0].paragraphs[2].qas[1]`."""

from __future__ import annotations

import json
from typing import Any

from bertkit.data.cleaning import PathLike, json_type, read_text
from bertkit.data.examples import QAExample
from bertkit.errors import BertkitError


def read_squad(path: PathLike) -> list[QAExample]:
    """Read SQuAD v1.1 JSON. Each answer must lie in its context at `answer_start`; a missing or
    mistyped field is an error naming its place, e.g. `data[0].paragraphs[2].qas[1]`."""
    text = read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BertkitError(f"line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})", path) from None
    out: list[QAExample] = []
    seen: dict[str, str] = {}
    for a, article in enumerate(_get(doc, "data", list, "", path)):
        at = f"data[{a}]"
        title = _get(article, "title", str, at, path, optional=True)
        for p, para in enumerate(_get(article, "paragraphs", list, at, path)):
            pt = f"{at}.paragraphs[{p}]"
            context = _get(para, "context", str, pt, path)
            for q, qa in enumerate(_get(para, "qas", list, pt, path)):
                qt = f"{pt}.qas[{q}]"
                qid = str(_get(qa, "id", (str, int), qt, path))
                if qid in seen:
                    raise BertkitError(f"{qt}: question id {qid!r} repeats {seen[qid]}", path)
                seen[qid] = qt
                question = _get(qa, "question", str, qt, path)
                answers = []
                for k, ans in enumerate(_get(qa, "answers", list, qt, path)):
                    ak = f"{qt}.answers[{k}]"
                    answer, start = _get(ans, "text", str, ak, path), _get(ans, "answer_start", int, ak, path)
                    if context[start : start + len(answer)] != answer or start < 0:
                        raise BertkitError(
                            f"{ak}: answer {answer!r} of question {qid!r} is not in the context at "
                            f"answer_start {start} (found {context[max(start, 0) : start + len(answer)]!r})",
                            path,
                        )
                    answers.append({"text": answer, "answer_start": start})
                out.append(QAExample(qid, question, context, answers, title))
    if not out:
        raise BertkitError("no questions in the file", path)
    return out


def _get(obj: Any, key: str, kind: type | tuple, where: str, path: PathLike, optional: bool = False) -> Any:
    place = where or "top level"
    if not isinstance(obj, dict):
        raise BertkitError(f"{place}: expected an object, found {json_type(obj)}", path)
    if key not in obj:
        if optional:
            return None
        raise BertkitError(f"{place}: missing field {key!r}", path)
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names: dict[type | tuple, str] = {list: "an array", str: "a string", int: "an integer"}
        name = names.get(kind, "a string or integer")
        raise BertkitError(
            f"{where + '.' if where else ''}{key}: expected {name}, found {json_type(value)}", path
        )
    return value

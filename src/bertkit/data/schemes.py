"""NER tag schemes: their names, detection from a file's tags, strict checks, and exact
conversion to and from IOB2, the one scheme bertkit works in.

X is an entity type; every scheme also has O (outside).

- iob2 (iob, bio): B-X begins every entity, I-X continues it.
- iob1: I-X begins and continues; B-X begins only an entity right after one of the same type.
- ioe: E-X ends an entity, I-X is the rest of it. Written as IOE2 (E- ends every entity); read
  as either IOE1 or IOE2: an I- run with no E- ends where it stops.
- bioes (iobes): B- begins, I- continues, E- ends, S- is a one-token entity.
- bmes (bmeos): BIOES with M- (middle) for I-, as Chinese NER files write it.
- bilou (biluo): BIOES with L- (last) for E- and U- (unit) for S-, as spaCy writes it.

`detect` picks a file's scheme from its tags; `to_iob2` checks a file's sentences and rewrites
them as IOB2; `from_iob2` writes IOB2 tags back in any scheme. On valid sequences the two are
exact inverses, so entity spans (and seqeval's scores on them) are the same in every scheme.
Where schemes share every tag a file uses, detection names one of them and reads the same
entities: a BMES file whose entities are one or two tokens long has no M- and reads as BIOES;
an IOE1 file with no two adjacent entities of one type has I- tags only and reads as IOB1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from bertkit.errors import BertkitError

log = logging.getLogger("bertkit")

PathLike = str | os.PathLike

NAMES = ("iob1", "iob2", "ioe", "bioes", "bmes", "bilou")
ALIASES = {"iob": "iob2", "bio": "iob2", "iobes": "bioes", "bmeos": "bmes", "biluo": "bilou"}
CHOICES = ("auto", *NAMES, *ALIASES)  # what --tag-scheme and --output-scheme take

# The begin, inside, end and single-token letters of the schemes shaped like BIOES.
_LETTERS = {"bioes": tuple("BIES"), "bmes": tuple("BMES"), "bilou": tuple("BILU")}
# The prefixes each scheme's tags may have.
_PREFIXES = {"iob1": "BI", "iob2": "BI", "ioe": "IE", **{k: "".join(v) for k, v in _LETTERS.items()}}
# The scheme a prefix gives away, for "tag 'E-PER' is BIOES, not IOB1".
_IMPLIED = {"E": "bioes", "S": "bioes", "M": "bmes", "L": "bilou", "U": "bilou"}
# What the warning about repaired entity beginnings calls the inside tags.
_INSIDE = {"bmes": "M-/E-", "bilou": "I-/L-"}


def canonical(name: str) -> str:
    """The scheme `name` (or its alias) stands for; "auto" stays "auto"."""
    name = ALIASES.get(name.lower(), name.lower())
    if name != "auto" and name not in NAMES:
        aliases = ", ".join(f"{a}={s}" for a, s in ALIASES.items())
        raise BertkitError(f"unknown tag scheme {name!r}; expected auto, {', '.join(NAMES)} ({aliases})")
    return name


def output_scheme(name: str | None, trained: str | None) -> str:
    """The scheme tags are written in: `name`, where "auto" is `trained` (the scheme of the
    model's training file, saved with it), IOB2 when that is unknown; None is IOB2."""
    name = canonical(name or "iob2")
    return (trained or "iob2") if name == "auto" else name


def detect(sequences: Iterable[Sequence[str]]) -> str:
    """Which scheme a file's tag sequences use, by the prefixes they hold:

    any M- means BMES; else any L- or U- means BILOU; else any S-, or E- with B-, means BIOES;
    else E- (with I- only) means IOE. Otherwise IOB1 or IOB2: count the entities that begin (at
    the start of a sentence, after O or after another type) with I- and those that begin with
    B-: IOB2 begins every entity with B-; IOB1 begins them with I- and uses B- only between two
    adjacent entities of one type. IOB1 when I- beginnings outnumber B- beginnings, else IOB2. A
    majority, not "any", because real files carry slips both ways: CoNLL-2003's IOB1 train
    begins 2 entities with B- (among 23,429), Weibo NER's IOB2 train and test begin 14 with I-.
    """
    seqs = list(sequences)
    found = {t[0] for t in set().union(*seqs) if t != "O"}
    if "M" in found:
        return "bmes"
    if found & {"L", "U"}:
        return "bilou"
    if "S" in found or {"E", "B"} <= found:
        return "bioes"
    if "E" in found:
        return "ioe"
    i_starts = sum(len(starts(s, "I")) for s in seqs)
    return "iob1" if i_starts > sum(len(starts(s, "B")) for s in seqs) else "iob2"


def starts(tags: Sequence[str], prefix: str) -> list[int]:
    """Positions where a `prefix` tag begins an entity: at the start, after O or another type."""
    return [i for i, t in enumerate(tags) if t[0] == prefix and (not i or tags[i - 1][2:] != t[2:])]


# --------------------------------------------------------------------------- reading


def to_iob2(sentences: Sequence[tuple[int, list[str]]], scheme: str, path: PathLike) -> str:
    """Check the tags of a file's sentences, (line of the first tag, tags), and rewrite each as
    IOB2 in place; returns the scheme read. A given `scheme` is checked strictly; "auto" detects
    it (`detect`), refuses a file that mixes schemes, and reads an entity that begins with an
    inside tag (I-, E-, M-, L-) as begun, with one warning."""
    use = canonical(scheme)
    strict = use != "auto"
    if not strict:
        use = detect(tags for _, tags in sentences)
    seen = set().union(*(tags for _, tags in sentences))
    _check_alphabet(sentences, seen, use, strict, path)
    repaired: list[int] = []
    for start, tags in sentences:
        if use in _LETTERS:
            if strict:
                _check_closed(tags, start, use, path)
            begin, inside, end, single = _LETTERS[use]
            to = {begin: "B", inside: "I", end: "I", single: "B"}
            tags[:] = [t if t == "O" else to[t[0]] + t[1:] for t in tags]
        elif use == "ioe":
            tags[:] = _ioe_to_iob2(tags)
        # IOB1 and IOB2 read alike (an I- that cannot continue an entity begins one): they differ
        # only in what a strict scheme rejects.
        for i in starts(tags, "I"):
            if strict and use == "iob2":
                where = f"follows {tags[i - 1]}" if i else "begins a sentence"
                raise BertkitError(
                    f"line {start + i}: tag {tags[i]} {where} (IOB2 requires B-{tags[i][2:]} first)", path
                )
            repaired.append(start + i)
            tags[i] = "B" + tags[i][1:]
    if repaired and use != "iob1":
        log.warning(
            "%s: %d entities begin with %s (first at line %d); read as B- (scheme=%r makes this an error)",
            path, len(repaired), _INSIDE.get(use, "I-/E-"), repaired[0], use,
        )  # fmt: skip
    return use


def _first(sentences: Sequence[tuple[int, list[str]]], wanted) -> tuple[int, str]:
    """(line, tag) of the first tag for which `wanted(tag)` holds."""
    return next((s + i, t) for s, tags in sentences for i, t in enumerate(tags) if wanted(t))


def _check_alphabet(
    sentences: Sequence[tuple[int, list[str]]], seen: set[str], use: str, strict: bool, path: PathLike
) -> None:
    """Every tag is O or a known prefix, a dash and a type, and its prefix is one of `use`'s."""
    bad = {t for t in seen if t != "O" and not (t[:1] in "BIESMLU" and t[1:2] == "-" and t[2:])}
    if bad:
        line, tag = _first(sentences, bad.__contains__)
        raise BertkitError(f"line {line}: tag {tag!r} is not O, B-X, I-X, E-X or S-X", path)
    alien = {t for t in seen if t != "O" and t[0] not in _PREFIXES[use]}
    if not alien:
        return
    line, tag = _first(sentences, alien.__contains__)
    name = use.upper()
    if not strict:  # only BMES and BILOU, told apart by a prefix of their own, get here
        marks = "M" if use == "bmes" else "LU"
        m_line, m_tag = _first(sentences, lambda t: t[0] in marks and t[1:2] == "-")
        raise BertkitError(
            f"line {line}: tag {tag!r} mixes tag schemes: {m_tag[0]}- tags (first at line {m_line}) "
            f"are {name}, which has no {tag[0]}- tags",
            path,
        )
    if tag[0] in _IMPLIED:
        raise BertkitError(f"line {line}: tag {tag!r} is {_IMPLIED[tag[0]].upper()}, not {name}", path)
    allowed = ", ".join(f"{p}-X" for p in _PREFIXES[use])
    raise BertkitError(f"line {line}: tag {tag!r} is not {name} (its tags are {allowed} and O)", path)


def _check_closed(tags: list[str], start: int, use: str, path: PathLike) -> None:
    """Strict BIOES (BMES, BILOU): inside and end tags only within an entity its begin tag
    opened, and every entity so opened closed by its end tag."""
    b, i, e, _ = _LETTERS[use]
    for k, (p, t) in enumerate(zip(("O", *tags), (*tags, "O"), strict=True)):
        inside = p[0] in (b, i)
        if inside != (t[0] in (i, e)) or (inside and p[2:] != t[2:]):
            if inside:
                raise BertkitError(f"line {start + k - 1}: entity {p} is not closed with {e}-{p[2:]}", path)
            raise BertkitError(
                f"line {start + k}: tag {t} follows {p} ({use.upper()} requires {b}-{t[2:]})", path
            )


def _ioe_to_iob2(tags: list[str]) -> list[str]:
    """IOE1 or IOE2 as IOB2: an entity begins where the tag before is O, an E- or another type."""
    out = []
    for k, t in enumerate(tags):
        p = tags[k - 1] if k else "O"
        begins = p == "O" or p[0] == "E" or p[2:] != t[2:]
        out.append(t if t == "O" else ("B" if begins else "I") + t[1:])
    return out


# --------------------------------------------------------------------------- writing


def from_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """IOB2 tags written in `scheme` (a name or alias). An I- tag that cannot continue an
    entity (as an unconstrained decoder may give) begins one, as seqeval reads it; IOB2 comes
    back unchanged."""
    scheme = canonical(scheme)
    if scheme == "auto":
        raise BertkitError("from_iob2 needs a tag scheme, not 'auto' (see output_scheme)")
    if scheme == "iob2":
        return list(tags)
    out = []
    for k, t in enumerate(tags):
        if t == "O":
            out.append(t)
            continue
        p, n = tags[k - 1] if k else "O", tags[k + 1] if k + 1 < len(tags) else "O"
        begins = t[0] != "I" or p == "O" or p[2:] != t[2:]
        ends = n[0] != "I" or n[2:] != t[2:]
        out.append(_prefix(scheme, begins, ends, p != "O" and p[2:] == t[2:]) + t[1:])
    return out


def _prefix(scheme: str, begins: bool, ends: bool, after_same: bool) -> str:
    """The prefix of a token of an entity in `scheme`: whether it begins the entity, ends it, and
    whether the token before belongs to an entity of the same type."""
    if scheme == "iob1":
        return "B" if begins and after_same else "I"
    if scheme == "ioe":
        return "E" if ends else "I"
    b, i, e, s = _LETTERS[scheme]
    return (s if ends else b) if begins else (e if ends else i)

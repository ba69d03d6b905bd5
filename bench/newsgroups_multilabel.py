"""20 Newsgroups as a multi-label set: a message's labels are the groups it was posted to.

    python bench/newsgroups_multilabel.py --output runs/data/20ng-multilabel --check

Reads `20news-bydate.tar.gz` in place (members `20news-bydate-{train,test}/<group>/<id>`). A
message's labels are the groups of its `Newsgroups:` header (folded lines joined, names split at
commas and spaces) that are among the tar's group folders, plus the folder it was filed in. A
message filed in several folders is one example (key: its Message-ID, else its body) carrying the
labels of every copy. The text is the body (everything after the first empty line, so no header)
with each run of whitespace made one space; messages with an empty body are skipped.

Train and test are the by-date split, less the test messages that are also in train; dev is a
seeded share of train, less the messages with a label the rest of train lacks (they stay in
train). Writes `train.tsv`, `dev.tsv`, `test.tsv` (`text<TAB>group,group`, no header row) and
`labels.txt` (the groups, sorted, one a line), each atomically, and prints counts per split. With
`--check`, reads the files back with bertkit's multi-label reader and compares.

Note: the by-date release strips most headers (Newsgroups, Message-ID, Xref, ...); on the shared
copy no message keeps a `Newsgroups:` header, so labels come from folders alone: a text has two
or more only where the same body was filed in several folders.

A long-tailed topic set (the shape of news-topic corpora: a few large topics, most with a handful
of texts, broad topics beside narrow ones) is made from the same messages with

    python bench/newsgroups_multilabel.py --hierarchy --long-tail 1.5 --output runs/data/20ng-longtail

`--hierarchy` adds to each message every prefix of its groups' names shared by two groups or more
(`comp.sys.mac.hardware` also gets `comp` and `comp.sys`); `--long-tail A` keeps, of the groups in
a seeded order r = 1, 2, ..., the share r^-A of each group's train and of its test messages (at
least `MIN_KEPT` of each), before dev is split off.
"""

from __future__ import annotations

import argparse
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.data.folders import read_folder_classification
from bertkit.fileio import write_text

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
TAR = DATA / "en" / "20newsgroups" / "20news-bydate.tar.gz"
SPLITS = {"train": "20news-bydate-train", "test": "20news-bydate-test"}
MIN_KEPT = 3  # `--long-tail`: messages kept of each group and split at least


@dataclass
class Message:
    text: str
    labels: set[str]


@dataclass
class Stats:
    """What happened on the way, for the printed summary."""

    read: Counter = field(default_factory=Counter)  # files per by-date split
    empty: Counter = field(default_factory=Counter)  # skipped: empty body
    with_header: Counter = field(default_factory=Counter)  # had a Newsgroups: header
    merged: Counter = field(default_factory=Counter)  # copies folded into an earlier message
    in_train: int = 0  # test messages dropped: also in train
    moved_back: int = 0  # picked for dev, kept in train for a label the rest lacked


def read_tar(path: Path) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """{split: [(group, raw message)]} (bertkit's folder-per-label reader, in place in the tar)
    and the sorted group folders."""
    members = {
        s: [(e.label, e.text) for e in read_folder_classification(path / d)] for s, d in SPLITS.items()
    }
    return members, sorted({g for ms in members.values() for g, _ in ms})


def parse(raw: str) -> tuple[dict[str, str], str]:
    """(header fields by lower-case name, folded lines joined, first of a repeated one; body)."""
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    fields: list[list[str]] = []
    for line in head.split("\n"):
        if line[:1].isspace() and fields:
            fields[-1][1] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            fields.append([name.strip().lower(), value.strip()])
    out: dict[str, str] = {}
    for name, value in fields:
        out.setdefault(name, value)
    return out, body


def collect(members: list[tuple[str, str]], groups: set[str], split: str, stats: Stats) -> dict:
    """{key: Message} for one split, copies of a message merged (their labels joined)."""
    out: dict[str, Message] = {}
    for group, raw in members:
        stats.read[split] += 1
        fields, body = parse(raw)
        text = " ".join(body.split())
        if not text:
            stats.empty[split] += 1
            continue
        stats.with_header[split] += "newsgroups" in fields
        posted = set(re.split(r"[,\s]+", fields.get("newsgroups", "")))
        labels = {group} | (posted & groups)
        key = fields.get("message-id") or text
        if key in out:
            stats.merged[split] += 1
            out[key].labels |= labels
        else:
            out[key] = Message(text, labels)
    return out


def split_dev(train: list[Message], share: float, seed: int, stats: Stats) -> tuple[list, list]:
    """(train, dev): a seeded `share` of train for dev, each label of dev also in the train left."""
    picked = set(random.Random(seed).sample(range(len(train)), round(len(train) * share)))
    seen = Counter(label for i, m in enumerate(train) if i not in picked for label in m.labels)
    dev = set()
    for i in sorted(picked):
        if all(seen[label] for label in train[i].labels):
            dev.add(i)
        else:  # back to train: its labels are there from now on
            stats.moved_back += 1
            seen.update(train[i].labels)
    return [m for i, m in enumerate(train) if i not in dev], [train[i] for i in sorted(dev)]


def parents(groups: list[str]) -> dict[str, list[str]]:
    """{group: the proper prefixes of its name (at dots) that two groups or more share}."""

    def prefixes(g: str) -> list[str]:
        parts = g.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts))]

    shared = Counter(p for g in groups for p in prefixes(g))
    return {g: [p for p in prefixes(g) if shared[p] >= 2] for g in groups}


def long_tail(messages: list[Message], groups: list[str], alpha: float, seed: int) -> list[Message]:
    """Of the groups in a seeded order r = 1, 2, ..., the share r^-alpha of each one's messages
    (MIN_KEPT at least); a message is kept when one of its groups keeps it. Order preserved."""
    order = random.Random(seed).sample(groups, len(groups))
    kept: set[int] = set()
    for rank, group in enumerate(order, start=1):
        mine = [i for i, m in enumerate(messages) if group in m.labels]
        n = min(len(mine), max(MIN_KEPT, round(len(mine) * rank**-alpha)))
        kept.update(random.Random(f"{seed}/{group}").sample(mine, n))
    return [m for i, m in enumerate(messages) if i in kept]


def build(
    tar: Path, share: float, seed: int, hierarchy: bool = False, alpha: float | None = None
) -> tuple[dict[str, list[Message]], list[str], Stats]:
    members, groups = read_tar(tar)
    stats = Stats()
    train, test = (collect(members[s], set(groups), s, stats) for s in ("train", "test"))
    stats.in_train = sum(key in train for key in test)
    kept = {"train": list(train.values()), "test": [m for key, m in test.items() if key not in train]}
    if alpha is not None:
        kept = {s: long_tail(ms, groups, alpha, seed) for s, ms in kept.items()}
    labels = groups
    if hierarchy:
        up = parents(groups)
        for m in kept["train"] + kept["test"]:
            m.labels |= {p for g in list(m.labels) for p in up[g]}
        labels = sorted(set(groups) | {p for ps in up.values() for p in ps})
    kept_train, dev = split_dev(kept["train"], share, seed, stats)
    return {"train": kept_train, "dev": dev, "test": kept["test"]}, labels, stats


def row(m: Message) -> str:
    return f"{m.text}\t{','.join(sorted(m.labels))}"


def report(splits: dict[str, list[Message]], stats: Stats) -> None:
    for s in ("train", "test"):
        print(
            f"{s} (by date): {stats.read[s]} files, {stats.empty[s]} with an empty body skipped, "
            f"{stats.merged[s]} copies merged, {stats.with_header[s]} with a Newsgroups: header"
        )
    print(f"test messages also in train, dropped from test: {stats.in_train}")
    print(f"picked for dev but kept in train (a label the rest of train lacked): {stats.moved_back}")
    for s, ms in splits.items():
        n = len(ms) or 1
        mean, multi = sum(len(m.labels) for m in ms) / n, sum(len(m.labels) >= 2 for m in ms) / n
        distinct = len({label for m in ms for label in m.labels})
        print(
            f"{s}: {len(ms)} texts, {mean:.3f} labels per text, {multi:.2%} with 2 or more, {distinct} labels"
        )


def check(out: Path, splits: dict[str, list[Message]]) -> None:
    """Read every file back with bertkit's multi-label reader; texts and labels must be as written."""
    from bertkit.tasks.registry import load_examples

    opts = {"multi_label": True, "text_column": "0", "label_column": "1", "labels_file": out / "labels.txt"}
    for s, ms in splits.items():
        got = [(e.text, set(e.label)) for e in load_examples("classify", out / f"{s}.tsv", **opts)]
        if got != [(m.text, m.labels) for m in ms]:
            raise SystemExit(f"{out / s}.tsv: bertkit reads other texts or labels than were written")
        print(f"{s}.tsv: bertkit reads {len(got)} examples, texts and labels as written")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tar", type=Path, default=TAR, help=f"the 20news-bydate tar.gz (default {TAR})")
    out = Path("runs/data/20ng-multilabel")
    p.add_argument("--output", type=Path, default=out, help=f"folder for the files made (default {out})")
    p.add_argument("--seed", type=int, default=42, help="seed of the dev choice (default 42)")
    p.add_argument("--dev-share", type=float, default=0.1, help="share of train picked for dev (default 0.1)")
    p.add_argument("--check", action="store_true", help="read the files back with bertkit's reader")
    p.add_argument(
        "--hierarchy", action="store_true", help="add the name prefixes two groups share as labels"
    )
    p.add_argument(
        "--long-tail", type=float, metavar="A", help="keep the share r^-A of the r-th group (seeded order)"
    )
    args = p.parse_args()
    if not 0 <= args.dev_share <= 1:
        p.error("--dev-share must lie between 0 and 1")
    if args.long_tail is not None and args.long_tail < 0:
        p.error("--long-tail must be 0 or more")
    splits, groups, stats = build(args.tar, args.dev_share, args.seed, args.hierarchy, args.long_tail)
    args.output.mkdir(parents=True, exist_ok=True)
    for s, ms in splits.items():
        write_text(args.output / f"{s}.tsv", "".join(row(m) + "\n" for m in ms))
    write_text(args.output / "labels.txt", "".join(g + "\n" for g in groups))
    print(f"{args.output}: {len(groups)} labels")
    report(splits, stats)
    if args.check:
        check(args.output, splits)


if __name__ == "__main__":
    main()

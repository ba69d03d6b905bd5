"""The inputs of the checks: reading SST-2, CoNLL-2003 and the books, and `--prepare`, which
copies their small subsets out of ../shared/data."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import sys
import unicodedata
from pathlib import Path

import numpy as np

from .common import Ctx


def read_sst2(path: Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [r["label"] for r in rows]


def read_conll(path: Path) -> list[list[str]]:
    sents, words = [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        parts = line.split()
        if parts and parts[0] != "-DOCSTART-":
            words.append(parts[0])
        elif not parts and words:
            sents.append(words)
            words = []
    return sents


def long_passages(text_dir: Path, n: int, words: int = 250) -> list[str]:
    """Passages of about `words` words, whole paragraphs of the prepared books."""
    out, cur = [], []
    for path in sorted(text_dir.glob("*.txt.gz")):
        for para in gzip.open(path, "rt", encoding="utf-8").read().split("\n\n"):
            cur += para.split()
            if len(cur) >= words:
                out.append(" ".join(cur))
                cur = []
                if len(out) >= n:
                    return out
    return out


def strip_gutenberg(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines[:1000]) if ln.lstrip().startswith("*** START OF")), -1)
    end = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("*** END OF")), len(lines))
    return "\n".join(ln.rstrip() for ln in lines[start + 1 : end]).strip() + "\n"


def slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "-".join("".join(c if c.isalnum() else " " for c in ascii_name.lower()).split())


def prepare(dest: Path, source: Path, text_bytes: int) -> None:
    """Copy the small inputs of the checks from `source` (../shared/data) into `dest`."""
    if not (source / "en").is_dir():
        sys.exit(f"gpu_check: no data at {source} (give --source DIR or set BERTKIT_DATA)")
    files: dict[str, dict] = {}

    def put(rel: str, data: bytes, origin: str, **counts) -> None:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
        files[rel] = {
            "from": origin,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            **counts,
        }

    sst = source / "en/glue/SST-2"
    lines = (sst / "train.tsv").read_bytes().splitlines(keepends=True)
    put(
        "sst2/train.tsv", b"".join(lines[:10_001]), "en/glue/SST-2/train.tsv (first 10,000 rows)", rows=10_000
    )
    put("sst2/dev.tsv", (sst / "dev.tsv").read_bytes(), "en/glue/SST-2/dev.tsv", rows=872)
    for name, keep in (("train", 5000), ("valid", 1000)):
        blocks = (source / f"en/conll2003/{name}.txt").read_text(encoding="utf-8").split("\n\n")
        kept, n = [], 0
        for b in blocks:
            if n >= keep:
                break
            kept.append(b)
            n += int(bool(b.strip()) and not b.lstrip().startswith("-DOCSTART-"))
        body = ("\n\n".join(kept).strip("\n") + "\n").encode()
        put(f"conll2003/{name}.txt", body, f"en/conll2003/{name}.txt (first {n} sentences)", sentences=n)
    authors = sorted(p for p in (source / "en/gutenberg/books").iterdir() if p.is_dir())
    quota = text_bytes // max(1, len(authors))
    for author in authors:
        text, used = "", []
        for book in sorted(author.glob("*.txt.gz")):
            text += strip_gutenberg(gzip.open(book, "rt", encoding="utf-8-sig").read()) + "\n"
            used.append(book.name)
            if len(text.encode()) >= quota:
                break
        cut = text.encode()[:quota].decode("utf-8", "ignore")
        cut = cut[: cut.rfind("\n") + 1]
        origin = f"en/gutenberg/books/{author.name}/: {'; '.join(used)} (licence text stripped, cut)"
        put(f"text/{slug(author.name)}.txt.gz", gzip.compress(cut.encode(), mtime=0), origin, chars=len(cut))
    total = sum(f["bytes"] for f in files.values())
    (dest / "MANIFEST.json").write_text(json.dumps({"source": str(source), "files": files}, indent=2) + "\n")
    print(f"prepared {len(files)} files, {total / 1e6:.1f} MB, in {dest}; carry this folder")


def mean_tokens(ctx: Ctx, task: str) -> float:
    """Real tokens per training example (truncated at 128), as the model sees them."""
    if task not in ctx.facts.setdefault("mean_tokens", {}):
        from bertkit.tokenization.tokenizer import Tokenizer

        tok = Tokenizer.from_pretrained(ctx.dirs["tok"])
        if task == "classify":
            enc = tok(read_sst2(ctx.data / "sst2/train.tsv")[0], truncation=True, max_length=128)
        else:
            enc = tok(
                read_conll(ctx.data / "conll2003/train.txt"),
                is_split_into_words=True,
                truncation=True,
                max_length=128,
            )
        ctx.facts["mean_tokens"][task] = float(np.mean([len(i) for i in enc["input_ids"]]))
    return ctx.facts["mean_tokens"][task]

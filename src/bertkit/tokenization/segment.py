"""Word boundaries for text written without spaces, for whole-word masking.

BERT's tokenizer splits Chinese into single characters, so whole-word masking needs a word
segmentation from elsewhere (Chinese-BERT-wwm uses a segmenter's words). A segmenter here is a
function from a line to its words, in order, which must spell the line (whitespace aside):

    jieba    jieba.lcut (the `zh` extra: pip install "bertkit[zh]")
    rjieba   rjieba.cut, the Rust port of jieba (same dictionary, several times faster)
    spaces   the line is already segmented: words are separated by spaces, as a segmentation
             file has them (one line of space-separated words per corpus line)

BERT tokenization drops whitespace and puts each CJK character on its own, so a Chinese line
and its space-segmented form give the same tokens: a segmentation file is given as the corpus,
with `spaces`. `continuation` turns the words into one flag per token (True: the token continues
the word of the token before it), from the tokens' character offsets. Segmenters are imported
only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bertkit.errors import BertkitError

SEGMENTERS = ("jieba", "rjieba", "spaces")


def load_segmenter(name: str) -> Callable[[str], list[str]]:
    """The segmenter called `name` (one of SEGMENTERS); a missing package is a BertkitError."""
    if name == "spaces":
        return str.split
    if name not in SEGMENTERS:  # never imports an arbitrary module by name
        raise BertkitError(f"segmenter must be one of {', '.join(SEGMENTERS)}, not {name!r}")
    try:
        module = __import__(name)
    except ImportError:
        raise BertkitError(
            f"segmenter {name!r} needs the {name} package: pip install {name} (or bertkit[zh])"
        ) from None
    if name == "jieba":
        module.setLogLevel(60)  # no "Building prefix dict" chatter on stderr
        return module.lcut
    return module.cut


def word_starts(line: str, words: Sequence[str]) -> np.ndarray:
    """Character offsets (W,) where each word of `line` starts, found in order; whitespace
    between words is skipped. Words that do not spell the line are a BertkitError (the caller
    adds the file and line)."""
    starts, pos = [], 0
    for w in words:
        w = w.strip()
        if not w:
            continue
        at = line.find(w, pos)
        if at < 0 or line[pos:at].strip():
            raise BertkitError(f"the words do not spell the line: {w!r} not found at column {pos + 1}")
        starts.append(at)
        pos = at + len(w)
    return np.asarray(starts, dtype=np.int64)


def continuation(starts: np.ndarray, token_starts: Sequence[int]) -> np.ndarray:
    """(T,) bool for a line's tokens, given the character offset where each token starts and
    where each word starts: True for a token that starts inside a word (not at its start)."""
    t = np.asarray(token_starts, dtype=np.int64)
    cont = ~np.isin(t, starts)
    if len(cont):
        cont[0] = False  # a line's first token starts a word
    return cont

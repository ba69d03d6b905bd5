"""Dynamic padding against a row-by-row reference."""

import random

import torch

from bertkit.data.batching import IGNORE, pad_batch


def test_pad_batch_matches_row_by_row_padding():
    g = random.Random(0)
    feats = []
    for n in [5, 1, 9, 3, 9, 0]:
        ids = [g.randrange(1, 100) for _ in range(n)]
        feats.append(
            {
                "input_ids": ids,
                "token_type_ids": [g.randrange(2) for _ in ids],
                "labels": ids[: max(0, n - 1)],
                "y": n,
            }
        )
    got = pad_batch(feats, pad_id=7, keys=["labels", "y"])
    assert got["input_ids"].shape == (6, 9)
    for r, f in enumerate(feats):
        n = len(f["input_ids"])
        assert got["input_ids"][r].tolist() == f["input_ids"] + [7] * (9 - n)
        assert got["token_type_ids"][r].tolist() == f["token_type_ids"] + [0] * (9 - n)
        assert got["attention_mask"][r].tolist() == [1] * n + [0] * (9 - n)
        assert got["labels"][r].tolist() == f["labels"] + [IGNORE] * (9 - len(f["labels"]))
    assert torch.equal(got["y"], torch.tensor([5, 1, 9, 3, 9, 0]))

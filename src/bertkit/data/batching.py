"""Batches of token ids: dynamic padding, length-grouped shuffling for training, and
length-sorted batches for inference (order restored afterwards)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

import torch

IGNORE = -100  # label of positions the loss skips (sub-tokens, special tokens, padding)


def filled(rows: Sequence[Sequence[int]], T: int) -> torch.Tensor:
    """(B, T) bool, True at the positions `rows` fill (each row's first len(row) positions)."""
    return torch.arange(T) < torch.tensor([len(r) for r in rows])[:, None]


def pad_rows(rows: Sequence[Sequence[int]], T: int, fill: int) -> torch.Tensor:
    """(B, T) long tensor of `rows`, each padded with `fill` to T (no Python loop per row)."""
    out = torch.full((len(rows), T), fill, dtype=torch.long)
    flat = torch.tensor(list(itertools.chain.from_iterable(rows)), dtype=torch.long)
    out[filled(rows, T)] = flat  # row-major: each row's values in order
    return out


def pad_batch(features: Sequence[dict], pad_id: int, keys: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Pad `input_ids`/`token_type_ids`/`attention_mask` to the longest row; per-token label lists in
    `keys` are padded with IGNORE; scalar fields become a tensor."""
    T = max(len(f["input_ids"]) for f in features)
    ids = pad_rows([f["input_ids"] for f in features], T, pad_id)
    types = pad_rows([f["token_type_ids"] for f in features], T, 0)
    mask = filled([f["input_ids"] for f in features], T).long()
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    for key in keys:
        values = [f[key] for f in features]
        if isinstance(values[0], list):
            batch[key] = pad_rows(values, T, IGNORE)
        else:
            batch[key] = torch.tensor(values)
    return batch


def length_grouped_order(
    lengths: Sequence[int], batch_size: int, seed: int, group: bool = True
) -> list[list[int]]:
    """Shuffled training batches of similar lengths: shuffle, cut into mega-batches of 8 batches,
    sort each by length, split, shuffle the batches. Padding drops to ~10 % while every epoch still
    sees a fresh random order (the `group_by_length` sampler of transformers, which sorts 50
    batches at a time). Small mega-batches because length correlates with content: in CoNLL-2003
    sorting 50 batches gathers headlines and score tables into their own batches, whose few
    tokens then weigh more in the loss. `group=False`: plain shuffled batches (the Trainer's
    default), for comparison."""
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if not group:
        return [idx[j : j + batch_size] for j in range(0, len(idx), batch_size)]
    mega = batch_size * 8
    batches = []
    for s in range(0, len(idx), mega):
        chunk = sorted(idx[s : s + mega], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_order(lengths: Sequence[int], max_tokens: int, max_batch: int = 256) -> Iterator[list[int]]:
    """Inference batches of similar lengths within a token budget (B * T <= max_tokens);
    the caller puts results back in input order by the indices."""
    idx = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in idx:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and ((len(batch) + 1) * longest > max_tokens or len(batch) >= max_batch):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch

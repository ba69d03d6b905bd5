"""Optional layers for token tagging (NER): a linear-chain CRF and a BiLSTM under the tagging head.

A softmax head labels each token on its own. A CRF scores whole tag paths y = (y_0 .. y_{L-1}),

    score(y) = start[y_0] + sum_t emissions[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t] + end[y_{L-1}]

and is trained on log p(y | x) = score(y) - log Z, with Z the sum of exp(score) over all C^L paths,
computed by the forward algorithm in O(L C^2). Decoding is Viterbi. `CRF.from_labels(labels)` also
forbids the transitions that are invalid in IOB2 (O -> I-X, B-X -> I-Y, I-X -> I-Y, start -> I-X),
so decoded tags are always valid IOB2.

Masks are (B, T) bool and left-aligned: sequence b has mask[b, :L_b] True and the rest False.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# Score added to a forbidden transition. Not -inf: if every way into a tag is forbidden (say I-X
# without B-X in the labels), logsumexp over all -inf inputs has a NaN gradient. -1e4 is "never"
# in practice (exp(-1e4) is 0 in float32) yet finite. A buffer, not a parameter: training can't undo it.
FORBIDDEN = -1e4


def iob2_allowed(labels: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed transitions (C, C) [from, to] and allowed first tags (C,) for IOB2 labels.

    I-X may only follow B-X or I-X; everything else is allowed (any tag may end a sequence).
    """
    parsed = []
    for label in labels:
        prefix, _, type_ = label.partition("-")
        if label != "O" and not (prefix in ("B", "I") and type_):
            raise ValueError(f"{label!r} is not an IOB2 label (O, B-TYPE, I-TYPE); use constrain=False")
        parsed.append((prefix, type_))
    C = len(labels)
    allowed = torch.ones(C, C, dtype=torch.bool)
    start = torch.ones(C, dtype=torch.bool)
    for j, (prefix_j, type_j) in enumerate(parsed):
        if prefix_j != "I":
            continue
        start[j] = False
        for i, (prefix_i, type_i) in enumerate(parsed):
            allowed[i, j] = prefix_i in ("B", "I") and type_i == type_j
    return allowed, start


class CRF(nn.Module):
    """Linear-chain CRF over `num_tags` tags, on top of per-token emission scores (B, T, C)."""

    transition_penalty: torch.Tensor  # buffers (registered in __init__)
    start_penalty: torch.Tensor

    def __init__(
        self,
        num_tags: int,
        allowed_transitions: torch.Tensor | None = None,
        allowed_start: torch.Tensor | None = None,
    ):
        super().__init__()
        C = self.num_tags = num_tags
        # small random init (as pytorch-crf): zeros would work too, but ties make Viterbi arbitrary
        self.transitions = nn.Parameter(torch.empty(C, C).uniform_(-0.1, 0.1))  # [from, to]
        self.start_transitions = nn.Parameter(torch.empty(C).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(C).uniform_(-0.1, 0.1))
        allowed = torch.ones(C, C, dtype=torch.bool) if allowed_transitions is None else allowed_transitions
        start = torch.ones(C, dtype=torch.bool) if allowed_start is None else allowed_start
        if allowed.shape != (C, C) or start.shape != (C,):
            raise ValueError(f"allowed transitions must be ({C}, {C}) and ({C},)")
        # Not persistent: the constraint is rebuilt from the label names (from_labels), which are
        # saved with the task, and a plain state_dict stays interchangeable with unconstrained CRFs.
        self.register_buffer("transition_penalty", torch.where(allowed, 0.0, FORBIDDEN), persistent=False)
        self.register_buffer("start_penalty", torch.where(start, 0.0, FORBIDDEN), persistent=False)

    @classmethod
    def from_labels(cls, labels: list[str], constrain: bool = True) -> CRF:
        """A CRF over `labels` (tag i is labels[i]); with `constrain`, invalid IOB2 is never decoded.

        With `constrain`, gold tags must be valid IOB2 too (convert IOB1 first): an invalid gold path
        costs about 1e4 in loss.
        """
        return cls(len(labels), *iob2_allowed(labels)) if constrain else cls(len(labels))

    # ---- helpers

    def _prepare(self, emissions: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if emissions.dim() != 3 or emissions.size(2) != self.num_tags or emissions.size(1) == 0:
            raise ValueError(f"emissions must be (B, T>0, {self.num_tags}), got {tuple(emissions.shape)}")
        B, T, _ = emissions.shape
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=emissions.device)
        if mask.shape != (B, T):
            raise ValueError(f"mask must be {(B, T)}, got {tuple(mask.shape)}")
        mask = mask.bool()
        if not mask[:, 0].all():
            raise ValueError("mask[:, 0] must be all True: every sequence needs a first token (left-aligned)")
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("mask must be left-aligned: no True after a False in a row")
        # Work in float32 at least: bf16 keeps 8 bits of mantissa, so a path score summed over
        # hundreds of tokens is off by whole units, and log-likelihood = score - log Z subtracts two
        # such large, nearly equal numbers. float64 input stays float64 (the brute-force tests).
        dtype = torch.promote_types(emissions.dtype, torch.float32)
        start = self.start_transitions.to(dtype) + self.start_penalty
        trans = self.transitions.to(dtype) + self.transition_penalty
        end = self.end_transitions.to(dtype)
        return emissions.to(dtype), mask, start, trans, end

    def _path_score(self, em, tags, mask, start, trans, end) -> torch.Tensor:
        tags = tags.long().masked_fill(~mask, 0)  # padding labels (e.g. -100) must still be valid indices
        emit = em.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        step = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1) transition into each position t >= 1
        zero = em.new_zeros(())
        last = tags.gather(1, mask.sum(1, keepdim=True) - 1).squeeze(1)  # (B,) last real tag
        return (  # torch.where, not a product with the mask: padded scores may be inf
            start[tags[:, 0]]
            + torch.where(mask, emit, zero).sum(1)
            + torch.where(mask[:, 1:], step, zero).sum(1)
            + end[last]
        )  # (B,)

    def _log_partition(self, em, mask, start, trans, end) -> torch.Tensor:
        alpha = start + em[:, 0]  # (B, C) log-sum of all paths ending in each tag
        for t in range(1, em.size(1)):
            # (B, C_from, 1) + (C_from, C_to) -> logsumexp over C_from -> (B, C_to)
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + em[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)  # finished sequences keep their alpha
        return torch.logsumexp(alpha + end, dim=1)  # (B,)

    # ---- public API

    def path_score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B,) unnormalised score of the given tag paths (constraint penalties included)."""
        em, mask, start, trans, end = self._prepare(emissions, mask)
        return self._path_score(em, tags, mask, start, trans, end)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) log Z: logsumexp of the scores of all paths, by the forward algorithm."""
        em, mask, start, trans, end = self._prepare(emissions, mask)
        return self._log_partition(em, mask, start, trans, end)

    def log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B,) log p(tags | emissions) of each sequence. emissions (B, T, C), tags (B, T) long."""
        em, mask, start, trans, end = self._prepare(emissions, mask)
        return self._path_score(em, tags, mask, start, trans, end) - self._log_partition(
            em, mask, start, trans, end
        )

    def loss(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean negative log-likelihood over the batch (a per-sequence, not per-token, average)."""
        return -self.log_likelihood(emissions, tags, mask).mean()

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """Best tag path of each sequence (Viterbi), cut to its length."""
        em, mask, start, trans, end = self._prepare(emissions, mask)
        B, T, _ = em.shape
        score = start + em[:, 0]  # (B, C) best score of a path ending in each tag
        backpointers = []  # T-1 of (B, C): best previous tag for each tag at step t
        for t in range(1, T):
            best, prev = (score.unsqueeze(2) + trans).max(dim=1)  # (B, C_from, C_to) -> (B, C_to)
            score = torch.where(mask[:, t, None], best + em[:, t], score)
            backpointers.append(prev)
        cur = (score + end).argmax(dim=1)  # (B,) last tag of the best path
        path = torch.empty(B, T, dtype=torch.long, device=em.device)
        for t in range(T - 1, 0, -1):  # walk back; beyond a sequence's end `cur` stays its last tag
            path[:, t] = cur
            prev = backpointers[t - 1].gather(1, cur.unsqueeze(1)).squeeze(1)
            cur = torch.where(mask[:, t], prev, cur)
        path[:, 0] = cur
        lengths = mask.sum(1).tolist()
        return [row[:n] for row, n in zip(path.tolist(), lengths, strict=True)]


def iob2_decoder(labels: list[str]) -> CRF | None:
    """Viterbi under the IOB2 constraints alone, for a softmax head: a constrained CRF whose
    learned scores are all 0. Decoding per-word log-probabilities with it returns the most probable
    sequence of independent per-word choices that is valid IOB2 (argmax can say `O I-PER` or
    `B-ORG I-LOC`, which seqeval then reads as entities of their own). None when `labels` are not
    IOB2 (the head then decodes by argmax)."""
    try:
        crf = CRF.from_labels(labels)
    except ValueError:
        return None
    for p in crf.parameters():
        nn.init.zeros_(p)
    return crf.requires_grad_(False)


class BiLSTM(nn.Module):
    """Bidirectional LSTM over (B, T, H) states: the optional layer between BERT and a softmax/CRF head.

    Sequences are packed by length, so padding never leaks into the backward direction and padded
    outputs are exactly 0. Output size is 2 * hidden_size (hidden_size = input_size // 2 by default,
    which keeps H).
    """

    def __init__(
        self, input_size: int, hidden_size: int | None = None, num_layers: int = 1, dropout: float = 0.1
    ):
        super().__init__()
        self.hidden_size = hidden_size or input_size // 2
        self.output_size = 2 * self.hidden_size
        self.lstm = nn.LSTM(
            input_size,
            self.hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,  # nn.LSTM's dropout is between layers only
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, H); mask (B, T) left-aligned, every row with at least one token
        lengths = mask.sum(1).cpu()  # pack_padded_sequence wants lengths on the CPU
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, 2 * hidden)
        return self.dropout(out)

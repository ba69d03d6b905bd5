"""CRF against brute force over all C^T tag paths; BiLSTM against its own unpadded self."""

from __future__ import annotations

import itertools

import pytest
import torch

from bertkit.tasks.crf import CRF, BiLSTM, iob2_allowed, iob2_decoder

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def random_crf(C: int, seed: int, scale: float = 1.0, labels: list[str] | None = None) -> CRF:
    torch.manual_seed(seed)
    crf = CRF.from_labels(labels) if labels else CRF(C)
    with torch.no_grad():  # larger than the init, so transitions really matter
        for p in crf.parameters():
            p.normal_(0, scale)
    return crf.double()  # float64 everywhere: brute force and CRF agree to ~1e-12


def batch(C: int, T: int, seed: int, scale: float = 1.0):
    """Emissions (3, T, C), tags (3, T) padded with -100, mask (3, T) for lengths T, ~T/2, 1."""
    g = torch.Generator().manual_seed(seed)
    lengths = [T, max(1, T // 2), 1]
    emissions = torch.randn(3, T, C, generator=g, dtype=torch.float64) * scale
    tags = torch.randint(0, C, (3, T), generator=g)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    return emissions, tags.masked_fill(~mask, -100), mask, lengths


def path_scores(crf: CRF, em: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
    """Scores (P,) of paths (P, L) for one sequence's emissions (L, C), from the raw parameters."""
    s = crf.start_transitions[paths[:, 0]] + crf.end_transitions[paths[:, -1]]
    s = s + em.gather(1, paths.T).sum(0)  # (L, P) emission of each path's tag at each step
    return s + crf.transitions[paths[:, :-1], paths[:, 1:]].sum(1)


def all_paths(C: int, L: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(C), repeat=L)))  # (C^L, L)


def valid_iob2(path: list[int], labels: list[str]) -> bool:
    prev = "O"
    for tag in (labels[i] for i in path):
        if tag.startswith("I-") and prev[2:] != tag[2:]:  # I-X after O, start, or another type
            return False
        prev = tag
    return True


CASES = [(C, T) for C in (1, 2, 3, 4) for T in (1, 2, 3, 5)]


@pytest.mark.parametrize("C, T", CASES)
def test_partition_likelihood_and_viterbi_equal_brute_force(C, T):
    crf = random_crf(C, seed=C * 10 + T)
    emissions, tags, mask, lengths = batch(C, T, seed=C * 100 + T)
    log_z = crf.log_partition(emissions, mask)
    ll = crf.log_likelihood(emissions, tags, mask)
    decoded = crf.decode(emissions, mask)
    for b, L in enumerate(lengths):
        scores = path_scores(crf, emissions[b, :L], all_paths(C, L))
        gold = path_scores(crf, emissions[b, :L], tags[b, :L][None])[0]
        torch.testing.assert_close(log_z[b], torch.logsumexp(scores, 0), rtol=0, atol=1e-10)
        torch.testing.assert_close(ll[b], gold - torch.logsumexp(scores, 0), rtol=0, atol=1e-10)
        torch.testing.assert_close(crf.path_score(emissions, tags, mask)[b], gold, rtol=0, atol=1e-10)
        assert decoded[b] == all_paths(C, L)[scores.argmax()].tolist()
    assert [len(p) for p in decoded] == lengths


@pytest.mark.parametrize("seed", range(6))
def test_constrained_decoding_is_valid_iob2_and_the_best_valid_path(seed):
    C, T = len(LABELS), 5
    crf = random_crf(C, seed=seed, scale=3.0, labels=LABELS)
    with torch.no_grad():  # make the forbidden moves the tempting ones
        crf.transitions[:, 2] += 4.0  # anything -> I-PER
        crf.start_transitions[4] += 4.0  # start -> I-LOC
    emissions, tags, mask, lengths = batch(C, T, seed=seed, scale=3.0)
    emissions[..., 2] += 2.0
    decoded = crf.decode(emissions, mask)
    log_z = crf.log_partition(emissions, mask)
    for b, L in enumerate(lengths):
        paths = all_paths(C, L)
        valid = torch.tensor([valid_iob2(p, LABELS) for p in paths.tolist()])
        scores = path_scores(crf, emissions[b, :L], paths)  # raw scores, no penalty
        assert valid_iob2(decoded[b], LABELS)
        assert decoded[b] == paths[valid][scores[valid].argmax()].tolist()
        # the constrained model is a distribution over valid paths only
        torch.testing.assert_close(log_z[b], torch.logsumexp(scores[valid], 0), rtol=0, atol=1e-8)


def test_constraint_changes_the_decoded_path():
    emissions = torch.full((1, 3, 5), -5.0)
    emissions[0, [0, 1, 2], [2, 0, 4]] = 5.0  # emissions alone say I-PER O I-LOC: invalid IOB2
    free, constrained = CRF(5), CRF.from_labels(LABELS)
    for p in [*free.parameters(), *constrained.parameters()]:
        torch.nn.init.zeros_(p)
    assert free.decode(emissions) == [[2, 0, 4]]
    assert valid_iob2(constrained.decode(emissions)[0], LABELS)


@pytest.mark.parametrize("seed", range(4))
def test_iob2_decoder_finds_the_most_probable_valid_sequence(seed):
    """A softmax head's constrained decoding: of all valid IOB2 paths, the one whose summed
    per-word log-probabilities is largest (brute force over C^L paths)."""
    C, T = len(LABELS), 5
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, T, C, generator=g, dtype=torch.float64) * 3.0
    logits[..., 2] += 2.0  # I-PER tempting everywhere, so argmax is often invalid
    log_probs = logits.log_softmax(-1)
    mask = torch.arange(T)[None, :] < torch.tensor([T, 3, 1])[:, None]
    decoded = iob2_decoder(LABELS).double().decode(log_probs, mask)
    for b, L in enumerate([T, 3, 1]):
        paths = all_paths(C, L)
        valid = torch.tensor([valid_iob2(p, LABELS) for p in paths.tolist()])
        scores = log_probs[b, :L].gather(1, paths.T).sum(0)  # (P,) sum of the words' log-probabilities
        assert decoded[b] == paths[valid][scores[valid].argmax()].tolist()
        argmax = log_probs[b, :L].argmax(-1).tolist()
        if valid_iob2(argmax, LABELS):
            assert decoded[b] == argmax  # a valid argmax is already the best path
    assert iob2_decoder(["O", "PER", "LOC"]) is None  # not IOB2: the caller falls back to argmax
    assert not any(p.requires_grad for p in iob2_decoder(LABELS).parameters())


def test_iob2_constraints():
    allowed, start = iob2_allowed(LABELS)
    o, bp, ip, bl, il = range(5)
    assert start.tolist() == [True, True, False, True, False]
    forbidden = {(i, j) for i in range(5) for j in range(5) if not allowed[i, j]}
    assert forbidden == {(o, ip), (bl, ip), (il, ip), (o, il), (bp, il), (ip, il)}
    with pytest.raises(ValueError, match="IOB2"):
        CRF.from_labels(["O", "S-PER"])
    assert CRF.from_labels(["O", "S-PER", "E-PER"], constrain=False).num_tags == 3
    assert "transition_penalty" not in CRF.from_labels(LABELS).state_dict()  # rebuilt from labels


def test_masks_must_be_left_aligned():
    crf = CRF(3)
    em = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match=r"mask\[:, 0\]"):
        crf.loss(em, torch.zeros(2, 4, dtype=torch.long), torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]]).bool())
    with pytest.raises(ValueError, match="left-aligned"):
        crf.decode(em, torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]]).bool())
    with pytest.raises(ValueError, match="emissions"):
        crf.decode(torch.randn(2, 4, 5))
    assert [len(p) for p in crf.decode(em)] == [4, 4]  # no mask: every position is real


def test_gradients_flow_and_are_finite():
    crf = CRF.from_labels(LABELS)
    emissions, _, mask, _ = batch(len(LABELS), 6, seed=0)  # lengths 6, 3, 1
    emissions = emissions.float().requires_grad_()
    # valid IOB2 gold (the constrained CRF scores only valid paths), -100 beyond each length
    tags = torch.tensor([[1, 2, 0, 3, 4, 4], [3, 4, 0, -100, -100, -100], [1, -100, -100, -100, -100, -100]])
    loss = crf.loss(emissions, tags, mask)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    for grad in (crf.transitions.grad, crf.start_transitions.grad, crf.end_transitions.grad, emissions.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert emissions.grad[~mask].abs().sum() == 0  # padding gets no gradient


def test_bf16_emissions_are_scored_in_float32():
    crf = CRF(4)
    emissions, tags, mask, _ = batch(4, 5, seed=1, scale=3.0)
    em16 = emissions.bfloat16()
    ll16 = crf.log_likelihood(em16, tags, mask)
    assert ll16.dtype == torch.float32
    torch.testing.assert_close(ll16, crf.log_likelihood(em16.float(), tags, mask))
    assert crf.decode(em16, mask) == crf.decode(em16.float(), mask)


def test_training_learns_a_rule_only_transitions_can_express():
    # tokens are 0/1; tags O, B, I: a 1 after a 0 (or first) is B, a 1 after a 1 is I. The emission
    # of a token cannot tell B from I (it sees only the token itself); the transitions must.
    torch.manual_seed(0)

    def data(n: int):
        T = 8
        tokens = torch.randint(0, 2, (n, T))
        lengths = torch.randint(3, T + 1, (n,))
        mask = torch.arange(T)[None, :] < lengths[:, None]
        prev = torch.cat([torch.zeros(n, 1, dtype=torch.long), tokens[:, :-1]], 1)
        tags = torch.where(tokens == 0, 0, torch.where(prev == 1, 2, 1))
        return tokens, tags, mask

    embed, crf = torch.nn.Embedding(2, 3), CRF(3)
    opt = torch.optim.Adam([*embed.parameters(), *crf.parameters()], lr=0.1)
    tokens, tags, mask = data(64)
    losses = []
    for _ in range(80):
        loss = crf.loss(embed(tokens), tags, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    tokens, tags, mask = data(200)  # fresh sequences
    pred = crf.decode(embed(tokens), mask)
    gold = [row[: len(p)] for row, p in zip(tags.tolist(), pred, strict=True)]
    assert pred == gold


def test_bilstm_ignores_padding():
    torch.manual_seed(0)
    H = 8
    lstm = BiLSTM(H, dropout=0.3).eval()
    assert lstm.output_size == H
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, H)
    mask = torch.arange(5)[None, :] < lengths[:, None]
    out = lstm(x, mask)  # (B, T, H)
    assert out.shape == (3, 5, H)
    padded = torch.cat([x, 100 * torch.randn(3, 3, H)], 1)  # garbage in 3 extra positions
    out_padded = lstm(padded, torch.cat([mask, torch.zeros(3, 3, dtype=torch.bool)], 1))
    assert out_padded.shape == (3, 8, H)
    for b, L in enumerate(lengths.tolist()):
        torch.testing.assert_close(out_padded[b, :L], out[b, :L])
        torch.testing.assert_close(out[b, :L], lstm(x[b : b + 1, :L], mask[b : b + 1, :L])[0])  # alone
        assert out_padded[b, L:].abs().sum() == 0
    assert BiLSTM(H, hidden_size=6, num_layers=2).output_size == 12

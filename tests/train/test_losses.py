"""The distance-aware ranking losses against hand computations, and their numerical safety."""

from __future__ import annotations

import math

import pytest
import torch

from georank.losses import rank_loss


def lse(*xs: float) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


# One group of 3, given out of order: sorted by distance it is scores [1.0, 2.0, 0.5] at [10, 100, 1000] km.
SCORES = torch.tensor([[2.0, 1.0, 0.5]])
DIST_KM = torch.tensor([[100.0, 10.0, 1000.0]])


def test_three_candidates_k1_by_hand() -> None:
    got = rank_loss(SCORES, DIST_KM, top_k=1, lam=0.7)
    l1 = -(1.0 - lse(1.0, 2.0, 0.5))
    # pairs (0,1): ds=-1, dd=90; (0,2): ds=0.5, dd=990 -> largest gap first: [0.5, -1]; last position is 0
    l2 = -(0.5 - lse(0.5, -1.0))
    assert got.l1.item() == pytest.approx(l1, abs=1e-6)
    assert got.l2.item() == pytest.approx(l2, abs=1e-6)
    assert got.total.item() == pytest.approx(0.7 * l1 + 0.3 * l2, abs=1e-6)


def test_three_candidates_k2_by_hand() -> None:
    got = rank_loss(SCORES, DIST_KM, top_k=2, lam=0.4)
    l1 = (-(1.0 - lse(1.0, 2.0, 0.5)) - (2.0 - lse(2.0, 0.5))) / 2
    # pairs (0,1): ds=-1, dd=90; (0,2): ds=0.5, dd=990; (1,2): ds=1.5, dd=900 -> [0.5, 1.5, -1]
    l2 = (-(0.5 - lse(0.5, 1.5, -1.0)) - (1.5 - lse(1.5, -1.0))) / 2
    assert got.l1.item() == pytest.approx(l1, abs=1e-6)
    assert got.l2.item() == pytest.approx(l2, abs=1e-6)
    assert got.total.item() == pytest.approx(0.4 * l1 + 0.6 * l2, abs=1e-6)


def test_k1_l1_is_cross_entropy_on_the_nearest() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 5, generator=gen)
    dist = torch.rand(6, 5, generator=gen) * 5000
    got = rank_loss(scores, dist, top_k=1).l1
    expected = torch.nn.functional.cross_entropy(scores, dist.argmin(dim=1))
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_permuting_the_group_does_not_change_the_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 5, generator=gen)
    dist = torch.rand(4, 5, generator=gen) * 9000  # distinct distances
    perm = torch.tensor([3, 0, 4, 1, 2])
    for k in (1, 2, 3):
        a = rank_loss(scores, dist, top_k=k)
        b = rank_loss(scores[:, perm], dist[:, perm], top_k=k)
        assert b.total.item() == pytest.approx(a.total.item(), abs=1e-6)


def test_huge_scores_give_finite_loss_and_gradients() -> None:
    scores = torch.tensor([[1e4, -1e4, 1e4, -1e4, 0.0], [-1e4, -1e4, 1e4, 1e4, 1e4]], requires_grad=True)
    dist = torch.tensor([[5.0, 50.0, 500.0, 5000.0, 9000.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    for k in (1, 2):
        loss = rank_loss(scores, dist, top_k=k).total
        (grad,) = torch.autograd.grad(loss, scores)
        assert torch.isfinite(loss), loss
        assert torch.isfinite(grad).all(), grad
    # the second group puts its two nearest at -1e4: a huge (finite) loss, not inf
    assert rank_loss(scores, dist, top_k=1).l1.item() > 1e3


def test_correct_ranking_scores_lower_than_reversed() -> None:
    dist = torch.tensor([[1.0, 10.0, 100.0, 1000.0, 10000.0]])
    good = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert rank_loss(good, dist).total < rank_loss(good.flip(-1), dist).total


def test_bad_shapes_and_k_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        rank_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="top_k"):
        rank_loss(torch.zeros(2, 3), torch.zeros(2, 3), top_k=4)

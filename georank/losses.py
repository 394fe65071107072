"""GeoRanker's distance-aware ranking losses (reference/GEORANKER.md, "Training").

A group is G candidates of one query with scores ``scores (b, g)`` and true geodesic distances
``dist_km (b, g)`` to the query. Each group is first sorted by distance, nearest first (stable,
so the loss does not depend on the order the candidates came in when distances are distinct).

- **L1** (Plackett-Luce over the ranking): for the first K sorted positions,
  ``-(s_k - log sum_{j >= k} exp s_j)``, averaged over the K positions and the batch. With K = 1
  this is cross-entropy with the nearest candidate as the target.
- **L2** (multi-order, "distance of distances"): the pairs ``i < j`` of the sorted group with
  ``i < K``; each has a score gap ``ds = s_i - s_j`` and a distance gap ``dd = d_j - d_i >= 0``.
  The pairs are ordered by ``dd``, largest gap first, and a Plackett-Luce loss is applied to
  their ``ds`` over every position but the last (whose term is identically 0), averaged over
  those P - 1 positions and the batch (0 when a group has a single pair).
- **total** = ``lam * L1 + (1 - lam) * L2`` (reference: G = 5, K = 1, lam = 0.7).

Both use suffix log-sum-exp (``torch.logcumsumexp`` on the reversed vector), so scores of
+-1e4 give finite losses and gradients (the reference exponentiates directly and can overflow).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RankLoss:
    """The loss of one batch of groups and its two parts (scalar tensors)."""

    total: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor


def _suffix_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """``out[..., m] = log sum_{j >= m} exp x[..., j]`` (same shape as ``x``), overflow-free."""
    return torch.logcumsumexp(x.flip(-1), dim=-1).flip(-1)


def plackett_luce(ordered: torch.Tensor, n_positions: int) -> torch.Tensor:
    """Mean over the batch and the first ``n_positions`` of ``-(x_m - log sum_{j >= m} exp x_j)``.

    ``ordered (b, n)``: values in their target order, best first.
    """
    if n_positions < 1 or n_positions > ordered.shape[-1]:
        raise ValueError(f"plackett_luce: expected 1 <= n_positions <= {ordered.shape[-1]}, got {n_positions}")
    nll = _suffix_logsumexp(ordered) - ordered  # (b, n)
    return nll[:, :n_positions].mean()


def pair_indices(group_size: int, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index vectors ``(i (p,), j (p,))`` of the pairs ``i < j`` with ``i < top_k`` in a sorted group."""
    pairs = [(i, j) for i in range(min(top_k, group_size)) for j in range(i + 1, group_size)]
    if not pairs:
        raise ValueError(f"a group of {group_size} candidates has no pairs with i < K={top_k}: expected G >= 2")
    i, j = zip(*pairs)
    return torch.tensor(i, dtype=torch.long), torch.tensor(j, dtype=torch.long)


def sort_by_distance(scores: torch.Tensor, dist_km: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, dist_km)`` of each group reordered nearest first (stable). Shapes (b, g)."""
    order = torch.argsort(dist_km, dim=-1, stable=True)
    return scores.gather(-1, order), dist_km.gather(-1, order)


def rank_loss(scores: torch.Tensor, dist_km: torch.Tensor, *, top_k: int = 1, lam: float = 0.7) -> RankLoss:
    """``lam * L1 + (1 - lam) * L2`` of groups ``scores (b, g)`` with distances ``dist_km (b, g)``.

    ``top_k`` is the reference's K; the group size G is ``scores.shape[1]``.
    """
    if scores.ndim != 2 or scores.shape != dist_km.shape:
        raise ValueError(
            f"rank_loss: expected scores and dist_km of one shape (b, g), got {tuple(scores.shape)} and {tuple(dist_km.shape)}"
        )
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"rank_loss: expected 0 <= lam <= 1, got {lam}")
    g = scores.shape[1]
    if not 1 <= top_k <= g:
        raise ValueError(f"rank_loss: expected 1 <= top_k <= G={g}, got {top_k}")
    s, d = sort_by_distance(scores.float(), dist_km.to(dtype=torch.float64, device=scores.device))
    l1 = plackett_luce(s, top_k)

    i, j = pair_indices(g, top_k)
    i, j = i.to(s.device), j.to(s.device)
    ds = s[:, i] - s[:, j]  # (b, p) score gaps
    dd = d[:, j] - d[:, i]  # (b, p) distance gaps, >= 0
    order = torch.argsort(-dd, dim=-1, stable=True)  # largest gap first
    ordered = ds.gather(-1, order)
    p = ordered.shape[1]
    l2 = plackett_luce(ordered, p - 1) if p > 1 else s.new_zeros(())
    return RankLoss(total=lam * l1 + (1.0 - lam) * l2, l1=l1, l2=l2)


__all__ = ["RankLoss", "pair_indices", "plackett_luce", "rank_loss", "sort_by_distance"]

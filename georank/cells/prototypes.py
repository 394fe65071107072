"""Cell prototypes from a proxy classifier, and aerial keys built on them.

**Prototypes.** A cosine-softmax linear classifier over the gallery embeddings predicts each
photo's cell: ``logits (n, c) = s * normalize(x) @ normalize(W).T`` (``s``:
``candidates.prototypes.logit_scale``), cross-entropy, AdamW, minibatches. Its class weights,
l2-normalised, are the prototypes: searching them by inner product with a query embedding is the
classifier's ranking of cells for that query (Lindenberger et al. 2025 learn level-15 cell
prototypes the same way, as the weights of a proxy classification task). The weights start at
the l2-normalised class means, so a cell with one photo starts at that photo.

**Aerial keys** (second seed): each level-16 cell with an aerial-tile embedding gets the key
``normalize(z_aerial + kappa * z_prototype)``, ``z_prototype`` being the prototype of the adaptive
cell that contains it (the prototype copied down to level 16); a tile outside every cell keeps
``normalize(z_aerial)``. The tile embeddings must live in the query embedding space (an aerial
encoder trained against the ground-photo encoder, as in the seed): georank only combines and
indexes them. Runs on the driver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

BATCH_PHOTOS = 4096  # minibatch of the proxy classifier
AERIAL_LEVEL = 16  # S2 level of an aerial key's cell


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x (n, d)`` scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Prototypes:
    """vectors: ``(c, d) float32`` unit rows, one per class; train_accuracy: top-1 on the training
    photos; chance_accuracy: the majority class's share (what always guessing it scores)."""

    vectors: np.ndarray
    train_accuracy: float
    chance_accuracy: float


def class_means(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """l2-normalised mean embedding of each class ``(c, d)``."""
    x = l2_normalize(embeddings)
    sums = np.zeros((n_classes, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    return l2_normalize(sums)


def train_prototypes(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    epochs: int,
    learning_rate: float,
    logit_scale: float,
    seed: int = 0,
) -> Prototypes:
    """Train the proxy classifier on ``embeddings (n, d)`` with cell ``labels (n,)`` in ``[0, c)``."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(embeddings) or (len(labels) and (labels.min() < 0 or labels.max() >= n_classes)):
        raise ValueError(f"expected {len(embeddings)} labels in [0, {n_classes}), got {len(labels)}")
    x = torch.from_numpy(l2_normalize(embeddings))
    y = torch.from_numpy(labels)
    weight = torch.nn.Parameter(torch.from_numpy(class_means(embeddings, labels, n_classes)))
    optimiser = torch.optim.AdamW([weight], lr=learning_rate, weight_decay=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(y))
            for start in range(0, len(y), BATCH_PHOTOS):
                rows = order[start : start + BATCH_PHOTOS]
                logits = logit_scale * x[rows] @ torch.nn.functional.normalize(weight, dim=1).T  # (b, c)
                loss = torch.nn.functional.cross_entropy(logits, y[rows])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    vectors = l2_normalize(weight.detach().numpy())
    predicted = predict(vectors, embeddings)
    counts = np.bincount(labels, minlength=n_classes)
    accuracy = float((predicted == labels).mean()) if len(labels) else 0.0
    chance = float(counts.max() / max(len(labels), 1))
    log.info("proxy classifier: %d cells, train top-1 %.3f (majority class %.3f)", n_classes, accuracy, chance)
    return Prototypes(vectors=vectors, train_accuracy=accuracy, chance_accuracy=chance)


def predict(prototypes: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """The best class of each embedding ``(n,) int64`` (largest inner product with its prototype)."""
    if len(embeddings) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.argmax(l2_normalize(embeddings) @ prototypes.T, axis=1).astype(np.int64)


def enclosing_cell(level16_ids: np.ndarray, cell_ids: np.ndarray) -> np.ndarray:
    """For each level-16 cell id, the index into sorted ``cell_ids`` of the partition cell that
    contains it, or -1 (no cell holds it)."""
    from georank.cells.partition import cell_levels, parent_ids

    out = np.full(len(level16_ids), -1, dtype=np.int64)
    ids16 = np.asarray(level16_ids, dtype=np.uint64)
    for level in sorted(set(cell_levels(cell_ids).tolist())):
        anc = parent_ids(ids16, min(level, AERIAL_LEVEL))
        pos = np.minimum(np.searchsorted(cell_ids, anc), len(cell_ids) - 1)
        hit = (cell_ids[pos] == anc) & (out < 0)
        out[hit] = pos[hit]
    return out


def aerial_keys(z_aerial: np.ndarray, z_prototype: np.ndarray | None, *, kappa: float) -> np.ndarray:
    """``normalize(z_aerial + kappa * z_prototype)`` row by row, ``(m, d)``; a None or zero
    prototype row leaves the aerial embedding alone."""
    a = l2_normalize(z_aerial)
    if z_prototype is None:
        return a
    return l2_normalize(a + kappa * np.asarray(z_prototype, dtype=np.float32))


__all__ = [
    "AERIAL_LEVEL",
    "Prototypes",
    "aerial_keys",
    "class_means",
    "enclosing_cell",
    "l2_normalize",
    "predict",
    "train_prototypes",
]

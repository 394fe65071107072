"""The ranker's gallery-image features, computed once per worker: a byte-bounded LRU cache.

A popular gallery photo is a candidate for many query photos. Its vision-tower output
(``(n_tokens, hidden)``: the merged patch features the language model reads at the image's
``<|image_pad|>`` tokens) depends only on the image, the size it is snapped to and the model, so
the :class:`~georank.rank.scorer.Scorer` keeps it here under that key and feeds it to the language
model in place of the pixels (:meth:`georank.rank.model.GeoRankerModel.score` with
``image_features``). Bounded by ``rank.feature_cache_mb`` (bytes of the tensors, on the model's
device: GPU memory when ``rank.device`` is ``cuda``); 0 turns it off. Runs on executors: one
cache per Python worker, living as long as its scorer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable

import torch

log = logging.getLogger(__name__)


class FeatureCache:
    """Least-recently-used map key -> tensor, holding at most ``max_bytes`` of tensor data.

    A tensor larger than the whole budget is not kept. ``hits`` / ``misses`` count lookups.

    >>> c = FeatureCache(max_bytes=64)
    >>> c.put("a", torch.zeros(8)); c.put("b", torch.zeros(8)); c.nbytes
    64
    >>> c.put("c", torch.zeros(8)); sorted(c.keys())  # "a", the least recently used, is evicted
    ['b', 'c']
    """

    def __init__(self, *, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def keys(self) -> list[Hashable]:
        return list(self._items)

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The tensor under ``key`` (now the most recently used), or None (a miss)."""
        t = self._items.get(key)
        if t is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return t

    def put(self, key: Hashable, features: torch.Tensor) -> None:
        """Keep ``features`` under ``key`` (a detached tensor), evicting the least recently used
        entries until the total fits ``max_bytes``."""
        size = features.numel() * features.element_size()
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old.numel() * old.element_size()
        while self._items and self.nbytes + size > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.nbytes -= evicted.numel() * evicted.element_size()
        self._items[key] = features.detach()
        self.nbytes += size

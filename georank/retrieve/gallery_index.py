"""Search the configured gallery index: the shards of one manifest held by this process, merged
exactly, and the per-worker caches that load them once (keyed by index URI, version, search
parameters and device). Driver or executor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from georank.config import GeorankConfig, S3Config
from georank.errors import GalleryIndexError
from georank.index import Manifest, read_manifest
from georank.retrieve.merge import Neighbours, merge_neighbours
from georank.retrieve.shard import Shard, _check_queries, open_shard


class GalleryIndex:
    """Shards of one manifest held by this process; :meth:`search` merges them exactly."""

    def __init__(self, manifest: Manifest, shards: Sequence[Shard]) -> None:
        self.manifest = manifest
        self.shards = list(shards)

    @property
    def version(self) -> str:
        return self.manifest.index_version

    def search_parts(self, queries: np.ndarray, k: int) -> list[Neighbours]:
        """Each held shard's own top-k (with -1 padding), in shard order."""
        queries = _check_queries(queries, self.manifest.dim)
        return [s.search(queries, k) for s in self.shards]

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        """Top-k over the held shards for ``queries (q, dim) float32``, merged exactly."""
        if k < 1:
            raise GalleryIndexError(f"expected k >= 1, got {k}")
        total = sum(s.ntotal for s in self.shards)
        return merge_neighbours(self.search_parts(queries, k), k, ntotal=total)


def open_index(uri: str, s3: S3Config, *, nprobe: int | None = None, shards: Sequence[int] | None = None,
               manifest: Manifest | None = None, k_factor: int | None = None,
               device: Literal["cpu", "cuda"] = "cpu") -> GalleryIndex:
    """Open (all or some) shards of the index at ``uri``, validated against its manifest."""
    m = manifest if manifest is not None else read_manifest(uri, s3)
    which = range(m.n_shards) if shards is None else shards
    return GalleryIndex(
        m, [open_shard(m, i, root_uri=uri, s3=s3, nprobe=nprobe, k_factor=k_factor, device=device) for i in which]
    )


def get_shard(cfg: GeorankConfig, manifest: Manifest, shard: int) -> Shard:
    """The worker's copy of one shard, loaded once per Python worker per index version.
    Runs on executors (sharded placement)."""
    from georank.resources import cached, device_key

    root = cfg.resolve(cfg.index.uri)
    ix = cfg.index
    key = (root, manifest.index_version, shard, ix.nprobe, ix.k_factor, device_key(ix.device))
    return cached(
        "index_shard", key,
        lambda: open_shard(manifest, shard, root_uri=root, s3=cfg.s3, nprobe=ix.nprobe, k_factor=ix.k_factor, device=ix.device),
    )


def get_index(cfg: GeorankConfig, manifest: Manifest) -> GalleryIndex:
    """The worker's copy of every shard, loaded once per Python worker per index version.
    Runs on executors (replicated placement) or the driver."""
    from georank.resources import cached, device_key

    root = cfg.resolve(cfg.index.uri)
    ix = cfg.index
    key = (root, manifest.index_version, ix.nprobe, ix.k_factor, device_key(ix.device))
    return cached(
        "gallery_index", key,
        lambda: open_index(root, cfg.s3, nprobe=ix.nprobe, k_factor=ix.k_factor, device=ix.device, manifest=manifest),
    )


def search(cfg: GeorankConfig, queries: np.ndarray, *, k: int | None = None, manifest: Manifest | None = None) -> Neighbours:
    """Top-``retrieve.k`` neighbours of ``queries (q, dim)`` over the configured index (all shards)."""
    m = manifest if manifest is not None else read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    return get_index(cfg, m).search(queries, k or cfg.retrieve.k)


__all__ = ["GalleryIndex", "get_index", "get_shard", "open_index", "search"]

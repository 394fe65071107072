"""Retrieve stage: top-k gallery neighbours of query embeddings over a sharded FAISS index.

Each shard is searched for its own top-k; the per-shard lists are merged per query
with ``faiss.merge_knn_results(..., keep_max=True)`` (inner product: larger is
better), which gives exactly the top-k of one index over the whole gallery. Every
FAISS id is mapped to its gallery row (lat, lon, description, image URI) by id,
through the shard's metadata, never by list position.

Loud failures (:class:`~georank.errors.GalleryIndexError`), never a silent neighbour:

- a shard file whose sha256 is not the manifest's (corrupt, truncated, or copied from
  another build), or a metadata file from another index version;
- a shard whose ``ntotal``, dim or metric disagrees with the manifest, or whose
  metadata does not hold exactly its ids;
- a query whose dim is not the index's;
- a ``-1`` id in a merged result (FAISS pads missing hits with -1: the gallery is
  smaller than k, or IVF probed too few cells).

A shard is loaded once per Python worker and kept while its manifest version is
current (:func:`get_shard`, :func:`get_index`; cached by URI + version). The Spark
placements live in :mod:`georank.spark.retrieve`.

The package, by job: :mod:`~georank.retrieve.merge` (Neighbours, the exact merge),
:mod:`~georank.retrieve.shard` (load, validate and search one shard; GPU),
:mod:`~georank.retrieve.gallery_index` (the held shards of one index, the worker caches),
:mod:`~georank.retrieve.lookup` (the rows of merged ids from the shards' memory-mapped metadata,
for the sharded placement, whose search shuffles ids and scores only).
"""

from __future__ import annotations

from georank.retrieve.gallery_index import GalleryIndex, get_index, get_shard, open_index, search
from georank.retrieve.merge import Neighbours, merge_neighbours
from georank.retrieve.shard import Shard, open_shard, set_search_params, to_gpu

__all__ = [
    "GalleryIndex",
    "Neighbours",
    "Shard",
    "get_index",
    "get_shard",
    "merge_neighbours",
    "open_index",
    "open_shard",
    "search",
    "set_search_params",
    "to_gpu",
]

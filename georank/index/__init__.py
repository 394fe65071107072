"""Gallery index: build FAISS shards from gallery rows, write them with a manifest.

Layout under the index URI (a local folder or an ``s3://`` prefix)::

    manifest.json                                   the current index (written last)
    <index_version>/shard-00000-of-00003.faiss      FAISS index with explicit 64-bit ids
    <index_version>/shard-00000-of-00003.parquet    schema.SHARD_META: the shard's rows, by id

Every build writes a fresh ``<index_version>/`` folder and then replaces
``manifest.json`` in one step, so a reader holding the old manifest keeps finding
its shards, and a crashed build leaves the previous index in place. (Old version
folders are not deleted: remove them when no reader needs them.)

A gallery row goes to shard ``shard_of(gallery_id, n_shards)`` (splitmix64 of the
id, modulo the shard count): the same on the driver, in Spark and in tests,
independent of row order. Each shard is ``IDMap,Flat`` (exact inner product),
``IVF{nlist},Flat`` (ivfflat: exact inner products over the ``index.nprobe`` probed
cells), ``IVF{nlist},PQ{m}x{bits}`` (inner product, ids stored in the inverted lists) or
``IDMap2,IVF{nlist},PQ{m}x{bits},RFlat`` (ivfpq_refine: the IVF-PQ shortlist of
``k * index.k_factor`` is re-ranked with exact inner products, so the scores are
exact and comparable across shards, and the result is the exact top-k whenever the
shortlist holds it). IVF-PQ is trained ONCE on a sample of the whole gallery and
every shard starts from a copy of that trained, empty index.

The manifest records, per shard, its ``ntotal`` and the sha256 of both files; the
Parquet file also carries the index version in its schema metadata. A reader
(:mod:`georank.retrieve`) checks all of it and maps FAISS ids to rows by id.

Runs on the driver (manifest, IVF training, small builds) and on executors
(:func:`write_shard`; the gallery rows are prepared by :mod:`georank.gallery`).

The package, by job: :mod:`~georank.index.manifest` (the manifest, its read / write / commit),
:mod:`~georank.index.shards` (shard assignment, FAISS factory and training, writing one shard),
:mod:`~georank.index.build` (a whole build on the driver). Storage: :mod:`georank.storage`.
"""

from __future__ import annotations

from georank.index.build import build_index
from georank.index.manifest import (
    FORMAT,
    INDEX_TYPES,
    IVF_TYPES,
    MANIFEST_NAME,
    METRIC,
    SHARD_ASSIGNMENT,
    Manifest,
    ShardEntry,
    check_writable,
    make_manifest,
    new_index_version,
    read_manifest,
    write_manifest,
)
from georank.index.shards import (
    META_SHARD_KEY,
    META_VERSION_KEY,
    TRAIN_POINTS_PER_CENTROID,
    embeddings_matrix,
    empty_index,
    factory_string,
    serialize,
    shard_of,
    train_size,
    untrained_index,
    write_shard,
)
from georank.storage import join_uri, sha256_file
from georank.storage import put_file as _put_file  # noqa: F401 - georank.cells.store imports this name

__all__ = [
    "FORMAT",
    "INDEX_TYPES",
    "IVF_TYPES",
    "MANIFEST_NAME",
    "META_SHARD_KEY",
    "META_VERSION_KEY",
    "METRIC",
    "SHARD_ASSIGNMENT",
    "TRAIN_POINTS_PER_CENTROID",
    "Manifest",
    "ShardEntry",
    "build_index",
    "check_writable",
    "embeddings_matrix",
    "empty_index",
    "factory_string",
    "join_uri",
    "make_manifest",
    "new_index_version",
    "read_manifest",
    "serialize",
    "sha256_file",
    "shard_of",
    "train_size",
    "untrained_index",
    "write_manifest",
    "write_shard",
]

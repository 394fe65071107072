"""Spark layer of the retrieve stage: the two placements of ``index.placement``.

``replicated``
    Every executor holds all shards (loaded once per Python worker, cached by index
    URI + version); query partitions are split across tasks with ``mapInArrow`` and
    each batch is searched over all shards and merged exactly in place.

``sharded``
    For an index larger than one executor wants to hold. Queries are crossed with
    the shard numbers; ``groupBy(shard, query partition).applyInArrow`` searches
    each (shard, query chunk) group with only that shard loaded (so a worker holds
    the shards it is asked for, not all of them), keeping the shard's own top-k ids
    and scores only (a few bytes a neighbour); then the per-shard lists of each query
    are collected (``groupBy(photo_id)``, ``collect_list``; :func:`shard_lists`), merged
    exactly with ``faiss.merge_knn_results`` in vectorised ``mapInArrow`` batches, and
    the winners' rows (coordinates, places, image URIs) looked up in the shards' metadata,
    memory-mapped on the executor (:func:`merge_lists`; :mod:`georank.retrieve.lookup`).
    The geotag job takes the lists unmerged, partitioned like its photos, and merges
    them in its rank stage, so the neighbours cross one shuffle, not two.

Both return one row per query in schema.NEIGHBOURS and give the same ids and
scores as one exact index over the whole gallery. The driver reads the manifest
once; closures capture only plain values (the config and manifest as dicts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.config import GeorankConfig
from georank.errors import ConfigError, GalleryIndexError
from georank.index import Manifest, read_manifest

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

# One shard's top-k for one query: what the exact merge needs, nothing of the rows (looked up after it).
_PER_SHARD = pa.schema([S.NEIGHBOURS.field("photo_id"), pa.field("shard", pa.int32()),
                        S.NEIGHBOURS.field("gallery_id"), S.NEIGHBOURS.field("similarity")])
_SCORES = ["shard", "gallery_id", "similarity"]


def retrieve_neighbours(
    df: DataFrame,
    *,
    cfg: GeorankConfig,
    manifest: Manifest | None = None,
    k: int | None = None,
    id_col: str = "photo_id",
    embedding_col: str = "embedding",
    placement: str | None = None,
) -> DataFrame:
    """Top-k gallery neighbours of each query row of ``df`` (``id_col`` string, ``embedding_col``
    list<float>, no nulls), as a schema.NEIGHBOURS DataFrame (one row per query).

    ``k`` defaults to ``retrieve.k``, ``placement`` to ``index.placement``. Runs on the driver;
    the search runs on executors.
    """
    from georank.schema import spark_schema

    m = manifest if manifest is not None else read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    k = k or cfg.retrieve.k
    placement = placement or cfg.index.placement
    if k > m.ntotal:
        raise GalleryIndexError(f"retrieve.k={k} but index {m.index_version} holds only {m.ntotal} gallery vectors")
    queries = df.select(df[id_col].cast("string").alias("photo_id"), df[embedding_col].alias("embedding"))
    cfg_d, m_d = cfg.model_dump(), m.to_dict()
    if placement == "replicated":
        return queries.mapInArrow(_replicated(cfg_d, m_d, k), spark_schema(S.NEIGHBOURS))
    if placement == "sharded":
        return _sharded(queries, cfg_d, m, k)
    raise ConfigError(f"index.placement: expected one of ['replicated', 'sharded'], got {placement!r}")


def _queries(batch: pa.RecordBatch | pa.Table, dim: int) -> tuple[list[str], np.ndarray]:
    from georank.index import embeddings_matrix

    col = batch.column("embedding")
    if col.null_count:
        raise GalleryIndexError(f"expected an embedding for every query, got {col.null_count} nulls")
    return batch.column("photo_id").to_pylist(), embeddings_matrix(col, dim)


def _replicated(cfg_d: dict[str, Any], m_d: dict[str, Any], k: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def search_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Executor: search each batch over every shard (the worker's cached copy)."""
        from georank.config import validate_config
        from georank.retrieve import get_index

        cfg, m = validate_config(cfg_d), Manifest.from_dict(m_d)
        index = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            index = index or get_index(cfg, m)
            ids, q = _queries(batch, m.dim)
            yield index.search(q, k).to_batch(ids)

    return search_batches


def _sharded(queries: DataFrame, cfg_d: dict[str, Any], m: Manifest, k: int) -> DataFrame:
    from georank.schema import spark_schema

    return shard_lists(queries, cfg_d=cfg_d, manifest=m, k=k).mapInArrow(_merge(cfg_d, m.to_dict(), k), spark_schema(S.NEIGHBOURS))


def shard_lists(
    queries: DataFrame, *, cfg_d: dict[str, Any], manifest: Manifest, k: int, n_parts: int | None = None
) -> DataFrame:
    """Each query's top-k ids and scores from every shard, not merged yet: one row per query
    (``photo_id``; ``parts``: one struct of ``shard``, ``gallery_id`` and ``similarity`` lists per
    shard, in shard order); :func:`merge_lists` merges them exactly and looks up the winners' rows.
    ``queries``: ``photo_id`` string, ``embedding`` list<float>.

    ``n_parts``: the rows come hash-partitioned by ``photo_id`` into that many partitions, the
    partitioning of ``DataFrame.repartition(n_parts, "photo_id")``, so that a join with a frame
    partitioned that way moves neither side (the sharded geotag job's photos). Runs on the
    driver; the search runs on executors."""
    from pyspark.sql import functions as F

    from georank.schema import spark_schema

    spark = queries.sparkSession
    m_d = manifest.to_dict()
    shards = spark.range(manifest.n_shards).select(F.col("id").cast("int").alias("shard"))
    crossed = queries.withColumn("chunk", F.spark_partition_id()).crossJoin(F.broadcast(shards))

    def search_group(table: pa.Table) -> pa.Table:
        """Executor: one shard's top-k ids and scores for one chunk of queries."""
        from georank.config import validate_config
        from georank.retrieve import get_shard

        cfg, man = validate_config(cfg_d), Manifest.from_dict(m_d)
        shard = int(table.column("shard")[0].as_py())
        ids, q = _queries(table, man.dim)
        gallery_id, similarity = get_shard(cfg, man, shard).search_scores(q, k)  # (q, k) each
        offsets = pa.array(np.arange(0, gallery_id.size + 1, k, dtype=np.int32))
        return pa.Table.from_arrays(
            [pa.array(ids, type=pa.string()), pa.array(np.full(len(ids), shard, np.int32)),
             pa.ListArray.from_arrays(offsets, pa.array(gallery_id.reshape(-1))),
             pa.ListArray.from_arrays(offsets, pa.array(similarity.reshape(-1)))],
            schema=_PER_SHARD,
        )

    per_shard = crossed.groupBy("shard", "chunk").applyInArrow(search_group, spark_schema(_PER_SHARD))
    if n_parts is not None:  # the aggregation below keeps this partitioning (its key is photo_id)
        per_shard = per_shard.repartition(n_parts, "photo_id")
    return per_shard.groupBy("photo_id").agg(F.sort_array(F.collect_list(F.struct(*_SCORES))).alias("parts"))


def merge_lists(batch: pa.RecordBatch | pa.Table, *, cfg: GeorankConfig, manifest: Manifest, k: int) -> pa.Table:
    """On executors: :func:`shard_lists` rows (``photo_id``, ``parts``) -> NEIGHBOURS, the exact
    top-k of each query over all shards (``faiss.merge_knn_results``, vectorised over the batch),
    with the winners' rows from the shards' memory-mapped metadata
    (:func:`georank.retrieve.lookup.neighbours_from_scores`): the same ids, scores, order, ties and
    rows as one search over every shard. A query without a k-long list from every shard stops the run."""
    import pyarrow.compute as pc

    from georank.retrieve.lookup import get_shard_meta, neighbours_from_scores

    q, n_shards = batch.num_rows, manifest.n_shards
    if q == 0:
        return S.NEIGHBOURS.empty_table()
    parts_col = batch.column("parts")
    if isinstance(parts_col, pa.ChunkedArray):
        parts_col = parts_col.combine_chunks()
    counts = pc.list_value_length(parts_col).to_numpy(zero_copy_only=False)
    if (counts != n_shards).any():
        r = int(np.flatnonzero(counts != n_shards)[0])
        raise GalleryIndexError(
            f"query {batch.column('photo_id')[r].as_py()!r} got results from {counts[r]} shards; "
            f"expected all {n_shards}"
        )
    structs = parts_col.flatten()  # (q * n_shards) structs, each query's parts in shard order
    shard_no = structs.field("shard").to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(structs.field("gallery_id")).to_numpy(zero_copy_only=False)
    if (shard_no != np.tile(np.arange(n_shards), q)).any() or (lengths != k).any():
        raise GalleryIndexError(
            f"expected each query's lists from shards 0..{n_shards - 1} in order, {k} ids each; got shards "
            f"{shard_no[:n_shards].tolist()} with {lengths[:n_shards].tolist()} ids for the first query"
        )
    gallery_id = structs.field("gallery_id").flatten().to_numpy().reshape(q, n_shards, k).transpose(1, 0, 2)
    similarity = structs.field("similarity").flatten().to_numpy().reshape(q, n_shards, k).transpose(1, 0, 2)
    metas = [get_shard_meta(cfg, manifest, s) for s in range(n_shards)]
    merged = neighbours_from_scores(gallery_id, similarity, metas, index_version=manifest.index_version,
                                    ntotal=manifest.ntotal)
    return pa.Table.from_batches([merged.to_batch(batch.column("photo_id").to_pylist())])


def _merge(cfg_d: dict[str, Any], m_d: dict[str, Any], k: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def merge_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Executor: exact merge of each query's per-shard lists (shard order), vectorised per batch."""
        from georank.config import validate_config

        cfg, m = validate_config(cfg_d), Manifest.from_dict(m_d)
        for batch in batches:
            if batch.num_rows:
                yield from merge_lists(batch, cfg=cfg, manifest=m, k=k).to_batches()

    return merge_batches


__all__ = ["merge_lists", "retrieve_neighbours", "shard_lists"]

"""Spark layer of the retrieve stage: the two placements of ``index.placement``.

``replicated``
    Every executor holds all shards (loaded once per Python worker, cached by index
    URI + version); query partitions are split across tasks with ``mapInArrow`` and
    each batch is searched over all shards and merged exactly in place.

``sharded``
    For an index larger than one executor wants to hold. Queries are crossed with
    the shard numbers; ``groupBy(shard, query partition).applyInArrow`` searches
    each (shard, query chunk) group with only that shard loaded (so a worker holds
    the shards it is asked for, not all of them), keeping the shard's own top-k
    with its rows looked up by id; then the per-shard lists of each query are
    collected (``groupBy(photo_id)``, ``collect_list``; :func:`shard_lists`) and merged
    exactly with ``faiss.merge_knn_results`` in vectorised ``mapInArrow`` batches
    (:func:`merge_lists`). The geotag job takes the lists unmerged, partitioned like its
    photos, and merges them in its rank stage, so the neighbours cross one shuffle, not two.

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

_PER_SHARD = pa.schema([S.NEIGHBOURS.field(n) for n in S.NEIGHBOURS.names] + [pa.field("shard", pa.int32())])


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

    return shard_lists(queries, cfg_d=cfg_d, manifest=m, k=k).mapInArrow(
        _merge(m.n_shards, k, m.ntotal), spark_schema(S.NEIGHBOURS)
    )


def shard_lists(
    queries: DataFrame, *, cfg_d: dict[str, Any], manifest: Manifest, k: int, n_parts: int | None = None
) -> DataFrame:
    """Each query's top-k from every shard, not merged yet: one row per query (``photo_id``,
    ``parts``: one struct per shard in shard order, ``index_version``); :func:`merge_lists`
    merges them exactly. ``queries``: ``photo_id`` string, ``embedding`` list<float>.

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
        """Executor: one shard's top-k for one chunk of queries, rows looked up by id."""
        from georank.config import validate_config
        from georank.retrieve import get_shard

        cfg, man = validate_config(cfg_d), Manifest.from_dict(m_d)
        shard = int(table.column("shard")[0].as_py())
        ids, q = _queries(table, man.dim)
        nb = get_shard(cfg, man, shard).search(q, k)
        out = nb.to_batch(ids)
        return pa.Table.from_batches([out]).append_column("shard", pa.array([shard] * len(ids), type=pa.int32()))

    per_shard = crossed.groupBy("shard", "chunk").applyInArrow(search_group, spark_schema(_PER_SHARD))
    if n_parts is not None:  # the aggregation below keeps this partitioning (its key is photo_id)
        per_shard = per_shard.repartition(n_parts, "photo_id")
    fields = ["shard"] + [n for n in S.NEIGHBOURS.names if n not in ("photo_id", "index_version")]
    return per_shard.groupBy("photo_id").agg(
        F.sort_array(F.collect_list(F.struct(*fields))).alias("parts"),
        F.first("index_version").alias("index_version"),
    )


def merge_lists(batch: pa.RecordBatch | pa.Table, *, n_shards: int, k: int, ntotal: int) -> pa.Table:
    """On executors: :func:`shard_lists` rows (``photo_id``, ``parts``, ``index_version``) ->
    NEIGHBOURS, the exact top-k of each query over all shards (``faiss.merge_knn_results``),
    vectorised over the batch. A query without a list from every shard stops the run."""
    import pyarrow.compute as pc

    from georank.retrieve import Neighbours, merge_neighbours

    q = batch.num_rows
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
    version = batch.column("index_version")[0].as_py() or ""
    names = [n for n in S.NEIGHBOURS.names if n not in ("photo_id", "index_version")]
    parts = []
    for s in range(n_shards):
        rows = pa.array(np.arange(q) * n_shards + s)
        part = pa.Table.from_arrays(
            [structs.field(n).take(rows) for n in names] + [pa.array([version] * q, type=pa.string())],
            names=[*names, "index_version"],
        )
        parts.append(Neighbours.from_batch(part))
    merged = merge_neighbours(parts, k, ntotal=ntotal)
    return pa.Table.from_batches([merged.to_batch(batch.column("photo_id").to_pylist())])


def _merge(n_shards: int, k: int, ntotal: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def merge_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Executor: exact merge of each query's per-shard lists (shard order), vectorised per batch."""
        for batch in batches:
            if batch.num_rows:
                yield from merge_lists(batch, n_shards=n_shards, k=k, ntotal=ntotal).to_batches()

    return merge_batches


__all__ = ["merge_lists", "retrieve_neighbours", "shard_lists"]

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
    collected (``groupBy(photo_id)``, ``collect_list``) and merged exactly with
    ``faiss.merge_knn_results`` in vectorised ``mapInArrow`` batches.

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
    from pyspark.sql import functions as F

    from georank.schema import spark_schema

    spark = queries.sparkSession
    m_d = m.to_dict()
    shards = spark.range(m.n_shards).select(F.col("id").cast("int").alias("shard"))
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
    fields = ["shard"] + [n for n in S.NEIGHBOURS.names if n not in ("photo_id", "index_version")]
    collected = per_shard.groupBy("photo_id").agg(
        F.sort_array(F.collect_list(F.struct(*fields))).alias("parts"),
        F.first("index_version").alias("index_version"),
    )
    return collected.mapInArrow(_merge(m.n_shards, k, m.ntotal), spark_schema(S.NEIGHBOURS))


def _merge(n_shards: int, k: int, ntotal: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def merge_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Executor: exact merge of each query's per-shard lists (shard order), vectorised per batch."""
        import pyarrow.compute as pc

        from georank.retrieve import Neighbours, merge_neighbours

        for batch in batches:
            q = batch.num_rows
            if q == 0:
                continue
            parts_col = batch.column("parts")
            counts = pc.list_value_length(parts_col).to_numpy(zero_copy_only=False)
            if (counts != n_shards).any():
                r = int(np.flatnonzero(counts != n_shards)[0])
                raise GalleryIndexError(
                    f"query {batch.column('photo_id')[r].as_py()!r} got results from {counts[r]} shards; "
                    f"expected all {n_shards}"
                )
            structs = parts_col.flatten()  # (q * n_shards) structs, each query's parts in shard order
            version = batch.column("index_version")[0].as_py() or ""
            parts = []
            for s in range(n_shards):
                rows = pa.array(np.arange(q) * n_shards + s)
                part = pa.Table.from_arrays(
                    [structs.field(n).take(rows) for n in S.NEIGHBOURS.names if n not in ("photo_id", "index_version")]
                    + [pa.array([version] * q, type=pa.string())],
                    names=[n for n in S.NEIGHBOURS.names if n not in ("photo_id", "index_version")] + ["index_version"],
                )
                parts.append(Neighbours.from_batch(part))
            merged = merge_neighbours(parts, k, ntotal=ntotal)
            yield merged.to_batch(batch.column("photo_id").to_pylist())

    return merge_batches


__all__ = ["retrieve_neighbours"]

"""The geotag job's sharded placement (``index.placement: sharded``; driver side, plus the two
executor steps it ships): an embed stage that reads and decodes its photos, the shard-wise search
(:func:`georank.spark.retrieve.shard_lists`), and a rank stage that merges each photo's per-shard
lists exactly, looks up the winners' rows and ranks. Called by :func:`georank.spark.geotag.results_frame`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from georank import schema as S
from georank.config import GeorankConfig
from georank.errors import GalleryIndexError
from georank.pipeline import decode_ahead, decode_queries_ahead
from georank.run_info import RunInfo
from georank.spark.executors import on_executors, passthrough
from georank.spark.photos import as_error_results

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame


def embed_step(run: RunInfo) -> Callable[[pa.Table, GeorankConfig], pa.Table]:
    def embed(decoded: pa.Table, cfg: GeorankConfig) -> pa.Table:
        """Sharded placement: DECODED (decoded in this task, a batch ahead) -> EMBEDDED. A photo
        that could not be read or decoded is a row with that ``error_stage`` and no embedding;
        one the encoder fails on, stage ``embed`` (per-photo isolation, as the replicated path)."""
        import pyarrow.compute as pc

        from georank.pipeline import embed_isolated

        bad = pc.is_valid(decoded.column("error_stage"))
        unread = decoded.filter(bad)
        good = decoded.filter(pc.invert(bad))
        ids: list[pa.Array] = []
        vectors: list[Any] = []
        versions: list[str | None] = []
        stages: list[pa.Array] = []
        reasons: list[pa.Array] = []
        if good.num_rows:
            from georank.storage import pinned

            with pinned(run.artifacts):
                ok, emb, version, failed = embed_isolated(good, cfg, run)
            n_ok, n_failed = ok.num_rows, failed.num_rows
            ids += [ok.column("photo_id").combine_chunks(), failed.column("photo_id").combine_chunks()]
            vectors += list(emb) + [None] * n_failed
            versions += [version] * (n_ok + n_failed)
            stages += [pa.nulls(n_ok, pa.string()), failed.column("error_stage").combine_chunks()]
            reasons += [pa.nulls(n_ok, pa.string()), failed.column("error_reason").combine_chunks()]
        ids.append(unread.column("photo_id").combine_chunks())
        vectors += [None] * unread.num_rows
        versions += [None] * unread.num_rows
        stages.append(unread.column("error_stage").combine_chunks())
        reasons.append(unread.column("error_reason").combine_chunks())
        return pa.Table.from_arrays(
            [
                pa.concat_arrays([a.cast(pa.string()) for a in ids]),
                pa.array(vectors, type=pa.list_(pa.float32())),
                pa.array(versions, type=pa.string()),
                pa.concat_arrays(stages),
                pa.concat_arrays(reasons),
            ],
            schema=S.EMBEDDED,
        )

    return embed


def rank_step(run: RunInfo) -> Callable[[pa.Table, GeorankConfig], pa.Table]:
    from georank.index import Manifest
    from georank.pipeline import error_results, rank_and_decide
    from georank.spark.retrieve import merge_lists

    def rank(table: pa.Table, cfg: GeorankConfig) -> pa.Table:
        """Sharded placement: DECODED + per-shard lists (ids, scores) + embed_version rows -> RESULTS:
        merge each photo's lists exactly, look up the winners' rows (NEIGHBOURS), then rank. A photo whose second read or decode
        fails (its file changed between the stages) is its own error row."""
        import pyarrow.compute as pc

        manifest = Manifest.from_dict(run.index_manifest or {})
        bad = pc.is_valid(table.column("error_stage"))
        parts = [error_results(table.filter(bad), run)] if pc.any(bad).as_py() else []
        good = table.filter(pc.invert(bad))
        from georank.storage import pinned

        for version in sorted(set(good.column("embed_version").to_pylist())):
            rows = good.filter(pc.equal(good.column("embed_version"), version))
            neighbours = merge_lists(rows.select(["photo_id", "parts"]), cfg=cfg, manifest=manifest, k=cfg.retrieve.k)
            with pinned(run.artifacts):
                parts.append(rank_and_decide(rows.select(S.DECODED.names), neighbours, cfg, run, embed_version=version))
        return pa.concat_tables(parts) if parts else S.RESULTS.empty_table()

    return rank


# ----------------------------------------------------------------------------- driver


def sharded_results(
    photos: "DataFrame", cfg: GeorankConfig, cfg_dict: dict[str, Any], run: RunInfo, profile: Any,
    *, n_parts: int, progress: Any = None, cached: list["DataFrame"],
) -> "DataFrame":
    """RESULTS for ``index.placement: sharded`` from PHOTOS rows hash-partitioned by photo_id into
    ``n_parts`` and cached (their one shuffle): an embed stage that reads and decodes its photos
    (a batch ahead), the shard-wise search (:func:`georank.spark.retrieve.shard_lists`), then a
    rank stage that merges each photo's per-shard lists exactly, decodes its photos again and
    ranks. The per-shard lists come partitioned like the photos, so their join moves neither
    side: the photos cross one shuffle, the per-shard ids and scores one (plus the queries'
    embeddings to the shards); the winners' rows are looked up after the merge."""
    from pyspark.sql import functions as F

    from georank.index import Manifest
    from georank.spark.retrieve import shard_lists

    manifest = Manifest.from_dict(run.index_manifest or {})
    if cfg.retrieve.k > manifest.ntotal:
        raise GalleryIndexError(
            f"retrieve.k={cfg.retrieve.k} but index {manifest.index_version} holds only {manifest.ntotal} gallery vectors"
        )
    embedded = photos.mapInArrow(
        on_executors(cfg_dict, embed_step(run), accelerator=True, prepare=decode_ahead), S.spark_schema(S.EMBEDDED),
        profile=profile,
    ).cache()
    embedded.count()  # embed once: the search and the joins below all read it
    cached.append(embedded)
    embedded_ok = embedded.where(F.col("error_stage").isNull())
    # read / decode / embed failures, with their uri (ids and uris only: the bytes stay cached)
    failed = photos.select("photo_id", "uri").join(
        embedded.where(F.col("error_stage").isNotNull()).select("photo_id", "error_stage", "error_reason"), "photo_id"
    )
    lists = shard_lists(embedded_ok.select("photo_id", "embedding"), cfg_d=cfg_dict, manifest=manifest,
                        k=cfg.retrieve.k, n_parts=n_parts).cache()
    cached.append(lists)
    # A photo the search returned no row for is an error row, never silently dropped by the join.
    not_found = (
        photos.select("photo_id", "uri").join(embedded_ok.select("photo_id"), "photo_id")
        .join(lists.select("photo_id"), "photo_id", "left_anti")
        .select("photo_id", "uri", F.lit("retrieve").alias("error_stage"),
                F.lit("the index search returned no neighbours for the photo").alias("error_reason"))
    )
    # The lists are partitioned exactly as the cached photos (key photo_id, n_parts): this join is
    # narrow on both sides; only the embedder versions (ids and a short string) move to it.
    joined = (
        photos.join(lists, "photo_id")
        .join(embedded_ok.select("photo_id", "embed_version"), "photo_id")
        .select(*S.PHOTOS.names, "parts", "embed_version")
    )
    ranked = joined.mapInArrow(
        on_executors(cfg_dict, rank_step(run), accelerator=True, progress=progress, prepare=decode_queries_ahead),
        S.spark_schema(S.RESULTS), profile=profile,
    )
    errors = as_error_results(failed.unionByName(not_found), run.run_id, run.run_date)
    if progress is not None:  # error rows made outside the rank stage count towards progress too
        errors = errors.mapInArrow(
            on_executors(cfg_dict, passthrough, accelerator=False, progress=progress), errors.schema
        )
    return ranked.unionByName(errors)


__all__ = ["embed_step", "rank_step", "sharded_results"]

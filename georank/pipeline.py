"""The nightly geotag pipeline as a Spark-free core over Arrow tables.

    PHOTOS --decode_photos--> DECODED --embed_isolated--> (photo_id, embedding)
           --retrieve_isolated--> NEIGHBOURS --rank_and_decide (georank.ranking)--> RESULTS

:func:`geotag_partition` runs every step after decoding on one partition (the
bare core loop, also used by the benchmark); the Spark layer
(:mod:`georank.spark.geotag`) calls these same functions inside ``mapInArrow``.
Every function here runs on executors; models and index shards come from the
per-worker cache (:mod:`georank.resources`). A photo that cannot be used becomes
a row with ``error_stage``/``error_reason``; nothing is dropped. After decoding, a
batch call that raises is repeated photo by photo (:mod:`georank.isolation`), so only
the culprit becomes an error row; run-level errors (a wrong checkpoint or index) still
stop the run.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.candidates import prototype_candidates
from georank.config import GeorankConfig
from georank.decode import decode_image, rgb_from_bytes, rgb_to_bytes
from georank.errors import PhotoError
from georank.io import PhotoReader
from georank.isolation import Failure, breaker, is_run_level, per_item, reason_of
from georank.ranking import rank_and_decide, results_table
from georank.run_info import RunInfo

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- decode (CPU stage)


def decode_photos(photos: pa.Table | pa.RecordBatch, cfg: GeorankConfig) -> pa.Table:
    """PHOTOS -> DECODED: read (inline bytes, local path or s3://) and decode each photo.

    A photo that cannot be read or decoded keeps its row with ``error_stage`` and
    ``error_reason`` set; one S3 client serves the whole batch.
    """
    log.info("decoding %d photos", photos.num_rows)
    reader = PhotoReader(cfg.s3, max_bytes=cfg.decode.max_bytes)
    out: dict[str, list[Any]] = {name: [] for name in S.DECODED.names}
    for row in photos.to_pylist():
        uri, data = row.get("uri"), row.get("image_bytes")
        rgb = width = height = stage = reason = None
        try:
            rgb, width, height = rgb_to_bytes(decode_image(reader.read(uri, data), cfg.decode))
            breaker().ok("read")
        except PhotoError as err:
            stage, reason = err.stage, err.reason
            if err.stage != "read":
                breaker().ok("read")
            breaker().failed(err.stage, err)  # access denied, no credentials, ... in a row: the run stops
        except Exception as exc:  # noqa: BLE001  # a file a decoder chokes on in an unforeseen way: its own row
            if is_run_level(exc):
                raise
            log.warning("photo %s: decoding failed", row["photo_id"], exc_info=True)
            stage, reason = "decode", reason_of(exc, "decoding")
        out["photo_id"].append(row["photo_id"])
        out["uri"].append(uri)
        out["rgb"].append(rgb)
        out["width_px"].append(width)
        out["height_px"].append(height)
        out["error_stage"].append(stage)
        out["error_reason"].append(reason)
    return pa.table(out, schema=S.DECODED)


def decode_ahead(photos: Iterable[pa.Table | pa.RecordBatch], cfg: GeorankConfig) -> Iterator[pa.Table]:
    """PHOTOS batches -> DECODED tables, one per batch, in order, each decoded on a background
    thread while the caller works on the one before (a prefetch depth of one batch, as a
    DataLoader's worker does): the accelerator stage reads and decodes its own photos, so no
    pixels cross a shuffle, and the models do not wait for the decoder after the first batch.

    Rows and reasons are exactly :func:`decode_photos`' (a photo that cannot be read or decoded
    is a row with ``error_stage``); an exception it raises (run-level) is raised here, at the
    batch it belongs to. Runs on executors: one thread per call, ended when the caller stops.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="georank-decode")
    pending: Future[pa.Table] | None = None
    try:
        for batch in photos:
            ahead = pool.submit(decode_photos, batch, cfg)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- embed + retrieve

def _images(decoded: pa.Table) -> list[Any]:
    return [
        rgb_from_bytes(r["rgb"], r["width_px"], r["height_px"])
        for r in decoded.select(["rgb", "width_px", "height_px"]).to_pylist()
    ]


def decode_queries_ahead(tables: Iterator[pa.Table], cfg: GeorankConfig) -> Iterator[pa.Table]:
    """The sharded placement's rank stage (on executors): PHOTOS columns + other columns (the
    per-shard lists, versions) -> DECODED columns + the same other columns, each batch decoded
    on a background thread while the ranker works on the one before
    (:func:`georank.pipeline.decode_ahead`: the same decoder, so the pixels the embed stage saw)."""
    held: deque[pa.Table] = deque()  # at most two: the batch being decoded and the one ready

    def photos() -> Iterator[pa.Table]:
        for table in tables:
            held.append(table)
            yield table.select(S.PHOTOS.names)

    for decoded in decode_ahead(photos(), cfg):
        rest = held.popleft()
        for name in rest.column_names:
            if name not in S.PHOTOS.names:
                decoded = decoded.append_column(name, rest.column(name))
        yield decoded


def embed_photos(decoded: pa.Table, cfg: GeorankConfig) -> tuple[np.ndarray, str]:
    """Query embeddings ``(n, d)`` float32 (L2-normalised) of decoded photos, and the embedder version.
    One batch call: an exception fails them all (:func:`embed_isolated` isolates the culprit)."""
    from georank.embed import get_embedder

    embedder = get_embedder(cfg)
    if decoded.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32), embedder.version
    return embedder.embed(_images(decoded)), embedder.version


def _embed_rows(embedder: Any, images: Sequence[Any]) -> list[np.ndarray]:
    """One embedding ``(d,)`` per image; a row with NaN/inf is an embed failure of that photo."""
    emb = np.asarray(embedder.embed(list(images)), dtype=np.float32)
    if len(images) == 1 and not np.isfinite(emb).all():
        raise PhotoError("embed", "the image encoder gave a non-finite embedding (NaN or inf): expected finite values")
    if not np.isfinite(emb).all():
        raise ValueError("non-finite embedding in the batch")  # per_item retries one photo at a time
    return list(emb)


def embed_isolated(decoded: pa.Table, cfg: GeorankConfig, run: RunInfo) -> tuple[pa.Table, np.ndarray, str, pa.Table]:
    """DECODED (rows without errors) -> (the photos embedded, their embeddings ``(n, d)`` float32,
    the embedder version, RESULTS error rows with stage ``embed`` for the others).

    The batch is embedded at once; if that raises, one photo at a time, so only the culprit
    fails. Loading the encoder and run-level errors still raise (they are everyone's problem)."""
    from georank.embed import get_embedder

    embedder = get_embedder(cfg)
    out = per_item(_images(decoded), lambda imgs: _embed_rows(embedder, imgs), what="the image encoder", stage="embed")
    ok = [i for i, r in enumerate(out) if not isinstance(r, Failure)]
    vectors = [r for r in out if not isinstance(r, Failure)]
    emb = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), dtype=np.float32)
    return decoded.take(ok), emb, embedder.version, _failures_table(decoded, out, run)


def search_neighbours(
    photo_ids: list[str],
    emb: np.ndarray,
    cfg: GeorankConfig,
    *,
    embed_version: str | None = None,
    manifest_dict: dict[str, Any] | None = None,
) -> pa.Table:
    """NEIGHBOURS of each query: top ``retrieve.k`` over every shard held by this worker.

    ``embed_version``: the queries' embedder version; an index whose gallery was embedded by
    another embedder is refused (its neighbours would be meaningless), naming both versions.
    """
    from georank.errors import GalleryIndexError
    from georank.index import Manifest, read_manifest
    from georank.retrieve import search

    if len(photo_ids) == 0:
        return S.NEIGHBOURS.empty_table()
    root = cfg.resolve(cfg.index.uri)
    manifest = Manifest.from_dict(manifest_dict) if manifest_dict is not None else read_manifest(root, cfg.s3)
    if embed_version is not None and manifest.embed_version != embed_version:
        raise GalleryIndexError(
            f"index {root} (version {manifest.index_version}) was built from gallery embeddings of embedder "
            f"{manifest.embed_version}, but the queries are embedded by {embed_version} ({cfg.embed.model_uri}); "
            "expected the same embedder: rebuild the index (jobs/build_index.py) or set embed.* to the gallery's embedder"
        )
    return pa.Table.from_batches([search(cfg, emb, k=cfg.retrieve.k, manifest=manifest).to_batch(photo_ids)])


def retrieve_isolated(
    decoded: pa.Table, emb: np.ndarray, cfg: GeorankConfig, run: RunInfo, *, embed_version: str
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(the photos retrieved, their NEIGHBOURS in the same order, RESULTS error rows with stage
    ``retrieve``): one search for the batch, one per photo if that raises; a photo whose search
    returns no neighbour is an error row too. Run-level errors (a wrong index) still raise."""
    ids = decoded.column("photo_id").to_pylist()

    def search_rows(idx: Sequence[int]) -> list[dict[str, Any]]:
        rows = search_neighbours(
            [ids[i] for i in idx], emb[list(idx)], cfg, embed_version=embed_version, manifest_dict=run.index_manifest
        ).to_pylist()
        if len(idx) == 1 and rows and not rows[0]["gallery_id"]:
            raise PhotoError("retrieve", "the gallery index returned no neighbour for this photo")
        if any(not r["gallery_id"] for r in rows):
            raise ValueError("a photo got no neighbour")  # per_item retries one photo at a time
        return rows

    out = per_item(list(range(len(ids))), search_rows, what="the index search", stage="retrieve")
    ok = [i for i, r in enumerate(out) if not isinstance(r, Failure)]
    neighbours = pa.Table.from_pylist([out[i] for i in ok], schema=S.NEIGHBOURS)
    return decoded.take(ok), neighbours, _failures_table(decoded, out, run)


def _failures_table(decoded: pa.Table, out: Sequence[Any], run: RunInfo) -> pa.Table:
    """RESULTS error rows for the rows of ``decoded`` whose ``out`` is a :class:`Failure`."""
    rows = decoded.select(["photo_id", "uri"]).to_pylist()
    return results_table(
        [
            {**r, "run_id": run.run_id, "run_date": run.run_date, "error_stage": f.stage, "error_reason": f.reason}
            for r, f in zip(rows, out)
            if isinstance(f, Failure)
        ]
    )


def error_results(decoded_errors: pa.Table, run: RunInfo) -> pa.Table:
    """RESULTS rows for photos that failed before the accelerator stage."""
    rows = [
        {
            "photo_id": r["photo_id"],
            "uri": r["uri"],
            "run_id": run.run_id,
            "run_date": run.run_date,
            "error_stage": r["error_stage"],
            "error_reason": r["error_reason"],
        }
        for r in decoded_errors.select(["photo_id", "uri", "error_stage", "error_reason"]).to_pylist()
    ]
    return results_table(rows)


def geotag_partition(decoded: pa.Table, cfg: GeorankConfig, run: RunInfo) -> pa.Table:
    """DECODED -> RESULTS for one partition: embed, retrieve (shards held by this worker),
    candidates, skip rule, rank, decide. Rows that already failed pass through as errors; a
    photo that fails at any later step becomes its own error row (the others go on)."""
    import pyarrow.compute as pc

    failed = pc.is_valid(decoded.column("error_stage"))
    bad = decoded.filter(failed)
    good = decoded.filter(pc.invert(failed))
    parts = [error_results(bad, run)] if bad.num_rows else []
    if good.num_rows:
        embedded, emb, embed_version, embed_errors = embed_isolated(good, cfg, run)
        retrieved, neighbours, retrieve_errors = retrieve_isolated(embedded, emb, cfg, run, embed_version=embed_version)
        parts += [embed_errors, retrieve_errors]
        if retrieved.num_rows:
            protos = prototype_candidates(cfg, emb, embed_version=embed_version)  # [] per photo when disabled
            by_photo = dict(zip(embedded.column("photo_id").to_pylist(), protos))
            parts.append(rank_and_decide(retrieved, neighbours, cfg, run, embed_version=embed_version, prototypes=by_photo))
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return S.RESULTS.empty_table()
    return pa.concat_tables(parts)

"""Build the training-groups table from a gallery and its index (driver side).

``jobs/build_training_data.py`` calls :func:`build_training_data`: sampled gallery photos are
read (:class:`georank.io.PhotoReader`), decoded and embedded with the index's embedder, searched
in the gallery's own index (``retrieve.k + 1`` neighbours, the query then removed by id, see
:mod:`georank.train.groups`), and written as one Delta commit through the project's one writer
(:func:`georank.write.commit` on the Spark session: local or ``s3a://`` tables) whose version the
summary reports. A photo that cannot be read or decoded is counted and left out, never a crash.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from georank import guards
from georank.config import GeorankConfig
from georank.errors import InputError, PhotoError, WriteError
from georank.schema import GALLERY, TRAINING_GROUPS

if TYPE_CHECKING:  # pragma: no cover
    from georank.write import Txn

log = logging.getLogger(__name__)


def read_table(uri: str) -> tuple[pa.Table, str]:
    """A local Delta table (latest version) or Parquet file/folder, and its version label."""
    path = Path(uri)
    if (path / "_delta_log").is_dir():
        from deltalake import DeltaTable

        dt = DeltaTable(uri)
        return dt.to_pyarrow_table(), f"delta:{dt.version()}"
    if not path.exists():
        raise InputError(f"table {uri}: expected a Delta table or a Parquet file/folder, got nothing there")
    table = pq.read_table(uri)
    files = sorted(str(p) + str(p.stat().st_size) for p in ([path] if path.is_file() else path.rglob("*.parquet")))
    return table, "parquet:" + hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]


def with_descriptions(gallery: pa.Table) -> pa.Table:
    """The gallery with a ``description`` column, made exactly as the index build makes it
    (:func:`georank.gallery.descriptions`: city, state, country, else reverse-geocoded), so that
    training prompts describe a candidate as inference prompts do."""
    from georank.gallery import descriptions

    cols = {name: gallery.column(name).to_pylist() for name in ("city", "state", "country", "lat_deg", "lon_deg")
            if name in gallery.column_names}
    return gallery.append_column("description", pa.array(descriptions(cols, gallery.num_rows), pa.string()))


TXN_APP_ID = "georank-build-training-data"  # the whole table is one key: of two builds at once, the first wins


def begin_groups(cfg: GeorankConfig, uri: str, *, mode: Literal["error", "overwrite"]) -> "Txn":
    """At the build's start: refuse an existing table with ``mode="error"``, and take the table's
    transaction (:func:`georank.write.begin`) through the project's Spark session."""
    from georank import write
    from georank.spark.session import get_spark

    spark = get_spark(cfg)
    if mode == "error" and write.is_delta(spark, uri):
        raise WriteError(f"training data {uri} exists; expected --mode overwrite to replace it, or another train.data")
    return write.begin(spark, uri, TXN_APP_ID)


def write_groups(table: pa.Table, uri: str, *, cfg: GeorankConfig, txn: "Txn", label: str) -> int:
    """Write TRAINING_GROUPS as ONE Delta commit through the one writer (:func:`georank.write.commit`,
    on the Spark session, so ``train.data`` may be an ``s3a://`` table); returns the table version."""
    from georank import write
    from georank.schema import spark_schema
    from georank.spark.session import get_spark

    spark = get_spark(cfg)
    df = spark.createDataFrame(table.cast(TRAINING_GROUPS), schema=spark_schema(TRAINING_GROUPS))
    return write.commit(df, uri, table="training_groups", mode="overwrite", txn=txn, label=label, cfg=cfg)


def embed_queries(cfg: GeorankConfig, uris: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """``(ok (q,) bool, vectors (n_ok, dim))`` of the query photos, and failures by stage."""
    from georank.decode import decode_image
    from georank.embed import get_embedder
    from georank.io import PhotoReader

    reader = PhotoReader(cfg.s3, max_bytes=cfg.decode.max_bytes)
    images, ok = [], np.zeros(len(uris), dtype=bool)
    failed: dict[str, int] = {}
    for i, uri in enumerate(uris):
        try:
            images.append(decode_image(reader.read(uri), cfg.decode))
            ok[i] = True
        except PhotoError as exc:
            failed[exc.stage] = failed.get(exc.stage, 0) + 1
            log.warning("training query %s left out: %s", uri, exc)
    return ok, get_embedder(cfg).embed(images), failed


def build_training_data(
    cfg: GeorankConfig, *, mode: Literal["error", "overwrite"] = "error", out_uri: str | None = None,
    n_queries: int | None = None, label: str | None = None,
) -> dict[str, Any]:
    """Sample queries from ``tables.gallery``, retrieve, group, write ``train.data``. Returns a summary."""
    from georank.index import read_manifest
    from georank.retrieve import search
    from georank.train.groups import build_groups, sample_queries

    uri = out_uri or cfg.resolve(cfg.train.data)
    txn = begin_groups(cfg, uri, mode=mode)
    gallery, g_version = read_table(cfg.resolve(cfg.tables.gallery))
    if "uri" not in gallery.column_names or gallery.column("uri").null_count:
        raise InputError("gallery table: training reads images by uri; expected a uri on every row")
    gallery = with_descriptions(gallery.select([c for c in GALLERY.names if c in gallery.column_names]))
    gallery = gallery.filter(pc.is_valid(gallery.column("lat_deg")))
    manifest = read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    rows = sample_queries(gallery.column("gallery_id").to_numpy(), n_queries or cfg.train.queries, seed=cfg.train.seed)
    uris = [gallery.column("uri")[int(r)].as_py() for r in rows]
    ok, vectors, failed = embed_queries(cfg, uris)
    # Before the write, as every job's: a build whose query photos mostly failed (an outage) never
    # replaces the training data.
    guards.check_not_empty(what="training data", read=len(uris), source=cfg.resolve(cfg.tables.gallery), allow_empty=False)
    worst = max(failed.items(), key=lambda kv: kv[1]) if failed else None
    guards.check_error_fraction(what="training data", read=len(uris), errors=sum(failed.values()),
                                max_fraction=cfg.write.max_error_fraction,
                                top=guards.TopFailure(worst[0], "query photos that could not be used", worst[1]) if worst else None)
    rows = rows[ok]
    neighbours = search(cfg, vectors, k=cfg.retrieve.k + 1, manifest=manifest)
    version = f"{g_version}+index:{manifest.index_version}"
    groups = build_groups(gallery, rows, neighbours, cfg, source_version=version)
    table_version = write_groups(groups, uri, cfg=cfg, txn=txn, label=label or f"build_training_data-{uuid.uuid4().hex}")
    log.info("training data %s v%d: %d groups (%s)", uri, table_version, groups.num_rows, cfg.train.grouping)
    return {
        "training_data": uri,
        "table_version": table_version,
        "groups": groups.num_rows,
        "queries_failed": failed,
        "grouping": cfg.train.grouping,
        "source_version": version,
    }




def build_georanking_data(
    cfg: GeorankConfig, *, uri: str, images_root: str | None, mode: Literal["error", "overwrite"] = "error",
    label: str | None = None,
) -> dict[str, Any]:
    """The published GeoRanking parquet as ``train.data`` (position 0 of each ref list skipped)."""
    from georank.errors import ConfigError
    from georank.train.groups import read_georanking

    root = images_root or cfg.train.georanking_images
    if not root:
        raise ConfigError("config key 'train.georanking_images': expected the folder of the GeoRanking images, got none")
    out = cfg.resolve(cfg.train.data)
    txn = begin_groups(cfg, out, mode=mode)
    table, version = read_table(cfg.resolve(uri))
    groups = read_georanking(table, images_root=cfg.resolve(root), group_size=cfg.train.group_size, source_version=version)
    written = write_groups(groups, out, cfg=cfg, txn=txn, label=label or f"build_training_data-{uuid.uuid4().hex}")
    return {"training_data": out, "table_version": written, "groups": groups.num_rows,
            "grouping": "georanking", "source_version": version}


__all__ = ["begin_groups", "build_georanking_data", "build_training_data", "read_table", "with_descriptions", "write_groups"]

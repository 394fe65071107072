"""The embedded demo (driver side, Spark-free): make sure the demo world, tiny models and
gallery index exist, building each only when missing or stale, and (when configured) train the
demo ranker (:mod:`georank.train.demo`).

Called by jobs when ``demo.ensure`` is true (conf/local.yaml) and by the tests. The
pieces: the synthetic photos (:mod:`georank.demo.world`); a tiny CLIP and a tiny GeoRanker
of the real architectures with RANDOM weights (no CLIP or VLM weights ship in any
package); the ranker is then trained on the demo gallery when ``demo.train_*_steps`` say so
(conf/local.yaml does; the tests' tiny world does not); and the gallery
index, built with the same core functions the index job runs on executors
(:func:`georank.gallery.prepare_gallery_batch`, :func:`georank.index.build_index`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from georank.config import GeorankConfig
from georank.errors import GeorankError

log = logging.getLogger(__name__)


def ensure_demo_models(cfg: GeorankConfig) -> dict[str, str]:
    """Build the tiny CLIP and tiny ranker at the config's URIs if they are missing."""
    from georank.embed import build_tiny_clip
    from georank.rank import build_tiny_ranker

    built: dict[str, str] = {}
    clip = Path(cfg.resolve(cfg.embed.model_uri))
    if not (clip / "config.json").exists():
        build_tiny_clip(clip, seed=cfg.demo.seed)
        built["clip"] = str(clip)
    base = Path(cfg.resolve(cfg.rank.base_model_uri))
    adapter = Path(cfg.resolve(cfg.rank.adapter_uri))
    if not (base / "config.json").exists() or not (adapter / "adapter_config.json").exists():
        got = build_tiny_ranker(base.parent, seed=cfg.demo.seed)
        if tuple(got) != (base, adapter):
            raise GeorankError(
                f"demo: the tiny ranker was written to {got[0]} and {got[1]}; expected the config's "
                f"rank.base_model_uri={base} and rank.adapter_uri={adapter}"
            )
        built["ranker"] = str(base.parent)
    return built


def build_gallery_index(cfg: GeorankConfig, gallery: pa.Table, *, gallery_version: str, batch_rows: int = 256) -> dict[str, Any]:
    """Embed ``gallery`` (schema.GALLERY) on this process and build the configured index (mode overwrite)."""
    from georank.gallery import prepare_gallery_batch
    from georank.index import build_index, embeddings_matrix

    parts = [
        pa.Table.from_batches([prepare_gallery_batch(b, cfg, n_shards=cfg.index.shards)])
        for b in gallery.to_batches(max_chunksize=batch_rows)
    ]
    prepared = pa.concat_tables(parts)
    ok = prepared.filter(pc.is_null(prepared.column("error_stage")))
    versions = set(ok.column("embed_version").to_pylist())
    if len(versions) != 1:
        raise GeorankError(f"demo gallery: expected one embedder version, got {sorted(map(str, versions))}")
    meta = ok.select(["gallery_id", "lat_deg", "lon_deg", "description"]).append_column("image_uri", ok.column("uri"))
    manifest = build_index(
        ids=ok.column("gallery_id").to_numpy(),
        vectors=embeddings_matrix(ok.column("embedding")),
        meta=meta,
        cfg=cfg.index,
        uri=cfg.resolve(cfg.index.uri),
        s3=cfg.s3,
        embed_version=versions.pop(),
        gallery_table=cfg.resolve(cfg.tables.gallery),
        gallery_table_version=gallery_version,
        mode="overwrite",
    )
    return {"index_version": manifest.index_version, "embedded": ok.num_rows, "errors": prepared.num_rows - ok.num_rows}


def ensure_demo_inputs(cfg: GeorankConfig) -> tuple[Any, dict[str, Any]]:
    """The demo world and tiny models (not the index): ``(DemoWorld, what was built)``."""
    from georank.demo.world import build_demo_world

    root = Path(cfg.resolve(cfg.demo.root))
    world = build_demo_world(
        root, gallery_photos=cfg.demo.gallery_photos, query_photos=cfg.demo.query_photos, seed=cfg.demo.seed
    )
    summary: dict[str, Any] = {"world": world.world_id, "world_built": world.built}
    summary.update(ensure_demo_models(cfg))
    return world, summary


def ensure_demo(cfg: GeorankConfig) -> dict[str, Any]:
    """Demo world + tiny models + gallery index, each built only when missing. Returns what was built."""
    from georank.index import read_manifest

    world, summary = ensure_demo_inputs(cfg)
    try:
        stale = read_manifest(cfg.resolve(cfg.index.uri), cfg.s3).gallery_table_version != world.world_id
    except GeorankError:
        stale = True
    if stale:
        summary["index"] = build_gallery_index(cfg, pq.read_table(world.gallery_table), gallery_version=world.world_id)
    # The demo ranker trained on groups from the demo gallery (never demo/queries), once per world
    # and settings (demo.train_warmup_steps / demo.train_ranker_steps; 0 and 0: the random ranker).
    from georank.train.demo import ensure_trained_ranker

    trained = ensure_trained_ranker(cfg, world.world_id)
    if trained is not None:
        summary["ranker_trained"] = trained
    if cfg.candidates.prototypes.enabled:  # the cell prototypes' index (jobs/build_cells.py), when missing or stale
        from georank.cells.store import ensure_cells

        cells = ensure_cells(cfg)
        if cells is not None:
            summary["cells"] = cells
    return summary


__all__ = ["ensure_demo", "ensure_demo_inputs", "ensure_demo_models", "build_gallery_index"]

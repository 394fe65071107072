"""The embedded demo (driver side): make sure the demo world, tiny models and index exist.

Called by jobs when ``demo.ensure`` is true (conf/local.yaml). Each piece is built
once and reused: the synthetic photos (:mod:`georank.demo`), a tiny CLIP and a tiny
GeoRanker of the real architectures with RANDOM weights (no CLIP or VLM weights
ship in any package, so the demo's predictions show the machinery, not accuracy),
and the gallery index built by the index job's library function.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from georank.config import GeorankConfig

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def ensure_demo_models(cfg: GeorankConfig) -> dict[str, Any]:
    """Build the tiny CLIP and tiny ranker at the config's URIs if they are missing."""
    from georank.embed import build_tiny_clip
    from georank.rank import build_tiny_ranker

    built: dict[str, Any] = {}
    clip = Path(cfg.resolve(cfg.embed.model_uri))
    if not (clip / "config.json").exists():
        build_tiny_clip(clip, seed=cfg.demo.seed)
        built["clip"] = str(clip)
    base = Path(cfg.resolve(cfg.rank.base_model_uri))
    adapter = Path(cfg.resolve(cfg.rank.adapter_uri))
    if not (base / "config.json").exists() or not (adapter / "adapter_config.json").exists():
        if base.parent != adapter.parent:
            raise ValueError("demo: expected rank.base_model_uri and rank.adapter_uri in one folder")
        got_base, got_adapter = build_tiny_ranker(base.parent, seed=cfg.demo.seed)
        if (got_base, got_adapter) != (base, adapter):
            raise ValueError(f"demo: tiny ranker written to {got_base}, {got_adapter}; config names {base}, {adapter}")
        built["ranker"] = str(base.parent)
    return built


def ensure_demo(spark: "SparkSession", cfg: GeorankConfig) -> dict[str, Any]:
    """Demo world + tiny models + gallery index, each built only when missing. Returns what was built."""
    from georank.demo import build_demo_world
    from georank.index import read_manifest

    root = Path(cfg.resolve(cfg.demo.root))
    world = build_demo_world(
        root, gallery_photos=cfg.demo.gallery_photos, query_photos=cfg.demo.query_photos, seed=cfg.demo.seed
    )
    summary: dict[str, Any] = {"world": world.world_id, "world_built": world.built}
    summary.update(ensure_demo_models(cfg))
    index_uri = cfg.resolve(cfg.index.uri)
    try:
        manifest = read_manifest(index_uri, cfg.s3)
        stale = world.built or manifest.gallery_version != world.world_id
    except Exception:  # noqa: BLE001 - no index yet
        stale = True
    if stale:
        from georank.spark.index_job import run_build_index

        summary["index"] = run_build_index(spark, cfg, gallery_uri=str(world.gallery_table), mode="overwrite", gallery_version=world.world_id)
    return summary

"""What training buys, measured on held-out photos: groups built around photos that are NOT in
the gallery (the demo's query photos), scored by the geotag job's own scorer.

For each held-out photo (true location known): its ``retrieve.k`` retrieved neighbours (the
prompt's negatives, as at inference) and a group of candidates chosen as in training
(``train.grouping``: the nearest gallery photo + one per distance band, the same with look-alikes
from its retrieved neighbours between them, or the first G retrieved).
:func:`evaluate_groups` reports how often the ranker's top score is the nearest candidate
(``pick_nearest``; chance is 1/G) and the median geodesic error of the picked candidate.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from georank.config import GeorankConfig
from georank.geo import geodesic_km
from georank.places import ecef_km
from georank.schema import TRAINING_GROUPS

log = logging.getLogger(__name__)


def heldout_groups(
    cfg: GeorankConfig, photos: pa.Table, gallery: pa.Table, *, seed: int = 0, source_version: str = ""
) -> pa.Table:
    """TRAINING_GROUPS rows around ``photos`` (``photo_id``, ``uri``, ``lat_deg``, ``lon_deg``),
    candidates from ``gallery`` (with ``description``, :func:`georank.train.build.with_descriptions`)."""
    from georank.retrieve import search
    from georank.train.build import embed_queries
    from georank.train.groups import arc_km_from, choose_group

    t = cfg.train
    uris = photos.column("uri").to_pylist()
    ok, vectors, _ = embed_queries(cfg, uris)
    photos = photos.filter(pa.array(ok))
    neigh = search(cfg, vectors, k=cfg.retrieve.k)
    gid = gallery.column("gallery_id").to_numpy()
    lat = gallery.column("lat_deg").to_numpy(zero_copy_only=False).astype(np.float64)
    lon = gallery.column("lon_deg").to_numpy(zero_copy_only=False).astype(np.float64)
    g_uri = gallery.column("uri").to_pylist()
    desc = [d or "" for d in gallery.column("description").to_pylist()]
    ecef = ecef_km(lat, lon)
    row_of = {int(x): i for i, x in enumerate(gid)}
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for qi, p in enumerate(photos.to_pylist()):
        q_lat, q_lon = float(p["lat_deg"]), float(p["lon_deg"])
        if t.grouping in ("spread", "mixed"):
            arc = arc_km_from(ecef_km(np.array([q_lat]), np.array([q_lon]))[0], ecef)
            usable = np.ones(len(gid), dtype=bool)
            alike = [row_of[int(x)] for x in neigh.gallery_id[qi][: cfg.candidates.retrieved] if int(x) in row_of]
            chosen = choose_group(t, arc, usable, alike, rng)
        else:
            pos = np.searchsorted(gid, neigh.gallery_id[qi][: t.group_size]) if np.all(np.diff(gid) > 0) else None
            chosen = (
                [int(i) for i in pos]
                if pos is not None
                else [int(np.flatnonzero(gid == x)[0]) for x in neigh.gallery_id[qi][: t.group_size]]
            )
        g_lat, g_lon = [float(lat[r]) for r in chosen], [float(lon[r]) for r in chosen]
        rows.append(
            {
                "query_id": str(p["photo_id"]),
                "query_uri": p["uri"],
                "query_lat_deg": q_lat,
                "query_lon_deg": q_lon,
                "neighbour_id": [str(int(x)) for x in neigh.gallery_id[qi]],
                "neighbour_lat_deg": [float(x) for x in neigh.lat_deg[qi]],
                "neighbour_lon_deg": [float(x) for x in neigh.lon_deg[qi]],
                "neighbour_description": [d or "" for d in neigh.description[qi]],
                "neighbour_uri": [u or "" for u in neigh.image_uri[qi]],
                "group_id": [str(int(gid[r])) for r in chosen],
                "group_lat_deg": g_lat,
                "group_lon_deg": g_lon,
                "group_description": [desc[r] for r in chosen],
                "group_uri": [g_uri[r] for r in chosen],
                "group_dist_km": [geodesic_km(q_lat, q_lon, a, b) for a, b in zip(g_lat, g_lon)],
                "grouping": t.grouping,
                "source_version": source_version,
            }
        )
    return pa.Table.from_pylist(rows, schema=TRAINING_GROUPS)


def evaluate_groups(scorer: Any, cfg: GeorankConfig, groups: pa.Table) -> dict[str, float]:
    """``pick_nearest`` (share of groups whose top score is the nearest candidate), ``chance``
    (1/G), ``median_error_km`` of the picked candidate and ``n``, with ``scorer``
    (:class:`georank.rank.scorer.Scorer`, the geotag job's scoring path)."""
    from georank.decode import decode_image
    from georank.io import PhotoReader
    from georank.train.dataset import row_to_query

    reader = PhotoReader(cfg.s3, max_bytes=cfg.decode.max_bytes)
    hits, errors_km, sizes = [], [], []
    for row in groups.to_pylist():
        images = [decode_image(reader.read(u), cfg.decode) for u in [row["query_uri"], *row["group_uri"]]]
        query = row_to_query(
            row, images, negatives_from=cfg.retrieve.negatives_from, negatives_count=cfg.retrieve.negatives_count
        )
        scores = scorer.score([query])[0]
        dist = np.asarray(row["group_dist_km"])
        pick = int(np.argmax(scores))  # ties to the earliest, as decide does
        hits.append(float(dist[pick] == dist.min()))
        errors_km.append(float(dist[pick]))
        sizes.append(len(dist))
    return {
        "pick_nearest": float(np.mean(hits)) if hits else float("nan"),
        "chance": float(np.mean([1.0 / s for s in sizes])) if sizes else float("nan"),
        "median_error_km": float(np.median(errors_km)) if errors_km else float("nan"),
        "n": float(len(hits)),
    }


__all__ = ["evaluate_groups", "heldout_groups"]

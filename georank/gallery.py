"""Gallery rows for the index build (executor side): validate, read, decode, describe, embed.

One row out per gallery row in (``schema.GALLERY`` -> ``schema.GALLERY_PREPARED``): an embedding
with its shard, or an error with its stage (``input``: null id, bad coordinates, no image;
``read``; ``decode``) and a reason. The index itself is built from the good rows by
:func:`georank.index.build_index`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.config import GeorankConfig
from georank.errors import PhotoError
from georank.geo import latlon_problem
from georank.index import shard_of


def _bad_coords(lat: Any, lon: Any) -> str | None:
    problem = latlon_problem(lat, lon)
    if problem == "missing":
        return f"missing coordinates: lat_deg={lat}, lon_deg={lon}; expected both"
    if problem == "non_finite":
        return f"coordinates are not finite numbers: lat_deg={lat}, lon_deg={lon}"
    if problem == "out_of_range":
        return f"coordinates out of range: lat_deg={lat}, lon_deg={lon}; expected [-90, 90] x [-180, 180]"
    return None


def descriptions(cols: dict[str, list[Any]], n: int) -> list[str]:
    """``{desc}`` of each row from its city/state/country; rows with none of the three (or a
    gallery without place columns) get them from offline reverse geocoding of their coordinates."""
    from georank.places import describe, reverse_geocode

    blank = [None] * n
    city, state, country = cols.get("city", blank), cols.get("state", blank), cols.get("country", blank)
    desc = [describe(c, s, k) for c, s, k in zip(city, state, country)]
    missing = [i for i in range(n) if not desc[i] and _bad_coords(cols["lat_deg"][i], cols["lon_deg"][i]) is None]
    if missing:
        places = reverse_geocode(
            np.array([cols["lat_deg"][i] for i in missing], dtype=np.float64),
            np.array([cols["lon_deg"][i] for i in missing], dtype=np.float64),
        )
        for i, place in zip(missing, places):
            desc[i] = describe(place.city, place.state, place.country)
    return desc


def prepare_gallery_batch(batch: pa.RecordBatch, cfg: GeorankConfig, *, n_shards: int) -> pa.RecordBatch:
    """Validate, read, decode and embed gallery rows (schema.GALLERY columns) into a
    schema.GALLERY_PREPARED batch: one row out per row in, with an embedding or an error.

    Errors: stage ``input`` (null id, bad coordinates, no image), ``read``, ``decode``.
    Runs on executors (mapInArrow); the embedder is the worker's cached one.
    """
    from georank.decode import decode_image
    from georank.embed import get_embedder
    from georank.io import PhotoReader

    cols = batch.to_pydict()
    n = batch.num_rows
    stage: list[str | None] = [None] * n
    reason: list[str | None] = [None] * n
    desc = descriptions(cols, n)
    images, image_rows = [], []
    reader = PhotoReader(cfg.s3, max_bytes=cfg.decode.max_bytes)
    for i in range(n):
        gid, uri, data = cols["gallery_id"][i], cols["uri"][i], cols["image_bytes"][i]
        why = "gallery_id is null; expected a 64-bit id" if gid is None else _bad_coords(cols["lat_deg"][i], cols["lon_deg"][i])
        if why is None and uri is None and data is None:
            why = "no image: expected a uri or image_bytes, got neither"
        if why is not None:
            stage[i], reason[i] = "input", why
            continue
        try:
            images.append(decode_image(reader.read(uri, data), cfg.decode))
            image_rows.append(i)
        except PhotoError as exc:
            stage[i], reason[i] = exc.stage, exc.reason
    embedder = get_embedder(cfg) if images else None
    vectors = embedder.embed(images) if embedder is not None else np.zeros((0, 0), dtype=np.float32)
    embedding: list[np.ndarray | None] = [None] * n
    for j, i in enumerate(image_rows):
        embedding[i] = vectors[j]
    version = embedder.version if embedder is not None else None
    ids = np.array([g if g is not None else 0 for g in cols["gallery_id"]], dtype=np.int64)
    shard = shard_of(ids, n_shards)
    emb_arr = pa.array([None if e is None else e for e in embedding], type=pa.list_(pa.float32()))
    return pa.RecordBatch.from_pydict(
        {
            "gallery_id": pa.array(cols["gallery_id"], type=pa.int64()),
            "uri": pa.array(cols["uri"], type=pa.string()),
            "lat_deg": pa.array(cols["lat_deg"], type=pa.float64()),
            "lon_deg": pa.array(cols["lon_deg"], type=pa.float64()),
            "description": pa.array(desc, type=pa.string()),
            "embedding": emb_arr,
            "embed_version": pa.array([version if e is not None else None for e in embedding], type=pa.string()),
            "shard": pa.array([None if g is None else int(s) for g, s in zip(cols["gallery_id"], shard)], type=pa.int32()),
            "error_stage": pa.array(stage, type=pa.string()),
            "error_reason": pa.array(reason, type=pa.string()),
        },
        schema=S.GALLERY_PREPARED,
    )

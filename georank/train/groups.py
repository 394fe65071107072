"""Training groups (schema.TRAINING_GROUPS), Spark-free: from a gallery + its index, or from the
published GeoRanking parquet.

From a gallery (``jobs/build_training_data.py``): sampled gallery photos are the queries; each is
embedded and searched in the gallery's own index for ``retrieve.k + 1`` neighbours, and the
query itself is removed from its neighbours BY ID (wherever it ranks: an exact duplicate of the
query may rank first, and a position-0 skip would then drop the duplicate and keep the query).
The group the ranker trains on (``train.grouping``):

- ``retrieved``: the first ``train.group_size`` neighbours (the reference's grouping);
- ``spread``: the nearest other gallery photo, then one photo drawn in each band of
  ``train.spread_bands_km`` (e.g. 50-300, 500-1500, 2000-5000, >8000 km). Bands are matched on
  great-circle lengths of ECEF chords, cheap for the whole gallery; every stored distance
  (``group_dist_km``) is the WGS-84 geodesic;
- ``mixed``: the nearest other gallery photo, then ``train.lookalikes`` drawn from the query's
  first ``candidates.retrieved`` neighbours (the look-alikes the ranker orders at inference; with
  ``train.lookalike_min_km`` only those at least that far), then one photo in each band, cut at
  ``train.group_size``. With ``train.own_image`` the query's own photo comes first (0 km): the
  one place where a query is its own candidate, on purpose (a matching task for a random tiny
  backbone's warm-up), never among its neighbours.

From GeoRanking (:func:`read_georanking`): ``img_id``, ``gps``, ``ref_gps``, ``ref_img_id``,
``ref_texts``; the reference skips position 0 of each ref list (the query itself) and so does this
reader, here only: the published rows were built that way.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from georank.config import GeorankConfig, TrainConfig
from georank.errors import ConfigError, InputError
from georank.geo import geodesic_km
from georank.places import ecef_km
from georank.schema import TRAINING_GROUPS

log = logging.getLogger(__name__)

MEAN_RADIUS_KM = 6371.0088  # IUGG mean Earth radius: only to turn chords into arcs for band matching


def sample_queries(gallery_ids: np.ndarray, n: int | None, *, seed: int) -> np.ndarray:
    """Indices (q,) of ``n`` gallery rows drawn without replacement (all rows when n is None), sorted."""
    total = len(gallery_ids)
    if n is None or n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def remove_self(query_id: str, ids: Sequence[str], k: int) -> list[int]:
    """Positions of ``ids`` (best first) to keep: every id but ``query_id``, at most ``k``."""
    return [i for i, x in enumerate(ids) if x != query_id][:k]


def arc_km_from(query_ecef_km: np.ndarray, ecef: np.ndarray) -> np.ndarray:
    """Great-circle lengths (n,) km of the ECEF chords from one point (3,) to ``ecef (n, 3)``: on a
    6371 km sphere, within ~0.5% of the WGS-84 geodesic; cheap enough for a whole gallery."""
    chord_km = np.linalg.norm(ecef - query_ecef_km, axis=1)
    return 2.0 * MEAN_RADIUS_KM * np.arcsin(np.clip(chord_km / (2.0 * MEAN_RADIUS_KM), 0.0, 1.0))


def spread_choice(
    arc_km: np.ndarray, usable: np.ndarray, bands_km: Sequence[tuple[float, float]], rng: np.random.Generator
) -> list[int]:
    """Rows of a spread group: the nearest usable row, then one drawn in each distance band.

    ``arc_km (n,)`` from :func:`arc_km_from`; ``usable (n,)`` False for the query itself (by id).
    A band with no photo takes the usable photo closest to the band (never one already chosen).
    """
    order = np.argsort(np.where(usable, arc_km, np.inf), kind="stable")
    return band_choice(arc_km, usable, bands_km, rng, chosen=[int(order[0])])


def band_choice(
    arc_km: np.ndarray, usable: np.ndarray, bands_km: Sequence[tuple[float, float]], rng: np.random.Generator,
    *, chosen: list[int],
) -> list[int]:
    """``chosen`` followed by one usable row drawn in each band (never one already chosen)."""
    chosen = list(chosen)
    for lo, hi in bands_km:
        ok = usable & (arc_km >= lo) & (arc_km < hi)
        ok[chosen] = False
        rows = np.flatnonzero(ok)
        if len(rows):
            chosen.append(int(rng.choice(rows)))
        else:
            gap = np.where(arc_km < lo, lo - arc_km, arc_km - hi)
            gap = np.where(usable, gap, np.inf)
            gap[chosen] = np.inf
            chosen.append(int(np.argmin(gap)))
    return chosen


def mixed_choice(
    arc_km: np.ndarray,
    usable: np.ndarray,
    lookalike_rows: Sequence[int],
    n_lookalikes: int,
    bands_km: Sequence[tuple[float, float]],
    rng: np.random.Generator,
    *,
    lookalike_min_km: float | None = None,
) -> list[int]:
    """Rows of a mixed group: the nearest usable row, ``n_lookalikes`` rows drawn from
    ``lookalike_rows`` (the query's retrieved neighbours, best first; never the nearest row or
    an unusable one; with ``lookalike_min_km`` only those at least that far from the query),
    then one per distance band (never a row already chosen)."""
    nearest = int(np.argsort(np.where(usable, arc_km, np.inf), kind="stable")[0])
    min_km = -np.inf if lookalike_min_km is None else lookalike_min_km
    pool = [
        int(r) for r in dict.fromkeys(int(x) for x in lookalike_rows) if usable[r] and r != nearest and arc_km[r] >= min_km
    ]
    take = min(n_lookalikes, len(pool))
    picked = [pool[i] for i in sorted(rng.choice(len(pool), size=take, replace=False))] if take else []
    return band_choice(arc_km, usable, bands_km, rng, chosen=[nearest, *picked])


def choose_group(
    t: TrainConfig, arc_km: np.ndarray, usable: np.ndarray, lookalike_rows: Sequence[int], rng: np.random.Generator
) -> list[int]:
    """Rows of one group by ``t.grouping`` (``t``: the train config), ``spread`` or ``mixed``
    (``lookalike_rows``: the query's retrieved neighbours, used by ``mixed``), cut at ``t.group_size``.
    ``t.own_image`` puts the query's own row first: the row ``usable`` excludes, when the query is
    in the gallery (a held-out photo is not: its groups go without it)."""
    if t.grouping == "spread":
        return spread_choice(arc_km, usable, t.spread_bands_km, rng)[: t.group_size]
    rows = mixed_choice(arc_km, usable, lookalike_rows, t.lookalikes, t.spread_bands_km, rng, lookalike_min_km=t.lookalike_min_km)
    own = np.flatnonzero(~usable)
    if t.own_image and len(own):
        rows = [int(own[0]), *rows]
    # too few look-alikes beyond lookalike_min_km: one more per band (one group size per batch)
    while len(rows) < t.group_size and t.spread_bands_km:
        rows = band_choice(arc_km, usable, t.spread_bands_km, rng, chosen=rows)
    return rows[: t.group_size]


def build_groups(
    gallery: pa.Table,
    query_rows: np.ndarray,
    neighbours: Any,  # georank.retrieve.Neighbours of the queries, k + 1 per row
    cfg: GeorankConfig,
    *,
    source_version: str,
) -> pa.Table:
    """TRAINING_GROUPS rows for gallery rows ``query_rows (q,)`` and their ``neighbours``.

    ``gallery`` needs ``gallery_id``, ``uri``, ``lat_deg``, ``lon_deg`` and ``description``
    (city, state, country; :func:`georank.gallery.prepare_gallery_batch` computes it).
    """
    t = cfg.train
    k = cfg.retrieve.k
    if t.grouping == "spread" and t.group_size > 1 + len(t.spread_bands_km):
        raise ConfigError(
            f"config key 'train.group_size': expected at most 1 + len(train.spread_bands_km) = "
            f"{1 + len(t.spread_bands_km)} with train.grouping=spread, got {t.group_size}"
        )
    if t.grouping == "retrieved" and t.group_size > k:
        raise ConfigError(f"config key 'train.group_size': expected at most retrieve.k = {k}, got {t.group_size}")
    if t.grouping == "mixed":
        most = 1 + int(t.own_image) + min(t.lookalikes, cfg.candidates.retrieved - 1) + len(t.spread_bands_km)
        if t.group_size > most:
            raise ConfigError(
                f"config key 'train.group_size': expected at most 1 + train.own_image + min(train.lookalikes, candidates.retrieved - 1)"
                f" + len(train.spread_bands_km) = {most} with train.grouping=mixed, got {t.group_size}"
            )
    gid = gallery.column("gallery_id").to_numpy()
    lat = gallery.column("lat_deg").to_numpy(zero_copy_only=False).astype(np.float64)
    lon = gallery.column("lon_deg").to_numpy(zero_copy_only=False).astype(np.float64)
    uri = gallery.column("uri").to_pylist()
    desc = [d or "" for d in gallery.column("description").to_pylist()]
    ecef = ecef_km(lat, lon) if t.grouping != "retrieved" else np.zeros((0, 3))
    row_of = {str(int(x)): i for i, x in enumerate(gid)} if t.grouping == "mixed" else {}
    rng = np.random.default_rng(t.seed)
    cols: dict[str, list[Any]] = {f.name: [] for f in TRAINING_GROUPS}
    for qi, row in enumerate(query_rows):
        q_id = str(int(gid[row]))
        n_ids = [str(int(x)) for x in neighbours.gallery_id[qi]]
        keep = remove_self(q_id, n_ids, k)
        n_lat = [float(neighbours.lat_deg[qi][i]) for i in keep]
        n_lon = [float(neighbours.lon_deg[qi][i]) for i in keep]
        n_desc = [neighbours.description[qi][i] or "" for i in keep]
        n_uri = [neighbours.image_uri[qi][i] or "" for i in keep]
        if t.grouping == "retrieved":
            g = list(range(min(t.group_size, len(keep))))
            g_id, g_lat, g_lon = [n_ids[keep[i]] for i in g], [n_lat[i] for i in g], [n_lon[i] for i in g]
            g_desc, g_uri = [n_desc[i] for i in g], [n_uri[i] for i in g]
        else:
            usable = gid != gid[row]  # the query (by id) never becomes its own candidate
            arc = arc_km_from(ecef[row], ecef)
            # mixed: look-alikes from the neighbours the ranker would order at inference
            alike = [row_of[n_ids[i]] for i in keep[: cfg.candidates.retrieved] if n_ids[i] in row_of]
            rows = choose_group(t, arc, usable, alike, rng)
            g_id = [str(int(gid[r])) for r in rows]
            g_lat, g_lon = [float(lat[r]) for r in rows], [float(lon[r]) for r in rows]
            g_desc, g_uri = [desc[r] for r in rows], [uri[r] for r in rows]
        values = {
            "query_id": q_id,
            "query_uri": uri[row],
            "query_lat_deg": float(lat[row]),
            "query_lon_deg": float(lon[row]),
            "neighbour_id": [n_ids[i] for i in keep],
            "neighbour_lat_deg": n_lat,
            "neighbour_lon_deg": n_lon,
            "neighbour_description": n_desc,
            "neighbour_uri": n_uri,
            "group_id": g_id,
            "group_lat_deg": g_lat,
            "group_lon_deg": g_lon,
            "group_description": g_desc,
            "group_uri": g_uri,
            "group_dist_km": [geodesic_km(float(lat[row]), float(lon[row]), a, b) for a, b in zip(g_lat, g_lon)],
            "grouping": t.grouping,
            "source_version": source_version,
        }
        for name, v in values.items():
            cols[name].append(v)
    return pa.Table.from_pydict(cols, schema=TRAINING_GROUPS)


# --- GeoRanking --------------------------------------------------------------------------------

GEORANKING_COLUMNS = ("img_id", "gps", "ref_gps", "ref_img_id", "ref_texts")


def _literal(value: Any, what: str) -> Any:
    """A typed value as is; a Python-literal string (as some published files hold) parsed safely."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise InputError(f"GeoRanking {what}: expected a list or a Python literal, got {value[:60]!r}") from exc
    return value


def _describe_ref(text: Any) -> str:
    """A ref_texts entry as the prompt's description: a string as is; a list of place fields
    (neighbourhood, city, county, state, region, country) as city, state, country."""
    from georank.places import describe

    if text is None:
        return ""
    if isinstance(text, str):
        return text
    fields = list(text)
    if len(fields) >= 6:
        return describe(fields[1], fields[3], fields[5])
    return " ".join(str(f) for f in fields if f)


def read_georanking(table: pa.Table, *, images_root: str, group_size: int, source_version: str) -> pa.Table:
    """TRAINING_GROUPS rows from a GeoRanking table (``img_id``, ``gps``, ``ref_gps``,
    ``ref_img_id``, ``ref_texts``). Position 0 of every ref list is the query itself and is
    skipped (as the reference's loader does); the group is the next ``group_size``. Images are
    ``<images_root>/<id>``."""
    missing = [c for c in GEORANKING_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"GeoRanking table: expected columns {list(GEORANKING_COLUMNS)}, missing {missing}")
    root = images_root.rstrip("/")
    cols: dict[str, list[Any]] = {f.name: [] for f in TRAINING_GROUPS}
    for r in table.select(list(GEORANKING_COLUMNS)).to_pylist():
        q_lat, q_lon = (float(x) for x in _literal(r["gps"], "gps"))
        ref_gps = [tuple(float(x) for x in p) for p in _literal(r["ref_gps"], "ref_gps")][1:]
        ref_ids = [str(x) for x in _literal(r["ref_img_id"], "ref_img_id")][1:]
        ref_texts = [_describe_ref(x) for x in _literal(r["ref_texts"], "ref_texts")][1:]
        if not (len(ref_gps) == len(ref_ids) == len(ref_texts)):
            raise InputError(
                f"GeoRanking row {r['img_id']}: ref_gps, ref_img_id, ref_texts must have one length, "
                f"got {len(ref_gps) + 1}, {len(ref_ids) + 1}, {len(ref_texts) + 1}"
            )
        uris = [f"{root}/{i}" for i in ref_ids]
        g = min(group_size, len(ref_ids))
        values = {
            "query_id": str(r["img_id"]),
            "query_uri": f"{root}/{r['img_id']}",
            "query_lat_deg": q_lat,
            "query_lon_deg": q_lon,
            "neighbour_id": ref_ids,
            "neighbour_lat_deg": [p[0] for p in ref_gps],
            "neighbour_lon_deg": [p[1] for p in ref_gps],
            "neighbour_description": ref_texts,
            "neighbour_uri": uris,
            "group_id": ref_ids[:g],
            "group_lat_deg": [p[0] for p in ref_gps[:g]],
            "group_lon_deg": [p[1] for p in ref_gps[:g]],
            "group_description": ref_texts[:g],
            "group_uri": uris[:g],
            "group_dist_km": [geodesic_km(q_lat, q_lon, a, b) for a, b in ref_gps[:g]],
            "grouping": "georanking",
            "source_version": source_version,
        }
        for name, v in values.items():
            cols[name].append(v)
    return pa.Table.from_pydict(cols, schema=TRAINING_GROUPS)


__all__ = [
    "arc_km_from", "band_choice", "build_groups", "choose_group", "mixed_choice", "read_georanking", "remove_self", "sample_queries",
    "spread_choice",
]

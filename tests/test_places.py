"""georank.places: GeoRanker's {desc} and offline reverse geocoding from GeoNames."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from georank.errors import InputError
from georank.places import Place, country_name, describe, fill_places, place_columns, reverse_geocode
from georank.schema import GALLERY, PLACE_FIELDS


@pytest.mark.parametrize(
    ("city", "state", "country", "want"),
    [
        ("Paris", "Ile-de-France", "France", "Paris Ile-de-France France"),
        ("New York City", "New York", "United States", "New York City New York United States"),
        (None, "Texas", "United States", "Texas United States"),
        ("Windhoek", "", "Namibia", "Windhoek Namibia"),
        ("Reykjavik", "   ", None, "Reykjavik"),
        (" Lyon ", None, "France", "Lyon France"),
        ("Kyoto", math.nan, "Japan", "Kyoto Japan"),  # pandas' missing value
        (None, None, None, ""),
        ("", "", "", ""),
    ],
)
def test_describe_golden(city: object, state: object, country: object, want: str) -> None:
    assert describe(city, state, country) == want  # type: ignore[arg-type]


def test_place_mirrors_schema_and_describes_itself() -> None:
    p = Place(city="Paris", county="Paris", state="Ile-de-France", country="France")
    assert tuple(p.as_row()) == PLACE_FIELDS
    assert p.description == "Paris Ile-de-France France"
    assert Place().description == ""
    cols = place_columns([p, Place()])
    assert list(cols) == list(PLACE_FIELDS)
    assert cols["city"].to_pylist() == ["Paris", None]
    assert all(c.type == pa.string() for c in cols.values())


def test_reverse_geocode_golden_places() -> None:
    lat = np.array([48.8566, 35.6895, -22.5609, 42.6727, 40.7128])
    lon = np.array([2.3522, 139.6917, 17.0658, 21.1669, -74.0060])
    paris, tokyo, windhoek, pristina, nyc = reverse_geocode(lat, lon)
    assert (paris.city, paris.state, paris.country) == ("Paris", "Ile-de-France", "France")
    assert paris.neighbourhood is None and paris.region is None and paris.continent is None
    assert (tokyo.city, tokyo.country) == ("Tokyo", "Japan")
    assert (windhoek.city, windhoek.country) == ("Windhoek", "Namibia")  # "NA" is a code, not a null
    assert (pristina.city, pristina.country) == ("Pristina", "XK")  # not in IANA's table: the code
    assert nyc.description == "New York City New York United States"


def test_reverse_geocode_searches_across_the_antimeridian() -> None:
    # 44 km from Egvekinot (lon -179.12) across 180; 360 km from Beringovskiy (lon 179.35) on this side
    (place,) = reverse_geocode(np.array([66.32]), np.array([179.9]))
    assert place.city == "Egvekinot"


def test_reverse_geocode_max_km_leaves_the_open_sea_empty() -> None:
    sea, paris = reverse_geocode(np.array([-40.0, 48.85]), np.array([-120.0, 2.35]), max_km=100.0)
    assert sea == Place()
    assert paris.city == "Paris"


def test_reverse_geocode_rejects_invalid_coordinates() -> None:
    with pytest.raises(InputError, match=r"expected finite coordinates .* got 2 invalid \(first at position 1"):
        reverse_geocode(np.array([10.0, math.nan, 95.0]), np.array([10.0, 0.0, 0.0]))
    places = reverse_geocode(np.array([10.0, math.nan, 95.0]), np.array([10.0, 0.0, 0.0]), invalid="none")
    assert places[1] == Place() and places[2] == Place() and places[0].country is not None
    with pytest.raises(InputError, match=r"expected lat_deg and lon_deg of one shape \(n,\), got \(2,\) and \(1,\)"):
        reverse_geocode(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(InputError, match=r"invalid must be one of \['error', 'none'\], got 'skip'"):
        reverse_geocode(np.array([1.0]), np.array([1.0]), invalid="skip")  # type: ignore[arg-type]


def test_country_name() -> None:
    assert country_name("FR") == "France"
    assert country_name("us") == "United States"
    assert country_name("XK") == "XK"
    assert country_name("") is None


def test_fill_places_fills_only_rows_without_places() -> None:
    rows = {
        "gallery_id": [1, 2, 3],
        "uri": ["/a.jpg", "/b.jpg", "/c.jpg"],
        "image_bytes": [None, None, None],
        "lat_deg": [48.8566, 35.6895, math.nan],
        "lon_deg": [2.3522, 139.6917, 0.0],
        **{f: [None, None, None] for f in PLACE_FIELDS},
    }
    rows["city"] = [None, "Somewhere", None]  # row 2 already has a place: kept as it is
    table = fill_places(pa.Table.from_pydict(rows, schema=GALLERY))
    assert table.schema.equals(GALLERY, check_metadata=True)
    assert table.column("city").to_pylist() == ["Paris", "Somewhere", None]
    assert table.column("country").to_pylist() == ["France", None, None]
    with pytest.raises(InputError, match=r"missing \['neighbourhood'"):
        fill_places(pa.table({"lat_deg": [1.0], "lon_deg": [1.0]}))

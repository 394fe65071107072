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


# --- Place names on every prediction (schema.PREDICTIONS country_code, admin1, place, place_dist_km) ---


def test_nearest_places_capital_sea_and_borders() -> None:
    from georank.geo import geodesic_km
    from georank.places import nearest_places

    points = {
        "paris": (48.8566, 2.3522),
        "mid_atlantic": (30.0, -40.0),  # ~1400 km west of the Azores
        "geneva": (46.2000, 6.1400),  # CH, ~5 km from the French border
        "st_julien": (46.1445, 6.0815),  # FR side of the FR/CH border south of Geneva
        "niagara_on": (43.0896, -79.0849),  # the two Niagara Falls, either side of the river (CA/US border)
        "niagara_ny": (43.0962, -79.0377),
    }
    lat = np.array([p[0] for p in points.values()])
    lon = np.array([p[1] for p in points.values()])
    near = nearest_places(lat, lon)
    got = {k: (near.country_code[i], near.admin1[i], near.place[i], float(near.dist_km[i])) for i, k in enumerate(points)}
    assert got["paris"][:3] == ("FR", "Ile-de-France", "Paris") and got["paris"][3] < 2.0
    assert got["geneva"][:3] == ("CH", "Geneva", "Geneve")
    assert got["st_julien"][:3] == ("FR", "Rhone-Alpes", "Saint-Julien-en-Genevois")
    assert got["niagara_on"][:3] == ("CA", "Ontario", "Niagara Falls")
    assert got["niagara_ny"][:3] == ("US", "New York", "Niagara Falls")
    cc, admin1, place, dist_km = got["mid_atlantic"]
    assert (cc, admin1, place) == ("PT", "Azores", "Ribeira Grande")  # at sea: the nearest place, no error
    assert 1300.0 < dist_km < 1500.0
    # the distance is the WGS-84 geodesic to the place's own GeoNames coordinates
    from georank.places import geonames_cities

    cities = geonames_cities()
    (j,) = np.flatnonzero((cities.name == "Ribeira Grande") & (cities.cc == "PT"))
    assert dist_km == pytest.approx(geodesic_km(30.0, -40.0, cities.lat_deg[j], cities.lon_deg[j]), rel=1e-12)


def test_nearest_places_invalid_points_are_null_and_shapes_checked() -> None:
    from georank.places import nearest_places

    near = nearest_places(np.array([math.nan, 48.8566, 91.0]), np.array([0.0, 2.3522, 0.0]))
    assert near.country_code == [None, "FR", None] and near.place[0] is None and near.admin1[2] is None
    assert math.isnan(near.dist_km[0]) and math.isnan(near.dist_km[2])
    empty = nearest_places(np.array([]), np.array([]))
    assert empty.country_code == [] and empty.dist_km.shape == (0,)
    with pytest.raises(InputError, match=r"nearest_places: expected lat_deg and lon_deg of one shape \(n,\), got \(2,\) and \(1,\)"):
        nearest_places(np.array([1.0, 2.0]), np.array([1.0]))


def test_prediction_rows_carry_place_names_and_error_rows_do_not() -> None:
    """georank.ranking.results_table: where every RESULTS row is made, the predictions get their place
    names in one batch; error rows keep them null; columns documented with their source."""
    import datetime as dt

    from georank import schema as S
    from georank.ranking import results_table

    common = {"run_id": "r", "run_date": dt.date(2026, 11, 23)}
    rows = [
        {**common, "photo_id": "paris", "lat_deg": 48.8566, "lon_deg": 2.3522, "confidence": 0.9},
        {**common, "photo_id": "sea", "lat_deg": 30.0, "lon_deg": -40.0, "confidence": 0.1},
        {**common, "photo_id": "bad", "error_stage": "decode", "error_reason": "not an image"},
    ]
    table = results_table(rows)
    assert table.schema.equals(S.RESULTS, check_metadata=True)
    got = {r["photo_id"]: r for r in table.to_pylist()}
    assert (got["paris"]["country_code"], got["paris"]["admin1"], got["paris"]["place"]) == ("FR", "Ile-de-France", "Paris")
    assert got["sea"]["country_code"] == "PT" and got["sea"]["place_dist_km"] > 1000.0
    assert all(got["bad"][c] is None for c in ("country_code", "admin1", "place", "place_dist_km"))
    assert results_table([]).num_rows == 0
    for col in ("country_code", "admin1", "place"):
        assert "GeoNames cities1000" in S.comment(S.PREDICTIONS, col) and "CC BY 4.0" in S.comment(S.PREDICTIONS, col)
    assert S.RESULTS.names[: len(S.PREDICTIONS.names)] == S.PREDICTIONS.names

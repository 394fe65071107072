"""The accuracy metric against GeographicLib's published geodesics, strict thresholds and misses."""

from __future__ import annotations

import numpy as np
import pytest

from georank.eval.metric import THRESHOLDS_KM, accuracy, accuracy_from_errors, error_km

# (lat1, lon1, lat2, lon2, s12 m, tolerance m): the first 20 rows are GeographicLib's own
# GeodesicTest.testcases (geographiclib-python, test/test_geodesic.py, drawn from GeodTest.dat;
# tolerance there 1e-8 m), longitudes > 180 written here wrapped into [-180, 180]. Then the
# near-antipodal GeodSolve6/9/10/11/33 cases (tolerance 0.5e-3 m / 0.5 m as published) and the
# pole-to-pole meridian (half the WGS-84 meridian, 20003931.4586233 m).
GEODTEST = [
    (35.60777, -139.44815, -11.17491, -69.95921, 8935244.5604818305, 1e-6),
    (55.52454, 106.05087, 77.03196, 197.18234 - 360, 4105086.1713924406, 1e-6),
    (-21.97856, 142.59065, 41.84138, 98.56635, 8394328.894657671, 1e-6),
    (-66.99028, 112.2363, -12.70631, 285.90344 - 360, 11150344.2312080241, 1e-6),
    (-17.42761, 173.34268, -15.84784, 5.93557, 16076603.1631180673, 1e-6),
    (32.84994, 48.28919, -56.28556, 202.29132 - 360, 16727068.9438164461, 1e-6),
    (6.96833, 52.74123, -7.39675, 206.17291 - 360, 17102477.2496958388, 1e-6),
    (-50.56724, -16.30485, -33.56571, -94.97412, 6455670.5118668696, 1e-6),
    (-58.93002, -8.90775, -8.91104, 133.13503, 11756066.0219864627, 1e-6),
    (-68.82867, -74.28391, -50.63005, -8.36685, 3956936.926063544, 1e-6),
    (-10.62672, -32.0898, 5.883, -134.31681, 11470869.3864563009, 1e-6),
    (-21.76221, 166.90563, 48.72884, 213.97627 - 360, 9098627.3986554915, 1e-6),
    (-19.79938, -174.47484, -11.99349, -154.35109, 2319004.8601169389, 1e-6),
    (-11.95887, -116.94513, 4.57352, 7.16501, 13834722.5801401374, 1e-6),
    (-87.85331, 85.66836, 66.48646, 16.09921, 17286615.3147144645, 1e-6),  # from near the south pole
    (1.74708, 128.32011, -11.16617, 11.87109, 12942901.1241347408, 1e-6),
    (-25.72959, -144.90758, -57.70581, -269.17879 + 360, 9413446.7452453107, 1e-6),
    (-41.22777, 122.32875, -7.57291, 130.37946, 3812686.035106021, 1e-6),
    (11.01307, 138.25278, 6.62726, 247.05981 - 360, 11911190.819018408, 1e-6),
    (-29.47124, 95.14681, -27.46601, -69.15955, 13487015.8381145492, 1e-6),
    # near-antipodal (GeodSolve6, 9, 10, 11): where naive solvers fail to converge
    (88.202499451857, 0.0, -88.202499451857, 179.981022032992859592, 20003898.214, 0.5e-3),
    (89.262080389218, 0.0, -89.262080389218, 179.992207982775375662, 20003925.854, 0.5e-3),
    (89.333123580033, 0.0, -89.333123580032997687, 179.99295812360148422, 20003926.881, 0.5e-3),
    (56.320923501171, 0.0, -56.320923501171, 179.664747671772880215, 19993558.287, 0.5e-3),
    (52.784459512564, 0.0, -52.784459512563990912, 179.634407464943777557, 19991596.095, 0.5e-3),
    (48.522876735459, 0.0, -48.52287673545898293, 179.599720456223079643, 19989144.774, 0.5e-3),
    # exactly antipodal on the equator (GeodSolve33) and pole to pole
    (0.0, 0.0, 0.0, 180.0, 20003931.0, 0.5),
    (0.0, 0.0, 1.0, 180.0, 19893357.0, 0.5),
    (90.0, 0.0, -90.0, 0.0, 20003931.4586233, 1e-5),  # value as quoted to 7 decimals
]


def test_errors_match_geographiclib_published_geodesics() -> None:
    pred = np.array([[r[0], r[1]] for r in GEODTEST])
    true = np.array([[r[2], r[3]] for r in GEODTEST])
    got_km = error_km(pred, true)
    for (lat1, lon1, lat2, lon2, s12_m, tol_m), km in zip(GEODTEST, got_km):
        assert km * 1000.0 == pytest.approx(s12_m, abs=tol_m), (lat1, lon1, lat2, lon2)
    assert len(GEODTEST) >= 10


def test_thresholds_are_strict_and_misses_count() -> None:
    true = np.array([[0.0, 0.0]] * 4)
    # 110.574 km north (one degree of latitude on WGS-84), exactly at 25 km is not "< 25"
    one_deg = np.array([1.0, 0.0])
    pred = np.array([[0.0, 0.0], one_deg, [np.nan, np.nan], [0.0, 0.0]])
    a = accuracy(pred, true)
    assert a.thresholds_km == THRESHOLDS_KM == (1, 25, 200, 750, 2500)
    assert a.accuracy == (0.5, 0.5, 0.75, 0.75, 0.75)  # the NaN row is a miss, not (0, 0)
    assert a.missing == 1 and a.n == 4
    assert a.hits == (2, 2, 3, 3, 3) and a.misses == (2, 2, 1, 1, 1)
    assert all(h + m == a.n for h, m in zip(a.hits, a.misses))
    edge = accuracy(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]), thresholds_km=(110.5743,))
    edge2 = accuracy(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]), thresholds_km=(110.5744,))
    assert edge.accuracy == (0.0,) and edge2.accuracy == (1.0,)


def test_exactly_25_km_is_a_miss_at_25() -> None:
    a = accuracy_from_errors(np.array([25.0, np.nextafter(25.0, 0.0), 24.0]), thresholds_km=(1.0, 25.0, 200.0))
    assert a.hits == (0, 2, 3)  # 25.0 itself is not < 25
    assert a.accuracy == (0.0, pytest.approx(2 / 3), 1.0)


def test_a_failed_photo_is_a_miss_at_every_radius_and_out_of_the_error_stats() -> None:
    # row 0 exact, row 1 10 km-ish off, row 2 failed (no prediction), row 3 out-of-range prediction
    true = np.array([[48.0, 2.0], [48.0, 2.0], [10.0, 10.0], [0.0, 0.0]])
    pred = np.array([[48.0, 2.0], [48.09, 2.0], [np.nan, np.nan], [95.0, 0.0]])
    a = accuracy(pred, true, thresholds_km=(1.0, 25.0, 20000.0))
    assert a.n == 4 and a.missing == 2
    assert a.hits == (1, 2, 2) and a.misses == (3, 2, 2)
    d10 = error_km(pred[1:2], true[1:2])[0]
    assert 9.9 < d10 < 10.1
    assert a.mean_km == pytest.approx(d10 / 2) and a.median_km == pytest.approx(d10 / 2)
    assert a.as_dict()["missing"] == 2


def test_all_failed_gives_zero_accuracy_and_nan_errors() -> None:
    a = accuracy(np.full((3, 2), np.nan), np.zeros((3, 2)))
    assert a.accuracy == (0.0,) * 5 and a.missing == 3 and np.isnan(a.median_km) and np.isnan(a.mean_km)


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match=r"expected predictions and truth of the same shape, got \(1, 2\) and \(2, 2\)"):
        accuracy(np.zeros((1, 2)), np.zeros((2, 2)))


def test_invalid_truth_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected valid true coordinates on every row, got invalid ones on rows \[1\]"):
        accuracy(np.zeros((2, 2)), np.array([[0.0, 0.0], [np.nan, 1.0]]))

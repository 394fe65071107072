"""The strict parser of generated answers: JSON first, then keyed numbers; drops counted by reason."""

from __future__ import annotations

import pytest

from georank.generate import DROP_REASONS, parse_answer, select_answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"latitude": 48.8566, "longitude": 2.3522}', (48.8566, 2.3522)),
        ('Sure! The photo looks like Paris: {"latitude": 48.85, "longitude": 2.35}. Hope it helps.', (48.85, 2.35)),
        ('{"latitude": 48, "longitude": -3}', (48.0, -3.0)),  # integers accepted
        ('{"Latitude": -33.9, "Longitude": 151.2}', (-33.9, 151.2)),  # keys case-insensitive
        ('{"lat": 10.5, "lng": -20.25}', (10.5, -20.25)),
        ('{"latitude": 90, "longitude": -180}', (90.0, -180.0)),  # the bounds are inside
        ('{"latitude": 1.0, "longitude": 2.0} or maybe {"latitude": 3.0, "longitude": 4.0}', (1.0, 2.0)),  # first object
        ('{"note": "x"} {"latitude": 5.5, "longitude": 6.5}', (5.5, 6.5)),  # an object without coordinates is skipped
        ('{"latitude": 40.7, "longitude": -74.0', (40.7, -74.0)),  # truncated JSON: keyed fallback
        ("latitude: 35.68, longitude: 139.76", (35.68, 139.76)),  # keyed fallback
        ("lat=1e1 lon=-2.5E1", (10.0, -25.0)),
    ],
)
def test_valid_answers(text: str, expected: tuple[float, float]) -> None:
    got = parse_answer(text)
    assert got.reason is None
    assert got.latlon_deg == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("I cannot tell where this is.", "unparsable"),
        ("48.85 2.35", "unparsable"),  # bare numbers are never taken (the reference took the last two)
        ("操控#####\ncją shaky bachelor", "unparsable"),  # what a random model says
        ('{"latitude": 91.0, "longitude": 0.0}', "out_of_range"),
        ('{"latitude": 0.0, "longitude": -180.5}', "out_of_range"),
        ("latitude: 12.0, longitude: 400", "out_of_range"),
        ('{"latitude": NaN, "longitude": 2.0}', "non_finite"),
        ('{"latitude": 1.0, "longitude": Infinity}', "non_finite"),
        ("latitude: nan, longitude: 3", "non_finite"),
        ('{"latitude": "48.8", "longitude": 2.3}', "not_a_number"),
        ('{"latitude": true, "longitude": 2.3}', "not_a_number"),
        ('{"latitude": null, "longitude": 2.3}', "unparsable"),
        ('{"latitude": float, "longitude": float}', "unparsable"),  # the prompt's template echoed back
    ],
)
def test_dropped_answers(text: str, reason: str) -> None:
    got = parse_answer(text)
    assert got.latlon_deg is None, f"{text!r} must not give coordinates, got {got.latlon_deg}"
    assert got.reason == reason
    assert reason in DROP_REASONS


def test_select_keeps_the_first_valid_and_counts_drops_by_reason() -> None:
    texts = [
        "garbage",
        '{"latitude": 1, "longitude": 2}',
        '{"latitude": 100, "longitude": 2}',
        "",
        '{"latitude": 3.5, "longitude": 4.5}',
        '{"latitude": NaN, "longitude": 4.5}',
        '{"latitude": 5, "longitude": 6}',
    ]
    got = select_answers(texts, keep=2)
    assert got.latlon_deg == [(1.0, 2.0), (3.5, 4.5)]
    assert got.valid == 3
    assert dict(got.dropped) == {"unparsable": 1, "out_of_range": 1, "empty": 1, "non_finite": 1}
    assert got.valid + sum(got.dropped.values()) == len(texts)
    assert (0.0, 0.0) not in got.latlon_deg


def test_select_keep_zero_still_counts() -> None:
    got = select_answers(['{"latitude": 1, "longitude": 2}', "x"], keep=0)
    assert got.latlon_deg == [] and got.valid == 1 and dict(got.dropped) == {"unparsable": 1}

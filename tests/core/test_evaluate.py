from __future__ import annotations

import numpy as np
import pytest

from georank.evaluate import THRESHOLDS_KM, accuracy


def test_thresholds_are_strict_and_misses_count() -> None:
    true = np.array([[0.0, 0.0]] * 4)
    # 110.574 km north (one degree of latitude on WGS-84), exactly at 25 km is not "< 25"
    one_deg = np.array([1.0, 0.0])
    pred = np.array([[0.0, 0.0], one_deg, [np.nan, np.nan], [0.0, 0.0]])
    a = accuracy(pred, true)
    assert a.thresholds_km == THRESHOLDS_KM == (1, 25, 200, 750, 2500)
    assert a.accuracy == (0.5, 0.5, 0.75, 0.75, 0.75)  # the NaN row is a miss, not (0, 0)
    assert a.missing == 1 and a.n == 4
    edge = accuracy(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]), thresholds_km=(110.5743,))
    edge2 = accuracy(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]), thresholds_km=(110.5744,))
    assert edge.accuracy == (0.0,) and edge2.accuracy == (1.0,)


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match=r"expected predictions and truth of the same shape, got \(1, 2\) and \(2, 2\)"):
        accuracy(np.zeros((1, 2)), np.zeros((2, 2)))

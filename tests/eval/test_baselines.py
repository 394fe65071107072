"""NN and [L]kNN (sigma = 4) on constructed neighbour sets whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from georank.eval.baselines import KnnConfig, feature_distance, knn_sigma, nn_top1

NYC = (40.7, -74.0)
PARIS = [(48.85, 2.35), (48.86, 2.34), (48.84, 2.36)]


def test_votes_of_a_cluster_beat_one_closer_neighbour_and_snap_to_its_best_ranked_member() -> None:
    # NYC is the nearest in feature space (d = 0.9, vote 1/0.9^10 = 2.87); three Paris photos at d = 1
    # (vote 1 each, 3 in total, all in the 1-degree cell 48N 2E): Paris wins, and the prediction snaps to
    # the best-ranked Paris neighbour (rank 1), not to the cell centre.
    latlon = np.array([NYC, *PARIS])
    dist = np.array([0.9, 1.0, 1.0, 1.0])
    assert nn_top1(latlon) == NYC
    assert knn_sigma(latlon, dist) == PARIS[0]


def test_a_much_closer_neighbour_outvotes_the_cluster() -> None:
    # d = 0.85: 1/0.85^10 = 5.08 > 3 votes of Paris
    latlon = np.array([NYC, *PARIS])
    assert knn_sigma(latlon, np.array([0.85, 1.0, 1.0, 1.0])) == NYC


def test_smoothing_puts_the_peak_between_two_cells_and_no_neighbour_is_near_enough_to_snap() -> None:
    # A and B (votes 2/3 each) 3 degrees of longitude apart at 10.05N; C (vote 1) alone in South America.
    # Smoothed with sigma 4 degrees the pair's midpoint scores 2 * 2/3 * exp(-1.5^2 / 32) = 1.24 > 1, so the
    # peak is the midpoint (10.05, 21.55) on the 0.1-degree grid; A and B are ~164 km from it (> 100 km),
    # so the prediction stays at the peak. NN says C.
    c, a, b = (-30.05, -60.05), (10.05, 20.05), (10.05, 23.05)
    latlon = np.array([c, a, b])
    d_c = 1.5 ** (-1 / 10)  # vote of C = 1.5 x the vote of A or B
    got = knn_sigma(latlon, np.array([d_c, 1.0, 1.0]))
    assert got == pytest.approx((10.05, 21.55), abs=1e-9)
    assert nn_top1(latlon) == c


def test_longitude_wraps_at_the_dateline() -> None:
    # Two neighbours either side of 180 degrees (votes 0.6 each, adjacent cells only when longitude wraps)
    # beat one at (0, 0) with vote 1; without the wrap each would stand alone (0.6 < 1).
    d_far = 0.6 ** (1 / -10)
    latlon = np.array([(0.0, 0.0), (10.0, 179.95), (10.0, -179.95)])
    assert knn_sigma(latlon, np.array([1.0, d_far, d_far])) == (10.0, 179.95)


def test_only_the_first_k_vote() -> None:
    latlon = np.array([NYC, *PARIS])
    dist = np.array([0.9, 1.0, 1.0, 1.0])
    assert knn_sigma(latlon, dist, KnnConfig(k=2)) == NYC  # Paris has one vote of 0.35 left


def test_feature_distance_of_unit_vectors() -> None:
    assert feature_distance(np.array([1.0, 0.0, -1.0, 1.0000001])) == pytest.approx([0.0, np.sqrt(2), 2.0, 0.0])


def test_empty_or_mismatched_input_is_refused() -> None:
    with pytest.raises(ValueError, match="expected at least one neighbour, got 0"):
        nn_top1(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="expected k >= 1 neighbours with one distance each, got 2 and 1"):
        knn_sigma(np.zeros((2, 2)), np.ones(1))

"""Guards before every commit and the executors' circuit breaker, Spark-free (issue 22)."""

from __future__ import annotations

import pytest

from georank.errors import CheckpointError, PhotoError, RunError
from georank.guards import TopFailure, check_error_fraction, check_not_empty, fold_reason
from georank.isolation import Breaker, is_run_level, per_item, reset_breaker, run_level_cause


def test_no_photo_read_fails_unless_allowed() -> None:
    with pytest.raises(RunError, match=r"night: expected at least one photo, got 0 read from s3://b/typo/ .*--allow-empty"):
        check_not_empty(what="night", read=0, source="s3://b/typo/", allow_empty=False)
    check_not_empty(what="night", read=0, source="s3://b/typo/", allow_empty=True)
    check_not_empty(what="night", read=1, source="x", allow_empty=False)


def test_error_fraction_is_strict_and_names_the_most_common_cause() -> None:
    check_error_fraction(what="r", read=10, errors=5, max_fraction=0.5, top=None)  # exactly half: allowed
    top = TopFailure("read", fold_reason("access denied: s3://b/a.jpg"), 2)
    assert top.reason == "access denied: <path>"
    with pytest.raises(RunError, match=r"r: expected at most 50% of the photos to fail \(write.max_error_fraction=0.5\), "
                                       r"got 6 of 10 \(60.0%\); the most common failure: stage read: access denied: "
                                       r"<path> \(2 photos\)"):
        check_error_fraction(what="r", read=10, errors=6, max_fraction=0.5, top=top)
    check_error_fraction(what="r", read=10, errors=10, max_fraction=1.0, top=top)  # 1.0 turns it off
    calls: list[int] = []  # a function for the cause (a scan of the run) is called only when the guard trips

    def scan() -> TopFailure:
        calls.append(1)
        return top

    check_error_fraction(what="r", read=10, errors=1, max_fraction=0.5, top=scan)
    assert calls == []
    with pytest.raises(RunError, match=r"the most common failure: stage read: access denied: <path> \(2 photos\)"):
        check_error_fraction(what="r", read=10, errors=6, max_fraction=0.5, top=scan)
    assert calls == [1]


def test_fold_reason_folds_paths_and_uris_only() -> None:
    assert fold_reason("object not found: s3://bucket/night/a.jpg") == "object not found: <path>"
    assert fold_reason("file not found: /data/photos/a.jpg") == "file not found: <path>"
    assert fold_reason("the file is empty (0 bytes)") == "the file is empty (0 bytes)"


def test_which_failures_are_per_photo_and_which_stop_the_run() -> None:
    assert run_level_cause(PhotoError("read", "access denied: s3://b/k", kind="denied")) == "access denied"
    assert run_level_cause(PhotoError("read", "x", kind="credentials")) == "credentials missing or expired"
    assert run_level_cause(PhotoError("read", "x", kind="unreachable")) == "endpoint unreachable"
    assert run_level_cause(PhotoError("read", "object not found: s3://b/k", kind="not_found")) is None
    assert run_level_cause(PhotoError("decode", "not an image")) is None
    assert is_run_level(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_run_level(CheckpointError("bad keys"))
    assert not is_run_level(RuntimeError("shape mismatch"))
    assert not is_run_level(PhotoError("rank", "too small"))


def test_breaker_trips_on_a_streak_of_run_level_causes_only() -> None:
    b = Breaker(3)
    denied = PhotoError("read", "access denied: s3://b/k", kind="denied")
    b.failed("read", denied)
    b.failed("read", denied)
    b.ok("read")  # a photo that was read: the streak starts again
    b.failed("read", denied)
    b.failed("read", PhotoError("read", "object not found: s3://b/k", kind="not_found"))  # the photo's own
    b.failed("read", denied)
    b.failed("read", denied)
    with pytest.raises(RunError, match=r"stage read: 3 photos in a row failed with a run-level cause \(access denied\); "
                                       r"expected per-photo failures, got a systemic one \(the last: access denied: s3://b/k\)"
                                       r".*write.breaker_consecutive=3"):
        b.failed("read", denied)


def test_per_item_counts_towards_the_breaker() -> None:
    reset_breaker(2)

    class Unreachable(Exception):
        kind = "unreachable"

    def call(items):  # type: ignore[no-untyped-def]
        raise Unreachable("endpoint down")

    with pytest.raises(RunError, match=r"stage embed: 2 photos in a row failed with a run-level cause \(endpoint unreachable\)"):
        per_item([1, 2, 3], call, what="the image encoder", stage="embed")
    reset_breaker(8)
    out = per_item([1, 2, 3], call, what="the image encoder", stage="embed")  # under the limit: error rows
    assert [f.stage for f in out] == ["embed"] * 3  # type: ignore[union-attr]

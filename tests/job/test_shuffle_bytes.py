"""No pixels through the shuffle (issue 14 item 1): the photos cross the job's one shuffle as
their file bytes (or URIs), each accelerator task decodes its own photos a batch ahead of the
models, a photo that cannot be decoded is still an error row with stage ``decode``, and the
predictions are the ones the core loop (decode, then geotag, on the same photos) gives; in both
index placements (replicated, sharded)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_conf

from georank import schema as S
from georank.config import S3Config, load_config
from georank.errors import RunError
from georank.io import list_images, photo_ids
from georank.pipeline import decode_ahead, decode_photos, geotag_partition
from georank.results import read_errors, read_predictions
from georank.run_info import RunInfo
from georank.spark.geotag import compute_description, run_geotag

DAY = dt.date(2026, 11, 23)


def _photos(folder: Path, broken: dict[str, bytes]) -> pa.Table:
    """PHOTOS with inline bytes: the folder's JPEGs, then the broken files."""
    files = sorted(folder.glob("*.jpg"))
    ids = [p.stem for p in files] + list(broken)
    data = [p.read_bytes() for p in files] + list(broken.values())
    return pa.table({"photo_id": ids, "uri": [None] * len(ids), "image_bytes": data}, schema=S.PHOTOS)


def _broken(folder: Path) -> dict[str, bytes]:
    good = sorted(folder.glob("*.jpg"))[0].read_bytes()
    return {"zero": b"", "text": b"not an image", "half": good[: len(good) // 3]}


def test_decode_ahead_gives_decode_photos_rows_per_batch_from_another_thread(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml"))
    photos = _photos(tiny_world / "queries", _broken(tiny_world / "queries"))
    batches = photos.to_batches(max_chunksize=4)
    ahead = list(decode_ahead(iter(batches), cfg))
    assert [t.num_rows for t in ahead] == [b.num_rows for b in batches]
    for got, batch in zip(ahead, batches, strict=True):
        assert got.equals(decode_photos(batch, cfg))
    rows = {r["photo_id"]: r for t in ahead for r in t.to_pylist()}
    assert rows["zero"]["error_stage"] == "decode" and rows["zero"]["error_reason"] == "the file is empty (0 bytes)"
    assert rows["text"]["error_reason"].startswith("not an image")
    assert rows["half"]["error_reason"].startswith("truncated or corrupt image data")
    assert all(r["rgb"] for pid, r in rows.items() if pid not in ("zero", "text", "half"))

    # Decoding runs on the pool's thread, and the next batch decodes while the caller holds this one.
    import georank.pipeline as P

    decoders: list[str] = []
    second_started = threading.Event()
    real = P.decode_photos

    def spy(batch: Any, c: Any) -> pa.Table:
        decoders.append(threading.current_thread().name)
        if len(decoders) == 2:
            second_started.set()
        return real(batch, c)

    monkeypatch.setattr(P, "decode_photos", spy)
    it = decode_ahead(iter(batches), cfg)
    next(it)
    assert second_started.wait(timeout=60), "the second batch did not start decoding while the first was in use"
    rest = list(it)
    assert len(rest) == len(batches) - 1
    assert len(decoders) == len(batches) and all(n.startswith("georank-decode") for n in decoders), decoders


def test_decode_ahead_raises_a_run_level_error_at_its_batch(tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml"))
    batches = _photos(tiny_world / "queries", {}).to_batches(max_chunksize=4)
    import georank.pipeline as P

    real = P.decode_photos
    calls = {"n": 0}

    def second_fails(batch: Any, c: Any) -> pa.Table:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RunError("the photo store is gone")
        return real(batch, c)

    monkeypatch.setattr(P, "decode_photos", second_fails)
    it = decode_ahead(iter(batches), cfg)
    assert next(it).num_rows == 4
    with pytest.raises(RunError, match="the photo store is gone"):
        next(it)


def _shuffle_write_bytes(spark: Any, description: str) -> tuple[int, int]:
    """(shuffle bytes written, stages) by the jobs carrying ``description``, from Spark's own
    status store (the numbers the UI and the event log show)."""
    store = spark.sparkContext._jsc.sc().statusStore()
    jobs = store.jobsList(None)
    stage_ids: set[int] = set()
    for i in range(jobs.size()):
        job = jobs.apply(i)
        if job.description().isDefined() and job.description().get() == description:
            ids = job.stageIds()
            stage_ids |= {int(ids.apply(k)) for k in range(ids.size())}
    total = 0
    for stage_id in stage_ids:
        try:
            total += int(store.lastStageAttempt(stage_id).shuffleWriteBytes())
        except Exception:  # noqa: BLE001 - a stage the job skipped (its shuffle output reused) has no attempt
            continue
    return total, len(stage_ids)


_RUN_SPECIFIC = ("run_id", "run_date")


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _RUN_SPECIFIC and k not in ("top_candidates", "confidence", "spread_km")}


def _assert_results_equal_the_core_loop(cfg: Any, photos: pa.Table) -> None:
    """Every committed prediction equals the core loop's (decode, then geotag) on the same photos."""
    run = RunInfo(run_id="core", run_date=DAY, index_manifest=None)
    core = geotag_partition(decode_photos(photos, cfg), cfg, run)
    want = {r["photo_id"]: r for r in core.to_pylist() if r["error_stage"] is None}
    got = {r["photo_id"]: r for r in read_predictions(cfg.tables.results).to_pylist()}
    assert set(got) == set(want) and len(got) == 10
    for pid, g in got.items():
        w = want[pid]
        assert _comparable({k: g.get(k) for k in w}) == _comparable(w), pid
        assert g["confidence"] == pytest.approx(w["confidence"], abs=1e-5)
        assert g["spread_km"] == pytest.approx(w["spread_km"], abs=1e-3)
        assert [(c["source"], c["gallery_id"], c["lat_deg"], c["lon_deg"]) for c in g["top_candidates"]] == [
            (c["source"], c["gallery_id"], c["lat_deg"], c["lon_deg"]) for c in w["top_candidates"]
        ], pid
        for a, b in zip(g["top_candidates"], w["top_candidates"], strict=True):
            assert (a["score"] is None) == (b["score"] is None)
            if a["score"] is not None:
                assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def _assert_decode_errors(cfg: Any) -> None:
    errors = {r["photo_id"]: r for r in read_errors(cfg.tables.results).to_pylist()}
    assert set(errors) == {"zero", "text", "half"} and {e["stage"] for e in errors.values()} == {"decode"}
    assert errors["zero"]["reason"] == "the file is empty (0 bytes)"
    assert errors["text"]["reason"].startswith("not an image")
    assert errors["half"]["reason"].startswith("truncated or corrupt image data")


@pytest.mark.spark
def test_shuffle_carries_file_bytes_and_predictions_equal_the_core_loop(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Inline-bytes input (the case where photo bytes DO cross the shuffle): the compute's
    shuffle writes at most 1.2x the input files' bytes (raw RGB would be ~20x a JPEG), decode
    failures are error rows with stage decode, and every result equals the core loop's."""
    photos = _photos(tiny_world / "queries", _broken(tiny_world / "queries"))
    pq.write_table(photos, tmp_path / "photos.parquet")
    file_bytes = sum(len(b) for b in photos.column("image_bytes").to_pylist())
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml", input={"photos_per_partition": 5}))
    summary = run_geotag(spark, cfg, photos_uri=str(tmp_path / "photos.parquet"), run_date=DAY, run_id="run-shuffle")

    assert (summary["read"], summary["predicted"], summary["errors"]) == (13, 10, 3)
    written, n_stages = _shuffle_write_bytes(spark, compute_description("run-shuffle"))
    assert n_stages >= 2, "expected the compute's jobs in Spark's status store"
    assert 0 < written <= 1.2 * file_bytes, (written, file_bytes)
    _assert_decode_errors(cfg)
    _assert_results_equal_the_core_loop(cfg, photos)


@pytest.mark.spark
def test_sharded_placement_shuffles_file_bytes_once_and_predicts_as_the_core_loop(  # type: ignore[no-untyped-def]
    spark, tiny_world: Path, tmp_path: Path
) -> None:
    """index.placement=sharded (embed stage, queries x shards with an exact merge, rank stage;
    each stage decodes its own photos). The same 13 photos as files, then as inline bytes: the
    runs differ only in what a PHOTOS row carries, so the difference of their shuffle bytes is
    what the photos' bytes cost there. It is at most 1.2x the file bytes (once; twice would be
    ~1.8x, raw RGB ~20x). The search's own shuffles (the queries' embeddings to the shards, each
    shard's top-k ids and scores; the winners' places and URIs are looked up after the merge) are
    in both runs, stay under 1 KB a photo and do not grow with the photos: the inline run itself
    is within 1.2x the file bytes. Decode failures are error rows with stage decode, and every result of both runs equals the
    core loop's (the replicated placement is checked against the same loop above)."""
    broken = _broken(tiny_world / "queries")
    photos = _photos(tiny_world / "queries", broken)
    file_bytes = sum(len(b) for b in photos.column("image_bytes").to_pylist())
    folder = tmp_path / "photos"
    folder.mkdir()
    for pid, data in zip(photos.column("photo_id").to_pylist(), photos.column("image_bytes").to_pylist()):
        (folder / f"{pid}.jpg").write_bytes(data)
    pq.write_table(photos, tmp_path / "photos.parquet")
    uris = list_images(str(folder), S3Config())
    as_files = pa.table({"photo_id": photo_ids(uris, str(folder)), "uri": uris, "image_bytes": [None] * len(uris)},
                        schema=S.PHOTOS)

    written: dict[str, int] = {}
    for kind, uri, rows in (("files", str(folder), as_files), ("inline", str(tmp_path / "photos.parquet"), photos)):
        cfg = load_config(tiny_conf(tiny_world, tmp_path / f"{kind}.yaml", input={"photos_per_partition": 5},
                                    index={"placement": "sharded"}))
        summary = run_geotag(spark, cfg, photos_uri=uri, run_date=DAY, run_id=f"run-sharded-{kind}")
        assert (summary["read"], summary["predicted"], summary["errors"]) == (13, 10, 3), kind
        written[kind], n_stages = _shuffle_write_bytes(spark, compute_description(f"run-sharded-{kind}"))
        assert n_stages >= 4, "expected the compute's jobs (embed, search, rank) in Spark's status store"
        _assert_decode_errors(cfg)
        _assert_results_equal_the_core_loop(cfg, rows)
    assert 0 < written["inline"] - written["files"] <= 1.2 * file_bytes, (written, file_bytes)
    # The search's own traffic (all of the files run: the queries' embeddings to the shards, each
    # photo's per-shard ids and scores, ids and paths; measured 9.1 KB here, 3 KB a photo when the
    # lists carried places and image URIs) stays under 1 KB a photo, whatever the photo weighs, so
    # the inline run itself is within the goal on these 5.6 KB photos (measured 1.04x).
    assert written["files"] <= 1024 * 13, (written, file_bytes)
    assert written["inline"] <= 1.2 * file_bytes, (written, file_bytes)

"""Resource bounds: a photo over the pixel cap never reaches the model; a task holds one
Arrow batch of photos (input.photos_per_batch) at a time, however large its partition; many
tiny partitions and one huge partition both complete. Largest tested here: one partition of
HUGE photos (docs/performance.md "Ranking: shared prefix, memory, feature cache" has the numbers)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image
from support import tiny_conf

from georank import schema as S
from georank.config import load_config
from georank.results import read_predictions

DAY = dt.date(2026, 11, 27)
HUGE = 60  # photos in the one-partition run (120 passed too, run by hand; 60 keeps the suite short)


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def test_photo_over_the_pixel_cap_never_reaches_the_model(tiny_world: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import georank.pipeline as P
    from georank.pipeline import decode_photos, geotag_partition
    from georank.run_info import RunInfo

    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml", decode={"max_pixels": 1_000_000}))
    photos = pa.table({"photo_id": ["bomb"], "uri": [None], "image_bytes": [_png(3000, 3000)]},
                      schema=pa.schema([S.PHOTOS.field(n) for n in ("photo_id", "uri", "image_bytes")]))
    decoded = decode_photos(photos, cfg)
    assert decoded.column("rgb")[0].as_py() is None  # no pixels were handed on
    assert decoded.column("error_stage")[0].as_py() == "decode"
    assert "over the cap of 1000000 (decode.max_pixels" in decoded.column("error_reason")[0].as_py()

    def model(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the refused photo reached a model")

    monkeypatch.setattr(P, "embed_isolated", model)
    monkeypatch.setattr(P, "rank_and_decide", model)
    out = geotag_partition(decoded, cfg, RunInfo("r", DAY)).to_pylist()
    assert [(r["photo_id"], r["error_stage"]) for r in out] == [("bomb", "decode")]


def test_geotag_stage_holds_one_batch_at_a_time(tiny_world: Path, tmp_path: Path) -> None:
    """The accelerator stage's executor function yields the results of a batch before it pulls
    the next one: its memory is one batch, whatever the partition's size."""
    from georank.pipeline import decode_photos
    from georank.run_info import RunInfo
    from georank.spark.executors import on_executors
    from georank.spark.geotag import _geotag_step

    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml"))
    uris = sorted(str(p) for p in (tiny_world / "queries").glob("*.jpg"))[:6]
    pulled: list[int] = []

    def batches() -> Iterator[pa.RecordBatch]:
        for i, uri in enumerate(uris):
            pulled.append(i)
            photos = pa.table({"photo_id": [f"p{i}"], "uri": [uri], "image_bytes": pa.nulls(1, pa.binary())})
            yield from decode_photos(photos, cfg).to_batches()

    fn = on_executors(cfg.model_dump(), _geotag_step(RunInfo("r", DAY)), accelerator=True)
    seen_at_output = []
    n_rows = 0
    for out in fn(batches()):
        seen_at_output.append(len(pulled))
        n_rows += out.num_rows
    assert n_rows == len(uris)
    assert seen_at_output[0] == 1  # the first results came out after one batch was read


@pytest.mark.spark
def test_many_tiny_partitions_and_one_huge_partition(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from georank.spark.geotag import run_geotag

    queries = sorted((tiny_world / "queries").glob("*.jpg"))
    tiny = load_config(tiny_conf(tiny_world, tmp_path / "tiny.yaml", input={"photos_per_partition": 1}))
    s = run_geotag(spark, tiny, photos_uri=str(tiny_world / "queries"), run_date=DAY, run_id="run-tiny-parts")
    assert s["partitions"] == len(queries) == s["read"] == s["predicted"] + s["errors"]

    many = tmp_path / "many"
    many.mkdir()
    for i in range(HUGE):  # distinct ids, the demo's pixels
        (many / f"p{i:05d}.jpg").symlink_to(queries[i % len(queries)])
    huge = load_config(tiny_conf(tiny_world, tmp_path / "huge.yaml", input={"photos_per_partition": 1_000_000}))
    s = run_geotag(spark, huge, photos_uri=str(many), run_date=DAY, run_id="run-one-part")
    assert s["partitions"] == 1 and s["read"] == HUGE == s["predicted"] + s["errors"]
    preds = read_predictions(huge.tables.results).column("photo_id").to_pylist()
    assert len(preds) == len(set(preds)) == s["predicted"]

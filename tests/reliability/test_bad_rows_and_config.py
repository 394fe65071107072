"""Bad rows and bad config: a row-level error where it is one row, a run-level failure at
start-up where it is the run. (Null / repeated photo ids: tests/job/test_geotag_spark.py.)"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from support import ROOT, tiny_conf

from georank import schema as S
from georank.config import load_config
from georank.errors import CheckpointError, GalleryIndexError

DAY = dt.date(2026, 11, 25)


# ----------------------------------------------------------------------------- gallery rows


def test_bad_gallery_rows_are_error_rows_with_reasons(tiny_world: Path, tmp_path: Path) -> None:
    """prepare_gallery_batch (the index job's executor step): every bad row is an error row
    with stage and reason, the good rows in the same batch are embedded."""
    from georank.gallery import prepare_gallery_batch

    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml"))
    img = str(sorted((tiny_world / "gallery").rglob("*.jpg"))[0])
    rows = {  # gallery_id -> (row, stage, reason pattern); stage None = embedded
        1: (dict(uri=img, lat_deg=48.85, lon_deg=2.35), None, None),
        2: (dict(uri=img, lat_deg=math.nan, lon_deg=2.0), "input", r"^coordinates are not finite numbers: lat_deg=nan, lon_deg=2.0$"),
        3: (dict(uri=img, lat_deg=1.0, lon_deg=math.nan), "input", r"^coordinates are not finite numbers: lat_deg=1.0, lon_deg=nan$"),
        4: (dict(uri=img, lat_deg=math.inf, lon_deg=2.0), "input", r"^coordinates are not finite numbers: lat_deg=inf"),
        5: (dict(uri=img, lat_deg=90.5, lon_deg=2.0), "input", r"^coordinates out of range: lat_deg=90.5, lon_deg=2.0; expected \[-90, 90\] x \[-180, 180\]$"),
        6: (dict(uri=img, lat_deg=10.0, lon_deg=-180.5), "input", r"^coordinates out of range: lat_deg=10.0, lon_deg=-180.5"),
        7: (dict(uri=img, lat_deg=None, lon_deg=2.0), "input", r"^missing coordinates: lat_deg=None, lon_deg=2.0; expected both$"),
        8: (dict(uri=None, lat_deg=10.0, lon_deg=10.0), "input", r"^no image: expected a uri or image_bytes, got neither$"),
        9: (dict(uri=None, image_bytes=b"", lat_deg=10.0, lon_deg=10.0), "decode", r"^the file is empty \(0 bytes\)$"),
        10: (dict(uri=str(tmp_path / "gone.jpg"), lat_deg=10.0, lon_deg=10.0), "read", r"^file not found: "),
        11: (dict(uri=img, lat_deg=-90.0, lon_deg=180.0), None, None),  # the edges are valid
    }
    table = pa.Table.from_pylist(
        [{"gallery_id": g, "uri": None, "image_bytes": None, **r} for g, (r, _, _) in rows.items()],
        schema=pa.schema([S.GALLERY.field(n) for n in ("gallery_id", "uri", "image_bytes", "lat_deg", "lon_deg")]),
    )
    full = {n: table.column(n) if n in table.column_names else pa.nulls(table.num_rows, S.GALLERY.field(n).type) for n in S.GALLERY.names}
    out = prepare_gallery_batch(pa.table(full).to_batches()[0], cfg, n_shards=2).to_pylist()
    assert [r["gallery_id"] for r in out] == list(rows)  # one row out per row in
    import re

    for r in out:
        _, stage, pattern = rows[r["gallery_id"]]
        assert r["error_stage"] == stage, r
        if stage is None:
            assert r["embedding"] and r["embed_version"] and r["shard"] in (0, 1)
        else:
            assert re.match(pattern, r["error_reason"]), r["error_reason"]
            assert r["embedding"] is None


# ----------------------------------------------------------------------------- config


def test_unknown_key_in_the_config_file_fails_through_spark_submit(tiny_world: Path, tmp_path: Path) -> None:
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", decode={"max_pixel": 1000})
    r = subprocess.run(
        [str(ROOT / "spark-submit.sh"), "jobs/geotag.py", "--conf", str(conf), "--run-date", DAY.isoformat()],
        cwd=ROOT, env={**os.environ, "GEORANK_SKIP_SETUP": "1"}, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2
    assert f"georank: unknown config key 'decode.max_pixel' in {conf}; valid keys under decode: alpha, exif_orientation, max_aspect_ratio, max_bytes, max_pixels," in r.stderr
    assert "SparkContext" not in r.stderr and "Traceback" not in r.stderr  # refused before a JVM started
    assert not (tmp_path / "c-tables").exists()


# ----------------------------------------------------------------------------- run-level artifacts


def _bad_adapter(world: Path, out: Path) -> Path:
    """The tiny adapter with one LoRA tensor of the wrong shape and one key in a foreign layout."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(world / "models" / "ranker" / "adapter", out)
    weights = load_file(str(out / "adapter_model.safetensors"))
    key = sorted(k for k in weights if "lora_A" in k)[0]
    weights[key] = weights[key][:, :-1].contiguous()  # one input column short
    other = sorted(k for k in weights if "lora_B" in k)[0]
    weights["base_model.model.transformer.h.0." + other.rsplit(".", 3)[-3] + ".lora_B.weight"] = weights.pop(other)
    save_file(weights, str(out / "adapter_model.safetensors"))
    return out


@pytest.mark.spark
def test_checkpoint_that_does_not_fit_fails_the_run_not_the_photos(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A ranker adapter whose keys or shapes do not match the model stops the run with a
    CheckpointError naming them; no photo becomes an error row, nothing is committed."""
    from georank.spark.geotag import run_geotag

    adapter = _bad_adapter(tiny_world, tmp_path / "adapter")
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml", rank={"adapter_uri": str(adapter)}, skip={"enabled": False}))
    with pytest.raises(CheckpointError, match=r"adapter .*adapter_model.safetensors does not fit the model: .*missing keys: .*wrong shapes: .*expected \(\d+, \d+\), got \(\d+, \d+\)") as err:
        run_geotag(spark, cfg, photos_uri=str(tiny_world / "queries"), run_date=DAY, run_id="run-bad-adapter")
    assert "unexpected keys: base_model.model.transformer.h.0." in str(err.value)
    assert "Traceback" not in str(err.value) and "Py4J" not in str(err.value)
    assert not Path(cfg.tables.results).exists()  # nothing committed: not even an empty table
    staging = Path(cfg.tables.results).parent / "_staging" / "results"
    assert not staging.exists() or not any(staging.iterdir())  # the failed run removed its own staging


def _index_copy(world: Path, out: Path, **manifest_changes: str) -> Path:
    shutil.copytree(world / "index", out)
    m = out / "manifest.json"
    d = json.loads(m.read_text())
    d.update(manifest_changes)
    m.write_text(json.dumps(d))
    return out


@pytest.mark.spark
def test_index_manifest_from_another_format_version_fails_at_start_up(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from georank.spark.geotag import run_geotag

    index = _index_copy(tiny_world, tmp_path / "index", format="georank-index/2")
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml", index={"uri": str(index)}))
    with pytest.raises(GalleryIndexError, match=r"manifest.json: expected format 'georank-index/1', got 'georank-index/2'"):
        run_geotag(spark, cfg, photos_uri=str(tiny_world / "queries"), run_date=DAY, run_id="run-bad-manifest")
    assert not Path(cfg.tables.results).exists()


@pytest.mark.spark
def test_index_built_by_another_embedder_fails_the_run(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from georank.spark.geotag import run_geotag

    index = _index_copy(tiny_world, tmp_path / "index", embed_version="0123456789abcdef")
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml", index={"uri": str(index)}))
    with pytest.raises(GalleryIndexError, match=r"was built from gallery embeddings of embedder 0123456789abcdef, but the queries are embedded by [0-9a-f]{16}"):
        run_geotag(spark, cfg, photos_uri=str(tiny_world / "queries"), run_date=DAY, run_id="run-other-embedder")
    assert not Path(cfg.tables.results).exists()

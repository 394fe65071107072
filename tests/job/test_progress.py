"""Progress lines on the driver: their counts add up and the summary carries the same counts."""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from pathlib import Path

import pytest
from support import tiny_conf

from georank.config import load_config
from georank.spark.geotag import run_geotag

pytestmark = pytest.mark.spark
DAY = dt.date(2026, 11, 23)
LINE = re.compile(r"^geotag: (\d+)/(\d+) photos \(([\d.]+)%\), ([\d.]+) photos/s, ETA (.+), (\d+) errors$")


def test_progress_lines_add_up_and_reach_the_summary(spark, tiny_world: Path, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    photos = tmp_path / "photos"
    shutil.copytree(tiny_world / "queries", photos)
    (photos / "broken.jpg").write_bytes(b"not an image")  # one decode error row
    n_photos = sum(1 for p in photos.iterdir() if p.is_file())
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", input={"progress_interval_s": 0.2})
    cfg = load_config(conf)
    caplog.set_level(logging.INFO, logger="georank.spark.progress")
    summary = run_geotag(spark, cfg, photos_uri=str(photos), run_date=DAY, run_id="progress-1")

    lines = [r.getMessage() for r in caplog.records if r.name == "georank.spark.progress"]
    parsed = [LINE.match(line) for line in lines]
    assert lines and all(parsed), lines
    done = [int(m.group(1)) for m in parsed if m]
    assert all(int(m.group(2)) == n_photos for m in parsed if m)  # total = photos read
    assert done == sorted(done) and all(0 <= d <= n_photos for d in done)  # never goes back, never past the total
    last = parsed[-1]
    assert last is not None and int(last.group(1)) == n_photos and int(last.group(6)) == 1 and last.group(5) == "0 s"

    p = summary["progress"]
    assert summary["read"] == n_photos and summary["errors"] == 1
    assert (p["done"], p["total"], p["errors"]) == (summary["predicted"] + summary["errors"], n_photos, summary["errors"])
    assert p["photos_per_s"] > 0 and p["eta_s"] == 0

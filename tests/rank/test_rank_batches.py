"""rank_and_decide streams candidate images per rank batch (issue 14 item 5): the decoded gallery
images alive at any moment are at most one batch's (rank.photos_per_batch photos x their
candidates), however many photos the partition holds; an unusable gallery image is still
dropped and counted, in every batch it appears in. Counted by wrapping the image loader the
ranking module calls (decode_image), with a finalizer per decoded image."""

from __future__ import annotations

import datetime as dt
import weakref
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import tiny_conf

import georank.ranking as R
from georank.config import load_config
from georank.pipeline import decode_photos, embed_isolated, retrieve_isolated
from georank.run_info import RunInfo

DAY = dt.date(2026, 11, 30)
PER_BATCH = 1  # rank.photos_per_batch
N_PHOTOS = 4  # four rank batches
N_CANDS = 4  # candidates.retrieved (few: the test is about batches, not candidates)


class LiveImages:
    """Counts the images the loader returned that are still referenced (high-water mark)."""

    def __init__(self) -> None:
        self.live = self.high = self.total = 0

    def _gone(self) -> None:
        self.live -= 1

    def wrap(self, load: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            img = load(*args, **kwargs)
            self.live += 1
            self.total += 1
            self.high = max(self.high, self.live)
            weakref.finalize(img, self._gone)
            return img

        return counted


def test_candidate_images_alive_are_one_rank_batch(tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml", skip={"enabled": False},
                                 rank={"photos_per_batch": PER_BATCH}, candidates={"retrieved": N_CANDS}))
    queries = sorted((tiny_world / "queries").glob("*.jpg"))[:N_PHOTOS]
    photos = pa.table({"photo_id": [q.stem for q in queries], "uri": [None] * N_PHOTOS, "image_bytes": [q.read_bytes() for q in queries]})
    run = RunInfo("r", DAY)
    ok, emb, version, _ = embed_isolated(decode_photos(photos, cfg), cfg, run)
    ok, neighbours, _ = retrieve_isolated(ok, emb, cfg, run, embed_version=version)
    rows = neighbours.to_pylist()
    # one gallery image unusable, behind a candidate of the first photo and of the last (other batches)
    gone = str(tmp_path / "gone.jpg")
    rows[0]["image_uri"] = [gone, *rows[0]["image_uri"][1:]]
    rows[-1]["image_uri"] = [gone, *rows[-1]["image_uri"][1:]]
    neighbours = pa.Table.from_pylist(rows, schema=neighbours.schema)

    counter = LiveImages()
    monkeypatch.setattr(R, "decode_image", counter.wrap(R.decode_image))
    out = {r["photo_id"]: r for r in R.rank_and_decide(ok, neighbours, cfg, run, embed_version=version).to_pylist()}

    assert len(out) == N_PHOTOS and all(r["error_stage"] is None for r in out.values())
    dropped = {p: (r["n_candidates"], r["n_candidates_dropped"]) for p, r in out.items()}
    assert dropped[rows[0]["photo_id"]] == dropped[rows[-1]["photo_id"]] == (N_CANDS - 1, 1)
    assert sum(d for _, d in dropped.values()) == 2
    distinct = len({u for r in rows for u in r["image_uri"][:N_CANDS]} - {gone})
    assert counter.total >= distinct > PER_BATCH * N_CANDS  # more images than one batch holds were decoded
    assert counter.high <= PER_BATCH * N_CANDS  # ... but never more than one batch's alive at once
    assert counter.live == 0
    assert pc.all(pc.is_valid(pa.array([r["lat_deg"] for r in out.values()]))).as_py()

"""Per-photo failure isolation after decode (embed, retrieve, rank, decide), over the tiny world
with its real tiny models: one photo's failure is one error row with its stage and a readable
reason, the other photos are predicted; a candidate whose gallery image is unusable is dropped
and counted; run-level errors (a wrong checkpoint or index) still stop the run."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from support import tiny_conf

import georank.pipeline as P
import georank.ranking as R
from georank.config import GeorankConfig, load_config
from georank.errors import CheckpointError, GalleryIndexError
from georank.pipeline import decode_photos, embed_isolated, geotag_partition, retrieve_isolated
from georank.run_info import RunInfo

DAY = dt.date(2026, 11, 30)
CULPRIT_SIZE = (250, 170)  # the photo the injected faults pick out by its size
N_GOOD = 4  # one ranker batch (rank.photos_per_batch = 4 in the tiny config)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def cfg(tiny_world: Path, tmp_path: Path) -> GeorankConfig:
    return load_config(tiny_conf(tiny_world, tmp_path / "c.yaml", skip={"enabled": False}))


def _photos(world: Path, extra: dict[str, bytes] | None = None) -> pa.Table:
    """N_GOOD demo queries (the third resized to CULPRIT_SIZE) plus ``extra`` inline photos."""
    q = sorted((world / "queries").glob("*.jpg"))[:N_GOOD]
    data = {p.stem: p.read_bytes() for p in q}
    data[q[2].stem] = _png(Image.open(q[2]).convert("RGB").resize(CULPRIT_SIZE))
    data.update(extra or {})
    return pa.table({"photo_id": list(data), "uri": [None] * len(data), "image_bytes": list(data.values())})


def _run(photos: pa.Table, cfg: GeorankConfig) -> dict[str, dict[str, Any]]:
    out = geotag_partition(decode_photos(photos, cfg), cfg, RunInfo("r", DAY)).to_pylist()
    assert len(out) == photos.num_rows and len({r["photo_id"] for r in out}) == photos.num_rows  # one row per photo
    return {r["photo_id"]: r for r in out}


def _culprit(photos: pa.Table) -> str:
    return str(photos.column("photo_id")[2].as_py())


def _assert_predicted(rows: dict[str, dict[str, Any]], ids: list[str]) -> None:
    for pid in ids:
        r = rows[pid]
        assert r["error_stage"] is None, (pid, r["error_reason"])
        assert np.isfinite(r["lat_deg"]) and 0.0 <= r["confidence"] <= 1.0 and not r["ranker_skipped"], pid


def _is_culprit(image: Any) -> bool:
    return tuple(image.size) == CULPRIT_SIZE


def test_scorer_exception_on_one_photo_is_one_rank_error_row(cfg: GeorankConfig, tiny_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from georank.rank.scorer import Scorer

    real = Scorer.score

    def score(self: Scorer, queries: Any) -> Any:
        if any(_is_culprit(q.image) for q in queries):
            raise RuntimeError("injected fault in the ranker\nsecond line of the message")
        return real(self, queries)

    monkeypatch.setattr(Scorer, "score", score)
    photos = _photos(tiny_world)
    rows = _run(photos, cfg)
    bad = rows.pop(_culprit(photos))
    assert (bad["error_stage"], bad["error_reason"]) == ("rank", "the ranker failed: RuntimeError: injected fault in the ranker")
    assert bad["lat_deg"] is None and bad["run_id"] == "r"
    _assert_predicted(rows, list(rows))


def test_nan_score_is_a_rank_error_row_never_a_winner(cfg: GeorankConfig, tiny_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from georank.rank.scorer import Scorer

    real = Scorer.score

    def score(self: Scorer, queries: Any) -> Any:
        out = real(self, queries)
        for q, s in zip(queries, out):
            if _is_culprit(q.image):
                s[3] = np.nan
        return out

    monkeypatch.setattr(Scorer, "score", score)
    photos = _photos(tiny_world)
    rows = _run(photos, cfg)
    bad = rows.pop(_culprit(photos))
    assert bad["error_stage"] == "rank"
    assert bad["error_reason"] == "the ranker gave 1 of 12 candidates a non-finite score (nan): expected finite scores"
    _assert_predicted(rows, list(rows))


def test_embed_exception_on_one_photo_is_one_embed_error_row(cfg: GeorankConfig, tiny_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from georank.embed import get_embedder

    embedder_cls = type(get_embedder(cfg))
    real = embedder_cls.embed

    def embed(self: Any, images: Any) -> Any:
        if any(_is_culprit(im) for im in images):
            raise ValueError("injected fault in the encoder")
        return real(self, images)

    monkeypatch.setattr(embedder_cls, "embed", embed)
    photos = _photos(tiny_world)
    rows = _run(photos, cfg)
    bad = rows.pop(_culprit(photos))
    assert (bad["error_stage"], bad["error_reason"]) == ("embed", "the image encoder failed: ValueError: injected fault in the encoder")
    _assert_predicted(rows, list(rows))


def test_nan_embedding_is_an_embed_error_row(cfg: GeorankConfig, tiny_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from georank.embed import get_embedder

    embedder_cls = type(get_embedder(cfg))
    real = embedder_cls.embed

    def embed(self: Any, images: Any) -> Any:
        out = real(self, images)
        for i, im in enumerate(images):
            if _is_culprit(im):
                out[i, 0] = np.nan
        return out

    monkeypatch.setattr(embedder_cls, "embed", embed)
    photos = _photos(tiny_world)
    decoded = decode_photos(photos, cfg)
    ok, emb, _, errors = embed_isolated(decoded, cfg, RunInfo("r", DAY))
    assert errors.column("photo_id").to_pylist() == [_culprit(photos)]
    assert errors.column("error_reason").to_pylist() == ["the image encoder gave a non-finite embedding (NaN or inf): expected finite values"]
    assert ok.num_rows == emb.shape[0] == N_GOOD - 1 and np.isfinite(emb).all()


def test_search_exception_on_one_photo_is_one_retrieve_error_row(cfg: GeorankConfig, tiny_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = _photos(tiny_world)
    culprit = _culprit(photos)
    real = P.search_neighbours

    def search(photo_ids: list[str], emb: np.ndarray, cfg: GeorankConfig, **kw: Any) -> pa.Table:
        if culprit in photo_ids:
            raise OSError("injected fault reading a shard")
        return real(photo_ids, emb, cfg, **kw)

    monkeypatch.setattr(P, "search_neighbours", search)
    rows = _run(photos, cfg)
    bad = rows.pop(culprit)
    assert (bad["error_stage"], bad["error_reason"]) == ("retrieve", "the index search failed: OSError: injected fault reading a shard")
    _assert_predicted(rows, list(rows))


def test_decide_exception_on_one_photo_is_one_decide_error_row(cfg: GeorankConfig, tiny_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = R.decide
    calls: list[int] = []

    def decide(scores: Any, latlon: Any, dcfg: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise ZeroDivisionError("injected fault in decide")
        return real(scores, latlon, dcfg)

    monkeypatch.setattr(R, "decide", decide)
    rows = _run(_photos(tiny_world), cfg)
    bad = [r for r in rows.values() if r["error_stage"] is not None]
    assert [(r["error_stage"], r["error_reason"]) for r in bad] == [("decide", "deciding failed: ZeroDivisionError: injected fault in decide")]
    _assert_predicted(rows, [p for p, r in rows.items() if r["error_stage"] is None])
    assert len(bad) == 1 and len(rows) == N_GOOD


@pytest.mark.parametrize("exc", [CheckpointError("adapter: expected shape (8, 64), got (4, 64)"), GalleryIndexError("index: foreign manifest")])
def test_run_level_errors_still_stop_the_run(cfg: GeorankConfig, tiny_world: Path, monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    from georank.rank.scorer import Scorer

    def fail(*a: Any, **k: Any) -> Any:
        raise exc

    monkeypatch.setattr(Scorer, "score", fail)
    if isinstance(exc, GalleryIndexError):
        monkeypatch.setattr(P, "search_neighbours", fail)
    with pytest.raises(type(exc), match=re.escape(str(exc))):
        geotag_partition(decode_photos(_photos(tiny_world), cfg), cfg, RunInfo("r", DAY))


def test_wide_query_and_wide_gallery_image(cfg: GeorankConfig, tiny_world: Path, tmp_path: Path) -> None:
    """A 1990x10 query photo is a decode error row (ratio 204.8 after the shrink to 1024x5); a
    1990x10 gallery image behind a candidate drops that candidate (counted), the photo is
    predicted. Before: both passed decode at ratio 199 and the ranker raised inside the task."""
    wide = Image.linear_gradient("L").convert("RGB").resize((1990, 10))
    photos = _photos(tiny_world, {"wide_query": _png(wide)})
    decoded = decode_photos(photos, cfg)
    ok, emb, version, _ = embed_isolated(decoded.filter(pa.compute.is_null(decoded.column("error_stage"))), cfg, RunInfo("r", DAY))
    ok, neighbours, _ = retrieve_isolated(ok, emb, cfg, RunInfo("r", DAY), embed_version=version)
    # the first photo's best neighbour now stands on a 1990x10 gallery image
    (tmp_path / "wide.png").write_bytes(_png(wide))
    rows = neighbours.to_pylist()
    target = rows[0]["photo_id"]
    rows[0]["image_uri"] = [str(tmp_path / "wide.png"), *rows[0]["image_uri"][1:]]
    out = {r["photo_id"]: r for r in P.rank_and_decide(ok, pa.Table.from_pylist(rows, schema=neighbours.schema), cfg, RunInfo("r", DAY), embed_version=version).to_pylist()}
    assert len(out) == N_GOOD
    _assert_predicted(out, list(out))
    assert (out[target]["n_candidates"], out[target]["n_candidates_dropped"]) == (11, 1)
    assert rows[0]["gallery_id"][0] not in [c["gallery_id"] for c in out[target]["top_candidates"]]
    assert all((r["n_candidates"], r["n_candidates_dropped"]) == (12, 0) for p, r in out.items() if p != target)

    whole = _run(photos, cfg)
    assert (whole["wide_query"]["error_stage"], whole["wide_query"]["error_reason"]) == (
        "decode",
        "aspect ratio 204.8 is over the limit of 200 (decode.max_aspect_ratio; 1024x5 pixels after shrinking 1990x10 to decode.max_side_px=1024)",
    )
    _assert_predicted(whole, [p for p in whole if p != "wide_query"])


def test_every_gallery_image_unusable_is_a_rank_error_row(cfg: GeorankConfig, tiny_world: Path, tmp_path: Path) -> None:
    photos = _photos(tiny_world)
    decoded = decode_photos(photos, cfg)
    ok, emb, version, _ = embed_isolated(decoded, cfg, RunInfo("r", DAY))
    ok, neighbours, _ = retrieve_isolated(ok, emb, cfg, RunInfo("r", DAY), embed_version=version)
    rows = neighbours.to_pylist()
    rows[1]["image_uri"] = [str(tmp_path / f"gone{i}.jpg") for i in range(len(rows[1]["image_uri"]))]
    out = P.rank_and_decide(ok, pa.Table.from_pylist(rows, schema=neighbours.schema), cfg, RunInfo("r", DAY), embed_version=version).to_pylist()
    bad = [r for r in out if r["error_stage"] is not None]
    assert [r["photo_id"] for r in bad] == [rows[1]["photo_id"]] and bad[0]["error_stage"] == "rank"
    assert bad[0]["error_reason"].startswith("no usable candidate: the gallery images of all 12 candidates are unusable (first: file not found: ")


def test_a_photo_the_rankers_resize_would_break_is_a_rank_error_row(tiny_world: Path, tmp_path: Path) -> None:
    """With native-size decoding (decode.max_side_px: null, as the reference) a 14000x70 photo
    passes decode (ratio 200) but the ranker's snap to multiples of 28 gives 14000x56 (ratio 250),
    which Qwen2-VL's image processor refuses with a ValueError inside the scorer. It is found
    before scoring: one rank error row, the other photos predicted."""
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml", skip={"enabled": False},
                                decode={"max_side_px": None}, rank={"max_pixels": 16384 * 28 * 28}))
    panorama = Image.linear_gradient("L").convert("RGB").resize((14000, 70))
    photos = _photos(tiny_world, {"panorama": _png(panorama)})
    rows = _run(photos, cfg)
    bad = rows.pop("panorama")
    assert (bad["error_stage"], bad["error_reason"]) == (
        "rank", "aspect ratio 250.0 of a 14000x70 image snapped to 14000x56 for the ranker: expected <= 200"
    )
    _assert_predicted(rows, list(rows))


def test_an_unforeseen_decoder_exception_is_a_decode_error_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only PhotoError: anything a decoder raises on one file is that file's decode error row."""
    real = P.decode_image

    def decode_image(data: bytes, dcfg: Any) -> Any:
        if data == b"odd":
            raise KeyError("'unknown HEIF colour profile'")
        return real(data, dcfg)

    monkeypatch.setattr(P, "decode_image", decode_image)
    good = _png(Image.new("RGB", (64, 48), (10, 200, 10)))
    photos = pa.table({"photo_id": ["odd", "good"], "uri": [None, None], "image_bytes": [b"odd", good]})
    rows = decode_photos(photos, GeorankConfig()).to_pylist()
    assert [(r["photo_id"], r["error_stage"], r["error_reason"]) for r in rows] == [
        ("odd", "decode", "decoding failed: KeyError: \"'unknown HEIF colour profile'\""),
        ("good", None, None),
    ]

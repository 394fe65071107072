"""Building shards and the manifest (georank.index), no Spark."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from georank.config import IndexConfig, S3Config
from georank.errors import GalleryIndexError
from georank.index import MANIFEST_NAME, build_index, read_manifest, shard_of

S3 = S3Config()


def test_shard_of_is_stable_and_covers_all_shards() -> None:
    ids = np.arange(10_000, dtype=np.int64) * 7919
    s = shard_of(ids, 8)
    assert s.dtype == np.int32 and s.min() == 0 and s.max() == 7
    assert np.array_equal(s, shard_of(ids[::-1], 8)[::-1])  # by id, not by position
    assert np.bincount(s).min() > 1000  # roughly balanced
    assert shard_of(np.array([-5, 2**62], dtype=np.int64), 3).tolist() == shard_of(np.array([-5, 2**62]), 3).tolist()


def test_manifest_lists_shards_counts_and_versions(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    m = build_index(
        ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=3), uri=str(tmp_path), s3=S3,
        embed_version="emb1", gallery_table="/t/gallery", gallery_table_version="7",
    )
    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert on_disk["index_version"] == m.index_version and on_disk["embed_version"] == "emb1"
    assert on_disk["gallery_table_version"] == "7" and on_disk["dim"] == vectors.shape[1]
    assert on_disk["metric"] == "inner_product" and on_disk["index_type"] == "flat"
    assert sum(s["ntotal"] for s in on_disk["shards"]) == on_disk["ntotal"] == len(ids)
    assert read_manifest(str(tmp_path), S3) == m
    for entry in m.shards:  # each shard's metadata holds exactly its ids, sorted, tagged with the version
        t = pq.read_table(tmp_path / entry.meta_file)
        got = t.column("gallery_id").to_numpy()
        assert np.array_equal(got, np.sort(ids[shard_of(ids, 3) == entry.shard]))
        assert t.schema.metadata[b"georank.index_version"].decode() == m.index_version


def test_existing_index_needs_overwrite(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    kw = dict(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=2), uri=str(tmp_path), s3=S3, embed_version="e")
    first = build_index(**kw)
    with pytest.raises(GalleryIndexError, match="already exists.*mode='overwrite'"):
        build_index(**kw)
    second = build_index(**kw, mode="overwrite")
    assert second.index_version != first.index_version
    assert (tmp_path / first.shards[0].index_file).exists()  # old readers keep their files


def test_duplicate_ids_are_refused(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    dup = ids.copy()
    dup[1] = dup[0]
    with pytest.raises(GalleryIndexError, match="expected unique gallery ids, got 1 repeats"):
        build_index(ids=dup, vectors=vectors, meta=meta, cfg=IndexConfig(), uri=str(tmp_path), s3=S3, embed_version="e")


def test_ivfpq_checks_its_parameters(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    kw = dict(ids=ids, vectors=vectors, meta=meta, uri=str(tmp_path), s3=S3, embed_version="e")
    with pytest.raises(GalleryIndexError, match="pq_m=5 must divide the embedding dim 16"):
        build_index(cfg=IndexConfig(type="ivfpq", nlist=4, pq_m=5, pq_bits=4), **kw)
    with pytest.raises(GalleryIndexError, match="needs at least .* = 1024 training vectors, got 300"):
        build_index(cfg=IndexConfig(type="ivfpq", nlist=1024, pq_m=4, pq_bits=4), **kw)

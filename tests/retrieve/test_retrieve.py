"""Shard-wise exact search and its loud failures (georank.retrieve), no Spark."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest
from retrieve_helpers import exact_reference, queries, tiny_gallery

from georank.config import IndexConfig, S3Config
from georank.errors import GalleryIndexError
from georank.index import build_index, read_manifest
from georank.retrieve import Neighbours, merge_neighbours, open_index

S3 = S3Config()
K = 20


@pytest.mark.parametrize("n_shards", [1, 3, 8])
def test_sharded_search_equals_one_flat_index(tmp_path, gallery, n_shards: int) -> None:
    ids, vectors, meta = gallery
    order = np.random.default_rng(5).permutation(len(ids))  # build order must not matter
    build_index(ids=ids[order], vectors=vectors[order], meta=meta, cfg=IndexConfig(shards=n_shards),
                uri=str(tmp_path), s3=S3, embed_version="e")
    q = queries()
    ref_sim, ref_ids = exact_reference(ids, vectors, q, K)
    nb = open_index(str(tmp_path), S3).search(q, K)
    assert np.array_equal(nb.gallery_id, ref_ids)
    assert np.array_equal(nb.similarity, ref_sim)  # bit for bit
    # rows come from the metadata, by id
    by_id = {i: r for r, i in enumerate(meta.column("gallery_id").to_pylist())}
    lat = meta.column("lat_deg").to_numpy()
    want_lat = np.vectorize(lambda i: lat[by_id[i]])(ref_ids)
    assert np.array_equal(nb.lat_deg, want_lat)
    assert nb.description[3][0] == f"place {ref_ids[3, 0]}"
    assert nb.image_uri[3][0] == f"/gallery/{ref_ids[3, 0]}.jpg"


def test_neighbours_round_trip_through_arrow(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    build_index(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=2), uri=str(tmp_path), s3=S3, embed_version="e")
    nb = open_index(str(tmp_path), S3).search(queries(4), 5)
    batch = nb.to_batch(["a", "b", "c", "d"])
    back = Neighbours.from_batch(batch)
    assert np.array_equal(back.gallery_id, nb.gallery_id) and back.description == nb.description
    assert back.index_version == nb.index_version != ""


def test_minus_one_result_is_an_error(tmp_path) -> None:
    ids, vectors, meta = tiny_gallery(n=7)
    build_index(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=3), uri=str(tmp_path), s3=S3, embed_version="e")
    index = open_index(str(tmp_path), S3)
    assert index.search(queries(2), 7).gallery_id.min() >= 0
    with pytest.raises(GalleryIndexError, match=r"id -1 .*expected k=8 real neighbours.*holds 7 vectors"):
        index.search(queries(2), 8)


def test_merge_rejects_padding_left_in_result() -> None:
    part = Neighbours(np.array([[5, -1]]), np.array([[0.9, np.finfo(np.float32).min]], np.float32),
                      np.zeros((1, 2)), np.zeros((1, 2)), [["x", ""]], [["u", ""]], "v")
    with pytest.raises(GalleryIndexError, match="id -1"):
        merge_neighbours([part], 2)


def test_corrupted_shard_is_a_clear_error(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    m = build_index(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=3), uri=str(tmp_path), s3=S3, embed_version="e")
    path = tmp_path / m.shards[1].index_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the vectors
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryIndexError, match=r"shard 1 file .* does not match the manifest.*corrupt"):
        open_index(str(tmp_path), S3)
    path.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(GalleryIndexError, match=r"shard 1 .*expected sha256"):
        open_index(str(tmp_path), S3)


def test_shard_from_another_index_version_is_a_clear_error(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    kw = dict(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=3), uri=str(tmp_path), s3=S3, embed_version="e")
    old = build_index(**kw)
    new = build_index(**kw, mode="overwrite")
    # someone copies the old build's shard 2 into the new build
    shutil.copyfile(tmp_path / old.shards[2].meta_file, tmp_path / new.shards[2].meta_file)
    shutil.copyfile(tmp_path / old.shards[2].index_file, tmp_path / new.shards[2].index_file)
    with pytest.raises(GalleryIndexError, match=rf"belongs to index version {old.index_version}.*manifest is version {new.index_version}"):
        open_index(str(tmp_path), S3)
    # only the FAISS file swapped, from a build over other vectors: caught by the checksum
    # (a byte-identical file from another build is the same shard and passes)
    build_index(**kw, mode="overwrite")
    newest = read_manifest(str(tmp_path), S3)
    other = build_index(**{**kw, "vectors": vectors[::-1].copy(), "uri": str(tmp_path / "other")})
    shutil.copyfile(tmp_path / "other" / other.shards[0].index_file, tmp_path / newest.shards[0].index_file)
    with pytest.raises(GalleryIndexError, match="shard 0 file .*from another index version"):
        open_index(str(tmp_path), S3)


def test_manifest_that_disagrees_with_its_shard(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    build_index(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=2), uri=str(tmp_path), s3=S3, embed_version="e")
    import json

    d = json.loads((tmp_path / "manifest.json").read_text())
    d["shards"][0]["ntotal"] += 1
    d["ntotal"] += 1
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(GalleryIndexError, match=r"disagrees with its manifest: ntotal: manifest \d+, shard \d+"):
        open_index(str(tmp_path), S3)
    d["ntotal"] += 5
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(GalleryIndexError, match="ntotal is .* but the shards hold"):
        read_manifest(str(tmp_path), S3)


def test_query_of_wrong_dim_is_refused(tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    build_index(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=2), uri=str(tmp_path), s3=S3, embed_version="e")
    with pytest.raises(GalleryIndexError, match=r"expected query embeddings \(q, 16\).*got shape \(3, 48\)"):
        open_index(str(tmp_path), S3).search(np.zeros((3, 48), np.float32), 5)


def test_ivfpq_shards_share_one_training_and_find_neighbours(tmp_path) -> None:
    ids, vectors, meta = tiny_gallery(n=2000)
    cfg = IndexConfig(type="ivfpq", shards=3, nlist=8, pq_m=8, pq_bits=4, nprobe=8)
    m = build_index(ids=ids, vectors=vectors, meta=meta, cfg=cfg, uri=str(tmp_path), s3=S3, embed_version="e")
    assert m.params == {"nlist": 8, "pq_m": 8, "pq_bits": 4}
    q = vectors[:10]  # gallery vectors as queries: each should find itself first
    nb = open_index(str(tmp_path), S3, nprobe=8).search(q, 10)
    assert (nb.gallery_id[:, 0] == ids[:10]).mean() >= 0.8


def test_scores_merged_then_looked_up_equal_the_merge_of_full_lists(tmp_path, gallery, monkeypatch) -> None:
    """The sharded placement's path (each shard's ids and scores only, merged exactly, the winners'
    rows looked up in the shards' memory-mapped metadata) gives what the core loop's search over
    every shard gives: ids, scores, order, ties across shards and rows (null places included)."""
    from georank.retrieve.lookup import neighbours_from_scores, open_shard_meta

    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    ids, vectors, meta = gallery
    # 40 exact duplicates under new ids (ties, most across shards) and a row without a place
    n_dup = 40
    dup_ids = ids[:n_dup] + 1
    all_ids = np.concatenate([ids, dup_ids])
    all_vectors = np.concatenate([vectors, vectors[:n_dup]])
    rows = meta.to_pylist() + [{**r, "gallery_id": int(i)} for r, i in zip(meta.to_pylist()[:n_dup], dup_ids)]
    rows[0] = {**rows[0], "description": None, "lat_deg": None}
    all_meta = pa.Table.from_pylist(rows, schema=meta.schema)
    m = build_index(ids=all_ids, vectors=all_vectors, meta=all_meta, cfg=IndexConfig(shards=3), uri=str(tmp_path / "ix"),
                    s3=S3, embed_version="e")
    index = open_index(str(tmp_path / "ix"), S3)
    q = np.concatenate([queries(), vectors[:5]])  # the last five hit their duplicate first
    want = merge_neighbours(index.search_parts(q, K), K, ntotal=m.ntotal)
    scores = [s.search_scores(q, K) for s in index.shards]
    metas = [open_shard_meta(m, i, root_uri=str(tmp_path / "ix"), s3=S3) for i in range(m.n_shards)]
    got = neighbours_from_scores(np.stack([g for g, _ in scores]), np.stack([s for _, s in scores]), metas,
                                 index_version=m.index_version, ntotal=m.ntotal)
    assert np.array_equal(got.gallery_id, want.gallery_id)
    assert np.array_equal(got.similarity, want.similarity)  # bit for bit
    assert np.array_equal(got.lat_deg, want.lat_deg, equal_nan=True)
    assert np.array_equal(got.lon_deg, want.lon_deg)
    assert (got.description, got.image_uri, got.index_version) == (want.description, want.image_uri, want.index_version)
    assert {int(i) for i in want.gallery_id[-5:, :2].reshape(-1)} == {int(i) for i in ids[:5]} | {int(i) for i in dup_ids[:5]}
    assert any("" in row for row in got.description)  # the row without a place

    # One Arrow copy per host and metadata version, reused; an id a shard does not hold is loud.
    copies = list((tmp_path / "cache" / "shard_meta").glob("*/*.arrow"))
    assert len(copies) == m.n_shards
    stamp = {p: p.stat().st_mtime_ns for p in copies}
    open_shard_meta(m, 0, root_uri=str(tmp_path / "ix"), s3=S3)
    assert {p: p.stat().st_mtime_ns for p in copies} == stamp
    with pytest.raises(GalleryIndexError, match=r"shard 1 of index .* returned ids its metadata does not hold"):
        metas[1].rows(np.array([7], np.int64))


def test_shard_metadata_is_checked_before_it_is_mapped(tmp_path, gallery, monkeypatch) -> None:
    from georank.retrieve.lookup import open_shard_meta

    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    ids, vectors, meta = gallery
    m = build_index(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(shards=2), uri=str(tmp_path), s3=S3, embed_version="e")
    path = tmp_path / m.shards[1].meta_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the rows; the footer still reads
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryIndexError, match=r"shard 1 metadata .* does not match the manifest .*sha256"):
        open_shard_meta(m, 1, root_uri=str(tmp_path), s3=S3)
    assert not list((tmp_path / "cache" / "shard_meta").glob("*/*.arrow"))

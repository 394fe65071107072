"""ivfpq_refine: an IVF-PQ shortlist re-ranked by exact inner products (georank.index / retrieve), no Spark."""

from __future__ import annotations

import numpy as np
import pytest
from retrieve_helpers import exact_reference, queries, tiny_gallery

from georank.config import IndexConfig, S3Config
from georank.errors import GalleryIndexError, SetupError
from georank.index import build_index, factory_string, read_manifest
from georank.retrieve import open_index

S3 = S3Config()
K = 10


def _built(tmp_path, **over):  # type: ignore[no-untyped-def]
    ids, vectors, meta = tiny_gallery(n=1200, dim=32, seed=5)
    cfg = IndexConfig(type="ivfpq_refine", shards=2, nlist=8, pq_m=8, pq_bits=4, **over)  # 4 bits: trains in seconds
    m = build_index(ids=ids, vectors=vectors, meta=meta, cfg=cfg, uri=str(tmp_path / cfg.type), s3=S3, embed_version="e")
    return ids, vectors, m, cfg


def test_refine_index_returns_the_exact_top_k_when_nprobe_covers_all_lists(tmp_path) -> None:
    ids, vectors, m, cfg = _built(tmp_path)
    assert factory_string(cfg) == "IDMap2,IVF8,PQ8x4,RFlat"
    assert m.index_type == "ivfpq_refine" and m.params == {"nlist": 8, "pq_m": 8, "pq_bits": 4}
    assert read_manifest(str(tmp_path / cfg.type), S3) == m
    q = queries(40, dim=32, seed=9)
    want_sim, want_ids = exact_reference(ids, vectors, q, K)

    got = open_index(str(tmp_path / cfg.type), S3, nprobe=8, k_factor=40).search(q, K)  # all 8 lists probed, shortlist 400
    assert np.array_equal(got.gallery_id, want_ids)
    np.testing.assert_allclose(got.similarity, want_sim, rtol=0, atol=1e-5)  # exact scores, not PQ estimates

    # the same shards without the exact re-rank (shortlist of k): PQ's estimates, not the exact top-k
    rough = open_index(str(tmp_path / cfg.type), S3, nprobe=8, k_factor=1).search(q, K)
    assert not np.array_equal(rough.gallery_id, want_ids)


def test_ivfpq_alone_gives_approximate_scores_the_refine_index_does_not(tmp_path) -> None:
    ids, vectors, meta = tiny_gallery(n=1200, dim=32, seed=5)
    cfg = IndexConfig(type="ivfpq", shards=2, nlist=8, pq_m=8, pq_bits=4)
    build_index(ids=ids, vectors=vectors, meta=meta, cfg=cfg, uri=str(tmp_path / "pq"), s3=S3, embed_version="e")
    q = queries(40, dim=32, seed=9)
    want_sim, _ = exact_reference(ids, vectors, q, K)
    pq_only = open_index(str(tmp_path / "pq"), S3, nprobe=8).search(q, K)
    assert np.abs(pq_only.similarity - want_sim).max() > 1e-3


def test_cuda_device_without_gpu_faiss_is_a_clear_setup_error(tmp_path) -> None:
    import faiss

    ids, vectors, meta = tiny_gallery(n=600, dim=32, seed=5)
    cfg = IndexConfig(type="ivfflat", shards=2, nlist=8)
    build_index(ids=ids, vectors=vectors, meta=meta, cfg=cfg, uri=str(tmp_path / cfg.type), s3=S3, embed_version="e")
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("this host has GPU faiss and a GPU: the guard does not fire")
    with pytest.raises(SetupError, match=r"index.device=cuda: expected a (faiss built with GPU support|visible GPU)"):
        open_index(str(tmp_path / cfg.type), S3, nprobe=8, device="cuda")


def test_refine_index_needs_a_training_sample(tmp_path) -> None:
    ids, vectors, meta = tiny_gallery(n=40, dim=32, seed=5)
    with pytest.raises(GalleryIndexError, match="index.type=ivfpq_refine needs at least"):
        build_index(ids=ids, vectors=vectors, meta=meta, cfg=IndexConfig(type="ivfpq_refine", nlist=8, pq_m=8, pq_bits=8),
                    uri=str(tmp_path / "x"), s3=S3, embed_version="e")


def test_ivfflat_returns_the_exact_top_k_when_nprobe_covers_all_lists(tmp_path) -> None:
    ids, vectors, meta = tiny_gallery(n=1200, dim=32, seed=5)
    cfg = IndexConfig(type="ivfflat", shards=2, nlist=8)
    m = build_index(ids=ids, vectors=vectors, meta=meta, cfg=cfg, uri=str(tmp_path / "ivf"), s3=S3, embed_version="e")
    assert factory_string(cfg) == "IVF8,Flat" and m.index_type == "ivfflat"
    q = queries(40, dim=32, seed=9)
    want_sim, want_ids = exact_reference(ids, vectors, q, K)
    got = open_index(str(tmp_path / "ivf"), S3, nprobe=8).search(q, K)
    assert np.array_equal(got.gallery_id, want_ids)
    np.testing.assert_allclose(got.similarity, want_sim, rtol=0, atol=1e-5)
    one_cell = open_index(str(tmp_path / "ivf"), S3, nprobe=1).search(q, K)  # one of 8 cells: not the exact top-k
    assert not np.array_equal(one_cell.gallery_id, want_ids)


@pytest.mark.parametrize("index_type", ["ivfpq", "ivfpq_refine"])
def test_pq_types_train_without_polysemous_reordering(index_type: str) -> None:
    """index_factory turns polysemous training on for 8-bit PQ: a centroid reordering for Hamming
    filtering no search here uses, which made IVF-PQ training minutes instead of seconds."""
    import faiss

    from georank.index import empty_index

    cfg = IndexConfig(type=index_type, nlist=4, pq_m=4, pq_bits=8)
    train = queries(300, dim=16, seed=3)
    index = empty_index(16, cfg, train)
    ivfpq = faiss.downcast_index(faiss.extract_index_ivf(index))
    assert type(ivfpq).__name__ == "IndexIVFPQ" and ivfpq.pq.nbits == 8
    assert index.is_trained and not ivfpq.do_polysemous_training

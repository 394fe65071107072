"""Both Spark placements give exactly the top-k of one IndexFlatIP over the whole gallery."""

from __future__ import annotations

import numpy as np
import pytest
from retrieve_helpers import exact_reference, queries

from georank.config import validate_config
from georank.errors import GalleryIndexError
from georank.index import build_index
from georank.retrieve import Neighbours
from georank.spark.retrieve import retrieve_neighbours

pytestmark = pytest.mark.spark
K = 20


def _query_frame(spark, q: np.ndarray):
    rows = [(f"p{i:03d}", q[i].tolist()) for i in range(len(q))]
    return spark.createDataFrame(rows, "photo_id string, embedding array<float>").repartition(3)


@pytest.mark.parametrize("n_shards", [1, 3, 8])
def test_both_placements_equal_one_flat_index(spark, tmp_path, gallery, n_shards: int) -> None:
    ids, vectors, meta = gallery
    cfg = validate_config({"index": {"uri": str(tmp_path), "shards": n_shards}, "retrieve": {"k": K}})
    m = build_index(ids=ids, vectors=vectors, meta=meta, cfg=cfg.index, uri=str(tmp_path), s3=cfg.s3, embed_version="e")
    q = queries(25)
    ref_sim, ref_ids = exact_reference(ids, vectors, q, K)
    df = _query_frame(spark, q)
    for placement in ("replicated", "sharded"):
        out = retrieve_neighbours(df, cfg=cfg, placement=placement).toArrow().sort_by("photo_id")
        assert out.column("photo_id").to_pylist() == [f"p{i:03d}" for i in range(25)]
        nb = Neighbours.from_batch(out)
        assert np.array_equal(nb.gallery_id, ref_ids), placement
        assert np.array_equal(nb.similarity, ref_sim), placement  # bit for bit
        assert nb.index_version == m.index_version
        assert nb.description[0][0] == f"place {ref_ids[0, 0]}"


def test_k_larger_than_the_gallery_fails_on_the_driver(spark, tmp_path, gallery) -> None:
    ids, vectors, meta = gallery
    cfg = validate_config({"index": {"uri": str(tmp_path), "shards": 2}})
    build_index(ids=ids[:10], vectors=vectors[:10], meta=meta, cfg=cfg.index, uri=str(tmp_path), s3=cfg.s3, embed_version="e")
    with pytest.raises(GalleryIndexError, match="retrieve.k=20 but index .* holds only 10"):
        retrieve_neighbours(_query_frame(spark, queries(3)), cfg=cfg)

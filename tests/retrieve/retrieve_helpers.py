"""Tiny random galleries for the index/retrieval tests (no images: vectors and rows only)."""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa

DIM = 16


def tiny_gallery(n: int = 300, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """``ids (n,) int64`` (large, non-contiguous), ``vectors (n, dim)`` unit rows, SHARD_META rows."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.choice(2**62, size=n, replace=False).astype(np.int64)
    meta = pa.table(
        {
            "gallery_id": pa.array(ids, pa.int64()),
            "lat_deg": rng.uniform(-90, 90, n),
            "lon_deg": rng.uniform(-180, 180, n),
            "description": [f"place {i}" for i in ids.tolist()],
            "image_uri": [f"/gallery/{i}.jpg" for i in ids.tolist()],
        }
    )
    return ids, vectors, meta


def queries(q: int = 25, dim: int = DIM, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((q, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_reference(ids: np.ndarray, vectors: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One IndexFlatIP over the whole gallery: ``(similarity (q, k), ids (q, k))``."""
    ref = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    ref.add_with_ids(vectors, ids)
    return ref.search(q, k)

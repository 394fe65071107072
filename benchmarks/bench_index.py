"""Search cost against gallery size: exact IndexFlatIP vs IVF-PQ and IVF-PQ + exact re-rank
(``index.type: ivfpq_refine``), with recall@20 against the exact search.

    .venv/bin/python benchmarks/bench_index.py [--sizes 10000 100000 1000000] [--dim 768]
        [--queries 200] [--nlist 1024] [--pq-m 64] [--nprobe 32 128] [--k-factor 4 16]
        [--types ivfpq ivfpq_refine] [--data iid|clustered] [--threads 1]

Indexes are made by georank.index.empty_index (the same FAISS factory strings and
training-sample rule as the index job: ``IDMap,Flat``, ``IVF{nlist},Flat``, ``IVF{nlist},PQ{m}x8`` and
``IDMap2,IVF{nlist},PQ{m}x8,RFlat``, inner product; search parameters set by
georank.retrieve.set_search_params as the job does; IVF-PQ alone is the trained IVF-PQ
inside the refine index, so both share one training), from unit vectors generated chunk by chunk from a seeded stream, so no copy of
the gallery is held beside the flat index. Times are wall-clock on this machine, the best
of ``--repeat`` runs, for one batch of ``--queries`` queries on ``--threads`` FAISS threads
(0: all cores); ratios between rows of one run are what to read, not absolute figures.

``iid`` data (standard normal, normalised) has no structure at all: every one of the 768
dimensions carries the same variance, the worst case for IVF (not the expected one: real
embeddings concentrate their variance in few directions). ``clustered`` draws vectors around
1,000 random centres (0.6 noise): the easy case, where a query's 20 neighbours share its cell
once the gallery holds more than ~20 x 1,000 vectors. ``spectrum`` has no clusters but a
power-law variance (axis i: 1 / (i + 1), about 27 effective dimensions of 768), a
middle case closer to how learned embeddings spread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from georank.config import IndexConfig
from georank.index import empty_index, train_size, untrained_index
from georank.retrieve import set_search_params

CHUNK = 50_000
K = 20


def vectors(n: int, dim: int, *, data: str, seed: int, start: int = 0) -> np.ndarray:
    """Rows ``[start, start + n)`` of the seeded gallery stream, ``(n, dim) float32`` unit rows."""
    out = []
    for c0 in range(start - start % CHUNK, start + n, CHUNK):
        rng = np.random.default_rng([seed, c0])
        x = rng.standard_normal((CHUNK, dim), dtype=np.float32)
        if data == "clustered":
            centres = np.random.default_rng([0, 2**31]).standard_normal((1000, dim), dtype=np.float32)
            x = centres[rng.integers(0, 1000, CHUNK)] + 0.6 * x
        elif data == "spectrum":  # variance of axis i ~ 1 / (i + 1): a power-law spectrum, no clusters
            x *= (1.0 / np.sqrt(np.arange(1, dim + 1, dtype=np.float32)))[None, :]
        lo, hi = max(start, c0) - c0, min(start + n, c0 + CHUNK) - c0
        out.append(x[lo:hi])
    x = np.concatenate(out)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x)


def rows_of(pick: np.ndarray, n: int, dim: int, *, data: str, seed: int) -> np.ndarray:
    """The gallery rows at sorted positions ``pick``, one chunk generated at a time."""
    out = []
    for s in range(0, n, CHUNK):
        sel = pick[(pick >= s) & (pick < s + CHUNK)] - s
        if len(sel):
            out.append(vectors(min(CHUNK, n - s), dim, data=data, seed=seed, start=s)[sel])
    return np.concatenate(out)


def fill(index, n: int, dim: int, *, data: str, seed: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        index.add_with_ids(vectors(m, dim, data=data, seed=seed, start=s), np.arange(s, s + m, dtype=np.int64) * 7 + 3)
    return time.perf_counter() - t


def timed_search(index, q: np.ndarray, repeat: int) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    best, ids = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        _, ids = index.search(q, K)
        best = min(best, time.perf_counter() - t)
    return best, ids  # type: ignore[return-value]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def ivfflat_row(a: argparse.Namespace, n: int, q: np.ndarray, flat_s: float, truth: np.ndarray) -> None:
    """IVF-Flat (``index.type: ivfflat``) as the job builds it, one row per ``--nprobe``."""
    import faiss

    cfg = IndexConfig(type="ivfflat", nlist=a.nlist)
    t = time.perf_counter()
    t_n = min(n, a.train_points) if a.train_points else train_size(cfg, n)
    pick = np.sort(np.random.default_rng(a.seed).choice(n, size=t_n, replace=False))
    index = empty_index(a.dim, cfg, rows_of(pick, n, a.dim, data=a.data, seed=a.seed))
    build = time.perf_counter() - t + fill(index, n, a.dim, data=a.data, seed=a.seed)
    mb = len(faiss.serialize_index(index)) / 1e6
    for nprobe in a.nprobe:
        set_search_params(index, "ivfflat", nprobe=nprobe, k_factor=None)
        s, found = timed_search(index, q, a.repeat)
        print(f"{n:>9} {f'ivfflat {a.nlist} np={nprobe}':<30} {build:>8.1f} {mb:>8.0f} {1e3 * s / a.queries:>12.3f} "
              f"{s / flat_s:>8.2f} {flat_s / s:>8.1f} {recall_at_k(found, truth):>9.3f}", flush=True)
        build = 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--pq-m", type=int, default=64)
    p.add_argument("--nprobe", type=int, nargs="+", default=[32, 128])
    p.add_argument("--k-factor", type=int, nargs="+", default=[4, 16], help="ivfpq_refine shortlist: k * k_factor")
    p.add_argument("--types", nargs="+", choices=["ivfflat", "ivfpq", "ivfpq_refine"], default=["ivfflat", "ivfpq", "ivfpq_refine"])
    p.add_argument("--data", choices=["iid", "clustered", "spectrum"], default="clustered")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--train-points", type=int, default=0, help="IVF-PQ training sample (0: the index job's rule)")
    p.add_argument("--ivf-max-n", type=int, default=10**12, help="build IVF-PQ only up to this gallery size")
    p.add_argument("--niter", type=int, default=0, help="k-means iterations for IVF and PQ (0: FAISS defaults)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="FAISS (OpenMP) threads; 0: FAISS's default (all cores)")
    a = p.parse_args()
    import faiss

    if a.threads:
        faiss.omp_set_num_threads(a.threads)

    print(f"# bench_index: dim {a.dim}, {a.queries} queries, k={K}, data {a.data}, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads, nlist {a.nlist}, train points "
          f"{a.train_points or 'job rule'}, k-means iterations {a.niter or 'faiss default'}", flush=True)
    header = (f"{'n':>9} {'index':<30} {'build s':>8} {'MB':>8} {'search ms/q':>12} {'vs flat':>8} {'speedup':>8} "
              f"{'recall@20':>9}")
    print(header)
    print("-" * len(header), flush=True)
    q = vectors(a.queries, a.dim, data=a.data, seed=a.seed + 1)
    for n in a.sizes:
        flat_cfg = IndexConfig(type="flat")
        flat = empty_index(a.dim, flat_cfg)
        build = fill(flat, n, a.dim, data=a.data, seed=a.seed)
        flat_s, truth = timed_search(flat, q, a.repeat)
        mb = n * a.dim * 4 / 1e6
        print(f"{n:>9} {'flat (exact)':<30} {build:>8.1f} {mb:>8.0f} {1e3 * flat_s / a.queries:>12.3f} {1.0:>8.2f} "
              f"{1.0:>8.1f} {1.0:>9.3f}", flush=True)
        del flat
        if n > a.ivf_max_n:
            print(f"{n:>9} {'ivfpq':<22} skipped: n > --ivf-max-n {a.ivf_max_n}", flush=True)
            continue
        if "ivfflat" in a.types:
            ivfflat_row(a, n, q, flat_s, truth)
        if not {"ivfpq", "ivfpq_refine"} & set(a.types):
            continue
        cfg = IndexConfig(type="ivfpq_refine", nlist=a.nlist, pq_m=a.pq_m, pq_bits=8)
        t = time.perf_counter()
        t_n = min(n, a.train_points) if a.train_points else train_size(cfg, n)
        pick = np.sort(np.random.default_rng(a.seed).choice(n, size=t_n, replace=False))
        train = rows_of(pick, n, a.dim, data=a.data, seed=a.seed)
        if a.train_points or a.niter:  # reduced training (say so in the report)
            refine = untrained_index(a.dim, cfg)  # the job's factory index (no polysemous training)
            ivf_level = faiss.extract_index_ivf(refine)
            if a.niter:
                ivf_level.cp.niter = a.niter
                faiss.downcast_index(ivf_level).pq.cp.niter = a.niter
            refine.train(train)
        else:
            refine = empty_index(a.dim, cfg, train)  # exactly what the index job does
        del train
        train_s = time.perf_counter() - t
        # IVF-PQ alone: a copy of the trained IVF-PQ inside the refine index, ids in its lists
        ivf = faiss.clone_index(faiss.downcast_index(faiss.downcast_index(refine.index).base_index))
        for name, index, kinds in (("ivfpq", ivf, [1]), ("ivfpq_refine", refine, a.k_factor)):
            if name not in a.types:
                continue
            build = train_s + fill(index, n, a.dim, data=a.data, seed=a.seed)
            mb = len(faiss.serialize_index(index)) / 1e6
            for nprobe in a.nprobe:
                for kf in kinds:
                    set_search_params(index, name, nprobe=nprobe, k_factor=kf)
                    s, found = timed_search(index, q, a.repeat)
                    label = f"{name} {a.nlist},PQ{a.pq_m} np={nprobe}" + (f" kf={kf}" if name == "ivfpq_refine" else "")
                    print(f"{n:>9} {label:<30} {build:>8.1f} {mb:>8.0f} {1e3 * s / a.queries:>12.3f} {s / flat_s:>8.2f} "
                          f"{flat_s / s:>8.1f} {recall_at_k(found, truth):>9.3f}", flush=True)
                    build = 0.0  # built once, shown on its first row
            del index
        del ivf, refine


if __name__ == "__main__":
    main()

"""--candidates reference on the tiny world: the reference file's own candidates are ranked (first
candidates.retrieved retrieved with their gallery images + generated.n generated, negatives = the
last five of candidate_gps_lis), with the real tiny ranker; no Spark."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from support import tiny_conf

from georank import schema as S
from georank.config import load_config
from georank.eval.benchmarks import read_benchmark
from georank.eval.reference import REFERENCE_METHODS, reference_frame, reference_methods, reference_partition
from georank.run_info import RunInfo
from georank.spark.evaluate import photos_of

HEADER = ("IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban,"
          "candidate_gps_lis,candidate_text_lis,candidate_img_lis,zs_gps_lis")


def _reference_csv(world: Path, out: Path) -> None:
    gallery = pq.read_table(world / "gallery.parquet").to_pylist()
    truth = pq.read_table(world / "queries_truth.parquet").to_pylist()[:2]
    lines = [HEADER]
    for qi, q in enumerate([*truth, {"photo_id": "absent", "lat_deg": 1.0, "lon_deg": 2.0}]):
        cands = gallery[qi * 20 : qi * 20 + 20]
        gps = repr([(c["lat_deg"], c["lon_deg"]) for c in cands])
        text = repr([["", c["city"] or "", "", c["state"] or "", "", c["country"] or ""] for c in cands])
        imgs = repr([str(c["gallery_id"]) for c in cands])
        zs = repr([(0.0, 0.0), (q["lat_deg"], q["lon_deg"]), (10.5, 20.5), (11.0, 21.0)])
        lines.append(",".join([f"{q['photo_id']}.jpg", "x", repr(q["lat_deg"]), repr(q["lon_deg"]), "1", "1", "1", "0", "0", "0",
                               f'"{gps}"', f'"{text}"', f'"{imgs}"', f'"{zs}"']))
    out.write_text("\n".join(lines) + "\n")


def test_reference_candidates_are_ranked_as_the_reference_builds_them(tiny_world: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import georank.rank.scorer as scorer_mod

    csv = tmp_path / "im2gps3k.csv"
    _reference_csv(tiny_world, csv)
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "ref.yaml", evaluate={
        "reference_image_uri": str(tiny_world / "gallery") + "/{img_id}.jpg"}))
    bench = read_benchmark(str(csv), cfg.evaluate)
    assert bench.layout == "reference" and bench.counts["zero_gps_dropped"] == 3
    assert bench.reference is not None
    seen: list[Any] = []
    scored: list[Any] = []
    real = scorer_mod.get_scorer

    class Recording:  # the real tiny ranker; only records what it is asked
        def __init__(self, inner: Any) -> None:
            self.inner, self.model_version, self.adapter_version = inner, inner.model_version, inner.adapter_version

        def score(self, queries: Any) -> Any:
            seen.extend(queries)
            out = self.inner.score(queries)
            scored.extend(out)
            return out

    monkeypatch.setattr(scorer_mod, "get_scorer", lambda *a, **k: Recording(real(*a, **k)))
    frame = reference_frame(photos_of(bench, str(tiny_world / "queries")), bench.reference)
    out = reference_partition(frame, cfg, RunInfo("ref-test", dt.date(2026, 11, 30)))
    assert out.schema == S.EVAL_PREDICTIONS
    rows = {(r["photo_id"], r["method"]): r for r in out.to_pylist()}
    ids = bench.truth.column("photo_id").to_pylist()
    methods = reference_methods(cfg)  # generated.n = 3 > 0: each source alone too
    assert methods == (*REFERENCE_METHODS, "ranker_retrieved", "ranker_generated")
    assert set(rows) == {(p, m) for p in ids for m in methods}
    refs = bench.reference.to_pylist()
    for p, ref in zip(ids, refs):  # nn: the reference's retrieval top-1, image or not
        assert (rows[(p, "nn")]["lat_deg"], rows[(p, "nn")]["lon_deg"]) == (ref["cand_lat_deg"][0], ref["cand_lon_deg"][0])
    assert rows[(ids[2], "ranker")]["error_stage"] == "read"  # the absent query photo: a miss, nn still counted
    assert len(seen) == 2
    for q, ref in zip(seen, refs[:2]):
        assert len(q.candidates) == 12 + 3  # 12 retrieved + generated.n = 3 (the (0, 0) answer dropped)
        assert [(c.lat_deg, c.lon_deg) for c in q.candidates[:12]] == list(zip(ref["cand_lat_deg"][:12], ref["cand_lon_deg"][:12]))
        assert all(c.image is not None for c in q.candidates[:12]) and all(c.image is None and c.description is None for c in q.candidates[12:])
        assert (q.candidates[12].lat_deg, q.candidates[12].lon_deg) == (ref["gen_lat_deg"][0], ref["gen_lon_deg"][0])
        assert [(n.lat_deg, n.lon_deg) for n in q.negatives] == list(zip(ref["cand_lat_deg"][-5:], ref["cand_lon_deg"][-5:]))
        assert [n.description for n in q.negatives] == ref["cand_description"][-5:]
    for p in ids[:2]:
        r = rows[(p, "ranker")]
        cands = {(a, b) for a, b in zip(*[refs[ids.index(p)][k][:12] for k in ("cand_lat_deg", "cand_lon_deg")])}
        cands |= {(a, b) for a, b in zip(refs[ids.index(p)]["gen_lat_deg"][:3], refs[ids.index(p)]["gen_lon_deg"][:3])}
        assert (r["lat_deg"], r["lon_deg"]) in cands and (r["lat_deg"], r["lon_deg"]) != (0.0, 0.0)
    for p, q, sc in zip(ids[:2], seen, scored):  # each source alone: the argmax of the SAME scores over its candidates
        for method, part in (("ranker_retrieved", slice(0, 12)), ("ranker_generated", slice(12, 15))):
            best = q.candidates[part][int(np.argmax(sc[part]))]
            assert (rows[(p, method)]["lat_deg"], rows[(p, method)]["lon_deg"]) == (best.lat_deg, best.lon_deg), (p, method)
    assert rows[(ids[2], "ranker_generated")]["error_stage"] == "read"

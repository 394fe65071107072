"""Training groups: the query removed from its neighbours BY ID, spread and mixed groups, the GeoRanking
reader's position-0 skip, and the streaming loader's sharding and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from georank.config import GeorankConfig
from georank.errors import ConfigError, InputError
from georank.retrieve import Neighbours
from georank.schema import TRAINING_GROUPS
from georank.train.groups import build_groups, read_georanking, remove_self


def _gallery(lat_lon: list[tuple[float, float]], ids: list[int] | None = None) -> pa.Table:
    ids = ids or list(range(100, 100 + len(lat_lon)))
    return pa.table(
        {
            "gallery_id": pa.array(ids, pa.int64()),
            "uri": [f"/g/{i}.jpg" for i in ids],
            "lat_deg": [a for a, _ in lat_lon],
            "lon_deg": [b for _, b in lat_lon],
            "description": [f"place {i}" for i in ids],
        }
    )


def _neighbours(gallery: pa.Table, rows_per_query: list[list[int]]) -> Neighbours:
    gid = gallery.column("gallery_id").to_numpy()
    lat = gallery.column("lat_deg").to_numpy()
    lon = gallery.column("lon_deg").to_numpy()
    idx = np.array(rows_per_query)
    return Neighbours(
        gid[idx], np.ones(idx.shape, np.float32), lat[idx], lon[idx],
        [[f"place {gid[i]}" for i in r] for r in rows_per_query], [[f"/g/{gid[i]}.jpg" for i in r] for r in rows_per_query],
    )


def _cfg(**train: object) -> GeorankConfig:
    return GeorankConfig.model_validate({"retrieve": {"k": 3, "negatives_from": 1, "negatives_count": 2}, "train": train})


def test_remove_self_is_by_id_not_position() -> None:
    assert remove_self("7", ["3", "7", "9", "4"], k=3) == [0, 2, 3]  # the query ranked second
    assert remove_self("7", ["7", "3", "9", "4"], k=2) == [1, 2]
    assert remove_self("7", ["3", "9", "4", "5"], k=3) == [0, 1, 2]  # not retrieved: keep k


def test_query_not_at_position_0_and_exact_duplicates() -> None:
    # rows 0 and 1 are exact duplicates (same place, different ids); the duplicate ranks FIRST for query row 0
    g = _gallery([(48.0, 2.0), (48.0, 2.0), (45.0, 5.0), (40.0, -3.0), (52.0, 13.0)])
    neigh = _neighbours(g, [[1, 0, 2, 3], [2, 1, 0, 3]])  # query 100 at position 1; query 101 at position 1
    out = build_groups(g, np.array([0, 1]), neigh, _cfg(grouping="retrieved", group_size=2), source_version="v")
    assert out.schema == TRAINING_GROUPS
    rows = out.to_pylist()
    assert rows[0]["query_id"] == "100"
    assert rows[0]["neighbour_id"] == ["101", "102", "103"]  # the duplicate stays (another photo), the query goes
    assert rows[0]["group_id"] == ["101", "102"]
    assert rows[0]["group_dist_km"][0] == pytest.approx(0.0, abs=1e-9)
    assert rows[1]["neighbour_id"] == ["102", "100", "103"]
    assert "101" not in rows[1]["neighbour_id"]
    # a position-0 skip would have dropped the duplicate 101 and kept the query 100 itself
    assert all(r["query_id"] not in r["neighbour_id"] + r["group_id"] for r in rows)


def test_spread_groups_nearest_then_one_per_band() -> None:
    pts = [(48.85, 2.35), (48.86, 2.36), (50.85, 4.35), (52.52, 13.40), (40.71, -74.0), (-33.87, 151.21), (41.9, 12.5)]
    g = _gallery(pts)
    neigh = _neighbours(g, [[1, 2, 3, 4]])
    bands = [(100.0, 400.0), (800.0, 1500.0), (5000.0, 7000.0), (15000.0, 20100.0)]
    out = build_groups(g, np.array([0]), neigh, _cfg(grouping="spread", spread_bands_km=bands, group_size=5), source_version="v")
    row = out.to_pylist()[0]
    assert row["group_id"] == ["101", "102", "106", "104", "105"]  # Paris -> Paris, Brussels, Rome, New York, Sydney
    d = row["group_dist_km"]
    assert d[0] < 5 and 100 <= d[1] < 400 and 800 <= d[2] < 1500 and 5000 <= d[3] < 7000 and d[4] >= 15000


def test_mixed_groups_nearest_then_lookalikes_then_bands() -> None:
    # Paris (query), Paris-bis (nearest), Brussels, Berlin, New York, Sydney, Rome, Lyon
    pts = [(48.85, 2.35), (48.86, 2.36), (50.85, 4.35), (52.52, 13.40), (40.71, -74.0), (-33.87, 151.21), (41.9, 12.5),
           (45.76, 4.84)]
    g = _gallery(pts)
    # retrieved look-alikes of the query: New York, the nearest (Paris-bis), Sydney; the query itself ranks 2nd
    neigh = _neighbours(g, [[4, 0, 1, 5]])
    bands = [(100.0, 400.0), (800.0, 1500.0)]
    cfg = _cfg(grouping="mixed", lookalikes=2, spread_bands_km=bands, group_size=5)
    cfg = cfg.model_copy(update={"candidates": cfg.candidates.model_copy(update={"retrieved": 3})})
    row = build_groups(g, np.array([0]), neigh, cfg, source_version="v").to_pylist()[0]
    # the nearest photo first; the two look-alikes that are neither the query nor the nearest; then one per band
    assert row["group_id"][:3] == ["101", "104", "105"]
    assert row["group_id"][3] in ("102", "107")  # 100-400 km: Brussels or Lyon
    assert row["group_id"][4] in ("103", "106")  # 800-1500 km: Berlin or Rome
    assert "100" not in row["group_id"] and len(set(row["group_id"])) == 5
    with pytest.raises(ConfigError, match="train.group_size"):  # 1 + 2 look-alikes + 2 bands = 5 at most
        build_groups(g, np.array([0]), neigh, cfg.model_copy(update={"train": cfg.train.model_copy(update={"group_size": 6})}),
                     source_version="v")


def test_mixed_lookalike_min_km_keeps_far_lookalikes_and_tops_up_from_the_bands() -> None:
    # Paris (query), Paris-bis (nearest), Versailles (~17 km), New York, Sydney, Brussels, Rome
    pts = [(48.85, 2.35), (48.86, 2.36), (48.80, 2.13), (40.71, -74.0), (-33.87, 151.21), (50.85, 4.35), (41.9, 12.5)]
    g = _gallery(pts)
    neigh = _neighbours(g, [[2, 3, 4, 1]])  # look-alikes (retrieve.k 3): Versailles (same place), New York, Sydney
    bands = [(100.0, 400.0), (800.0, 1500.0)]
    cfg = _cfg(grouping="mixed", lookalikes=3, lookalike_min_km=50.0, spread_bands_km=bands, group_size=5)
    cfg = cfg.model_copy(update={"candidates": cfg.candidates.model_copy(update={"retrieved": 4})})
    row = build_groups(g, np.array([0]), neigh, cfg, source_version="v").to_pylist()[0]
    # Versailles (< 50 km) is no look-alike: only New York and Sydney are, then one per band
    assert row["group_id"] == ["101", "103", "104", "105", "106"]
    # a group short of look-alikes is topped up from the bands to group_size (one size per batch)
    cfg6 = cfg.model_copy(update={"train": cfg.train.model_copy(update={"group_size": 6, "lookalikes": 3})})
    row6 = build_groups(g, np.array([0]), neigh, cfg6, source_version="v").to_pylist()[0]
    assert len(row6["group_id"]) == 6 and "100" not in row6["group_id"]
    assert len(set(row6["group_id"])) == 6
    # own_image: the query's own photo first (0 km), then the same group
    own = cfg.model_copy(update={"train": cfg.train.model_copy(update={"own_image": True, "group_size": 6})})
    row_own = build_groups(g, np.array([0]), neigh, own, source_version="v").to_pylist()[0]
    assert row_own["group_id"] == ["100", "101", "103", "104", "105", "106"]
    assert row_own["group_dist_km"][0] == 0.0 and "100" not in row_own["neighbour_id"]


def test_own_image_for_a_held_out_query_and_no_bands_to_top_up_from() -> None:
    """A held-out query is not in the gallery (every row usable): its group goes without its own
    photo; with no bands a group short of look-alikes stays short rather than looping."""
    from georank.train.groups import choose_group

    arc = np.array([0.5, 60.0, 700.0, 2500.0, 9000.0])
    t = _cfg(grouping="mixed", group_size=4).train.model_copy(update={"own_image": True, "lookalikes": 1})
    rows = choose_group(t, arc, np.ones(5, dtype=bool), [1, 2], np.random.default_rng(0))
    assert len(rows) == 4 and len(set(rows)) == 4 and rows[0] == 0  # the nearest first, no own photo
    bare = t.model_copy(update={"spread_bands_km": [], "lookalike_min_km": 5000.0})
    assert choose_group(bare, arc, np.ones(5, dtype=bool), [1, 2], np.random.default_rng(0)) == [0]


def test_row_to_query_gives_each_candidate_its_own_text_and_image() -> None:
    from georank.train.dataset import row_to_query

    row = {"group_lat_deg": [1.0, 2.0, 3.0], "group_lon_deg": [4.0, 5.0, 6.0], "group_description": ["a", "b", None],
           "neighbour_lat_deg": [7.0, 8.0], "neighbour_lon_deg": [9.0, 10.0], "neighbour_description": ["n1", "n2"]}
    images = ["q", "c1", "c2", "c3"]
    own = row_to_query(row, images, negatives_from=0, negatives_count=2)
    assert [(c.lat_deg, c.lon_deg, c.description, c.image) for c in own.candidates] == [
        (1.0, 4.0, "a", "c1"), (2.0, 5.0, "b", "c2"), (3.0, 6.0, "", "c3")]
    assert [(n.lat_deg, n.lon_deg, n.description, n.image) for n in own.negatives] == [(7.0, 9.0, "n1", None), (8.0, 10.0, "n2", None)]
    assert own.image == "q"


def test_group_size_beyond_bands_is_a_config_error() -> None:
    g = _gallery([(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)])
    with pytest.raises(ConfigError, match="train.group_size"):
        build_groups(g, np.array([0]), _neighbours(g, [[1, 2, 3, 0]]), _cfg(grouping="spread", group_size=9), source_version="v")


def test_georanking_reader_skips_position_0_only_there() -> None:
    literal = pa.table(
        {
            "img_id": ["q1.jpg"],
            "gps": ["(10.0, 20.0)"],
            "ref_gps": ["[(10.0, 20.0), (11.0, 21.0), (12.0, 22.0), (13.0, 23.0)]"],
            "ref_img_id": ["['q1.jpg', 'a.jpg', 'b.jpg', 'c.jpg']"],
            "ref_texts": ["[['n', 'Paris', 'c', 'IDF', 'r', 'France'], ['', 'Lyon', '', '', '', 'France'], 'Rome', 'Oslo']"],
        }
    )
    listed = pa.table(
        {
            "img_id": ["q1.jpg"],
            "gps": [[10.0, 20.0]],
            "ref_gps": [[[10.0, 20.0], [11.0, 21.0], [12.0, 22.0], [13.0, 23.0]]],
            "ref_img_id": [["q1.jpg", "a.jpg", "b.jpg", "c.jpg"]],
            "ref_texts": [["Paris", "Lyon France", "Rome", "Oslo"]],
        }
    )
    for table in (literal, listed):
        row = read_georanking(table, images_root="/imgs/", group_size=2, source_version="gr").to_pylist()[0]
        assert row["neighbour_id"] == ["a.jpg", "b.jpg", "c.jpg"]  # position 0 (the query) skipped
        assert row["group_id"] == ["a.jpg", "b.jpg"]
        assert row["group_lat_deg"] == [11.0, 12.0]
        assert row["group_uri"] == ["/imgs/a.jpg", "/imgs/b.jpg"]
        assert row["query_uri"] == "/imgs/q1.jpg"
        assert row["neighbour_description"][0] == "Lyon France"
        assert row["grouping"] == "georanking"
    with pytest.raises(InputError, match="missing"):
        read_georanking(listed.drop(["ref_texts"]), images_root="/i", group_size=2, source_version="gr")


def test_stream_shards_across_ranks_and_workers_and_resumes(tmp_path: Path) -> None:
    from georank.config import DecodeConfig, RankConfig, S3Config
    from georank.train.dataset import GroupStream

    n = 37
    table = pa.table({"query_id": [f"q{i}" for i in range(n)], "x": list(range(n))})
    for part in range(3):  # three fragments
        pq.write_table(table.slice(part * 13, 13), tmp_path / f"part-{part}.parquet", row_group_size=5)

    def stream(rank: int = 0, world: int = 1, start: int = 0) -> GroupStream:
        return GroupStream(str(tmp_path), base_dir="", rank_cfg=RankConfig(), decode_cfg=DecodeConfig(), s3=S3Config(),
                           negatives_from=1, negatives_count=2, seed=5, rank=rank, world=world, start=start, epochs=2,
                           batch_rows=4)

    def ids(s: GroupStream, worker: int = 0, n_workers: int = 1) -> list[tuple[int, str]]:
        return [(m, r["query_id"]) for m, r in s.rows(worker=worker, n_workers=n_workers)]

    whole = ids(stream())
    assert len(whole) == 2 * n and sorted(q for _, q in whole[:n]) == sorted(table.column("query_id").to_pylist())
    assert [q for _, q in whole[:n]] != [q for _, q in whole[n:]]  # epochs are reshuffled
    assert ids(stream()) == whole  # deterministic for a seed
    # ranks: disjoint, together the whole stream
    r0, r1 = ids(stream(0, 2)), ids(stream(1, 2))
    assert [q for _, q in r0] == [q for _, q in whole[0::2]] and [q for _, q in r1] == [q for _, q in whole[1::2]]
    # workers of one rank: interleaved back in position order they give the rank's stream
    w = ids(stream(1, 2), 0, 3) + ids(stream(1, 2), 1, 3) + ids(stream(1, 2), 2, 3)
    assert sorted(w) == r1
    # resume: start=m skips exactly the first m items of the rank's stream
    assert ids(stream(1, 2, start=7)) == r1[7:]

"""Benchmark and gallery readers on small files written here in each publisher's exact layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from georank import schema as S
from georank.config import EvaluateConfig
from georank.errors import InputError
from georank.eval.benchmarks import parse_literal, read_benchmark, read_mp16, stable_gallery_id

IM2GPS3K_HEADER = "IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban"
IM2GPS3K_ROWS = [
    "1000_3410427212_4e4ee6fbcb_o.jpg,camera_guy,32.30,-64.78,1,5,200,0.1,0.8,0.1",
    "2000_2475838302_8c3d29c7f2_o.jpg,someone,48.8566,2.3522,2,10,120,0.3,0.2,0.5",
    "3000_2242839541_9a2e5a5d0b_o.jpg,other,-33.87,151.21,2,11,300,0.2,0.3,0.5",
]


def _write(path: Path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def test_im2gps3k_layout(tmp_path: Path) -> None:
    b = read_benchmark(_write(tmp_path / "im2gps3k_places365.csv", IM2GPS3K_HEADER, IM2GPS3K_ROWS), EvaluateConfig())
    assert b.layout == "im2gps3k" and b.name == "im2gps3k_places365" and b.reference is None
    assert b.truth.schema == S.BENCHMARK
    assert b.truth.column("photo_id").to_pylist()[1] == "2000_2475838302_8c3d29c7f2_o.jpg"
    assert b.truth.column("image").to_pylist()[1] == "2000_2475838302_8c3d29c7f2_o.jpg"  # already has an extension
    assert b.truth.column("lat_deg").to_pylist() == [32.30, 48.8566, -33.87]
    assert b.truth.column("lon_deg").to_pylist() == [-64.78, 2.3522, 151.21]
    assert read_benchmark(str(tmp_path / "im2gps3k_places365.csv"), EvaluateConfig(max_photos=2)).truth.num_rows == 2


def test_im2gps3k_with_swapped_header_is_refused_naming_the_bermuda_row(tmp_path: Path) -> None:
    # The early copy: header says LAT,LON but the values are (lon, lat). Every |value| here is <= 90, so
    # only the known Bermuda photo gives it away.
    swapped = IM2GPS3K_HEADER.replace("LAT,LON", "LON,LAT")
    path = _write(tmp_path / "im2gps3k_places365.csv", swapped, IM2GPS3K_ROWS[:2])
    with pytest.raises(InputError, match=r"row 1 \(1000_3410427212_4e4ee6fbcb_o.jpg\): LAT=-64.78, LON=32.3 is the Bermuda photo"):
        read_benchmark(path, EvaluateConfig(benchmark_format="im2gps3k"))


def test_a_latitude_beyond_90_is_refused_as_swapped(tmp_path: Path) -> None:
    rows = [*IM2GPS3K_ROWS[1:], "4000_x_o.jpg,a,151.21,-33.87,1,1,1,0,0,0"]
    with pytest.raises(InputError, match=r"row 3 \(4000_x_o.jpg\): LAT=151.21 is outside \[-90, 90\].*look swapped"):
        read_benchmark(_write(tmp_path / "b.csv", IM2GPS3K_HEADER, rows), EvaluateConfig())


def test_bad_rows_are_named(tmp_path: Path) -> None:
    rows = [IM2GPS3K_ROWS[1], "5000_y.jpg,a,forty,2.0,1,1,1,0,0,0"]
    with pytest.raises(InputError, match=r"row 2: expected a number in LAT, got 'forty'"):
        read_benchmark(_write(tmp_path / "b.csv", IM2GPS3K_HEADER, rows), EvaluateConfig())
    with pytest.raises(InputError, match=r"row 2: photo id '2000_2475838302_8c3d29c7f2_o.jpg' repeats row 1"):
        read_benchmark(_write(tmp_path / "c.csv", IM2GPS3K_HEADER, [IM2GPS3K_ROWS[1]] * 2), EvaluateConfig())


def test_yfcc_csv_with_a_column_mapping(tmp_path: Path) -> None:
    from georank.config import BenchmarkColumnsConfig

    path = _write(tmp_path / "yfcc4k.csv", "photo,latitude,longitude,extra", ["1234567,35.68,139.69,x", "7654321,-1.29,36.82,y"])
    cfg = EvaluateConfig(columns=BenchmarkColumnsConfig(id="photo", lat="latitude", lon="longitude"))
    b = read_benchmark(path, cfg)
    assert b.layout == "csv" and b.truth.column("image").to_pylist() == ["1234567.jpg", "7654321.jpg"]
    assert b.truth.column("lat_deg").to_pylist() == [35.68, -1.29]
    with pytest.raises(InputError, match=r"expected the csv \(evaluate.columns\) columns \['IMG_ID', 'LAT', 'LON'\], missing"):
        read_benchmark(path, EvaluateConfig())


REF_HEADER = IM2GPS3K_HEADER + ",candidate_gps_lis,candidate_text_lis,candidate_img_lis,zs_gps_lis"


def _ref_row(pid: str, lat: float, lon: float, zs: str) -> str:
    gps = "[(48.85, 2.35), (40.7, -74.0), (-33.9, 151.2)]"
    text = (
        "[['Le Marais', 'Paris', 'Paris', 'Ile-de-France', 'Metropolitan France', 'France'], "
        "['', 'New York', nan, 'New York', '', 'United States'], "
        "['', '', '', '', '', 'Australia']]"
    )
    imgs = "['a1_b2_100.jpg', 'c3_d4_200.jpg', 'e5_f6_300.jpg']"
    return ",".join([pid, "x", str(lat), str(lon), "1", "1", "1", "0", "0", "0", f'"{gps}"', f'"{text}"', f'"{imgs}"', f'"{zs}"'])


def test_reference_layout_literals_and_zero_answers(tmp_path: Path) -> None:
    rows = [
        _ref_row("p1.jpg", 48.86, 2.34, "[(48.0, 2.0), (0.0, 0.0), (51.5, -0.12)]"),
        _ref_row("p2.jpg", 40.71, -74.01, "[(0.0, 0.0), (0.0, 0.0)]"),
    ]
    path = _write(tmp_path / "im2gps3k.csv", REF_HEADER, rows)
    b = read_benchmark(path, EvaluateConfig())
    assert b.layout == "reference" and b.reference is not None and b.reference.schema == S.REFERENCE_CANDIDATES
    r = b.reference.to_pylist()
    assert r[0]["cand_lat_deg"] == [48.85, 40.7, -33.9] and r[0]["cand_lon_deg"] == [2.35, -74.0, 151.2]
    assert r[0]["cand_description"] == ["Paris Ile-de-France France", "New York New York United States", "Australia"]
    assert r[0]["cand_img_id"] == ["a1_b2_100.jpg", "c3_d4_200.jpg", "e5_f6_300.jpg"]
    assert r[0]["gen_lat_deg"] == [48.0, 51.5] and r[1]["gen_lat_deg"] == []  # (0.0, 0.0) dropped by default
    assert [x["gen_zero_count"] for x in r] == [1, 2]
    assert b.counts == {"rows": 2, "zero_gps_seen": 3, "zero_gps_dropped": 3, "zero_gps_kept": 0}
    kept = read_benchmark(path, EvaluateConfig(reference_zero_gps="keep"))
    assert kept.reference is not None and kept.reference.to_pylist()[1]["gen_lat_deg"] == [0.0, 0.0]
    assert kept.counts["zero_gps_kept"] == 3 and kept.counts["zero_gps_dropped"] == 0


def test_reference_literals_are_never_evaluated_as_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = f"__import__('pathlib').Path('{marker}').touch()"
    with pytest.raises(InputError, match=r"row 1: expected a Python literal list in zs_gps_lis"):
        parse_literal(evil, col="zs_gps_lis", row=1, where="x")
    assert not marker.exists()
    row = _ref_row("p1.jpg", 1.0, 2.0, "[(1.0, 2.0)]").replace("[(48.85, 2.35), (40.7, -74.0), (-33.9, 151.2)]", "[(48.85, 2.35)]")
    with pytest.raises(InputError, match=r"row 1: expected 1 entries in candidate_text_lis \(one per candidate\), got 3"):
        read_benchmark(_write(tmp_path / "r.csv", REF_HEADER, [row]), EvaluateConfig())


def test_mp16_pro_metadata_to_a_gallery_table(tmp_path: Path) -> None:
    header = "IMG_ID,LAT,LON,neighbourhood,city,county,state,region,country,continent"
    rows = ["33_e3_9136474993.jpg,48.85,2.35,Le Marais,Paris,Paris,Ile-de-France,,France,Europe", "aa_bb_1.jpg,40.7,-74.0,,New York,,New York,,United States,"]
    path = _write(tmp_path / "MP16_Pro_filtered.csv", header, rows)
    g = read_mp16(path, image_uri_template="tar:///data/mp-16-images.tar#{img_id}")
    assert g.schema == S.GALLERY and g.num_rows == 2
    assert g.column("uri").to_pylist()[0] == "tar:///data/mp-16-images.tar#33_e3_9136474993.jpg"
    assert g.column("gallery_id").to_pylist() == [stable_gallery_id("33_e3_9136474993.jpg"), stable_gallery_id("aa_bb_1.jpg")]
    assert all(0 <= x < 2**63 for x in g.column("gallery_id").to_pylist())
    assert g.column("region").to_pylist() == [None, None] and g.column("city").to_pylist() == ["Paris", "New York"]
    with pytest.raises(InputError, match=r"row 2: IMG_ID 'aa_bb_1.jpg' repeats \(or collides with\) row 1"):
        read_mp16(_write(tmp_path / "dup.csv", header, [rows[1], rows[1]]), image_uri_template="x/{img_id}")
    with pytest.raises(InputError, match=r"expected the MP16-Pro columns"):
        read_mp16(_write(tmp_path / "bad.csv", "IMG_ID,LAT,LON", ["a,1,2"]), image_uri_template="x/{img_id}")

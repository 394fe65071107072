"""Issue 22 item 9 (part): ``file://`` works wherever a local path does: the photos folder and
tables of ``--photos``, artifacts, and config URIs (``GeorankConfig.resolve``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from georank import storage
from georank.config import GeorankConfig, S3Config
from georank.errors import InputError
from georank.io import list_images, photo_ids
from georank.uris import local_of

S3 = S3Config()


def _photos(folder: Path) -> Path:
    (folder / "trip 1").mkdir(parents=True)
    (folder / "trip 1" / "IMG_0001.JPG").write_bytes(b"jpeg")
    (folder / "b.jpg").write_bytes(b"jpeg")
    return folder


def test_local_of_reads_every_local_spelling_of_a_file_uri(tmp_path: Path) -> None:
    assert local_of("file:///data/night%2001/a.jpg") == Path("/data/night 01/a.jpg")
    assert local_of("file://localhost/data/a.jpg") == Path("/data/a.jpg")
    assert local_of("file:/data/a.jpg") == Path("/data/a.jpg")
    assert local_of("/data/a%20b.jpg") == Path("/data/a%20b.jpg")  # a plain path is taken as is
    with pytest.raises(InputError, match=r"^expected a local file: URI \(file:///path\), got one naming the host "
                       r"'nas': file://nas/data$"):
        local_of("file://nas/data")


def test_resolve_turns_file_uris_into_local_paths(tmp_path: Path) -> None:
    cfg = GeorankConfig(project_root=str(tmp_path))
    assert cfg.resolve("file:///data/night%2001") == "/data/night 01"
    assert cfg.resolve("file://localhost/data/x") == "/data/x"
    assert cfg.resolve("file:demo/models/clip") == str(tmp_path.resolve() / "demo/models/clip")  # relative: project root
    assert cfg.resolve("demo/models/clip") == str(tmp_path.resolve() / "demo/models/clip")
    assert cfg.resolve("s3://b/x") == "s3://b/x" and cfg.resolve("s3a://b/t") == "s3a://b/t"
    with pytest.raises(InputError, match=r"got one naming the host 'nas': file://nas/x$"):
        cfg.resolve("file://nas/x")


def test_a_photos_folder_lists_the_same_through_file_uris(tmp_path: Path) -> None:
    folder = _photos(tmp_path / "night 01")
    uri = "file://" + str(folder).replace(" ", "%20")
    plain = list_images(str(folder), S3)
    assert len(plain) == 2
    assert list_images(uri, S3) == list_images("file://" + str(folder), S3) == plain
    assert photo_ids(list_images(uri, S3), uri) == photo_ids(plain, str(folder)) == ["b", "trip 1/IMG_0001"]


def test_artifacts_load_through_file_uris(tmp_path: Path) -> None:
    model = tmp_path / "my model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert storage.local_path("file://" + str(model).replace(" ", "%20"), S3) == model
    assert storage.artifact_version("file://" + str(model), S3) == storage.artifact_version(str(model), S3)
    with pytest.raises(Exception, match=r"artifact not found: expected a file or directory at .*/nope"):
        storage.local_path("file://" + str(tmp_path / "nope"), S3)


@pytest.mark.spark
def test_read_photos_takes_file_uris_for_folders_and_tables(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from georank.spark.photos import read_photos

    cfg = GeorankConfig(project_root=str(tmp_path))
    folder = _photos(tmp_path / "night 01")
    by_path = sorted(read_photos(spark, str(folder), cfg).select("photo_id", "uri").collect())
    by_uri = sorted(read_photos(spark, "file://" + str(folder).replace(" ", "%20"), cfg).select("photo_id", "uri").collect())
    assert by_uri == by_path and [r.photo_id for r in by_uri] == ["b", "trip 1/IMG_0001"]

    table = tmp_path / "photos.parquet"
    pq.write_table(pa.table({"photo_id": ["p1"], "uri": [str(folder / "b.jpg")]}), table)
    rows = read_photos(spark, "file://" + str(table), cfg).collect()
    assert [(r.photo_id, r.uri) for r in rows] == [("p1", str(folder / "b.jpg"))]
    with pytest.raises(InputError, match=r"photos not found: expected a Delta/Parquet table, a folder of images or an "
                       r"s3:// prefix at /.*/missing$"):
        read_photos(spark, "file://" + str(tmp_path / "missing"), cfg)

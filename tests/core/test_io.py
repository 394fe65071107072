"""Folder inputs as catalogues hold them: every regular file listed (upper-case extensions, none at
all), hidden files and folders skipped, ids = the path relative to the input folder without its
extension, unique within the run (local folders and s3:// prefixes alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from georank.config import S3Config
from georank.io import list_images, photo_id_from_uri, photo_ids


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_every_regular_file_is_listed_hidden_ones_are_not(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "trip1/IMG_0001.JPG", "trip2/IMG_0001.JPG", "IMG_0002.heic", "scan0042", "notes.txt",
        ".DS_Store", "._IMG_0002.heic", ".thumbnails/t.jpg", "trip1/.hidden/x.jpg",
    )
    got = [Path(u).relative_to(tmp_path).as_posix() for u in list_images(str(tmp_path), S3Config())]
    assert got == ["IMG_0002.heic", "notes.txt", "scan0042", "trip1/IMG_0001.JPG", "trip2/IMG_0001.JPG"]
    assert list_images(f"file://{tmp_path}", S3Config()) == list_images(str(tmp_path), S3Config())


def test_ids_are_relative_paths_without_the_extension(tmp_path: Path) -> None:
    rels = ["IMG_0002.heic", "scan0042", "trip1/IMG_0001.JPG", "trip2/IMG_0001.JPG", "v.1/photo.final.jpeg"]
    uris = [str(tmp_path / r) for r in rels]
    assert photo_ids(uris, str(tmp_path)) == ["IMG_0002", "scan0042", "trip1/IMG_0001", "trip2/IMG_0001", "v.1/photo.final"]
    assert photo_ids(uris, str(tmp_path) + "/") == photo_ids(uris, str(tmp_path))
    assert photo_id_from_uri(uris[2], str(tmp_path)) == "trip1/IMG_0001"
    assert photo_id_from_uri(uris[2]) == "IMG_0001"  # without a folder: the file name's stem (as before)


def test_files_that_differ_only_by_extension_keep_it(tmp_path: Path) -> None:
    rels = ["IMG_0001.JPG", "IMG_0001.heic", "IMG_0003.jpg", "a", "a.jpg", "a.jpg.png", "b.jpg"]
    ids = photo_ids([str(tmp_path / r) for r in rels], str(tmp_path))
    assert ids == ["IMG_0001.JPG", "IMG_0001.heic", "IMG_0003", "a", "a.jpg", "a.jpg.png", "b"]
    assert len(set(ids)) == len(ids)


def test_s3_prefix_ids_and_a_prefix_is_a_folder() -> None:
    uris = ["s3://b/night/trip1/IMG_0001.JPG", "s3://b/night/trip2/IMG_0001.JPG", "s3://b/night/x"]
    assert photo_ids(uris, "s3://b/night") == ["trip1/IMG_0001", "trip2/IMG_0001", "x"]
    assert photo_ids(uris, "s3://b/night/") == ["trip1/IMG_0001", "trip2/IMG_0001", "x"]
    with pytest.raises(ValueError, match="expected s3://b/night2/y.jpg under s3://b/night"):
        photo_ids(["s3://b/night2/y.jpg"], "s3://b/night")


def test_s3_listing_skips_hidden_keys_and_sibling_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    with mock_aws():
        from georank.storage import s3_client

        cfg = S3Config()
        client = s3_client(cfg)
        client.create_bucket(Bucket="photos", CreateBucketConfiguration={"LocationConstraint": cfg.region} if cfg.region and cfg.region != "us-east-1" else {})
        for key in ["night/a.JPG", "night/sub/a.JPG", "night/noext", "night/.DS_Store", "night/.cache/z.jpg", "night/dir/", "night2/other.jpg"]:
            client.put_object(Bucket="photos", Key=key, Body=b"x")
        uris = list_images("s3://photos/night", cfg)
    assert uris == ["s3://photos/night/a.JPG", "s3://photos/night/noext", "s3://photos/night/sub/a.JPG"]
    assert photo_ids(uris, "s3://photos/night") == ["a", "noext", "sub/a"]

"""Issue 22 item 7: an ``s3://`` artifact whose object keys climb out of their prefix, or are
absolute relative to it, is refused naming the key, and nothing is written outside the cache.

The objects live on moto's S3 server on loopback (``ThreadedMotoServer``, one per module). The
tests run from a deep working folder: ``os.path.relpath`` (what the cache used to join keys
with) resolves against it, so a shallow one would hide where a climbing key lands.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import fake_credentials, fresh_bucket

from georank import storage
from georank.config import S3Config
from georank.errors import InputError, StorageError

BUCKET = "artifacts"


@pytest.fixture
def s3(s3_server: S3Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[S3Config, object]]:
    """A fresh bucket, dummy credentials, the cache under tmp_path and a deep working folder."""
    fake_credentials(monkeypatch)
    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(12)])
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    with fresh_bucket(s3_server, BUCKET) as client:
        yield s3_server, client


def _files_outside(root: Path, allowed: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and allowed not in p.parents]


def test_a_key_climbing_out_of_its_prefix_is_refused_before_any_download(
    s3: tuple[S3Config, object], tmp_path: Path
) -> None:
    cfg, client = s3
    # From a deep working folder, relpath keeps all four "..": the old join climbed from the
    # download folder (cache/s3/<uri>/.tmp-*) to tmp_path/escaped/file. From a shallow one the
    # climb is cut at "/" and lands elsewhere; from "/" a longer climb reaches the root.
    climbing = "models/ranker/../../../../escaped/file"
    client.put_object(Bucket=BUCKET, Key="models/ranker/config.json", Body=b"{}")  # type: ignore[attr-defined]
    client.put_object(Bucket=BUCKET, Key=climbing, Body=b"written anywhere")  # type: ignore[attr-defined]
    assert any(o["Key"] == climbing for o in client.list_objects_v2(Bucket=BUCKET)["Contents"])  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match=r"^artifact s3://artifacts/models/ranker: refused object key "
                       r"models/ranker/\.\./\.\./\.\./\.\./escaped/file: expected a path inside the prefix, got one that "
                       r"climbs out of it \('\.\.'\)") as err:
        storage.local_path(f"s3://{BUCKET}/models/ranker", cfg)
    assert err.value.kind == "other"
    assert not (tmp_path / "escaped").exists()
    assert _files_outside(tmp_path, tmp_path / "cache") == []
    # Refused before anything was downloaded, not even the good object: no version, no temporary folder.
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("models/ranker//etc/escaped", r"an absolute path"),  # relative to the prefix: "/etc/escaped"
        ("models/ranker/a/../../escaped", r"one that climbs out of it \('\.\.'\)"),
        ("models/ranker/./weights", r"a '\.' or empty path segment"),
    ],
)
def test_absolute_and_dotted_keys_are_refused_naming_the_key(
    s3: tuple[S3Config, object], tmp_path: Path, key: str, why: str
) -> None:
    cfg, client = s3
    client.put_object(Bucket=BUCKET, Key="models/ranker/config.json", Body=b"{}")  # type: ignore[attr-defined]
    client.put_object(Bucket=BUCKET, Key=key, Body=b"x")  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match=rf"refused object key {key.replace('.', '[.]')}: expected a path inside "
                       rf"the prefix, got {why}"):
        storage.local_path(f"s3://{BUCKET}/models/ranker", cfg)
    assert _files_outside(tmp_path, tmp_path / "cache") == []


def test_a_single_object_named_dot_dot_is_refused(s3: tuple[S3Config, object], tmp_path: Path) -> None:
    cfg, client = s3
    client.put_object(Bucket=BUCKET, Key="models/..", Body=b"x")  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match=r"refused object key models/\.\.: expected a file name, got '\.\.'"):
        storage.local_path(f"s3://{BUCKET}/models/..", cfg)
    assert _files_outside(tmp_path, tmp_path / "cache") == []


def test_folder_marker_objects_are_not_files_and_good_keys_still_download(
    s3: tuple[S3Config, object], tmp_path: Path
) -> None:
    cfg, client = s3
    for key, body in [("models/ranker/", b""), ("models/ranker/sub/", b""), ("models/ranker/sub/w.safetensors", b"w"),
                      ("models/ranker/config.json", b"{}"), ("models/ranker/..weird-but-legal", b"y")]:
        client.put_object(Bucket=BUCKET, Key=key, Body=body)  # type: ignore[attr-defined]
    got = storage.local_path(f"s3://{BUCKET}/models/ranker", cfg)
    assert (got / "sub" / "w.safetensors").read_bytes() == b"w" and (got / "config.json").read_bytes() == b"{}"
    assert (got / "..weird-but-legal").read_bytes() == b"y"
    assert got.resolve().is_relative_to((tmp_path / "cache").resolve())
    assert _files_outside(tmp_path, tmp_path / "cache") == []


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("../escaped", r"one that climbs out of it \('\.\.'\)"),
        ("/etc/passwd", r"an absolute path"),
        ("shards/../../x", r"one that climbs out of it \('\.\.'\)"),
        ("", r"an empty name"),
    ],
)
def test_join_uri_refuses_names_that_leave_the_root(rel: str, why: str) -> None:
    """Manifest entries (shard files) and cell versions are joined onto their root with join_uri:
    a manifest naming ``../x`` must not read or write beside the index."""
    with pytest.raises(InputError, match=rf"^expected a relative name inside s3://b/index, got {why}: {rel!r}$"):
        storage.join_uri("s3://b/index", rel)
    assert storage.join_uri("s3://b/index/", "v1/cells.parquet") == "s3://b/index/v1/cells.parquet"
    assert storage.join_uri("/data/index", "shard-0.faiss") == "/data/index/shard-0.faiss"

"""The storage layer's artifact cache (georank.storage.local_path) on moto's in-process S3:
one download per host however many workers ask at once, old versions removed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import fake_credentials

from georank import storage
from georank.config import S3Config
from georank.errors import StorageError
from georank.storage import cache as storage_cache

BUCKET = "artifacts"
S3 = S3Config()


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[object]:
    from moto import mock_aws

    fake_credentials(monkeypatch)
    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    with mock_aws():
        client = storage.s3_client(S3)
        client.create_bucket(Bucket=BUCKET)
        yield client


def _put_model(client: object, weights: bytes) -> None:
    client.put_object(Bucket=BUCKET, Key="models/clip/config.json", Body=b'{"dim": 8}')  # type: ignore[attr-defined]
    client.put_object(Bucket=BUCKET, Key="models/clip/weights.bin", Body=weights)  # type: ignore[attr-defined]


def test_workers_fetching_one_artifact_at_once_download_it_once(s3_bucket: object, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = bytes(range(256)) * 4096  # 1 MiB
    _put_model(s3_bucket, weights)
    downloads: list[int] = []
    real = storage_cache._download

    def slow_download(*args, **kwargs):  # type: ignore[no-untyped-def]
        downloads.append(1)
        real(*args, **kwargs)
        threading.Event().wait(0.3)  # hold the window open: the others must wait on the lock, not download

    monkeypatch.setattr(storage_cache, "_download", slow_download)
    got: list[Path] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            got.append(storage.local_path(f"s3://{BUCKET}/models/clip", S3))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 4 and len(set(got)) == 1
    assert len(downloads) == 1
    folder = got[0]
    assert (folder / "weights.bin").read_bytes() == weights and (folder / "config.json").read_bytes() == b'{"dim": 8}'
    assert sorted(p.name for p in folder.parent.iterdir()) == [".holders", ".lock", folder.name]  # no temporary folders left


def test_a_changed_artifact_replaces_the_old_version_and_crash_leftovers(s3_bucket: object) -> None:
    _put_model(s3_bucket, b"old weights")
    old = storage.local_path(f"s3://{BUCKET}/models/clip", S3)
    (old.parent / ".tmp-999999-deadbeef").mkdir()  # a download that crashed
    assert storage.local_path(f"s3://{BUCKET}/models/clip", S3) == old  # unchanged: the cached copy
    _put_model(s3_bucket, b"new weights")
    new = storage.local_path(f"s3://{BUCKET}/models/clip", S3)
    assert new != old and (new / "weights.bin").read_bytes() == b"new weights"
    assert not old.exists()
    assert sorted(p.name for p in new.parent.iterdir()) == [".holders", ".lock", new.name]
    assert sorted(p.name for p in (new.parent / ".holders").iterdir()) == [new.name]  # the old version's lease went with it
    # A single object is a file inside its version folder.
    s3_bucket.put_object(Bucket=BUCKET, Key="heads.safetensors", Body=b"h")  # type: ignore[attr-defined]
    f = storage.local_path(f"s3://{BUCKET}/heads.safetensors", S3)
    assert f.name == "heads.safetensors" and f.read_bytes() == b"h"


def test_missing_artifacts_and_objects_are_storage_errors(s3_bucket: object, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"artifact not found: expected objects at s3://{BUCKET}/models/none, got none"):
        storage.local_path(f"s3://{BUCKET}/models/none", S3)
    with pytest.raises(StorageError, match=r"artifact not found: expected a file or directory at .*/nope") as err:
        storage.local_path(str(tmp_path / "nope"), S3)
    assert err.value.kind == "not_found"
    s3_bucket.put_object(Bucket=BUCKET, Key="x", Body=b"0123456789")  # type: ignore[attr-defined]
    assert storage.read_range(f"s3://{BUCKET}/x", S3, start=2, length=3) == b"234"
    with pytest.raises(StorageError, match=r"^object is 10 bytes, over the limit of 4$") as err:
        storage.read_bytes(f"s3://{BUCKET}/x", S3, max_bytes=4)
    assert err.value.kind == "too_large"


def test_stat_file_gives_the_size_and_version_tag_list_files_gives(s3_bucket: object, tmp_path: Path) -> None:
    s3_bucket.put_object(Bucket=BUCKET, Key="dir/a.tar", Body=b"0123456789")  # type: ignore[attr-defined]
    assert storage.stat_file(f"s3://{BUCKET}/dir/a.tar", S3) == storage.list_files(f"s3://{BUCKET}/dir", S3)[0]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.tar").write_bytes(b"01234")
    found = storage.stat_file(str(tmp_path / "d" / "a.tar"), S3)
    assert found == storage.list_files(str(tmp_path / "d"), S3)[0] and found.size == 5
    with pytest.raises(StorageError, match=rf"^object not found: s3://{BUCKET}/dir/b.tar$") as err:
        storage.stat_file(f"s3://{BUCKET}/dir/b.tar", S3)
    assert err.value.kind == "not_found"
    with pytest.raises(StorageError, match=r"^expected a file, got a directory: "):
        storage.stat_file(str(tmp_path / "d"), S3)


# ----------------------------------------------------------------------------- file digests


@pytest.fixture
def digest_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """A fresh host digest cache; the list of files whose bytes were hashed, in order."""
    from georank.storage import digests

    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "_memo", {})
    reads: list[Path] = []
    real = digests._feed

    def counting(h: object, path: Path) -> None:
        reads.append(Path(path))
        threading.Event().wait(0.05)  # a slow disk: concurrent callers overlap
        real(h, path)

    monkeypatch.setattr(digests, "_feed", counting)
    return reads


def test_a_file_is_hashed_once_per_host_and_again_when_it_changes(tmp_path: Path, digest_reads: list[Path]) -> None:
    import hashlib
    import os

    from georank.storage import digests

    f = tmp_path / "w.safetensors"
    f.write_bytes(b"weights v1")
    want = hashlib.sha256(b"weights v1").hexdigest()
    assert storage.file_digest(f) == want and storage.file_digest(f) == want
    assert digest_reads == [f]  # the second call: this process remembered it
    digests._memo.clear()  # a new Python worker on the same host: the stored digest, no read
    assert storage.file_digest(f) == want and digest_reads == [f]
    assert storage.sha256_file(f) == want and len(digest_reads) == 2  # the uncached check reads

    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: same bytes, hashed again
    digests._memo.clear()
    assert storage.file_digest(f) == want and len(digest_reads) == 3
    f.write_bytes(b"weights v2")  # rewritten with the same size
    assert storage.file_digest(f) == hashlib.sha256(b"weights v2").hexdigest() and len(digest_reads) == 4
    stored = sorted(p.name for p in (tmp_path / "cache" / "digests").iterdir())
    assert len(stored) == 2 and ".lock" in stored  # the stale entries were dropped, the live one kept
    with pytest.raises(StorageError, match=r"^file not found: .*/gone$") as err:
        storage.file_digest(tmp_path / "gone")
    assert err.value.kind == "not_found"


def test_workers_hashing_one_file_at_once_read_it_once(tmp_path: Path, digest_reads: list[Path]) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(bytes(range(256)) * 1024)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(storage.file_digest(f))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and len(set(got)) == 1 and digest_reads == [f]


def test_an_unwritable_cache_still_gives_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from georank.storage import digests

    (tmp_path / "not_a_dir").write_text("x")
    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "not_a_dir"))
    monkeypatch.setattr(digests, "_memo", {})
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert storage.file_digest(f) == hashlib.sha256(b"abc").hexdigest()


def test_an_s3_artifact_is_hashed_in_the_local_cache(s3_bucket: object) -> None:
    import hashlib

    _put_model(s3_bucket, b"remote weights")
    folder = storage.local_path(f"s3://{BUCKET}/models/clip", S3)
    assert storage.file_digest(folder / "weights.bin") == hashlib.sha256(b"remote weights").hexdigest()
    assert (folder.parents[2] / "digests").is_dir()  # beside the artifacts, under the one cache root

"""The tar member index: a tar of a few thousand members scanned once, read back by offset locally and
from moto's S3 server by ranged GET, through ``tar://`` URIs wherever images are read."""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support import fake_credentials, fresh_bucket, moto_server

from georank import resources
from georank import schema as S
from georank.config import DecodeConfig, S3Config
from georank.decode import decode_image
from georank.errors import PhotoError
from georank.io import PhotoReader, read_bytes
from georank.storage import tar as tarindex
from georank.storage.tar import SOURCE_SUFFIX, build_tar_index, ensure_tar_index, index_uri_of, read_tar_member

N_MEMBERS = 3000
BUCKET = "mp16"


def _member_bytes(i: int) -> bytes:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, size=int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()  # sizes 0..2999, some empty


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _names() -> list[str]:
    names = [f"{i % 97:02x}/{(i * 7) % 89:02x}/{1000000 + i}.jpg" for i in range(N_MEMBERS)]
    names[5] = "long/" + "x" * 150 + "/name_over_100_bytes.jpg"  # GNU/PAX long-name header before the real one
    names[6] = "unicode/café_東京.jpg"
    return names


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("tar")
    path = root / "mp-16-images.tar"
    content = {n: _member_bytes(i) for i, n in enumerate(_names())}
    content["photos/red.jpg"] = _jpeg((220, 20, 20))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo("photos")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)  # a directory entry: not a file member, not indexed
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, content


def test_index_scans_once_and_reads_every_member_back_by_offset(archive: tuple[Path, dict[str, bytes]]) -> None:
    path, content = archive
    resources.clear()
    index_uri, n = build_tar_index(str(path), S3Config())
    assert index_uri == str(path) + ".index.parquet" and n == len(content) >= 3000
    table = pq.read_table(index_uri)
    assert table.schema == S.TAR_INDEX and set(table.column("member").to_pylist()) == set(content)
    for name, data in content.items():
        assert read_tar_member(f"tar://{path}#{name}", S3Config()) == data, name
    assert resources.build_count("tar_index", index_uri) == 1  # loaded once for all the reads
    # wherever images are read: read_bytes, PhotoReader, then the decoder
    red = PhotoReader(S3Config()).read(f"tar://{path}#photos/red.jpg")
    assert decode_image(red, DecodeConfig()).getpixel((20, 15))[0] > 180
    assert read_bytes(f"tar://file://{path}#{_names()[5]}", S3Config()) == content[_names()[5]]


def test_missing_member_archive_or_index_and_a_stale_index_are_read_errors(
    archive: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    path, _ = archive
    build_tar_index(str(path), S3Config())
    with pytest.raises(PhotoError, match=r"member 'nope.jpg' not in the index of"):
        read_bytes(f"tar://{path}#nope.jpg", S3Config())
    with pytest.raises(PhotoError, match=r"expected a tar://<archive>#<member> URI with both parts"):
        read_bytes(f"tar://{path}", S3Config())
    with pytest.raises(PhotoError, match=r"tar member index .* unreadable \(file not found"):
        read_bytes(f"tar://{tmp_path / 'other.tar'}#a.jpg", S3Config())
    # the archive replaced by another one (members shifted by one 1 KiB member) under the old index
    stale = tmp_path / "stale.tar"
    with tarfile.open(stale, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("first.bin")
        info.size = 1024
        tar.addfile(info, io.BytesIO(b"\1" * 1024))
        for i, name in enumerate(_names()[:20]):
            data = _member_bytes(i)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    Path(index_uri_of(str(stale))).write_bytes(Path(index_uri_of(str(path))).read_bytes())
    resources.clear()
    with pytest.raises(PhotoError, match=r"the index does not match the archive \(rebuild it\)"):
        read_bytes(f"tar://{stale}#{_names()[10]}", S3Config())
    with pytest.raises(PhotoError, match=r"over the limit of 10 \(decode.max_bytes\)") as too_large:
        read_bytes(f"tar://{path}#photos/red.jpg", S3Config(), max_bytes=10)
    assert too_large.value.kind == "too_large"


def test_tar_read_errors_keep_the_storage_kind_the_breaker_reads(
    archive: tuple[Path, dict[str, bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing archive, index or member is ``not_found`` (per photo); an unreachable S3 endpoint
    stays ``unreachable``, the run-level cause the circuit breaker counts."""
    from georank.isolation import run_level_cause

    path, _ = archive
    build_tar_index(str(path), S3Config())
    resources.clear()
    fake_credentials(monkeypatch)  # credentials found: the endpoint is what fails
    kinds = {}
    for name, uri, s3 in [
        ("member", f"tar://{path}#nope.jpg", S3Config()),
        ("index", f"tar://{tmp_path / 'other.tar'}#a.jpg", S3Config()),
        ("unreachable", "tar://s3://mp16/x.tar#a.jpg", S3Config(endpoint_url="http://127.0.0.1:9", path_style=True)),
    ]:
        with pytest.raises(PhotoError) as err:
            read_bytes(uri, s3)
        kinds[name] = err.value.kind
    assert kinds == {"member": "not_found", "index": "not_found", "unreachable": "unreachable"}
    with pytest.raises(PhotoError) as err:
        read_bytes("tar://s3://mp16/x.tar#a.jpg", S3Config(endpoint_url="http://127.0.0.1:9", path_style=True))
    assert run_level_cause(err.value) is not None


@pytest.fixture(scope="module")
def moto_s3(archive: tuple[Path, dict[str, bytes]]) -> Iterator[S3Config]:
    mp = pytest.MonkeyPatch()
    fake_credentials(mp)
    try:
        with moto_server() as url:
            cfg = S3Config(endpoint_url=url, path_style=True)
            with fresh_bucket(cfg, BUCKET) as client:
                client.upload_file(str(archive[0]), BUCKET, "images/mp-16-images.tar")
                yield cfg
    finally:
        mp.undo()


def test_index_and_ranged_reads_from_s3(archive: tuple[Path, dict[str, bytes]], moto_s3: S3Config) -> None:
    _, content = archive
    uri = f"s3://{BUCKET}/images/mp-16-images.tar"
    resources.clear()
    index_uri, n = build_tar_index(uri, moto_s3)  # the archive streamed once from S3, the index put beside it
    assert index_uri == uri + ".index.parquet" and n == len(content)
    assert ensure_tar_index(uri, moto_s3).scanned is False  # its ETag and size recorded beside it
    names = sorted(content)
    for name in names[::40] + [_names()[5], _names()[6], "photos/red.jpg"]:
        assert read_bytes(f"tar://{uri}#{name}", moto_s3) == content[name], name
    reader = PhotoReader(moto_s3)
    assert reader.read(f"tar://{uri}#photos/red.jpg") == content["photos/red.jpg"]
    with pytest.raises(PhotoError, match=r"member 'missing.jpg' not in the index"):
        reader.read(f"tar://{uri}#missing.jpg")
    with pytest.raises(PhotoError, match=r"tar member index s3://mp16/nothing.tar.index.parquet unreadable \(object not found"):
        reader.read(f"tar://s3://{BUCKET}/nothing.tar#a.jpg")


def test_prepare_mp16_job_indexes_the_tar_and_writes_a_gallery_of_tar_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    import json

    from georank.cli import run_job

    tar_path = tmp_path / "mp-16-images.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, colour in (("33_e3_1.jpg", (200, 0, 0)), ("aa_bb_2.jpg", (0, 200, 0))):
            data = _jpeg(colour)
            info = tarfile.TarInfo(f"mp16/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    meta = tmp_path / "MP16_Pro_filtered.csv"
    meta.write_text("IMG_ID,LAT,LON,neighbourhood,city,county,state,region,country,continent\n"
                    "33_e3_1.jpg,48.85,2.35,,Paris,,Ile-de-France,,France,Europe\naa_bb_2.jpg,40.7,-74.0,,New York,,New York,,United States,\n")
    conf = tmp_path / "c.yaml"
    conf.write_text(f"tables:\n  gallery: {tmp_path / 'gallery.parquet'}\ndemo:\n  ensure: false\n")
    spec = importlib.util.spec_from_file_location("prepare_job", Path(__file__).resolve().parents[2] / "jobs" / "prepare_mp16.py")
    assert spec and spec.loader
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    resources.clear()
    argv = ["--conf", str(conf), "--metadata", str(meta), "--tar", str(tar_path)]
    assert run_job("prepare_mp16", job.main, add_args=job.add_args, argv=argv) == 1  # members live under mp16/
    assert "2 of 2 images are not members" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert run_job("prepare_mp16", job.main, add_args=job.add_args, argv=[*argv, "--member-prefix", "mp16/"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["gallery_rows"] == 2 and summary["tar_members"] == 2
    assert summary["tar_scanned"] is False  # the first (failed) run's index, reused: the archive did not change
    gallery = pq.read_table(tmp_path / "gallery.parquet")
    assert gallery.schema == S.GALLERY
    img = decode_image(read_bytes(gallery.column("uri").to_pylist()[1], S3Config()), DecodeConfig())
    assert img.getpixel((20, 15))[1] > 150  # the green one, read from the tar by offset


def _small_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times an archive is scanned: one entry (its member count) per scan."""
    done: list[int] = []
    real = tarindex.scan_tar

    def counting(fileobj: object, *, stream: bool) -> object:
        table = real(fileobj, stream=stream)
        done.append(table.num_rows)
        return table

    monkeypatch.setattr(tarindex, "scan_tar", counting)
    return done


def test_an_unchanged_local_archive_is_not_scanned_again_a_changed_one_is(
    tmp_path: Path, scans: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    import os

    path = tmp_path / "a.tar"
    _small_tar(path, {"a.jpg": b"a" * 10, "b.jpg": b"b" * 20})
    caplog.set_level(logging.INFO, logger="georank.storage.tar")
    first = ensure_tar_index(str(path), S3Config())
    assert (first.scanned, first.members, scans) == (True, 2, [2]) and "no index at" in first.reason
    again = ensure_tar_index(str(path), S3Config())
    assert (again.scanned, again.members, scans) == (False, 2, [2])
    assert "reusing the member index" in caplog.text
    assert ensure_tar_index(str(path), S3Config(), force=True).reason == "forced (--reindex)" and scans == [2, 2]
    # another member added under the same mtime: only the size differs
    before = path.stat()
    _small_tar(path, {"a.jpg": b"a" * 10, "b.jpg": b"b" * 20, "c.jpg": b"c" * 30_000})
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size != before.st_size
    changed = ensure_tar_index(str(path), S3Config())
    assert (changed.scanned, changed.members, scans[-1]) == (True, 3, 3)
    assert "the archive is not the one the index was built from" in changed.reason
    assert f"building the member index of {path}: the archive is not the one" in caplog.text
    resources.clear()
    assert read_tar_member(f"tar://{path}#c.jpg", S3Config()) == b"c" * 30_000
    # the same size, rewritten later: only the mtime differs
    before = path.stat()
    _small_tar(path, {"a.jpg": b"A" * 10, "b.jpg": b"B" * 20, "c.jpg": b"C" * 30_000})
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == before.st_size
    assert ensure_tar_index(str(path), S3Config()).scanned and len(scans) == 4
    assert not ensure_tar_index(str(path), S3Config()).scanned and len(scans) == 4
    # an index without its record (e.g. built before records existed) is not trusted
    Path(index_uri_of(str(path)) + SOURCE_SUFFIX).unlink()
    assert "no record of what" in ensure_tar_index(str(path), S3Config()).reason and len(scans) == 5


def test_an_unchanged_s3_archive_is_not_scanned_again_a_replaced_one_is(moto_s3: S3Config, tmp_path: Path, scans: list[int]) -> None:
    from georank import storage

    uri = f"s3://{BUCKET}/small/a.tar"
    local = tmp_path / "a.tar"
    _small_tar(local, {"a.jpg": b"a" * 10})
    storage.put_file(local, uri, moto_s3)
    assert ensure_tar_index(uri, moto_s3).scanned and scans == [1]
    assert not ensure_tar_index(uri, moto_s3).scanned and scans == [1]
    _small_tar(local, {"a.jpg": b"z" * 10})  # the same size, another ETag
    storage.put_file(local, uri, moto_s3)
    replaced = ensure_tar_index(uri, moto_s3)
    assert replaced.scanned and scans == [1, 1] and "the archive is not the one" in replaced.reason
    resources.clear()
    assert read_tar_member(f"tar://{uri}#a.jpg", moto_s3) == b"z" * 10

"""The geotag job with ``s3://`` photos served by moto's S3 server on loopback.

One moto server per module (``ThreadedMotoServer`` on 127.0.0.1, a free port). The bucket
holds the tiny world's query photos, one object that is not an image, and one photo under
``private/`` that the job's credentials may not read. moto evaluates IAM identity policies,
not bucket policies, so "access denied" is modelled the IAM way: the test creates a user
whose policy allows ``s3:*`` but explicitly denies ``s3:GetObject`` on ``private/*``, then
turns moto's request authorisation on. The job gets that user's (dummy) keys through the
standard AWS chain: the environment, in the driver (``os.environ``) and in the Python
workers (``SparkContext.environment``, what ``spark.executorEnv.*`` fills; a Python worker
inherits the environment of the JVM that forked it, which started before this test).

An s3:// PREFIX read through ``./spark-submit.sh`` (listing, boto3 reads on the executors,
the keys in no output) is the next-date run of tests/reliability/test_crash_and_rerun.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_conf

from georank.config import load_config
from georank.results import read_errors, read_predictions
from georank.spark.geotag import run_geotag

pytestmark = pytest.mark.spark
DAY = dt.date(2026, 11, 23)
BUCKET = "georank-catalogue"
PREFIX = f"untagged/{DAY.isoformat()}/"
DENIED = "private/q-secret.jpg"
DENIED_NIGHT, N_DENIED_NIGHT = "private/night/", 5


@dataclass(frozen=True)
class S3World:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    photo_ids: list[str]  # the query photos uploaded under PREFIX


def _client(endpoint_url: str, service: str, **keys: str):  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client(
        service, endpoint_url=endpoint_url, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}), **keys,
    )


@pytest.fixture(scope="module")
def s3_world(tiny_world: Path) -> Iterator[S3World]:
    from moto import settings
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    auth_before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        url = f"http://{host}:{port}"
        setup = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}  # not checked yet
        s3 = _client(url, "s3", **setup)
        s3.create_bucket(Bucket=BUCKET)
        photos = sorted((tiny_world / "queries").glob("*.jpg"))
        for p in photos:
            s3.put_object(Bucket=BUCKET, Key=PREFIX + p.name, Body=p.read_bytes())
        s3.put_object(Bucket=BUCKET, Key=PREFIX + "manifest.txt", Body=b"not an image: a list of photo ids\n")
        s3.put_object(Bucket=BUCKET, Key=DENIED, Body=photos[0].read_bytes())
        for p in photos[:N_DENIED_NIGHT]:  # a whole night the job may list but not read
            s3.put_object(Bucket=BUCKET, Key=DENIED_NIGHT + p.name, Body=p.read_bytes())
        iam = _client(url, "iam", **setup)
        iam.create_user(UserName="geotag-job")
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/private/*"},
            ],
        }
        iam.put_user_policy(UserName="geotag-job", PolicyName="read-catalogue", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="geotag-job")["AccessKey"]
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is signed and authorised
        yield S3World(url, key["AccessKeyId"], key["SecretAccessKey"], [p.stem for p in photos])
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = auth_before
        server.stop()


@pytest.fixture
def aws_env(spark, s3_world: S3World, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The job's credentials in the environment of the driver and of the Python workers."""
    env = {
        "AWS_ACCESS_KEY_ID": s3_world.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_world.secret_access_key,
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    workers = spark.sparkContext.environment  # shipped with every Python function from now on
    saved = {name: workers.get(name) for name in env}
    workers.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                workers.pop(name, None)
            else:
                workers[name] = value


def _conf(tiny_world: Path, out: Path, s3_world: S3World) -> Path:
    return tiny_conf(tiny_world, out, s3={"endpoint_url": s3_world.endpoint_url, "path_style": True})


def test_s3_missing_and_denied_objects_are_read_errors(spark, tiny_world: Path, s3_world: S3World, aws_env: None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A table of s3:// URIs: a missing object (404) and one the job may not read (403) each
    become an error row with stage ``read`` and a clear reason; the readable one is predicted."""
    good, missing, denied = (
        f"s3://{BUCKET}/{PREFIX}{s3_world.photo_ids[0]}.jpg",
        f"s3://{BUCKET}/{PREFIX}gone.jpg",
        f"s3://{BUCKET}/{DENIED}",
    )
    photos = tmp_path / "photos.parquet"
    pq.write_table(pa.table({"photo_id": ["good", "missing", "denied"], "uri": [good, missing, denied]}), photos)
    # 2 of 3 fail: over the default write.max_error_fraction (0.5), allowed here to see the rows
    cfg = load_config(_conf(tiny_world, tmp_path / "c.yaml", s3_world), ["write.max_error_fraction=1.0"])
    s = run_geotag(spark, cfg, photos_uri=str(photos), run_date=DAY, run_id="run-s3-errors")
    assert (s["read"], s["predicted"], s["errors"]) == (3, 1, 2), s
    assert [r["photo_id"] for r in read_predictions(cfg.tables.results).to_pylist()] == ["good"]
    errors = {r["photo_id"]: (r["stage"], r["reason"]) for r in read_errors(cfg.tables.results).to_pylist()}
    assert errors == {
        "missing": ("read", f"object not found: {missing}"),
        "denied": ("read", f"access denied: {denied}"),
    }


# ----------------------------------------------------------------------------- guards (issue 22)


def _committed_night(spark, tiny_world: Path, s3_world: S3World, tmp_path: Path, *overrides: str):  # type: ignore[no-untyped-def]
    """A date committed from the s3:// prefix (every photo predicted): the good night to keep."""
    cfg = load_config(_conf(tiny_world, tmp_path / "c.yaml", s3_world), list(overrides))
    s = run_geotag(spark, cfg, photos_uri=f"s3://{BUCKET}/{PREFIX}", run_date=DAY, run_id="run-good",
                   )
    assert s["predicted"] == len(s3_world.photo_ids), s
    return cfg, sorted((r["photo_id"], r["run_id"]) for r in read_predictions(cfg.tables.results).to_pylist())


def test_a_missing_s3_prefix_never_replaces_a_committed_night(spark, tiny_world: Path, s3_world: S3World,  # type: ignore[no-untyped-def]
                                                              aws_env: None, tmp_path: Path) -> None:
    """Reproduced first: a rerun whose prefix has a typo listed nothing, passed read = predicted +
    errors (0 = 0 + 0) and committed an empty date: exit 0, the night gone."""
    from georank.errors import RunError

    # the manifest.txt under PREFIX fails to decode: 1 error of 11, under the guard's fraction
    cfg, before = _committed_night(spark, tiny_world, s3_world, tmp_path)
    typo = f"s3://{BUCKET}/untagged/{DAY.isoformat()}-typo/"
    with pytest.raises(RunError, match=r"expected at least one photo, got 0 read from s3://georank-catalogue/untagged/"
                                       r"2026-11-23-typo/ .* nothing was committed \(pass --allow-empty"):
        run_geotag(spark, cfg, photos_uri=typo, run_date=DAY, run_id="run-typo")
    assert sorted((r["photo_id"], r["run_id"]) for r in read_predictions(cfg.tables.results).to_pylist()) == before


def test_a_night_the_job_may_not_read_stops_at_the_breaker_and_commits_nothing(  # type: ignore[no-untyped-def]
    spark, tiny_world: Path, s3_world: S3World, aws_env: None, tmp_path: Path
) -> None:
    """A systemic read failure (every object denied, as with expired or wrong credentials) stops the
    run with one clear message naming the cause, instead of a night of error rows; the committed
    night stays. The breaker trips in the task (write.breaker_consecutive photos in a row)."""
    from georank.errors import RunError

    cfg, before = _committed_night(spark, tiny_world, s3_world, tmp_path, "write.breaker_consecutive=3")
    with pytest.raises(RunError, match=r"stage read: 3 photos in a row failed with a run-level cause \(access denied\); "
                                       r"expected per-photo failures, got a systemic one \(the last: access denied: "
                                       r"s3://georank-catalogue/private/night/"):
        run_geotag(spark, cfg, photos_uri=f"s3://{BUCKET}/{DENIED_NIGHT}", run_date=DAY, run_id="run-denied")
    assert sorted((r["photo_id"], r["run_id"]) for r in read_predictions(cfg.tables.results).to_pylist()) == before
    # with the breaker out of reach, the error-fraction guard still refuses the night, naming the cause
    cfg_loose = cfg.model_copy(update={"write": cfg.write.model_copy(update={"breaker_consecutive": 1000})})
    with pytest.raises(RunError, match=r"expected at most 50% of the photos to fail \(write.max_error_fraction=0.5\), "
                                       r"got 5 of 5 \(100.0%\); the most common failure: stage read: access denied: "
                                       r"<path> \(5 photos\)"):
        run_geotag(spark, cfg_loose, photos_uri=f"s3://{BUCKET}/{DENIED_NIGHT}", run_date=DAY, run_id="run-denied-2")
    assert sorted((r["photo_id"], r["run_id"]) for r in read_predictions(cfg.tables.results).to_pylist()) == before

"""Two drivers (two Python processes, two JVMs) commit to ONE s3a:// results table on a local S3
server (moto's ThreadedMotoServer on 127.0.0.1) at the same moment (issue 22 item 5).

Delta 4.4.0's default s3a log store (S3SingleDriverLogStore) keeps writers apart inside one JVM
only: two drivers can both write ``_delta_log/N.json`` and one commit vanishes after its history
check passed. georank's commit lock (georank.storage.lock, an S3 conditional put beside the table)
is held around every commit and its check, so both nights are present, or a run fails loudly.
Real parts: the S3A jars (scripts/setup.sh --s3a), Delta's jars, moto's S3 protocol over loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, moto_server, tiny_conf

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
BUCKET = "georank-lake"
KEYS = {"AWS_ACCESS_KEY_ID": "GEORANKTWODRIVERSKEY", "AWS_SECRET_ACCESS_KEY": "GEORANKTWODRIVERSs3cr3t"}


def test_two_drivers_committing_to_one_s3a_table_at_once_keep_both_nights(tiny_world: Path, tmp_path: Path) -> None:
    import boto3
    from botocore.config import Config
    from deltalake import DeltaTable

    if not (ROOT / "jars" / "s3a" / ".complete").exists():
        pytest.fail("the S3A jars are missing: run ./scripts/setup.sh --s3a (the test command does)")
    with moto_server() as url:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
                     aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
        conf = tiny_conf(
            tiny_world, tmp_path / "c.yaml",
            tables={"results": f"s3a://{BUCKET}/georank/results"},
            s3={"endpoint_url": url, "path_style": True},
            spark={"master": "local[1]", "conf": {
                "spark.sql.shuffle.partitions": "1", "spark.ui.enabled": "false", "spark.driver.memory": "1g",
                "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
                "spark.hadoop.fs.s3a.aws.credentials.provider":
                    "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider",
            }},
        )
        env = {**os.environ, **KEYS, "AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": str(ROOT / "tests")}
        procs = []
        # b commits only once a holds the table's lock: the two commits overlap by construction
        for me, other, day, after in (("a", "b", "2026-11-23", []), ("b", "a", "2026-11-24", ["--after-lock"])):
            cmd = [sys.executable, str(ROOT / "tests" / "reliability" / "commit_driver.py"), "--conf", str(conf),
                   "--run-id", f"driver-{me}", "--run-date", day,
                   "--ready", str(tmp_path / f"ready-{me}"), "--other", str(tmp_path / f"ready-{other}"), *after]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        summaries = [json.loads([ln for ln in out.splitlines() if ln.startswith('{"')][-1]) for out in outputs]
        storage = {"AWS_ENDPOINT_URL": url, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
                   "AWS_S3_ALLOW_UNSAFE_RENAME": "true", **KEYS}
        rows = DeltaTable(f"s3://{BUCKET}/georank/results", storage_options=storage).to_pyarrow_table().to_pylist()
    ok = {s["run_id"] for s in summaries if s["status"] == "ok"}
    by_run: dict[str, set[str]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], set()).add(r["photo_id"])
    # both nights present: the second driver waited for the first's lock, then committed on top
    assert ok == {"driver-a", "driver-b"}, outputs
    for run_id in ok:
        assert by_run.get(run_id) == {f"{run_id}-{i}" for i in range(3)}, (run_id, by_run, outputs)
    assert sorted(s["version"] for s in summaries) == [1, 2]  # version 0 created the table; one commit each after it
    assert "waiting up to" in outputs[1] and "waiting up to" not in outputs[0], outputs  # b waited for a's lock
    for out in outputs:
        assert KEYS["AWS_SECRET_ACCESS_KEY"] not in out

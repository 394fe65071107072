"""Delta through Spark with the real delta-spark jars, read back by a second engine (delta-rs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from georank import schema as S
from georank import write
from georank.errors import SchemaError, WriteError

pytestmark = pytest.mark.spark


def _errors_df(spark, rows):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(rows, S.spark_schema(S.ERRORS))


def test_roundtrip_with_second_engine(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from deltalake import DeltaTable

    uri = str(tmp_path / "errors")
    day = dt.date(2026, 11, 23)
    rows = [
        ("p1", "/x/p1.jpg", "decode", "the file is empty (0 bytes)", "r1", day),
        (None, None, "input", "photo id is null", "r1", day),
    ]
    write.write_partition(_errors_df(spark, rows), uri, table="gallery_errors", run_date="2026-11-23", mode="error")
    other = DeltaTable(uri)
    table = other.to_pyarrow_table()
    assert table.schema.names == S.ERRORS.names
    assert [f.type for f in table.schema] == [f.type for f in S.ERRORS]
    got = sorted(table.to_pylist(), key=lambda r: str(r["photo_id"]))
    want = sorted(
        [dict(zip(S.ERRORS.names, r)) for r in rows], key=lambda r: str(r["photo_id"])
    )
    assert got == want
    assert other.metadata().partition_columns == ["run_date"]
    # column comments from the schema module are stored in the Delta log
    spark_fields = {f.name: f.metadata.get("comment") for f in spark.read.format("delta").load(uri).schema}
    assert spark_fields["reason"] == S.comment(S.ERRORS, "reason")


def test_replace_is_idempotent_and_error_mode_refuses(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "errors")
    d1, d2 = dt.date(2026, 11, 22), dt.date(2026, 11, 23)
    write.write_partition(_errors_df(spark, [("a", None, "read", "x", "r0", d1)]), uri, table="gallery_errors", run_date="2026-11-22", mode="replace")
    for run in ("r1", "r2"):
        df = _errors_df(spark, [("b", None, "read", "x", run, d2), ("c", None, "read", "y", run, d2)])
        write.write_partition(df, uri, table="gallery_errors", run_date="2026-11-23", mode="replace")
    rows = write.read_arrow(uri).to_pylist()
    assert sorted((r["photo_id"], r["run_id"]) for r in rows) == [("a", "r0"), ("b", "r2"), ("c", "r2")]
    with pytest.raises(WriteError, match="already has rows for run_date 2026-11-23; expected none with mode='error'"):
        write.write_partition(_errors_df(spark, [("d", None, "read", "x", "r3", d2)]), uri, table="gallery_errors", run_date="2026-11-23", mode="error")


def test_existing_table_with_other_columns_is_refused(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "t")
    spark.createDataFrame([(1,)], "x int").write.format("delta").save(uri)
    with pytest.raises(SchemaError, match="table gallery_errors at .*: expected columns"):
        write.ensure_table(spark, uri, table="gallery_errors")

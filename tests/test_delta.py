"""Delta through Spark with the real delta-spark jars, read back by a second engine (delta-rs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from georank import results, write
from georank import schema as S
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
    write.commit(_errors_df(spark, rows), uri, table="gallery_errors", run_date="2026-11-23", mode="error", label="r1")
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
    write.commit(_errors_df(spark, [("a", None, "read", "x", "r0", d1)]), uri, table="gallery_errors", run_date="2026-11-22",
                 mode="replace", label="r0")
    for run in ("r1", "r2"):
        df = _errors_df(spark, [("b", None, "read", "x", run, d2), ("c", None, "read", "y", run, d2)])
        write.commit(df, uri, table="gallery_errors", run_date="2026-11-23", mode="replace", label=run)
    rows = results.read_arrow(uri).to_pylist()
    assert sorted((r["photo_id"], r["run_id"]) for r in rows) == [("a", "r0"), ("b", "r2"), ("c", "r2")]
    with pytest.raises(WriteError, match="already has rows for run_date 2026-11-23; expected none with mode 'error'"):
        write.commit(_errors_df(spark, [("d", None, "read", "x", "r3", d2)]), uri, table="gallery_errors",
                     run_date="2026-11-23", mode="error", label="r3")


def test_existing_table_with_other_columns_is_refused(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "t")
    spark.createDataFrame([(1,)], "x int").write.format("delta").save(uri)
    with pytest.raises(SchemaError, match="table gallery_errors at .*: expected columns"):
        write.ensure_table(spark, uri, table="gallery_errors")


def _eval_df(spark, run_id: str):  # type: ignore[no-untyped-def]
    row = {name: None for name in S.EVAL_RESULTS.names}
    row.update(run_id=run_id, benchmark="b", method="full", radius_km=25.0)
    import pyarrow as pa

    return spark.createDataFrame(pa.Table.from_pylist([row], schema=S.EVAL_RESULTS).to_pylist(), S.spark_schema(S.EVAL_RESULTS))


def test_two_appends_that_started_together_both_land_with_their_own_keys(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 22 item 3, reproduced: ONE app id for every evaluate run, and the run that started
    first commits last: Delta drops its rows silently; through the writer that now fails loudly.
    The evaluate job appends without a transaction id (each run is its own append): both land."""
    uri = str(tmp_path / "eval")
    write.commit(_eval_df(spark, "short"), uri, table="eval_results", mode="append", label="short")
    write.commit(_eval_df(spark, "long"), uri, table="eval_results", mode="append", label="long")
    assert sorted(r["run_id"] for r in results.read_arrow(uri).to_pylist()) == ["long", "short"]
    # the shared key of before: the earlier-started run is skipped by Delta, and the writer says so
    shared_new = write.Txn("georank-evaluate", 2000)
    shared_old = write.Txn("georank-evaluate", 1000)
    write.commit(_eval_df(spark, "new"), uri, table="eval_results", mode="append", txn=shared_new, label="new")
    with pytest.raises(WriteError, match=r"expected the commit labelled old in the table's history, got none: Delta skipped it"):
        write.commit(_eval_df(spark, "old"), uri, table="eval_results", mode="append", txn=shared_old, label="old")
    assert sorted(r["run_id"] for r in results.read_arrow(uri).to_pylist()) == ["long", "new", "short"]


def test_two_creators_of_one_table_both_succeed(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two first runs against a table that does not exist yet: both saw it missing and both call
    Delta's create at the same moment (a barrier on the real ``DeltaTableBuilder.execute``, the
    call both make). Delta lets one create win and fails the other (a concurrent-creation
    conflict); ``ensure_table`` must accept that loser (it finds the table and checks its
    columns) and both commits land. The race is inside the JVM: a round in which neither create
    failed (one finished before the other started) proves nothing and is repeated on a fresh table."""
    import threading

    from delta.tables import DeltaTableBuilder

    real_execute = DeltaTableBuilder.execute
    real_check = write._check_columns
    for attempt in range(5):
        uri = str(tmp_path / f"eval-{attempt}")
        both_saw_it_missing = threading.Barrier(2, timeout=60)
        lost: list[str] = []  # the creators whose own create Delta failed
        checked: list[str] = []  # the creators that checked the table's columns instead

        def execute(self, _gate=both_saw_it_missing, _lost=lost):  # type: ignore[no-untyped-def]
            _gate.wait()  # both threads are here: each found no table and is about to create it
            try:
                return real_execute(self)
            except Exception:
                _lost.append(threading.current_thread().name)
                raise

        def check(*args, _checked=checked, **kwargs):  # type: ignore[no-untyped-def]
            _checked.append(threading.current_thread().name)
            return real_check(*args, **kwargs)

        monkeypatch.setattr(DeltaTableBuilder, "execute", execute)
        monkeypatch.setattr(write, "_check_columns", check)
        errors: list[BaseException] = []

        def run(run_id: str, _uri=uri, _errors=errors) -> None:  # type: ignore[no-untyped-def]
            try:
                write.commit(_eval_df(spark, run_id), _uri, table="eval_results", mode="append", label=run_id)
            except BaseException as exc:  # noqa: BLE001 - reported below
                _errors.append(exc)

        threads = [threading.Thread(target=run, args=(r,), name=f"creator-{r}") for r in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = [f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}" for e in errors]
        assert failed == [], f"attempt {attempt}: expected both commits to land, got failures"
        assert sorted(r["run_id"] for r in results.read_arrow(uri).to_pylist()) == ["a", "b"]
        if lost:
            break
    assert len(lost) == 1, f"expected one creator whose create lost the race in 5 attempts, got {lost}"
    assert lost[0] in checked, f"expected the losing creator {lost} to check the table it found, got checks by {checked}"


def test_a_table_another_run_created_meanwhile_is_checked_not_taken_for_ours(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Another run creates the table, with other columns, after this one found it missing and before
    its own create: Delta's createIfNotExists then does nothing and raises nothing, so the columns
    must still be checked (a SchemaError here, never a 'created' table that is not ours)."""
    uri = str(tmp_path / "eval")
    real_is_delta = write.is_delta
    seen: list[bool] = []

    def first_look_finds_nothing(spark_, uri_):  # type: ignore[no-untyped-def]
        if not seen:  # the other run creates its table right after this run's first look
            seen.append(real_is_delta(spark_, uri_))
            spark_.createDataFrame([("x",)], "other STRING").write.format("delta").save(uri_)
            return False
        return real_is_delta(spark_, uri_)

    monkeypatch.setattr(write, "is_delta", first_look_finds_nothing)
    with pytest.raises(SchemaError, match=r"table eval_results at .*: expected columns"):
        write.ensure_table(spark, uri, table="eval_results")
    assert seen == [False]


def test_transaction_versions_come_from_the_table_not_a_clock(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two runs of one key: the first driver's clock an hour ahead changes nothing. Both started
    before either committed: the first to commit lands, the other fails; a run started after a
    commit lands."""
    import time as time_mod

    uri = str(tmp_path / "errors")
    d = dt.date(2026, 11, 23)
    real = time_mod.time
    monkeypatch.setattr(time_mod, "time", lambda: real() + 3600)  # driver A's clock, an hour ahead
    a = write.begin(spark, uri, "georank-geotag:2026-11-23")
    monkeypatch.setattr(time_mod, "time", real)
    b = write.begin(spark, uri, "georank-geotag:2026-11-23")
    assert a == b  # the table's version, not a time
    write.commit(_errors_df(spark, [("b", None, "read", "x", "B", d)]), uri, table="gallery_errors", run_date="2026-11-23",
                 mode="replace", txn=b, label="B")
    with pytest.raises(WriteError, match="Delta skipped it"):
        write.commit(_errors_df(spark, [("a", None, "read", "x", "A", d)]), uri, table="gallery_errors",
                     run_date="2026-11-23", mode="replace", txn=a, label="A")
    assert [r["run_id"] for r in results.read_arrow(uri).to_pylist()] == ["B"]
    c = write.begin(spark, uri, "georank-geotag:2026-11-23")  # a rerun started after B committed
    write.commit(_errors_df(spark, [("c", None, "read", "x", "C", d)]), uri, table="gallery_errors", run_date="2026-11-23",
                 mode="replace", txn=c, label="C")
    assert [r["run_id"] for r in results.read_arrow(uri).to_pylist()] == ["C"]


def test_a_table_of_an_older_georank_gets_the_new_columns_in_place(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A results table written before columns were added (e.g. the place names): the next commit
    adds them where the schema declares them, in one commit, null on the old rows (a foreign layout
    still fails: test_existing_table_with_other_columns_is_refused)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    uri = str(tmp_path / "results")
    new = {"country_code", "admin1", "place", "place_dist_km"} & set(S.RESULTS.names)
    older = pa.schema([f for f in S.RESULTS if f.name not in new])
    row = {name: None for name in older.names}
    row.update(photo_id="old", run_id="r0", run_date=dt.date(2026, 11, 1), error_stage="decode", error_reason="x")
    spark.createDataFrame(pa.Table.from_pylist([row], schema=older).to_pylist(), S.spark_schema(older)) \
        .write.format("delta").partitionBy("run_date").save(uri)
    write.ensure_table(spark, uri, table="results")
    got = results.read_arrow(uri)
    assert got.schema.names == S.RESULTS.names
    assert got.to_pylist()[0]["photo_id"] == "old"
    assert all(got.to_pylist()[0][c] is None for c in new)  # null on the older rows
    assert [h["operation"] for h in DeltaTable(uri).history()][0] == "ADD COLUMNS"  # one commit for them all
    assert len(DeltaTable(uri).history()) == 2

"""One schema module: Spark schemas are derived from the Arrow ones and agree with them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from georank import schema as S
from georank.errors import SchemaError


def _bare(t: pa.DataType) -> pa.DataType:
    """The type without field names of list items, metadata or nullability: what Spark keeps."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_bare(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([(t.field(i).name, _bare(t.field(i).type)) for i in range(t.num_fields)])
    return t


_SCHEMAS = {**S.TABLES, **{n: getattr(S, n) for n in dir(S) if n.isupper() and isinstance(getattr(S, n), pa.Schema)}}


@pytest.mark.parametrize("name", sorted(_SCHEMAS))
def test_spark_and_arrow_schemas_agree(name: str) -> None:
    """Exactly: every column's type survives Arrow -> Spark -> Arrow (list and struct types included)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow = _SCHEMAS[name]
    spark = S.spark_schema(arrow)
    back = to_arrow_schema(spark, timezone="UTC")  # Spark timestamps are UTC instants
    assert [f.name for f in back] == arrow.names
    assert [_bare(f.type) for f in back] == [_bare(f.type) for f in arrow]
    for f in spark:
        assert f.metadata["comment"] == S.comment(arrow, f.name) != ""
        assert f.nullable == arrow.field(f.name).nullable


def test_every_column_is_documented() -> None:
    for schema in [*S.TABLES.values(), S.PHOTOS, S.DECODED, S.CANDIDATES]:
        for f in schema:
            assert S.comment(schema, f.name), f"{f.name} has no comment"


def test_versions_and_run_columns_on_predictions() -> None:
    for col in ("model_version", "adapter_version", "index_version", "embed_version", "run_id", "run_date"):
        assert col in S.PREDICTIONS.names
    assert S.PARTITION_BY["results"] == ("run_date",) and S.TABLES["results"] is S.RESULTS


def test_check_batch_says_what_is_wrong() -> None:
    bad = pa.table({"photo_id": ["a"], "uri": [1]})
    with pytest.raises(SchemaError, match=r"missing \['image_bytes'\].*wrong types \['uri: expected string, got int64'\]"):
        S.check_batch(bad, S.PHOTOS, what="photos")

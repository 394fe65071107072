"""Declaring a schema: documented fields, Spark schemas derived from Arrow, checking a batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from georank.errors import SchemaError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql.types import StructType


def _f(name: str, typ: pa.DataType, comment: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable, metadata={"comment": comment})


def comment(schema: pa.Schema, name: str) -> str:
    """The documented comment of a column."""
    md = schema.field(name).metadata or {}
    return md.get(b"comment", b"").decode()


def spark_schema(schema: pa.Schema) -> "StructType":
    """The Spark ``StructType`` of an Arrow schema, with column comments as metadata."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    fields = []
    for f in schema:
        fields.append(
            StructField(
                f.name,
                from_arrow_type(f.type),
                nullable=f.nullable,
                metadata={"comment": comment(schema, f.name)},
            )
        )
    return StructType(fields)


def check_batch(batch: pa.RecordBatch | pa.Table, schema: pa.Schema, *, what: str) -> None:
    """Raise :class:`SchemaError` unless ``batch`` has exactly the columns and types of ``schema``."""
    got = [(f.name, f.type) for f in batch.schema]
    want = [(f.name, f.type) for f in schema]
    if got != want:
        missing = [n for n, _ in want if n not in dict(got)]
        extra = [n for n, _ in got if n not in dict(want)]
        wrong = [f"{n}: expected {t}, got {dict(got)[n]}" for n, t in want if n in dict(got) and dict(got)[n] != t]
        raise SchemaError(
            f"{what}: columns do not match the declared schema; missing {missing}, unexpected {extra}, "
            f"wrong types {wrong}"
        )



"""The gallery index and retrieval (georank.index, georank.retrieve)."""

from __future__ import annotations

import pyarrow as pa

from georank.schema.base import _f

# --- Gallery index and retrieval (georank.index, georank.retrieve) ---------------------------------

GALLERY_PREPARED = pa.schema(
    [
        _f("gallery_id", pa.int64(), "Gallery id (null when the input row had none: an error row)"),
        _f("uri", pa.string(), "Image location as given in the gallery table"),
        _f("lat_deg", pa.float64(), "Latitude, WGS-84 degrees"),
        _f("lon_deg", pa.float64(), "Longitude, WGS-84 degrees"),
        _f("description", pa.string(), "City, state, country, blanks dropped (georank.places.describe)"),
        _f("embedding", pa.list_(pa.float32()), "L2-normalised embedding (null on error rows)"),
        _f("embed_version", pa.string(), "Embedder version that produced the vector"),
        _f("shard", pa.int32(), "Index shard that holds the row (georank.index.shard_of)"),
        _f("error_stage", pa.string(), "Stage that failed (null when the row was embedded)"),
        _f("error_reason", pa.string(), "Why the row failed, in words (null when it was embedded)"),
    ]
)

SHARD_META = pa.schema(
    [
        _f("gallery_id", pa.int64(), "FAISS id of the vector; rows sorted by it, unique", nullable=False),
        _f("lat_deg", pa.float64(), "Latitude, WGS-84 degrees"),
        _f("lon_deg", pa.float64(), "Longitude, WGS-84 degrees"),
        _f("description", pa.string(), "City, state, country, blanks dropped"),
        _f("image_uri", pa.string(), "Gallery image (null when the gallery held the bytes inline)"),
    ]
)

# What the index build's executors return for each shard they wrote (georank.spark.index_job): one
# row per shard, the manifest's entry for it (georank.index.ShardEntry, field for field).
SHARD_ENTRY = pa.schema(
    [
        _f("shard", pa.int32(), "Index shard number (georank.index.shard_of)"),
        _f("index_file", pa.string(), "The shard's FAISS file, relative to the index URI"),
        _f("meta_file", pa.string(), "The shard's metadata Parquet file (SHARD_META), relative to the index URI"),
        _f("ntotal", pa.int64(), "Vectors in the shard"),
        _f("sha256", pa.string(), "sha256 of the FAISS file, hex"),
        _f("meta_sha256", pa.string(), "sha256 of the metadata Parquet file, hex"),
    ]
)

# Sharded placement's embed stage (georank.spark.geotag): one row per photo, an embedding or an error.
EMBEDDED = pa.schema(
    [
        _f("photo_id", pa.string(), "Query photo id", nullable=False),
        _f("embedding", pa.list_(pa.float32()), "L2-normalised query embedding (null on an error row)"),
        _f("embed_version", pa.string(), "Embedder version that produced the vector"),
        _f("error_stage", pa.string(), "read, decode or embed when the photo failed there (sharded geotag), else null"),
        _f("error_reason", pa.string(), "Why, in words (null when embedded)"),
    ]
)

NEIGHBOURS = pa.schema(
    [
        _f("photo_id", pa.string(), "Query photo id", nullable=False),
        _f("gallery_id", pa.list_(pa.int64()), "Retrieved gallery ids, best first (k)"),
        _f("similarity", pa.list_(pa.float32()), "Inner products with the query, best first (k)"),
        _f("lat_deg", pa.list_(pa.float64()), "Neighbour latitudes, degrees (k)"),
        _f("lon_deg", pa.list_(pa.float64()), "Neighbour longitudes, degrees (k)"),
        _f("description", pa.list_(pa.string()), "Neighbour place descriptions (k)"),
        _f("image_uri", pa.list_(pa.string()), "Neighbour gallery images (k)"),
        _f("index_version", pa.string(), "Gallery index version (manifest) searched"),
    ]
)



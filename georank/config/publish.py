"""Config section of the publish job (``jobs/publish.py``): thresholds and the catalogue's column names."""

from __future__ import annotations

from pydantic import Field

from georank.config.base import _Section


class PublishConfig(_Section):
    """Handing the latest predictions back into the catalogue's location columns (one Delta MERGE,
    georank.spark.publish). A prediction is published when confidence >= min_confidence and, when
    max_spread_km is set, spread_km <= max_spread_km (a null confidence or spread never passes)."""

    min_confidence: float = Field(0.5, ge=0, le=1)  # --min-confidence; the prediction's confidence must be at least this
    max_spread_km: float | None = Field(None, ge=0)  # --max-spread-km; null: no limit on the candidates' spread
    # The catalogue's id, location and source columns are input.catalogue.id_column, lat_column,
    # lon_column and source_column (one name each, shared with jobs/geotag.py --catalogue). A
    # location is set when either column is non-null; georank's are those whose source is 'georank'.
    # Provenance columns georank fills with each location it publishes; the catalogue must hold them
    # (the job names the missing ones with the ALTER TABLE that adds them).
    confidence_column: str = "location_confidence"  # DOUBLE: the prediction's confidence [0, 1]
    spread_column: str = "location_spread_km"  # DOUBLE: the prediction's spread_km
    run_id_column: str = "location_run_id"  # STRING: the geotag run that predicted it
    run_date_column: str = "location_run_date"  # DATE: its run date (orders georank's answers: newer replaces older)
    # STRUCT<model_version, adapter_version, embed_version, index_version: STRING>: the versions behind it
    versions_column: str = "location_versions"

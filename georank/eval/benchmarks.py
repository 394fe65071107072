"""Benchmark and gallery files in the layouts their publishers release, read into georank's frames.

- **IM2GPS3K** ``im2gps3k_places365.csv``: ``IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,
  Prob_indoor,Prob_natural,Prob_urban`` (2,997 rows). One early copy swapped the LAT/LON header:
  a file whose coordinates look swapped is refused, naming the row (any ``|LAT| > 90``, or the
  Bermuda photo found at (-64.8, 32.3) instead of (32.3, -64.8)).
- **csv** (YFCC4K ``yfcc25600_places365.csv`` filtered to the benchmark ids, or any file with an
  id, a latitude and a longitude column): column names from ``evaluate.columns``.
- **reference**: the GeoRanker reference's own ``im2gps3k.csv`` / ``yfcc4k.csv``: the metadata
  columns plus precomputed candidates as Python-literal strings (``candidate_gps_lis``,
  ``candidate_text_lis``, ``candidate_img_lis``, ``zs_gps_lis``), parsed with
  :func:`ast.literal_eval` (never ``eval``; a bare ``nan`` becomes null). Failed generated answers
  appear there as ``(0.0, 0.0)``: dropped or kept by ``evaluate.reference_zero_gps``, counted.
- **MP16-Pro** gallery metadata: ``IMG_ID,LAT,LON,neighbourhood,city,county,state,region,country,
  continent`` -> a GALLERY table whose image URIs come from a template (e.g. ``tar://...#{img_id}``).

Every problem raises :class:`~georank.errors.InputError` naming the file, the row (1-based data
row, the header not counted) and what was expected. Runs on the driver.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from georank import schema as S
from georank.config import EvaluateConfig, S3Config
from georank.errors import InputError
from georank.geo import geodesic_km
from georank.places import describe

log = logging.getLogger(__name__)

IM2GPS3K_HEADER = (
    "IMG_ID", "AUTHOR", "LAT", "LON", "S3_Label", "S16_Label", "S365_Label", "Prob_indoor", "Prob_natural", "Prob_urban",
)
REFERENCE_LISTS = ("candidate_gps_lis", "candidate_text_lis", "candidate_img_lis", "zs_gps_lis")
MP16_HEADER = ("IMG_ID", "LAT", "LON", "neighbourhood", "city", "county", "state", "region", "country", "continent")
BERMUDA_LATLON_DEG = (32.3, -64.8)  # IM2GPS3K holds a photo here; seen at (-64.8, 32.3) the columns are swapped
_SWAP_CHECK_KM = 100.0


@dataclass
class Benchmark:
    """A benchmark read from its file: truth (BENCHMARK) and, for the reference layout, its candidates."""

    name: str  # the file's stem, e.g. im2gps3k_places365
    layout: str  # im2gps3k | csv | reference
    truth: pa.Table  # schema.BENCHMARK, in file order
    reference: pa.Table | None = None  # schema.REFERENCE_CANDIDATES (reference layout only), same order
    counts: dict[str, int] = field(default_factory=dict)  # rows, zero_gps_seen, zero_gps_dropped, ...


def _read_text(uri: str, s3: S3Config | None) -> str:
    from georank.io import read_bytes

    data = read_bytes(uri, s3 or S3Config()) if "://" in uri else Path(uri).read_bytes()
    return data.decode("utf-8-sig")


def _rows(text: str, where: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise InputError(f"{where}: expected a CSV with a header row, got an empty file")
    reader.fieldnames = header
    return header, list(reader)


def _need(header: list[str], cols: tuple[str, ...] | list[str], where: str, layout: str) -> None:
    missing = [c for c in cols if c not in header]
    if missing:
        raise InputError(f"{where}: expected the {layout} columns {list(cols)}, missing {missing}; got header {header}")


def _number(value: str | None, col: str, i: int, where: str) -> float:
    try:
        return float(value if value is not None else "")
    except ValueError:
        raise InputError(f"{where}, row {i}: expected a number in {col}, got {value!r}") from None


def _check_coords(lat: list[float], lon: list[float], ids: list[str], where: str, lat_col: str, lon_col: str) -> None:
    for i, (a, b, pid) in enumerate(zip(lat, lon, ids), start=1):
        if not -90.0 <= a <= 90.0:
            raise InputError(
                f"{where}, row {i} ({pid}): {lat_col}={a} is outside [-90, 90] ({lon_col}={b}); expected latitude in "
                f"{lat_col} and longitude in {lon_col}: the columns look swapped"
            )
        if not -180.0 <= b <= 180.0:
            raise InputError(f"{where}, row {i} ({pid}): expected {lon_col} in [-180, 180], got {b}")


def _check_bermuda(lat: list[float], lon: list[float], ids: list[str], where: str) -> None:
    """The known Bermuda row: refuse a file that has it at (-64.8, 32.3) and nothing near (32.3, -64.8)."""
    b_lat, b_lon = BERMUDA_LATLON_DEG
    near = [i for i, (a, b) in enumerate(zip(lat, lon)) if abs(a - b_lat) < 2 and abs(b - b_lon) < 2]
    if any(geodesic_km(lat[i], lon[i], b_lat, b_lon) < _SWAP_CHECK_KM for i in near):
        return
    for i, (a, b) in enumerate(zip(lat, lon)):
        if abs(a - b_lon) < 2 and abs(b - b_lat) < 2 and geodesic_km(a, b, b_lon, b_lat) < _SWAP_CHECK_KM:
            raise InputError(
                f"{where}, row {i + 1} ({ids[i]}): LAT={a}, LON={b} is the Bermuda photo with its coordinates swapped "
                f"(expected about LAT={b_lat}, LON={b_lon}); this copy has the LAT/LON header swapped"
            )


def _image_name(photo_id: str, ext: str) -> str:
    return photo_id if Path(photo_id).suffix else photo_id + ext


def _truth(ids: list[str], lat: list[float], lon: list[float], ext: str, where: str) -> pa.Table:
    seen: dict[str, int] = {}
    for i, pid in enumerate(ids, start=1):
        if not pid.strip():
            raise InputError(f"{where}, row {i}: expected a photo id, got an empty one")
        if pid in seen:
            raise InputError(f"{where}, row {i}: photo id {pid!r} repeats row {seen[pid]}; expected unique ids")
        seen[pid] = i
    return pa.table(
        {"photo_id": ids, "image": [_image_name(p, ext) for p in ids], "lat_deg": lat, "lon_deg": lon}, schema=S.BENCHMARK
    )


def _layout(header: list[str], cfg: EvaluateConfig) -> str:
    if cfg.benchmark_format != "auto":
        return cfg.benchmark_format
    if "candidate_gps_lis" in header:
        return "reference"
    if tuple(header[: len(IM2GPS3K_HEADER)]) == IM2GPS3K_HEADER:
        return "im2gps3k"
    return "csv"


def read_benchmark(uri: str, cfg: EvaluateConfig, s3: S3Config | None = None) -> Benchmark:
    """Read a benchmark file (local path or ``s3://``) in the layout ``cfg.benchmark_format`` (or
    detected from the header). Rows keep the file's order; ``cfg.max_photos`` keeps the first N."""
    where = f"benchmark {uri}"
    header, rows = _rows(_read_text(uri, s3), where)
    layout = _layout(header, cfg)
    if layout in ("im2gps3k", "reference"):
        id_col, lat_col, lon_col = "IMG_ID", "LAT", "LON"
        _need(header, ["IMG_ID", "LAT", "LON"] + (list(REFERENCE_LISTS[:2]) if layout == "reference" else []), where, layout)
    else:
        id_col, lat_col, lon_col = cfg.columns.id, cfg.columns.lat, cfg.columns.lon
        _need(header, [id_col, lat_col, lon_col], where, "csv (evaluate.columns)")
    if cfg.max_photos is not None:
        rows = rows[: cfg.max_photos]
    ids = [(r.get(id_col) or "").strip() for r in rows]
    lat = [_number(r.get(lat_col), lat_col, i, where) for i, r in enumerate(rows, start=1)]
    lon = [_number(r.get(lon_col), lon_col, i, where) for i, r in enumerate(rows, start=1)]
    _check_coords(lat, lon, ids, where, lat_col, lon_col)
    if layout in ("im2gps3k", "reference"):
        _check_bermuda(lat, lon, ids, where)
    bench = Benchmark(Path(uri).stem, layout, _truth(ids, lat, lon, cfg.image_ext, where), counts={"rows": len(rows)})
    if layout == "reference":
        bench.reference, counts = _reference(rows, ids, cfg, where)
        bench.counts.update(counts)
    log.info("%s: %d rows, layout %s %s", where, len(rows), layout, bench.counts)
    return bench


# ----------------------------------------------------------------------------- reference literals


class _NanToNone(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> Any:
        if node.id == "nan":
            return ast.copy_location(ast.Constant(None), node)
        return node


def parse_literal(text: str | None, *, col: str, row: int, where: str) -> Any:
    """A Python-literal string (the reference's list columns) with :func:`ast.literal_eval`; a bare
    ``nan`` (pandas' repr of a missing place) becomes ``None``. Never ``eval``."""
    if text is None or not text.strip():
        return []
    try:
        tree = _NanToNone().visit(ast.parse(text.strip(), mode="eval"))
        return ast.literal_eval(tree.body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise InputError(
            f"{where}, row {row}: expected a Python literal list in {col}, got {text[:80]!r} ({exc.__class__.__name__})"
        ) from None


def _pairs(value: Any, col: str, row: int, where: str) -> list[tuple[float, float]]:
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{where}, row {row}: expected a list of (lat, lon) in {col}, got {type(value).__name__}")
    out = []
    for j, p in enumerate(value):
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
        ):
            raise InputError(f"{where}, row {row}: expected (lat, lon) numbers at {col}[{j}], got {p!r}")
        out.append((float(p[0]), float(p[1])))
    return out


def _description(text: Any, row: int, j: int, where: str) -> str:
    """city, state, country of one candidate_text_lis entry (neighbourhood, city, county, state, region, country)."""
    if not isinstance(text, (list, tuple)) or len(text) != 6:
        raise InputError(
            f"{where}, row {row}: expected 6 place strings (neighbourhood, city, county, state, region, country) "
            f"at candidate_text_lis[{j}], got {text!r}"
        )
    return describe(text[1], text[3], text[5])


def _reference(rows: list[dict[str, str]], ids: list[str], cfg: EvaluateConfig, where: str) -> tuple[pa.Table, dict[str, int]]:
    out: dict[str, list[Any]] = {name: [] for name in S.REFERENCE_CANDIDATES.names}
    zero_seen = zero_dropped = 0
    for i, (r, pid) in enumerate(zip(rows, ids), start=1):
        gps = _pairs(parse_literal(r.get("candidate_gps_lis"), col="candidate_gps_lis", row=i, where=where), "candidate_gps_lis", i, where)
        texts = parse_literal(r.get("candidate_text_lis"), col="candidate_text_lis", row=i, where=where)
        if not isinstance(texts, (list, tuple)) or len(texts) != len(gps):
            got = len(texts) if isinstance(texts, (list, tuple)) else type(texts).__name__
            raise InputError(f"{where}, row {i}: expected {len(gps)} entries in candidate_text_lis (one per candidate), got {got}")
        imgs = parse_literal(r.get("candidate_img_lis"), col="candidate_img_lis", row=i, where=where) if "candidate_img_lis" in r else []
        if imgs and (not isinstance(imgs, (list, tuple)) or len(imgs) != len(gps)):
            raise InputError(f"{where}, row {i}: expected {len(gps)} image ids in candidate_img_lis, got {imgs!r:.80}")
        gen = _pairs(parse_literal(r.get("zs_gps_lis"), col="zs_gps_lis", row=i, where=where), "zs_gps_lis", i, where)
        zeros = sum(1 for p in gen if p == (0.0, 0.0))
        zero_seen += zeros
        if cfg.reference_zero_gps == "drop":
            gen = [p for p in gen if p != (0.0, 0.0)]
            zero_dropped += zeros
        out["photo_id"].append(pid)
        out["cand_lat_deg"].append([p[0] for p in gps])
        out["cand_lon_deg"].append([p[1] for p in gps])
        out["cand_description"].append([_description(t, i, j, where) for j, t in enumerate(texts)])
        out["cand_img_id"].append([None if x is None else str(x) for x in imgs] if imgs else [None] * len(gps))
        out["gen_lat_deg"].append([p[0] for p in gen])
        out["gen_lon_deg"].append([p[1] for p in gen])
        out["gen_zero_count"].append(zeros)
    counts = {"zero_gps_seen": zero_seen, "zero_gps_dropped": zero_dropped, "zero_gps_kept": zero_seen - zero_dropped}
    return pa.table(out, schema=S.REFERENCE_CANDIDATES), counts


# ----------------------------------------------------------------------------- MP16-Pro gallery


def stable_gallery_id(img_id: str) -> int:
    """A stable non-negative 63-bit id of an MP16-Pro ``IMG_ID`` (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(img_id.encode("utf-8")).digest()[:8], "big") & ((1 << 63) - 1)


def read_mp16(uri: str, *, image_uri_template: str, s3: S3Config | None = None) -> pa.Table:
    """MP16-Pro metadata CSV -> a GALLERY table. ``image_uri_template`` names each image with
    ``{img_id}``, e.g. ``tar:///data/mp-16-images.tar#{img_id}``. Repeated ids or ids that
    collide on their 63-bit hash are refused."""
    where = f"MP16-Pro metadata {uri}"
    if "{img_id}" not in image_uri_template:
        raise InputError(f"{where}: expected an image URI template containing {{img_id}}, got {image_uri_template!r}")
    header, rows = _rows(_read_text(uri, s3), where)
    _need(header, MP16_HEADER, where, "MP16-Pro")
    ids = [(r.get("IMG_ID") or "").strip() for r in rows]
    lat = [_number(r.get("LAT"), "LAT", i, where) for i, r in enumerate(rows, start=1)]
    lon = [_number(r.get("LON"), "LON", i, where) for i, r in enumerate(rows, start=1)]
    _check_coords(lat, lon, ids, where, "LAT", "LON")
    gids: dict[int, int] = {}
    for i, pid in enumerate(ids, start=1):
        g = stable_gallery_id(pid)
        if g in gids:
            raise InputError(f"{where}, row {i}: IMG_ID {pid!r} repeats (or collides with) row {gids[g]}; expected unique ids")
        gids[g] = i
    cols: dict[str, Any] = {
        "gallery_id": list(gids),
        "uri": [image_uri_template.format(img_id=p) for p in ids],
        "image_bytes": [None] * len(ids),
        "lat_deg": lat,
        "lon_deg": lon,
    }
    for p in S.PLACE_FIELDS:
        cols[p] = [(r.get(p) or "").strip() or None for r in rows]
    return pa.table(cols, schema=S.GALLERY)


__all__ = ["Benchmark", "parse_literal", "prepare_mp16_gallery", "read_benchmark", "read_mp16", "stable_gallery_id"]


def prepare_mp16_gallery(cfg: Any, *, metadata_uri: str, tar_uri: str, member_prefix: str = "", reindex: bool = False) -> dict[str, Any]:
    """Index ``tar_uri`` once (its index is reused while the archive is unchanged, unless ``reindex``:
    georank.storage.tar.ensure_tar_index) and write the MP16-Pro gallery table (schema.GALLERY, tar:// image
    URIs) to ``tables.gallery`` as Parquet. Checks that every IMG_ID is a member of the archive;
    returns counts for the job summary. Runs on the driver."""
    import pyarrow.parquet as pq

    from georank.storage.tar import ensure_tar_index, get_index

    tar = cfg.resolve(tar_uri)
    indexed = ensure_tar_index(tar, cfg.s3, force=reindex)
    template = f"tar://{tar}#{member_prefix}{{img_id}}"
    gallery = read_mp16(cfg.resolve(metadata_uri), image_uri_template=template, s3=cfg.s3)
    index = get_index(tar, cfg.s3)
    absent = [u for u in gallery.column("uri").to_pylist() if index.find(u.partition("#")[2]) is None]
    if absent:
        raise InputError(f"MP16-Pro: {len(absent)} of {gallery.num_rows} images are not members of {tar}, e.g. {absent[:3]}; "
                         "expected every IMG_ID in the archive (check --member-prefix)")
    out = cfg.resolve(cfg.tables.gallery)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(gallery, out)
    return {"gallery": out, "gallery_rows": gallery.num_rows, "tar_index": indexed.index_uri, "tar_members": indexed.members,
            "tar_scanned": indexed.scanned, "tar_index_reason": indexed.reason}

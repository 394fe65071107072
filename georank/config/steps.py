"""Config sections of the nightly pipeline's steps: input, decode, embed, index, retrieve, candidates, rank, skip, decide."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from georank.config.base import Device, DType, _Section


class CatalogueConfig(_Section):
    """Nightly on a catalogue (``jobs/geotag.py --catalogue``): the night's photos are the catalogue's
    rows without a location and without a prediction (or a lasting error) from the current
    versions in the results table; see docs/tables.md "Nightly on a catalogue" and georank.spark.catalogue."""

    uri: str | None = None  # the catalogue: a Delta/Parquet table (path or s3a://) or a table name; null: no catalogue
    id_column: str = "photo_id"  # the photo's id (unique in the catalogue); the results' photo_id
    image_uri_column: str | None = "uri"  # where each image is (path, file:// or s3://); null: bytes only
    image_bytes_column: str | None = None  # the encoded image inline; null: uris only (one of the two is needed)
    lat_column: str = "lat_deg"  # the catalogue's latitude (WGS-84 degrees); null (or lon null): no location
    lon_column: str = "lon_deg"  # the catalogue's longitude (WGS-84 degrees)
    order_column: str | None = None  # oldest first by this column (e.g. an upload time); null: by id
    # Where the catalogue says who set its location (jobs/publish.py writes 'georank' there):
    # --regeotag older also retakes located photos whose location georank set; null or absent: none.
    source_column: str | None = "location_source"
    max_photos_per_night: int | None = Field(None, ge=1)  # the night's budget (--max-photos); null: every photo due
    max_attempts: int = Field(3, ge=1)  # nights a transiently failed photo (unreachable, denied) is tried with one set of versions
    # off: only photos never predicted; older: then, within the budget, photos whose newest prediction
    # came from older versions (model, adapter, embedder, index) than the current ones.
    regeotag: Literal["off", "older"] = "off"

    @model_validator(mode="after")
    def _one_image_column(self) -> "CatalogueConfig":
        if not (self.image_uri_column or self.image_bytes_column):
            raise ValueError("expected input.catalogue.image_uri_column or image_bytes_column, got neither")
        return self


class InputConfig(_Section):
    """Where the night's photos come from and how they are partitioned."""

    # a Delta/Parquet table, a folder of images or s3://bucket/prefix; may hold {run_date} (YYYY-MM-DD)
    photos: str = "demo/queries"
    catalogue: CatalogueConfig = Field(default_factory=CatalogueConfig)  # jobs/geotag.py --catalogue
    photos_per_partition: int = Field(64, ge=1)  # photos per Spark task (one partition)
    # Photos per Arrow batch through decode and geotag: a task holds one batch of decoded pixels
    # at a time, so its memory is bounded whatever the partition size.
    photos_per_batch: int = Field(32, ge=1)
    duplicate_ids: Literal["error_row", "fail"] = "error_row"  # what a repeated photo id becomes
    # Seconds between the driver's progress lines (done / total, photos/s, ETA, errors) of the
    # geotag and index build jobs (georank.spark.progress).
    progress_interval_s: float = Field(30.0, gt=0)


class DecodeConfig(_Section):
    """CPU decode stage: limits applied before any model sees a photo."""

    max_bytes: int = Field(64 * 1024 * 1024, ge=1)  # larger files are refused
    max_pixels: int = Field(40_000_000, ge=1)  # decompression-bomb cap (width*height)
    # Longest side after decoding (downscaled): THE image cap, for every stage (embedder, ranker,
    # generator); rank.max_pixels is the ranker's budget within it. null: native size (the
    # reference: then rank.max_pixels alone bounds what the model sees; mind decode.max_pixels).
    max_side_px: int | None = Field(1024, ge=28)
    min_side_px: int = Field(2, ge=1)  # a shorter side (after the shrink) is refused
    # The one aspect-ratio limit, checked after the shrink. At most 200: Qwen2-VL's image
    # processor refuses more, so whatever passes here can be ranked.
    max_aspect_ratio: float = Field(200.0, gt=1, le=200)
    exif_orientation: bool = True  # turn the photo upright by its EXIF orientation; false: stored pixels (the reference)
    # Transparent pixels: composite onto white, or drop the alpha channel as convert("RGB") does (the reference).
    alpha: Literal["composite", "drop"] = "composite"


class EmbedConfig(_Section):
    """The CLIP-family image encoder used for queries and the gallery."""

    model_uri: str = "demo/models/clip"  # local path or s3:// of a from_pretrained directory
    heads_uri: str | None = None  # G3 variant: safetensors with the two 768->768->768 MLP heads
    kind: Literal["clip", "g3"] = "clip"  # clip: projection only; g3: [proj, text head, gps head]
    image_size: int = Field(224, ge=8)  # resize shortest side + centre crop
    batch_size: int = Field(32, ge=1)  # images per embedder forward pass
    device: Device = "cpu"  # cuda: the executor's GPU (spark.gpu) or the host's
    dtype: DType = "float32"  # weights and activations


class IndexConfig(_Section):
    """The sharded FAISS gallery index."""

    uri: str = "demo/index"  # folder or s3:// prefix holding manifest.json and shards
    # flat = exact IndexFlatIP; ivfflat = IVF over full vectors (exact scores in the nprobe probed
    # cells); ivfpq = IVF-PQ alone (approximate scores); ivfpq_refine = IVF-PQ shortlist of
    # k * k_factor, re-ranked by exact inner product (IndexRefineFlat)
    type: Literal["flat", "ivfflat", "ivfpq", "ivfpq_refine"] = "flat"
    shards: int = Field(2, ge=1)  # index shards (gallery rows hashed by id), built in parallel
    nlist: int = Field(1024, ge=1)  # IVF cells (ivfflat, ivfpq, ivfpq_refine)
    pq_m: int = Field(64, ge=1)  # PQ sub-quantisers (ivfpq, ivfpq_refine); must divide the embedding dim
    pq_bits: int = Field(8, ge=1, le=16)  # bits per PQ code (ivfpq, ivfpq_refine)
    nprobe: int = Field(32, ge=1)  # IVF cells searched per query (ivf types): more = higher recall, slower
    k_factor: int = Field(8, ge=1)  # ivfpq_refine: the IVF-PQ shortlist holds k * k_factor ids before the exact re-rank
    device: Device = "cpu"  # cuda: search shards on the GPU (faiss.index_cpu_to_gpu; needs faiss built with GPU support)
    placement: Literal["replicated", "sharded"] = "replicated"  # all shards per executor, or one task per shard


class RetrieveConfig(_Section):
    """Nearest-neighbour retrieval for each query."""

    k: int = Field(20, ge=1)  # neighbours retrieved (reference: 20)
    negatives_from: int = Field(15, ge=0)  # 0-based: neighbours [15, 20) are the five negatives
    negatives_count: int = Field(5, ge=0)  # how many negatives the prompt names (0: none)


class GeneratedConfig(_Section):
    """Candidates a vision-language model proposes (JSON prompt); see georank.candidates."""

    enabled: bool = False  # true: add the VLM's proposed locations (model_uri, else the ranker's base) as candidates
    n: int = Field(3, ge=0)  # valid answers kept as candidates; README of the reference: 3; its evaluate script: 5
    samples: int = Field(5, ge=1)  # answers sampled per photo (one generate call per batch); the reference: 10
    temperature: float = Field(1.2, ge=0)  # sampling temperature (the reference: 1.2); 0 = greedy, one answer
    seed: int = 0  # sampling seed: the same photos and seed give the same answers
    max_new_tokens: int = Field(48, ge=4)  # an answer longer than this is cut (then usually unparsable)
    prompt: Literal["seed", "reference"] = "seed"  # seed: Appendix A's JSON prompt; reference: its longer variant
    model_uri: str | None = None  # null: the ranker's base model, adapter off (one copy of weights); or a Qwen2-VL dir


class PrototypeConfig(_Section):
    """Learned geographic-cell prototypes as extra retrieval keys (Lindenberger et al. 2025)."""

    enabled: bool = False  # needs the prototypes' index at uri (jobs/build_cells.py)
    uri: str | None = "demo/cells"  # folder or s3:// prefix of the prototypes' index (jobs/build_cells.py)
    k: int = Field(3, ge=0)  # top prototypes (by inner product with the query) kept as candidates
    start_level: int = Field(4, ge=0, le=15)  # S2 level every cell starts from
    max_level: int = Field(15, ge=0, le=15)  # finest S2 level a crowded cell is split down to
    max_photos_per_cell: int = Field(50, ge=1)  # a cell holding more gallery photos is split (until max_level)
    epochs: int = Field(60, ge=1)  # training epochs of the proxy classifier (cosine-softmax linear; its weights are the prototypes)
    learning_rate: float = Field(0.05, gt=0)  # AdamW
    logit_scale: float = Field(16.0, gt=0)  # cosine-softmax scale of the proxy classifier
    seed: int = 0  # classifier initialisation
    aerial_uri: str | None = None  # Parquet table (cell_token at S2 level 16, embedding): aerial keys; null: none
    kappa: float = Field(1.0, ge=0)  # aerial key = l2norm(z_aerial + kappa * z_prototype of the enclosing cell)


class CandidatesConfig(_Section):
    retrieved: int = Field(12, ge=1)  # reference README: 12; its evaluate script: 10
    generated: GeneratedConfig = Field(default_factory=GeneratedConfig)
    prototypes: PrototypeConfig = Field(default_factory=PrototypeConfig)


class RankConfig(_Section):
    """The GeoRanker scorer: Qwen2-VL + LoRA + score head."""

    base_model_uri: str = "demo/models/ranker/base"  # from_pretrained directory (local or s3://)
    adapter_uri: str = "demo/models/ranker/adapter"  # PEFT directory with the score head inside
    device: Device = "cpu"  # cuda: the executor's GPU (spark.gpu) or the host's
    dtype: DType = "float32"  # the published checkpoint runs in bfloat16
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"  # attention kernel (flash_attention_2 needs the package and a GPU)
    shared_prefix: bool = True  # score candidates against one cached prefix per photo
    photos_per_batch: int = Field(4, ge=1)  # query photos ranked together (one rank batch; its candidate images live only for it)
    candidates_per_batch: int = Field(16, ge=1)  # candidates scored per forward pass against one cached prefix
    min_pixels: int = Field(4 * 28 * 28, ge=28 * 28)  # smallest image the ranker's processor lets through (upscaled to it)
    # The ranker's token budget (reference: 16384 x 28 x 28), WITHIN decode.max_side_px, which caps what
    # every stage sees: a value set above max_side_px^2 could never bind and is refused at load.
    max_pixels: int = Field(16384 * 28 * 28, ge=28 * 28)  # lower it for throughput
    candidate_jpeg_quality: int | None = Field(75, ge=1, le=100)  # reference re-encodes candidates as JPEG q75
    # Per-worker cache of candidate (gallery) images' vision-tower output, in MB of tensors on rank.device
    # (shared-prefix path; scores equal the uncached path within 1e-5 fp32); 0 = off, every candidate's pixels
    feature_cache_mb: int = Field(512, ge=0)
    # Ablations of the seed's Table 5 (evaluate only; all true = the reference prompt, byte for byte):
    prompt_negatives: bool = True  # false: no "Negative examples: ..." text ("w/o negatives")
    prompt_descriptions: bool = True  # false: no place description, in the question or the negatives ("w/o descriptions")
    prompt_candidate_image: bool = True  # false: the candidate's gallery image is left out ("w/o candidate image")


class SkipConfig(_Section):
    """Skip the ranker when the retrieved neighbours already agree."""

    enabled: bool = True  # false: every photo is ranked
    spread_km: float = Field(25.0, ge=0)  # median geodesic distance of the top-k to their centre
    top_k: int = Field(5, ge=1)  # how many top neighbours must agree
    take: Literal["top1", "centre"] = "top1"  # the prediction when skipped


class DecideConfig(_Section):
    confidence_radius_km: float = Field(25.0, gt=0)  # softmax mass within this radius of the winner
    top_candidates: int = Field(5, ge=1)  # candidates kept in the predictions row



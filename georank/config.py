"""The one typed config of georank.

Loaded once on the driver from ``conf/*.yaml``, overridden from the command line
with ``--set section.key=value`` (the value is parsed as YAML, so ``3`` is an int
and ``[1, 2]`` a list), and validated before any Spark work starts. A wrong key or
value raises :class:`~georank.errors.ConfigError` naming the dotted key and the
valid choices, never later inside an executor.

Executors receive the validated config as a plain ``dict`` (``cfg.model_dump()``)
and rebuild it with :meth:`GeorankConfig.model_validate`; nothing else is
pickled into closures.

Relative paths in the config (``tables.*``, ``*_uri``, ``demo.root``...) are
resolved against the project root (:func:`project_home`), so a job behaves the
same whatever directory it is launched from and wherever its config file lives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from georank.errors import ConfigError

Device = Literal["cpu", "cuda"]
DType = Literal["float32", "bfloat16", "float16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class GpuConfig(_Section):
    """How GPU stages ask Spark for accelerators (stage-level resource profile)."""

    enabled: bool = False  # ask for GPUs in the accelerator stage's ResourceProfile
    executor_amount: int = Field(1, ge=1)  # spark.executor.resource.gpu.amount
    task_amount: float = Field(1.0, gt=0, le=1)  # GPUs per task (1.0 = one task per GPU)
    discovery_script: str = "scripts/gpu_discovery.sh"  # shipped: pyspark's wheel has none


class SparkConfig(_Section):
    """The Spark session the job builds; ``master`` is overridden by spark-submit --master."""

    app_name: str = "georank"
    master: str = "local[*]"
    jars_dir: str = "jars/delta"  # filled by scripts/setup.sh (mvn dependency:copy-dependencies)
    s3a_jars_dir: str = "jars/s3a"  # only needed when a table URI is s3a://
    conf: dict[str, str] = Field(default_factory=dict)  # extra spark.* settings, verbatim
    gpu: GpuConfig = Field(default_factory=GpuConfig)


class TablesConfig(_Section):
    """Output and reference tables, each a URI (local path, file://, s3a://)."""

    # The nightly table: one row per photo per run date (a prediction, or an error with its stage
    # and reason), partitioned by run_date; a run replaces its date in ONE Delta commit.
    results: str = "warehouse/results"
    # When set, the job declares the views <views_schema>.predictions and <views_schema>.errors over
    # the results table in the session's catalog (Hive metastore or Unity Catalog); null: no views.
    views_schema: str | None = None
    gallery: str = "warehouse/gallery"
    gallery_embeddings: str = "warehouse/gallery_embeddings"
    gallery_errors: str = "warehouse/gallery_errors"
    eval_results: str = "warehouse/eval_results"  # evaluate job: accuracy per run, benchmark, method and radius


class WriteConfig(_Section):
    """How a run stages its results and commits them (georank.spark.commit)."""

    # A staging folder left by a crashed run is removed by a later run's start only when the run
    # id's own start time is older than this AND its lease is stale (file times are never used).
    staging_ttl_hours: float = Field(6.0, ge=0)
    lease_refresh_s: float = Field(30.0, gt=0)  # the running driver rewrites its staging lease this often
    lease_timeout_s: float = Field(600.0, gt=0)  # a lease not rewritten for this long belongs to no live run


class S3Config(_Section):
    """S3 access for s3:// inputs and artifacts (boto3). Credentials come from the
    standard AWS chain (env, profile, instance role), never from this file."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 for an S3-protocol server
    region: str = "us-east-1"
    path_style: bool = False  # path-style addressing (needed by most S3-protocol servers)


class InputConfig(_Section):
    """Where the night's photos come from and how they are partitioned."""

    photos: str = "demo/queries"  # a Delta/Parquet table, a folder of images or s3://bucket/prefix
    photos_per_partition: int = Field(64, ge=1)
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
    # Longest side after decoding (downscaled); null: native size (the reference: the ranker's
    # rank.max_pixels alone bounds what the model sees; mind decode.max_pixels then).
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
    batch_size: int = Field(32, ge=1)
    device: Device = "cpu"
    dtype: DType = "float32"


class IndexConfig(_Section):
    """The sharded FAISS gallery index."""

    uri: str = "demo/index"  # folder or s3:// prefix holding manifest.json and shards
    # flat = exact IndexFlatIP; ivfflat = IVF over full vectors (exact scores in the nprobe probed
    # cells); ivfpq = IVF-PQ alone (approximate scores); ivfpq_refine = IVF-PQ shortlist of
    # k * k_factor, re-ranked by exact inner product (IndexRefineFlat)
    type: Literal["flat", "ivfflat", "ivfpq", "ivfpq_refine"] = "flat"
    shards: int = Field(2, ge=1)
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
    negatives_count: int = Field(5, ge=0)


class GeneratedConfig(_Section):
    """Candidates a vision-language model proposes (JSON prompt); see georank.candidates."""

    enabled: bool = False
    n: int = Field(3, ge=0)  # valid answers kept as candidates; README of the reference: 3; its evaluate script: 5
    samples: int = Field(5, ge=1)  # answers sampled per photo (one generate call per batch); the reference: 10
    temperature: float = Field(1.2, ge=0)  # sampling temperature (the reference: 1.2); 0 = greedy, one answer
    seed: int = 0  # sampling seed: the same photos and seed give the same answers
    max_new_tokens: int = Field(48, ge=4)  # an answer longer than this is cut (then usually unparsable)
    prompt: Literal["seed", "reference"] = "seed"  # seed: Appendix A's JSON prompt; reference: its longer variant
    model_uri: str | None = None  # null: the ranker's base model, adapter off (one copy of weights); or a Qwen2-VL dir


class PrototypeConfig(_Section):
    """Learned geographic-cell prototypes as extra retrieval keys (Lindenberger et al. 2025)."""

    enabled: bool = False
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
    device: Device = "cpu"
    dtype: DType = "float32"  # the published checkpoint runs in bfloat16
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"
    shared_prefix: bool = True  # score candidates against one cached prefix per photo
    photos_per_batch: int = Field(4, ge=1)
    candidates_per_batch: int = Field(16, ge=1)
    min_pixels: int = Field(4 * 28 * 28, ge=28 * 28)
    max_pixels: int = Field(16384 * 28 * 28, ge=28 * 28)  # reference cap; lower it for throughput
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

    enabled: bool = True
    spread_km: float = Field(25.0, ge=0)  # median geodesic distance of the top-k to their centre
    top_k: int = Field(5, ge=1)  # how many top neighbours must agree
    take: Literal["top1", "centre"] = "top1"  # the prediction when skipped


class DecideConfig(_Section):
    confidence_radius_km: float = Field(25.0, gt=0)  # softmax mass within this radius of the winner
    top_candidates: int = Field(5, ge=1)  # candidates kept in the predictions row


class DemoConfig(_Section):
    """The embedded demo world (synthetic photos, tiny models); built if missing."""

    ensure: bool = False  # build demo data, tiny models and index before the job if absent
    root: str = "demo"
    gallery_photos: int = Field(3000, ge=10)
    query_photos: int = Field(200, ge=1)
    seed: int = 0
    # The demo ranker is trained (georank.train.demo) on groups built from the demo GALLERY (never
    # the held-out demo/queries), with the train section's settings; 0 and 0: the random tiny ranker.
    train_warmup_steps: int = Field(0, ge=0)  # stage 1: all weights trainable (stands in for pretraining)
    train_ranker_steps: int = Field(0, ge=0)  # stage 2: LoRA on q/k/v + the score head, as the train job
    train_queries: int = Field(600, ge=1)  # gallery photos sampled as training queries


class TrainLoraConfig(_Section):
    """The LoRA adapter the trainer fits (reference: r=16, alpha=32, dropout 0.05 on q/k/v)."""

    r: int = Field(16, ge=1)  # rank of the LoRA update
    alpha: int = Field(32, ge=1)  # scaling: the update is (alpha / r) * B @ A
    dropout: float = Field(0.05, ge=0, lt=1)  # dropout on the LoRA input
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"])  # language model only


class TrainDistributedConfig(_Section):
    """Several training processes through Spark's TorchDistributor (off: one local process)."""

    enabled: bool = False  # true: jobs/train_ranker.py starts num_processes through TorchDistributor
    num_processes: int = Field(1, ge=1)  # one per GPU on a cluster
    local_mode: bool = True  # processes on the driver (true) or on executors (false)
    use_gpu: bool = False  # NCCL on GPUs; false: gloo on CPU


class TrainConfig(_Section):
    """Training the ranker (jobs/build_training_data.py, jobs/train_ranker.py, georank.train)."""

    # Training groups (Delta, schema.TRAINING_GROUPS) written by build_training_data and read by the trainer.
    data: str = "warehouse/training_groups"
    # A published GeoRanking parquet (img_id, gps, ref_gps, ref_img_id, ref_texts) to train on instead of
    # `data`; images are <georanking_images>/<img_id>. The reference's position-0 skip applies here only.
    georanking: str | None = None  # the GeoRanking parquet (null: build from the gallery)
    georanking_images: str | None = None  # folder or s3:// prefix holding its images
    output_uri: str = "warehouse/ranker/adapter"  # the trained PEFT adapter directory
    checkpoint_dir: str = "warehouse/ranker/checkpoints"  # step-N folders; training resumes from the last
    queries: int | None = Field(None, ge=1)  # gallery photos sampled as queries by build_training_data (null: all)
    # How a query's group is chosen: "retrieved" = its first group_size retrieved neighbours (the
    # reference); "spread" = the nearest gallery photo, then one photo in each of spread_bands_km.
    grouping: Literal["retrieved", "spread"] = "retrieved"
    spread_bands_km: list[tuple[float, float]] = Field(
        default_factory=lambda: [(50.0, 300.0), (500.0, 1500.0), (2000.0, 5000.0), (8000.0, 20100.0)]
    )
    group_size: int = Field(5, ge=2)  # G: candidates per query (reference 5; its README 7)
    top_k: int = Field(1, ge=1)  # K: positions of the Plackett-Luce ranking loss L1
    lam: float = Field(0.7, ge=0, le=1)  # total = lam * L1 + (1 - lam) * L2 (multi-order loss)
    lora: TrainLoraConfig = Field(default_factory=TrainLoraConfig)
    lr: float = Field(1e-4, gt=0)  # AdamW learning rate of the LoRA weights (and the head unless head_lr)
    head_lr: float | None = Field(None, gt=0)  # a separate learning rate for the score head
    warmup_lr: float = Field(1e-3, gt=0)  # all-weights stage (demo only): backbone and head
    weight_decay: float = Field(0.01, ge=0)  # AdamW's decoupled weight decay, on every trained tensor
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # linear LR warm-up share of the steps, then linear decay to 0
    max_grad_norm: float = Field(1.0, gt=0)  # gradient clipping (global L2 norm)
    steps: int = Field(1000, ge=1)  # optimiser steps
    queries_per_step: int = Field(4, ge=1)  # groups per micro-batch (reference: 1 per GPU)
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimiser step
    precision: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast where the GPU supports it
    gradient_checkpointing: bool = False  # recompute decoder activations in backward (less memory)
    checkpoint_every: int = Field(100, ge=1)  # optimiser steps between checkpoints
    keep_checkpoints: int = Field(2, ge=1)  # newest checkpoints kept
    log_every: int = Field(10, ge=1)  # optimiser steps between progress lines
    seed: int = 0  # data order, head init, dropout
    device: Device = "cpu"  # where the trainer runs (cuda: one GPU per process)
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes
    distributed: TrainDistributedConfig = Field(default_factory=TrainDistributedConfig)


class BenchmarkColumnsConfig(_Section):
    """Column names of a benchmark CSV in the plain ``csv`` layout (YFCC4K or any id/lat/lon file)."""

    id: str = "IMG_ID"  # photo id; also the image's file name under --images (evaluate.image_ext added if it has none)
    lat: str = "LAT"  # true latitude, WGS-84 degrees
    lon: str = "LON"  # true longitude, WGS-84 degrees


class EvaluateConfig(_Section):
    """The evaluate job (jobs/evaluate.py): accuracy of every method on a benchmark, same photos, same run."""

    radii_km: list[float] = Field(default_factory=lambda: [1.0, 25.0, 200.0, 750.0, 2500.0])  # strict < at each
    # Benchmark layout: im2gps3k (im2gps3k_places365.csv), csv (id/lat/lon named by evaluate.columns),
    # reference (GeoRanker's own im2gps3k.csv / yfcc4k.csv with precomputed candidates); auto: from the header.
    benchmark_format: Literal["auto", "im2gps3k", "csv", "reference"] = "auto"
    columns: BenchmarkColumnsConfig = Field(default_factory=BenchmarkColumnsConfig)  # for benchmark_format csv
    image_ext: str = ".jpg"  # appended to a photo id without an extension to name its image file
    # (0.0, 0.0) in the reference's zs_gps_lis is a failed answer: drop it (georank) or keep it as a candidate
    # (the reference did); counted in the summary either way.
    reference_zero_gps: Literal["drop", "keep"] = "drop"
    # Gallery image of a reference candidate (candidate_img_lis): a template with {img_id}, e.g.
    # tar://s3://bucket/mp-16-images.tar#{img_id}; null: rank the candidates without their images.
    reference_image_uri: str | None = None
    knn_k: int = Field(100, ge=1)  # [L]kNN: neighbours that vote (Vo et al. 2017: 100)
    knn_sigma_deg: float = Field(4.0, gt=0)  # [L]kNN: Gaussian sigma (1-degree cells; degrees on the fine grid)
    calibration_radius_km: float = Field(25.0, gt=0)  # confidence calibration: accuracy within this radius
    report_dir: str = "warehouse/eval_reports"  # report.md, report.html and plots go to <report_dir>/<run id>/
    max_photos: int | None = Field(None, ge=1)  # evaluate only the first N benchmark rows (smoke runs); null: all
    # Other adapters of the same base model scored on the same photos and candidates: one extra row
    # ``ranker@<name>`` per entry (skip rule off, every enabled source), e.g. {untrained: <adapter dir>}.
    compare_adapters: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")], str] = Field(default_factory=dict)


class GeorankConfig(_Section):

    """The whole config. Sections mirror the pipeline's steps."""

    spark: SparkConfig = Field(default_factory=SparkConfig)
    tables: TablesConfig = Field(default_factory=TablesConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)
    s3: S3Config = Field(default_factory=S3Config)
    input: InputConfig = Field(default_factory=InputConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    retrieve: RetrieveConfig = Field(default_factory=RetrieveConfig)
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    skip: SkipConfig = Field(default_factory=SkipConfig)
    decide: DecideConfig = Field(default_factory=DecideConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    project_root: str = ""  # set by load_config: folder that relative URIs resolve against

    def resolve(self, uri: str) -> str:
        """Absolute form of a config URI: schemes (``s3://``, ``s3a://``, ``file:``) pass through,
        relative paths resolve against :attr:`project_root`."""
        if "://" in uri or uri.startswith("file:") or os.path.isabs(uri):
            return uri
        return str(Path(self.project_root or ".").resolve() / uri)


_TYPE_WORDS = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = GeorankConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def _describe(err: dict[str, Any], source: str) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _section_at(loc[:-1])
        valid = sorted(parent.model_fields) if parent is not None else []
        valid = [v for v in valid if v != "project_root"]
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"unknown config key '{key}' in {source}; valid keys under {where}: {', '.join(valid)}"
    got = err.get("input")
    if kind == "literal_error":
        expected = err["ctx"]["expected"]
        return f"config key '{key}' in {source}: expected one of {expected}, got {got!r}"
    expected = _TYPE_WORDS.get(kind, err["msg"].lower())
    return f"config key '{key}' in {source}: expected {expected}, got {got!r}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'rank.max_pixels=200704'`` -> ``('rank.max_pixels', 200704)`` (value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ConfigError(f"bad --set {text!r}: expected KEY=VALUE with a dotted key, e.g. rank.max_pixels=200704")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad --set {text!r}: the value is not valid YAML ({exc.__class__.__name__})") from exc
    return key.strip(), value


def project_home() -> Path:
    """The folder relative config paths resolve against: ``$GEORANK_HOME`` if set, else the checkout
    that holds this package (it has ``spark-submit.sh``), else the working directory."""
    env = os.environ.get("GEORANK_HOME")
    if env:
        return Path(env).resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "spark-submit.sh").exists():
        return checkout
    return Path.cwd()


def load_config(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> GeorankConfig:
    """Load, override and validate a config. Raises :class:`ConfigError` naming the key.

    >>> cfg = load_config("conf/local.yaml", ["rank.max_pixels=200704"])  # doctest: +SKIP
    >>> cfg.rank.max_pixels  # doctest: +SKIP
    200704
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (expected a YAML file, e.g. conf/local.yaml)")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {p}: expected a mapping at the top level, got {type(tree).__name__}")
    source = str(p)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    if overrides:
        source = f"{p} with --set {' '.join(overrides)}"
    tree.setdefault("project_root", str(project_home()))
    return validate_config(tree, source=source)


def validate_config(tree: dict[str, Any], *, source: str = "config") -> GeorankConfig:
    """Validate a plain mapping (e.g. ``cfg.model_dump()`` shipped to an executor)."""
    try:
        return GeorankConfig.model_validate(tree)
    except ValidationError as exc:
        messages = [_describe(dict(e), source) for e in exc.errors()]
        raise ConfigError("; ".join(messages)) from None

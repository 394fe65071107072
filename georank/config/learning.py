"""Config sections of the demo world, training and evaluation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from georank.config.base import Device, _Section


class DemoConfig(_Section):
    """The embedded demo world (synthetic photos, tiny models); built if missing."""

    ensure: bool = False  # build demo data, tiny models and index before the job if absent
    root: str = "demo"  # folder of the synthetic demo world, its tiny models and index
    gallery_photos: int = Field(3000, ge=10)  # geotagged gallery photos the demo world renders
    query_photos: int = Field(200, ge=1)  # held-out query photos (demo/queries), never trained on
    seed: int = 0  # the demo world's and tiny models' random seed
    # The demo ranker is trained (georank.train.demo) on groups built from the demo GALLERY (never
    # the held-out demo/queries), with the train section's settings; 0 and 0: the random tiny ranker.
    train_warmup_steps: int = Field(0, ge=0)  # stage 1: the backbone learns to compare two images (stands in for pretraining)
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
    # reference); "spread" = the nearest gallery photo, then one photo in each of spread_bands_km;
    # "mixed" = the nearest gallery photo, `lookalikes` of its retrieved neighbours, then the bands.
    grouping: Literal["retrieved", "spread", "mixed"] = "retrieved"
    lookalikes: int = Field(2, ge=0)  # grouping "mixed": retrieved neighbours (look-alikes) per group
    # grouping "mixed": look-alikes only among neighbours at least this far from the query (null: any).
    # Same-site neighbours a few km from the nearest cannot be ordered by look; far ones can be told apart.
    lookalike_min_km: float | None = Field(None, ge=0)
    # grouping "mixed": the query's OWN photo first (0 km), before the nearest other photo: a matching task
    # that a random tiny backbone learns first (the warm-up, docs/development.md "The demo world"); never what a real query meets.
    own_image: bool = False
    spread_bands_km: list[tuple[float, float]] = Field(  # (min_km, max_km) per band, grouping "spread"
        default_factory=lambda: [(50.0, 300.0), (500.0, 1500.0), (2000.0, 5000.0), (8000.0, 20100.0)]
    )
    group_size: int = Field(5, ge=2)  # G: candidates per query (reference 5; its README 7)
    top_k: int = Field(1, ge=1)  # K: positions of the Plackett-Luce ranking loss L1
    lam: float = Field(0.7, ge=0, le=1)  # total = lam * L1 + (1 - lam) * L2 (multi-order loss)
    lora: TrainLoraConfig = Field(default_factory=TrainLoraConfig)
    lr: float = Field(1e-4, gt=0)  # AdamW learning rate of the LoRA weights (and the head unless head_lr)
    head_lr: float | None = Field(None, gt=0)  # a separate learning rate for the score head
    warmup_lr: float = Field(1e-3, gt=0)  # the demo warm-up (georank.train.pretrain): backbone, constant
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

    @model_validator(mode="after")
    def _gpu_processes_train_on_gpus(self) -> "TrainConfig":
        if self.distributed.enabled and self.distributed.use_gpu and self.device != "cuda":
            raise ValueError("train.distributed.use_gpu starts one process per GPU (NCCL): expected train.device "
                             "cuda, got cpu")
        return self


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



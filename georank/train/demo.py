"""The embedded demo's trained ranker (driver side): built once, cached by the demo world's version.

When ``demo.train_warmup_steps`` or ``demo.train_ranker_steps`` is set, :func:`ensure_trained_ranker`
trains the demo ranker unless ``<ranker root>/trained.json`` says it was trained on this world with
these settings:

1. training groups from the demo GALLERY (``demo.train_queries`` sampled gallery photos; the demo's
   query photos are never used: they are the held-out set the geotag job predicts), with the
   ``train`` section's grouping (conf/local.yaml: ``spread``);
2. a fresh random tiny Qwen2-VL (:func:`georank.rank.tiny.build_tiny_ranker`), its backbone trained
   for ``demo.train_warmup_steps`` steps to compare the two images of a prompt
   (:func:`georank.train.pretrain.warmup_compare`, images only) and saved as the demo's base model:
   this stands in for the pretraining a real Qwen2-VL brings (a random tiny backbone does not learn
   to compare images from the ranking loss in CPU minutes);
3. LoRA + a FRESH score head (drawn with ``train.seed``; the warm-up's auxiliary head is dropped,
   as a released VLM comes without a GeoRanker head) on that base for ``demo.train_ranker_steps``
   steps, the train job's stage, written as the demo's adapter (``rank.adapter_uri``); step 0 of
   that same stage (LoRA at its PEFT init, B = 0, and the fresh head) is written beside it as
   the UNTRAINED adapter (:func:`untrained_adapter_dir`), which the evaluate job compares
   against (conf/local.yaml ``evaluate.compare_adapters``): the (warmed-up) backbone with an
   untrained adapter, what the adapter's training is measured against.

A world trained before the untrained adapter existed gets it without retraining (the LoRA stage's
step 0 depends only on the base, which LoRA training leaves untouched, and the seed).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from georank.config import GeorankConfig

log = logging.getLogger(__name__)

STAMP = "trained.json"
UNTRAINED_SUFFIX = "_untrained"  # <rank.adapter_uri>_untrained: the LoRA stage's step 0


def untrained_adapter_dir(adapter: Path) -> Path:
    """Where the demo writes the untrained adapter of ``adapter`` (a sibling folder)."""
    return adapter.with_name(adapter.name + UNTRAINED_SUFFIX)


def save_untrained_adapter(cfg: GeorankConfig, *, base_dir: Path, out_dir: Path) -> Path:
    """The LoRA stage's step 0 as an adapter: :func:`georank.train.model.build_trainable` (what
    :func:`georank.train.stages.train_lora` starts from: LoRA at init, the head drawn with
    ``train.seed``) written without a training step."""
    from georank.train.model import build_trainable, save_adapter

    peft_model, _ = build_trainable(Path(base_dir), cfg.train)
    return save_adapter(peft_model, Path(out_dir), base_dir=Path(base_dir))


TRAINER_VERSION = 2  # bump when the same settings would train a different ranker


def _wanted(cfg: GeorankConfig, world_id: str) -> dict[str, Any]:
    train = cfg.train.model_dump(exclude={"data", "output_uri", "checkpoint_dir", "georanking", "georanking_images", "distributed", "num_workers"})
    return {
        "trainer_version": TRAINER_VERSION,
        "world": world_id,
        "seed": cfg.demo.seed,
        "warmup_steps": cfg.demo.train_warmup_steps,
        "ranker_steps": cfg.demo.train_ranker_steps,
        "queries": cfg.demo.train_queries,
        "train": train,
        "rank": cfg.rank.model_dump(include={"min_pixels", "max_pixels", "candidate_jpeg_quality"}),
        "retrieve": cfg.retrieve.model_dump(),
    }


def ensure_trained_ranker(cfg: GeorankConfig, world_id: str) -> dict[str, Any] | None:
    """Train the demo ranker if it is not trained for this world and these settings; None when
    nothing was done. Needs the demo world, tiny CLIP and gallery index (georank.demo.setup)."""
    d = cfg.demo
    if d.train_warmup_steps == 0 and d.train_ranker_steps == 0:
        return None
    base = Path(cfg.resolve(cfg.rank.base_model_uri))
    adapter = Path(cfg.resolve(cfg.rank.adapter_uri))
    stamp = base.parent / STAMP
    want = json.loads(json.dumps(_wanted(cfg, world_id)))  # as it reads back (tuples become lists)
    untrained = untrained_adapter_dir(adapter)
    if stamp.is_file() and (adapter / "adapter_config.json").is_file() and (base / "config.json").is_file():
        try:
            if json.loads(stamp.read_text()).get("settings") == want:
                if (untrained / "adapter_config.json").is_file():
                    return None
                save_untrained_adapter(cfg, base_dir=base, out_dir=untrained)  # step 0 = the base + the seed
                return {"untrained_adapter": str(untrained), "retrained": False}
        except json.JSONDecodeError:
            pass
    stamp.unlink(missing_ok=True)
    import torch

    threads = torch.get_num_threads()
    # One thread: on a small, shared machine torch's OpenMP threads spin against the Spark JVM and
    # other work (in the geotag driver 300 groups took 877 s with the default 2 threads vs 89 s
    # with 1, under a similar load of ~8-10); one thread also makes the demo ranker the same on every run.
    torch.set_num_threads(1)
    try:
        return _train(cfg, base, adapter, stamp, want)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: GeorankConfig, base: Path, adapter: Path, stamp: Path, want: dict[str, Any]) -> dict[str, Any]:
    from georank.rank.tiny import build_tiny_ranker
    from georank.train.build import build_training_data
    from georank.train.pretrain import warmup_compare
    from georank.train.stages import train_lora

    d = cfg.demo
    work = base.parent / ".train"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    seconds: dict[str, float] = {}

    t0 = time.monotonic()
    data = build_training_data(cfg, mode="overwrite", out_uri=str(work / "groups"), n_queries=d.train_queries)
    seconds["data"] = time.monotonic() - t0
    random_base, _ = build_tiny_ranker(work / "random", seed=d.seed)
    if d.train_warmup_steps:  # the warm-up's auxiliary head is not kept (see the module docstring, 3.)
        t0 = time.monotonic()
        warmup_compare(
            cfg, base_dir=random_base, data_uri=str(work / "groups"), out_base_dir=base, steps=d.train_warmup_steps
        )
        seconds["warmup"] = time.monotonic() - t0
    else:  # the random base, swapped in by a rename (a reader never sees a half-copied folder)
        tmp = base.with_name(base.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(random_base, tmp)
        old = base.with_name(base.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if base.exists():
            base.rename(old)
        tmp.rename(base)
        shutil.rmtree(old, ignore_errors=True)
    save_untrained_adapter(cfg, base_dir=base, out_dir=untrained_adapter_dir(adapter))
    t0 = time.monotonic()
    result, _ = train_lora(
        cfg, base_dir=base, data_uri=str(work / "groups"), out_dir=adapter, checkpoint_dir=work / "checkpoints",
        steps=max(1, d.train_ranker_steps),
    )
    seconds["lora"] = time.monotonic() - t0
    summary = {
        "groups": data["groups"],
        "warmup_steps": d.train_warmup_steps,
        "ranker_steps": result.steps,
        "last_loss": round(result.last_loss, 4),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "total_seconds": round(time.monotonic() - started, 1),
    }
    stamp.write_text(json.dumps({"settings": want, "summary": summary}, indent=1, sort_keys=True))
    shutil.rmtree(work, ignore_errors=True)
    log.info("demo ranker trained: %s", summary)
    return summary


__all__ = ["ensure_trained_ranker", "save_untrained_adapter", "untrained_adapter_dir"]

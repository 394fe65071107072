"""Distributed ranker training through Spark's ``TorchDistributor`` (driver side).

With ``train.distributed.enabled`` the train job starts ``train.distributed.num_processes``
training processes (on the driver in ``local_mode``, else as a barrier stage on executors, one
per GPU with ``use_gpu``); each joins the process group (NCCL on GPUs, gloo on CPU), reads its own
shard of the training stream (rank r takes items r, r + world, ...) and averages gradients with
the others; rank 0 writes checkpoints and the adapter. The function shipped to the processes gets
the validated config as a plain dict, never a live object.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _train_process(cfg_d: dict[str, Any], base_dir: str, data_uri: str, out_dir: str, checkpoint_dir: str,
                   steps: int | None, summary_path: str | None = None) -> dict[str, Any]:
    """Runs in each training process (driver or executor); rank 0 also writes its summary to
    ``summary_path`` when given (see :func:`run_distributed`)."""
    import json
    import logging as _logging
    import os
    from pathlib import Path

    import torch.distributed as dist

    from georank.config import validate_config
    from georank.train.stages import train_lora

    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = validate_config(cfg_d, source="train job (shipped)")
    dist.init_process_group(backend="nccl" if cfg.train.distributed.use_gpu else "gloo")
    try:
        result, _ = train_lora(cfg, base_dir=Path(base_dir), data_uri=data_uri, out_dir=Path(out_dir),
                               checkpoint_dir=Path(checkpoint_dir), steps=steps)
        summary = {"rank": dist.get_rank(), "steps": result.steps, "groups": result.groups, "last_loss": result.last_loss,
                   "seconds": result.seconds, "resumed_from": result.resumed_from}
        if summary_path and summary["rank"] == 0:
            tmp = f"{summary_path}.tmp"
            with open(tmp, "w") as f:
                json.dump(summary, f)
            os.replace(tmp, summary_path)
        return summary
    finally:
        dist.destroy_process_group()


def run_distributed(cfg: Any, *, base_dir: str, data_uri: str, out_dir: str, checkpoint_dir: str,
                    steps: int | None = None) -> dict[str, Any]:
    """Train with ``TorchDistributor``; returns rank 0's summary. Needs an active Spark session.

    In ``local_mode`` every process's wrapper writes its return value to the SAME output file and
    the distributor returns whichever wrote last (pyspark 4.x), so rank 0 writes its summary to a
    file of ours and that is read instead; on executors the distributor returns rank 0's task."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from pyspark.ml.torch.distributor import TorchDistributor

    d = cfg.train.distributed
    distributor = TorchDistributor(num_processes=d.num_processes, local_mode=d.local_mode, use_gpu=d.use_gpu)
    log.info("TorchDistributor: %d processes (local_mode=%s, use_gpu=%s)", d.num_processes, d.local_mode, d.use_gpu)
    if not d.local_mode:
        out = distributor.run(_train_process, cfg.model_dump(), base_dir, data_uri, out_dir, checkpoint_dir, steps)
        return dict(out or {})
    folder = Path(tempfile.mkdtemp(prefix="georank-train-"))
    try:
        summary = folder / "rank0.json"
        distributor.run(_train_process, cfg.model_dump(), base_dir, data_uri, out_dir, checkpoint_dir, steps, str(summary))
        return dict(json.loads(summary.read_text()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["run_distributed"]

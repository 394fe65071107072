"""Training the GeoRanker (issue 12): data, loader, model, loop, checkpoints, the demo ranker.

- :mod:`~georank.train.groups`: training groups from a gallery + its index, and the GeoRanking reader
  (Spark-free; ``jobs/build_training_data.py`` runs it).
- :mod:`~georank.train.dataset`: an ``IterableDataset`` streaming groups and images, sharded
  across DataLoader workers and distributed ranks.
- :mod:`~georank.train.model`: a trainable GeoRanker (PEFT LoRA on q/k/v + the score head) and
  the adapter writer (the released checkpoint's layout).
- :mod:`~georank.train.batch`: groups -> prompts (the ranker's own prompt builder) -> scores.
- :mod:`~georank.train.loop`: AdamW, linear schedule, clipping, accumulation, checkpoints, resume.
- :mod:`~georank.train.checkpoint`: safetensors + JSON training state (no pickle).
- :mod:`~georank.train.demo`: the embedded demo's trained ranker.

Heavy imports (torch, transformers, peft) happen inside these modules, not here.
"""

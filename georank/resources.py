"""Executor-local resources: models and index shards loaded once per Python worker.

Like ``pyspark.ml.functions.predict_batch_udf``: a factory builds the resource the
first time a key is asked for in this process, and every later task in the same
(reused, ``spark.python.worker.reuse=true``) Python worker gets the same object.
Keys are plain values (URI + version), so nothing heavy is pickled into closures.
A small LRU bounds how many different resources one worker keeps.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from georank.errors import SetupError

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_ENTRIES = 16  # bounds memory; sharded placement may cycle one worker through every shard
_lock = threading.Lock()
_cache: "OrderedDict[tuple[str, Hashable], object]" = OrderedDict()
_builds: dict[tuple[str, Hashable], int] = {}


def cached(kind: str, key: Hashable, factory: Callable[[], T]) -> T:
    """Return the resource ``(kind, key)``, building it with ``factory()`` once per process."""
    full = (kind, key)
    with _lock:
        if full in _cache:
            _cache.move_to_end(full)
            return _cache[full]  # type: ignore[return-value]
    value = factory()
    with _lock:
        _cache[full] = value
        _builds[full] = _builds.get(full, 0) + 1
        while len(_cache) > MAX_ENTRIES:
            old, _ = _cache.popitem(last=False)
            log.info("evicted %s from the worker cache", old)
    log.info("loaded %s %s in this worker", kind, key)
    return value


def device_key(device: str) -> str:
    """The device a resource is loaded onto, as it belongs in a cache key: ``cuda`` becomes this
    process's current GPU (``cuda:1``, as :func:`georank.spark.executors.bind_gpu` set it for the
    task), so a reused worker whose next task was given another GPU loads a copy there instead of
    using the first GPU's. ``cpu`` stays ``cpu``."""
    if device != "cuda":
        return device
    import torch

    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else device


def require_device(key: str, device: str) -> None:
    """Refuse ``cuda`` for the config key ``key`` (``rank.device``, ``embed.device``,
    ``train.device``) where torch sees no CUDA device: a SetupError naming the key, never a silent
    run on the CPU."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise SetupError(f"{key} is 'cuda' but torch sees no CUDA device; expected one, or set {key}=cpu")


def build_count(kind: str, key: Hashable) -> int:
    """How many times ``(kind, key)`` was built in this process (tests check it is 1)."""
    return _builds.get((kind, key), 0)


def clear() -> None:
    with _lock:
        _cache.clear()
        _builds.clear()

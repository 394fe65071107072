"""Nightly on a catalogue, the Spark-free part: the versions a night predicts with, which
failures are worth another night, the backlog, and per-date input URIs.

The night's selection itself (an anti-join of the catalogue against the results table) is Spark
work: :mod:`georank.spark.catalogue`. Everything here runs on the driver.

- :func:`current_versions`: the ``(model, adapter, embed, index)`` versions a run of ``cfg``
  writes in its rows, computed on the driver BEFORE the run, by the same functions the executors
  use (:func:`georank.rank.checkpoint.model_version`, :func:`~georank.rank.checkpoint.adapter_version`,
  :func:`georank.embed.checkpoint_version`, the index manifest). The file digests are read once
  per host (:mod:`georank.storage.digests`), so the executors on the driver's host read none again.
- :func:`is_transient`: an error row whose cause is the run's surroundings, not the photo (an
  object that could not be reached, access denied, credentials): the photo is taken again on a
  later night, up to ``input.catalogue.max_attempts`` nights. Any other error (not an image,
  corrupt, not found, too large) stays an error for those versions.
- :class:`Backlog`: untagged in the catalogue, taken tonight, left, nights to drain.
- :func:`format_run_date`: ``s3://bucket/untagged/{run_date}/`` -> ``s3://bucket/untagged/2026-11-23/``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from georank.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from georank.config import GeorankConfig
    from georank.index import Manifest

VERSION_COLUMNS = ("model_version", "adapter_version", "embed_version", "index_version")

# Reasons of error rows whose cause is run-level by nature (georank.isolation.RUN_LEVEL_KINDS:
# denied, credentials, unreachable; and a GPU out of memory), as georank.storage words them
# (georank/storage/s3.py _s3_error / _local_error), plus S3's other service errors ("S3 error
# SlowDown"). Java-compatible: the Spark selection matches error_reason with the same pattern.
TRANSIENT_REASON = (
    r"^(access denied|permission denied|no usable AWS credentials|credentials rejected|credentials expired"
    r"|could not reach S3|S3 error )|out of memory"
)


def is_transient(stage: str | None, reason: str | None) -> bool:
    """Whether an error row (``error_stage``, ``error_reason``) is worth another night.

    >>> is_transient("read", "could not reach S3 for s3://b/k.jpg: EndpointConnectionError")
    True
    >>> is_transient("decode", "not an image: cannot identify image file")
    False
    """
    return stage is not None and re.search(TRANSIENT_REASON, reason or "") is not None


@dataclass(frozen=True)
class Versions:
    """The four versions every prediction row carries (16 hex content hashes; the index's from its manifest)."""

    model_version: str
    adapter_version: str
    embed_version: str
    index_version: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def current_versions(cfg: "GeorankConfig", manifest: "Manifest") -> Versions:
    """On the driver: the versions a run of ``cfg`` against the index ``manifest`` writes in its
    rows. The artifacts are opened through :func:`georank.storage.local_path` (an ``s3://`` one is
    fetched once into the host's artifact cache, as an executor would)."""
    from georank.embed import checkpoint_version
    from georank.rank.checkpoint import adapter_version, model_version
    from georank.storage import local_path

    res, e = cfg.resolve, cfg.embed
    heads = local_path(res(e.heads_uri), cfg.s3) if e.kind == "g3" and e.heads_uri else None
    if e.kind == "g3" and heads is None:
        raise ConfigError("embed.kind is 'g3' but embed.heads_uri is not set; expected a safetensors file URI")
    return Versions(
        model_version=model_version(local_path(res(cfg.rank.base_model_uri), cfg.s3)),
        adapter_version=adapter_version(local_path(res(cfg.rank.adapter_uri), cfg.s3)),
        embed_version=checkpoint_version(local_path(res(e.model_uri), cfg.s3), heads, kind=e.kind,
                                         image_size=e.image_size),
        index_version=manifest.index_version,
    )


@dataclass(frozen=True)
class Backlog:
    """A catalogue night's figures. ``untagged``: photos without a location and never predicted
    (nor failed for good) that could be taken; ``older``: photos whose newest prediction came from
    older versions, when ``regeotag: older`` (else 0); ``taken``: tonight's photos (within the
    budget); ``left``: what stays for later nights; ``nights_to_drain``: at tonight's rate (None
    when nothing was taken)."""

    untagged: int
    older: int
    taken: int
    budget: int | None

    @property
    def left(self) -> int:
        return max(self.untagged + self.older - self.taken, 0)

    @property
    def nights_to_drain(self) -> int | None:
        if self.left == 0:
            return 0
        return math.ceil(self.left / self.taken) if self.taken else None

    def as_dict(self) -> dict[str, Any]:
        return {"untagged": self.untagged, "older": self.older, "taken": self.taken, "budget": self.budget,
                "left": self.left, "nights_to_drain": self.nights_to_drain}

    def describe(self) -> str:
        """``backlog 180 (older 0), 120 tonight, 60 left (1 night at this rate)``.

        >>> Backlog(untagged=180, older=0, taken=120, budget=120).describe()
        'backlog 180 (older 0), 120 tonight, 60 left (1 night at this rate)'
        """
        n = self.nights_to_drain
        nights = "none needed" if n == 0 else "never at this rate" if n is None else f"{n} night{'s' * (n != 1)} at this rate"
        return f"backlog {self.untagged} (older {self.older}), {self.taken} tonight, {self.left} left ({nights})"


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def format_run_date(uri: str, run_date: dt.date) -> str:
    """``uri`` with ``{run_date}`` replaced by the date (YYYY-MM-DD); any other ``{...}`` is a ConfigError.

    >>> format_run_date("s3://bucket/untagged/{run_date}/", dt.date(2026, 11, 23))
    's3://bucket/untagged/2026-11-23/'
    """
    other = sorted({m for m in _PLACEHOLDER.findall(uri) if m != "run_date"})
    if other:
        raise ConfigError(
            f"photos URI {uri}: expected only the placeholder {{run_date}}, got {', '.join('{' + o + '}' for o in other)}"
        )
    return uri.replace("{run_date}", run_date.isoformat())


__all__ = ["TRANSIENT_REASON", "VERSION_COLUMNS", "Backlog", "Versions", "current_versions", "format_run_date",
           "is_transient"]

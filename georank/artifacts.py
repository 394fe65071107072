"""Artifacts (models, adapters, index shards) named by a local path or an ``s3://`` URI.

:func:`local_path` gives a local file or directory for either; an ``s3://`` artifact is
downloaded once per host and version into a locked cache, old versions removed. Nothing is
ever fetched from a model hub. The storage layer itself (S3 clients, the cache, its lock) is
:mod:`georank.storage`; this module keeps the names its importers use.
"""

from __future__ import annotations

from georank.storage import cache_root, local_path, s3_client, split_s3

__all__ = ["cache_root", "local_path", "s3_client", "split_s3"]

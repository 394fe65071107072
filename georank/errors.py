"""One exception hierarchy for georank.

Every message says what was expected and what was got, and lists the valid
options where there is a closed set. Tests match these messages with
``pytest.raises(match=...)``.
"""

from __future__ import annotations


class GeorankError(Exception):
    """Base class of every error georank raises on purpose."""


class ConfigError(GeorankError):
    """A config file, key or value is wrong; raised at start-up, naming the key."""


class SetupError(GeorankError):
    """The environment is incomplete (jars, venv, artifacts); says which command fixes it."""


class SchemaError(GeorankError):
    """A table or frame does not have the declared columns or types."""


class InputError(GeorankError):
    """A run-level input is wrong (missing table, bad URI, unsupported scheme)."""


class StorageError(InputError):
    """Reading, listing or writing a local path or an ``s3://`` object failed (georank.storage).

    ``reason`` is a sentence naming the path or URI (``object not found: s3://b/k``); ``kind`` is
    one of ``not_found``, ``denied``, ``credentials``, ``too_large``, ``unreachable``, ``other``, so a caller can
    turn it into its own error (an error row, an index error) without parsing the message.
    """

    def __init__(self, reason: str, *, kind: str = "other") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class PhotoError(GeorankError):
    """One photo cannot be used. Becomes an error row, never a crashed task.

    ``stage`` names the pipeline step (``read``, ``decode``, ``embed``, ...);
    ``reason`` is a sentence a person understands; ``kind``, for a read, the StorageError kind
    behind it (``denied``, ``unreachable``, ``credentials`` are run-level by nature:
    :func:`georank.isolation.run_level_cause`).
    """

    def __init__(self, stage: str, reason: str, *, kind: str | None = None) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.kind = kind


class CheckpointError(GeorankError):
    """A model/adapter checkpoint does not match what the code expects (keys, shapes)."""


class GalleryIndexError(GeorankError):
    """A FAISS shard, its manifest or a search result is inconsistent (version, ntotal, dims, -1 ids)."""


class WriteError(GeorankError):
    """Writing a Delta table failed or would break an invariant (duplicates, counts)."""


class SkippedCommitError(WriteError):
    """Delta skipped a commit for its transaction id: a run of the same key committed first
    (georank.write.commit's history check)."""


class RunError(GeorankError):
    """A run-level invariant failed (e.g. read != predicted + errors)."""

"""Stream training groups and their images into PyTorch, without loading the table into memory.

:class:`GroupStream` is an ``IterableDataset`` over a ``deltalake`` scan (a Delta table) or a
``pyarrow.dataset`` scan (Parquet), one record batch at a time. petastorm is not used: 0.13.1
does not import with the pyarrow (>= 18) that pyspark 4.2 needs.

Order and sharding. Each epoch visits the table's fragments in an order drawn from
``(seed, epoch)`` and each record batch's rows in an order drawn from ``(seed, epoch, fragment,
batch)``; item ``n`` of that global stream belongs to distributed rank ``n % world``; a rank's
``m``-th item goes to DataLoader worker ``m % workers``, which is the order the DataLoader returns
them in. So a rank's stream is the same whatever the number of workers, and resuming after
``start`` items skips exactly those (without reading their images). Epochs repeat forever; the
trainer stops by steps.

Images are read through :class:`georank.io.PhotoReader` (local, ``s3://``) and decoded with
:func:`georank.decode.decode_image`, as the geotag job does; prompts are built with the ranker's
own :func:`georank.rank.prompts.encode_query`. A group whose image cannot be read or decoded is
logged and skipped (it still counts as a position, so resume stays exact).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch
from torch.utils.data import IterableDataset, get_worker_info

from georank.config import DecodeConfig, RankConfig, S3Config
from georank.errors import PhotoError
from georank.rank.prompts import EncodedQuery, RankCandidate, RankQuery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainItem:
    """One encoded group: prompts of its G candidates and their true distances ``dist_km (g,)``."""

    position: int  # index of this item in its rank's stream
    query_id: str
    encoded: EncodedQuery | None  # None: an image could not be used (skipped by the trainer)
    dist_km: np.ndarray


def open_scan(uri: str, *, storage_options: dict[str, str] | None = None) -> pads.Dataset:
    """A pyarrow dataset over a Delta table (latest version, via deltalake) or Parquet files."""
    if (Path(uri) / "_delta_log").is_dir() or uri.startswith(("s3://", "s3a://")):
        from deltalake import DeltaTable

        return DeltaTable(uri, storage_options=storage_options).to_pyarrow_dataset()
    return pads.dataset(uri, format="parquet")


def row_to_query(
    row: dict[str, Any], images: list[Any], *, negatives_from: int, negatives_count: int
) -> RankQuery:
    """A RankQuery of one TRAINING_GROUPS row; ``images`` = [query, candidate 1..G] (PIL)."""
    lats, lons, descs = row["group_lat_deg"], row["group_lon_deg"], row["group_description"]
    cands = [RankCandidate(float(a), float(b), d or "", img) for a, b, d, img in zip(lats, lons, descs, images[1:])]
    lo, hi = negatives_from, negatives_from + negatives_count
    negs = [
        RankCandidate(float(a), float(b), d or "", None)
        for a, b, d in zip(row["neighbour_lat_deg"][lo:hi], row["neighbour_lon_deg"][lo:hi], row["neighbour_description"][lo:hi])
    ]
    return RankQuery(images[0], cands, negs)


class GroupStream(IterableDataset):
    """Encoded training groups, sharded across ranks and DataLoader workers (see module docstring)."""

    def __init__(
        self,
        uri: str,
        *,
        base_dir: str,
        rank_cfg: RankConfig,
        decode_cfg: DecodeConfig,
        s3: S3Config,
        negatives_from: int,
        negatives_count: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
        epochs: int | None = None,
        batch_rows: int = 64,
        encode: bool = True,
        processor: Any = None,
    ) -> None:
        super().__init__()
        self.uri, self.base_dir = uri, base_dir
        self.rank_cfg, self.decode_cfg, self.s3 = rank_cfg, decode_cfg, s3
        self.negatives_from, self.negatives_count = negatives_from, negatives_count
        self.seed, self.rank, self.world, self.start = seed, rank, world, start
        self.epochs, self.batch_rows, self.encode = epochs, batch_rows, encode
        self._processor: Any = processor  # loaded lazily from base_dir when not given

    # --- the row stream (no images) ------------------------------------------------------------

    def rows(self, *, worker: int | None = None, n_workers: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(position, row)`` of this rank and DataLoader worker (default: the calling one), in
        stream order, from ``start`` on."""
        info = get_worker_info()
        if worker is None or n_workers is None:
            n_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        scan = open_scan(self.uri)
        fragments = sorted(scan.get_fragments(), key=lambda f: str(getattr(f, "path", "")))
        if not fragments:
            return
        n = 0  # global item number
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(fragments))
            any_rows = False
            for fi in order:
                for bi, batch in enumerate(fragments[fi].to_batches(batch_size=self.batch_rows)):
                    perm = np.random.default_rng([self.seed, epoch, int(fi), bi]).permutation(batch.num_rows)
                    for r in perm:
                        any_rows = True
                        mine = n % self.world == self.rank
                        m = n // self.world  # this rank's item number
                        n += 1
                        if not mine or m < self.start or m % n_workers != worker:
                            continue
                        yield m, pa.Table.from_batches([batch.slice(int(r), 1)]).to_pylist()[0]
            if not any_rows:
                return
            epoch += 1

    # --- items ---------------------------------------------------------------------------------

    def _get_processor(self) -> Any:
        if self._processor is None:
            from georank.rank.tokenizer import load_processor

            self._processor = load_processor(
                Path(self.base_dir), min_pixels=self.rank_cfg.min_pixels, max_pixels=self.rank_cfg.max_pixels
            )
        return self._processor

    def item(self, position: int, row: dict[str, Any], reader: Any) -> TrainItem:
        from georank.decode import decode_image
        from georank.rank.prompts import encode_query

        dist = np.asarray(row["group_dist_km"], dtype=np.float64)
        try:
            images = [decode_image(reader.read(u), self.decode_cfg) for u in [row["query_uri"], *row["group_uri"]]]
            query = row_to_query(row, images, negatives_from=self.negatives_from, negatives_count=self.negatives_count)
            encoded = encode_query(self._get_processor(), query, self.rank_cfg) if self.encode else None
        except PhotoError as exc:
            log.warning("training group %s skipped: %s", row["query_id"], exc)
            encoded = None
        return TrainItem(position, str(row["query_id"]), encoded, dist)

    def __iter__(self) -> Iterator[TrainItem]:
        from georank.io import PhotoReader

        reader = PhotoReader(self.s3, max_bytes=self.decode_cfg.max_bytes)
        if get_worker_info() is not None:
            torch.set_num_threads(1)  # a DataLoader worker decodes and tokenizes; the trainer computes
        for position, row in self.rows():
            yield self.item(position, row, reader)


def collate(items: list[TrainItem]) -> list[TrainItem]:
    """A batch is a list of items (prompts differ in length: the trainer pads them)."""
    return items


__all__ = ["GroupStream", "TrainItem", "collate", "open_scan", "row_to_query"]

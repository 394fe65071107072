"""Score query-candidate pairs with a GeoRanker, per pair (the oracle) or against a shared prefix.

Every prompt of one query starts with the same tokens: the chat template, the query image and
``How far is this place from latitude:`` (split on tokens, see
:func:`georank.rank.prompts.encode_query`). The reference recomputes them for every pair:

- **per pair** (:meth:`Scorer.score_per_pair`): each prompt from scratch, left-padded batches
  of ``rank.candidates_per_batch`` pairs. This is the oracle.
- **shared prefix** (:meth:`Scorer.score_shared_prefix`): the prefixes of up to
  ``rank.photos_per_batch`` photos run once as a left-padded batch with ``use_cache``; each
  candidate's suffix then runs against its photo's rows of that KV cache (selected per
  candidate), with explicit M-RoPE position ids computed by ``get_rope_index`` over the whole
  sequence and sliced to the suffix, and only the candidate images' pixel rows. Suffixes are
  left-padded after the prefix (masked), so position -1 is still every row's last real token.

The :class:`Scorer` is built once per Python worker by :func:`get_scorer` (cached by URIs and
versions through :func:`georank.resources.cached`). Runs on executors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from georank.config import RankConfig, S3Config
from georank.rank.features import FeatureCache
from georank.rank.model import GeoRankerModel, RankerInputs, select_cache_rows
from georank.rank.prompts import EncodedImage, EncodedPair, EncodedQuery, RankQuery, encode_query

log = logging.getLogger(__name__)


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class Scorer:
    """A loaded GeoRanker + processor that scores batches of photos.

    ``model_version``/``adapter_version`` are content hashes of the artifacts (see
    :mod:`georank.rank.checkpoint`); they key the per-worker cache.
    """

    def __init__(
        self,
        model: GeoRankerModel,
        processor: Any,
        cfg: RankConfig,
        *,
        model_version: str = "",
        adapter_version: str = "",
    ) -> None:
        self.model = model
        self.processor = processor
        self.cfg = cfg
        self.model_version = model_version
        self.adapter_version = adapter_version
        self.device = model.device
        self.pad_id = int(processor.tokenizer.pad_token_id)
        self.image_token_id = int(processor.image_token_id)
        # candidate images' vision-tower output, per worker (shared-prefix path only; 0 MB = off)
        self.features = FeatureCache(max_bytes=cfg.feature_cache_mb * 2**20) if cfg.feature_cache_mb > 0 else None

    # --- public ---------------------------------------------------------------------------

    def score(self, queries: Sequence[RankQuery]) -> list[np.ndarray]:
        """Scores float32 (n_candidates,) per query, by the path ``rank.shared_prefix`` selects."""
        if self.cfg.shared_prefix:
            return self.score_shared_prefix(queries)
        return self.score_per_pair(queries)

    @torch.inference_mode()
    def score_per_pair(self, queries: Sequence[RankQuery]) -> list[np.ndarray]:
        """The oracle: every (query, candidate) prompt scored from scratch, as the reference does."""
        encoded = [encode_query(self.processor, q, self.cfg) for q in queries]
        flat: list[tuple[int, EncodedPair]] = [(qi, p) for qi, e in enumerate(encoded) for p in e.pairs]
        scores = np.zeros(len(flat), dtype=np.float32)
        for chunk in _chunks(len(flat), self.cfg.candidates_per_batch):
            pairs = [flat[i][1] for i in chunk]
            inputs = self._full_batch([p.input_ids for p in pairs], [list(p.images) for p in pairs])
            scores[chunk.start : chunk.stop] = self.model.score(inputs).cpu().numpy()
        return self._split(scores, [len(e.pairs) for e in encoded])

    @torch.inference_mode()
    def score_shared_prefix(self, queries: Sequence[RankQuery]) -> list[np.ndarray]:
        """Each photo's shared prefix once, then all its candidates' suffixes against its cache."""
        out: list[np.ndarray] = []
        for group in _chunks(len(queries), self.cfg.photos_per_batch):
            lookup = None if self.features is None else self._lookup
            encoded = [encode_query(self.processor, queries[i], self.cfg, lookup=lookup) for i in group]
            out.extend(self._score_group(encoded))
        return out

    # --- internals ------------------------------------------------------------------------

    def _lookup(self, image_key: str, width_px: int, height_px: int) -> tuple[Any, torch.Tensor | None]:
        """(cache key, cached features or None) of a candidate image snapped to width x height:
        keyed by the gallery image, its size for the ranker and the model (versions, dtype,
        JPEG re-encoding), so one worker's cache never serves another model's features."""
        key = (image_key, width_px, height_px, self.model_version, self.adapter_version, self.cfg.dtype,
               self.cfg.candidate_jpeg_quality)
        assert self.features is not None
        return key, self.features.get(key)

    def _candidate_features(self, images: list[EncodedImage]) -> torch.Tensor | None:
        """(n_image_tokens, hidden): the images' vision-tower output in order, from the cache where
        it is there, else by ONE tower pass over the others' pixels (then cached)."""
        if not images:
            return None
        assert self.features is not None
        feats: list[torch.Tensor | None] = [im.features for im in images]
        for i, im in enumerate(images):  # filled by an earlier chunk of this group since encoding?
            if feats[i] is None and im.key is not None and im.key in self.features:
                feats[i] = self.features.get(im.key)
        first: dict[Any, int] = {}  # key -> the one image of this chunk that computes it
        todo = [i for i, f in enumerate(feats) if f is None and (images[i].key is None or first.setdefault(images[i].key, i) == i)]
        if todo:
            pixel_values, grid_thw = self._pixels([images[i] for i in todo])
            assert pixel_values is not None and grid_thw is not None
            made = self.model.image_features(pixel_values.to(self.device), grid_thw.to(self.device))
            for i, f in zip(todo, made):
                feats[i] = f
                if images[i].key is not None:
                    self.features.put(images[i].key, f)
        for i, im in enumerate(images):  # a repeat within the chunk: its first occurrence's output
            if feats[i] is None:
                feats[i] = feats[first[im.key]]
        return torch.cat([f for f in feats if f is not None], dim=0)

    def _split(self, scores: np.ndarray, counts: list[int]) -> list[np.ndarray]:
        bounds = np.cumsum([0, *counts])
        return [scores[bounds[i] : bounds[i + 1]].copy() for i in range(len(counts))]

    def _pad_left(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (b, t) left-padded with the pad token, and the mask (b, t)."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
        return ids, mask

    @staticmethod
    def _grids(images: list[EncodedImage]) -> torch.Tensor | None:
        """LongTensor (n_images, 3) of the images' (t, h, w) patch grids, or None."""
        return torch.tensor([im.grid_thw for im in images], dtype=torch.long) if images else None

    @classmethod
    def _pixels(cls, images: list[EncodedImage]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not images:
            return None, None
        rows = [im.pixel_values for im in images if im.pixel_values is not None]
        if len(rows) != len(images):
            raise ValueError(f"pixel values: expected one per image ({len(images)}), got {len(rows)} (cached features?)")
        return torch.cat(rows, dim=0), cls._grids(images)  # (n_patches, d), (n_images, 3)

    def _rope_index(self, ids: torch.Tensor, mask: torch.Tensor, grid_thw: torch.Tensor | None) -> torch.Tensor:
        """M-RoPE position ids (3, b, t) of left-padded full sequences (pads get 0)."""
        mm = (ids == self.image_token_id).to(torch.int)
        get_rope_index: Any = self.model.model.get_rope_index
        position_ids, _ = get_rope_index(
            ids, mm_token_type_ids=mm, image_grid_thw=grid_thw, video_grid_thw=None, attention_mask=mask
        )
        return position_ids

    def _to_device(self, inputs: RankerInputs) -> RankerInputs:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(self.device, non_blocking=True)

        return RankerInputs(
            input_ids=mv(inputs.input_ids),  # type: ignore[arg-type]
            attention_mask=mv(inputs.attention_mask),  # type: ignore[arg-type]
            position_ids=mv(inputs.position_ids),  # type: ignore[arg-type]
            mm_token_type_ids=mv(inputs.mm_token_type_ids),  # type: ignore[arg-type]
            pixel_values=mv(inputs.pixel_values),
            image_grid_thw=mv(inputs.image_grid_thw),
        )

    def _full_batch(self, rows: list[list[int]], images: list[list[EncodedImage]]) -> RankerInputs:
        """Left-padded whole prompts with all their images."""
        ids, mask = self._pad_left(rows)
        pixel_values, grid_thw = self._pixels([im for row in images for im in row])
        position_ids = self._rope_index(ids, mask, grid_thw)
        mm = (ids == self.image_token_id).to(torch.int)
        return self._to_device(RankerInputs(ids, mask, position_ids, mm, pixel_values, grid_thw))

    def _score_group(self, encoded: list[EncodedQuery]) -> list[np.ndarray]:
        live = [qi for qi, e in enumerate(encoded) if e.pairs]
        scores = [np.zeros(len(e.pairs), dtype=np.float32) for e in encoded]
        if not live:
            return scores
        # 1. prefixes of the group's photos, once, left-padded: cache (q, kv_heads, p_max, d)
        prefix_rows = [encoded[qi].pairs[0].input_ids[: encoded[qi].prefix_len] for qi in live]
        prefix_images = [[encoded[qi].pairs[0].images[0]] for qi in live]
        prefix_inputs = self._full_batch(prefix_rows, prefix_images)
        prefix_ids, prefix_mask = self._pad_left(prefix_rows)  # cpu copies for the suffix batches
        cache = self.model.encode_prefix(prefix_inputs)
        row_of = {qi: r for r, qi in enumerate(live)}

        # 2. suffixes, candidates_per_batch at a time, each against its photo's cache rows
        flat = [(qi, ci) for qi in live for ci in range(len(encoded[qi].pairs))]
        for chunk in _chunks(len(flat), self.cfg.candidates_per_batch):
            items = [flat[i] for i in chunk]
            rows = torch.tensor([row_of[qi] for qi, _ in items], dtype=torch.long)
            pairs = [encoded[qi].pairs[ci] for qi, ci in items]
            suffixes = [p.input_ids[encoded[qi].prefix_len :] for (qi, _), p in zip(items, pairs)]
            suffix_ids, suffix_mask = self._pad_left(suffixes)
            # positions over the whole (prefix + suffix) sequence, sliced to the suffix columns
            full_ids = torch.cat([prefix_ids[rows], suffix_ids], dim=1)
            full_mask = torch.cat([prefix_mask[rows], suffix_mask], dim=1)
            all_images = [im for p in pairs for im in p.images]
            all_grid = self._grids(all_images)
            position_ids = self._rope_index(full_ids, full_mask, all_grid)[:, :, prefix_ids.shape[1] :]
            # only the candidate images (the query image lives in the KV cache): their pixel rows, or
            # with the feature cache their vision-tower output (cached, or computed once and kept)
            cand_images = [im for p in pairs for im in p.images[1:]]
            mm = (suffix_ids == self.image_token_id).to(torch.int)
            if self.features is None:
                pixel_values, grid_thw = self._pixels(cand_images)
                inputs = self._to_device(RankerInputs(suffix_ids, full_mask, position_ids, mm, pixel_values, grid_thw))
            else:
                inputs = self._to_device(RankerInputs(suffix_ids, full_mask, position_ids, mm))
                inputs.image_features = self._candidate_features(cand_images)
            chunk_cache = select_cache_rows(cache, rows.to(self.device))
            chunk_scores = self.model.score(inputs, past_key_values=chunk_cache).cpu().numpy()
            for (qi, ci), s in zip(items, chunk_scores):
                scores[qi][ci] = s
        return scores


def build_scorer(
    base_dir: Any,
    adapter_dir: Any,
    cfg: RankConfig,
    *,
    model_version: str = "",
    adapter_version: str = "",
) -> Scorer:
    """Load model + processor from local directories and wrap them in a :class:`Scorer`."""
    from pathlib import Path

    from georank.rank.checkpoint import load_ranker
    from georank.rank.tokenizer import load_processor

    model = load_ranker(
        Path(base_dir),
        Path(adapter_dir),
        device=cfg.device,
        dtype=cfg.dtype,
        attn_implementation=cfg.attn_implementation,
    )
    processor = load_processor(Path(base_dir), min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    return Scorer(model, processor, cfg, model_version=model_version, adapter_version=adapter_version)


def get_scorer(cfg: RankConfig, s3: S3Config, *, resolve: Callable[[str], str]) -> Scorer:
    """The worker's :class:`Scorer` for ``cfg``, built once per Python worker.

    ``resolve`` turns config URIs into absolute ones (``GeorankConfig.resolve``). Artifacts are
    fetched with :func:`georank.storage.local_path` (local or ``s3://``); the cache key is the
    two URIs, their versions, the rank config and the concrete device (``cuda:N``: a reused worker
    given another GPU builds its own copy there). Runs on executors.
    """
    from georank.resources import cached, device_key
    from georank.storage import pinned_version

    base_uri, adapter_uri = resolve(cfg.base_model_uri), resolve(cfg.adapter_uri)
    pins = (pinned_version(base_uri), pinned_version(adapter_uri))
    settings = (json.dumps(cfg.model_dump(), sort_keys=True), device_key(cfg.device))
    if all(pins):  # inside the run's pins: per batch, a dict look-up; the files are checked once, at the build
        return cached("georanker-pinned", (base_uri, *pins, adapter_uri, *settings),  # type: ignore[return-value]
                      lambda: get_scorer_unpinned(base_uri, adapter_uri, cfg, s3))
    return get_scorer_unpinned(base_uri, adapter_uri, cfg, s3)


def get_scorer_unpinned(base_uri: str, adapter_uri: str, cfg: RankConfig, s3: S3Config) -> Scorer:
    """:func:`get_scorer` outside a run's pins: the artifacts' versions are read on every call."""
    from georank.rank.checkpoint import adapter_version, model_version
    from georank.resources import cached, device_key
    from georank.storage import local_path

    base_dir, adapter_dir = local_path(base_uri, s3), local_path(adapter_uri, s3)
    mv, av = model_version(base_dir), adapter_version(adapter_dir)
    key = (base_uri, mv, adapter_uri, av, json.dumps(cfg.model_dump(), sort_keys=True), device_key(cfg.device))
    return cached(
        "georanker",
        key,
        lambda: build_scorer(base_dir, adapter_dir, cfg, model_version=mv, adapter_version=av),
    )

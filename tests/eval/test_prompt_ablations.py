"""The seed's Table 5 ablations as rank.* switches: each changes exactly its part of the prompt, and
the default (all on) leaves the query, hence the reference prompt, untouched (the golden prompt
tests in tests/rank/test_prompts.py pin that prompt)."""

from __future__ import annotations

from typing import Any

import PIL.Image
import pytest

from georank.config import RankConfig
from georank.rank.prompts import RankCandidate, RankQuery, ablate, build_messages, encode_query

QUERY_IMG = PIL.Image.new("RGB", (56, 56), (10, 120, 200))
GALLERY_IMG = PIL.Image.new("RGB", (56, 84), (200, 30, 30))
NEGS = [RankCandidate(40.7128, -74.006, "New York New York United States", None), RankCandidate(-1e-05, 0.5, "", None)]
QUERY = RankQuery(QUERY_IMG, [RankCandidate(48.8566, 2.3522, "Paris Ile-de-France France", GALLERY_IMG),
                              RankCandidate(35.0, 139.0, None, None)], NEGS)


def _parts(query: RankQuery, i: int = 0) -> list[Any]:
    return [c.get("text", c["type"]) for c in build_messages(query.image, query.candidates[i], query.negatives)[0]["content"]]


def test_default_switches_leave_the_query_untouched() -> None:
    assert ablate(QUERY, RankConfig()) is QUERY
    assert _parts(QUERY) == [
        "image",
        "How far is this place from latitude: 48.8566, longitude: 2.3522, Paris Ile-de-France France?",
        "image",
        "Negative examples: latitude: 40.7128, longitude: -74.006, New York New York United States; "
        "latitude: -1e-05, longitude: 0.5, ",
    ]


def test_without_negatives() -> None:
    q = ablate(QUERY, RankConfig(prompt_negatives=False))
    assert _parts(q) == ["image", "How far is this place from latitude: 48.8566, longitude: 2.3522, Paris Ile-de-France France?", "image"]


def test_without_descriptions() -> None:
    q = ablate(QUERY, RankConfig(prompt_descriptions=False))
    assert _parts(q) == [
        "image",
        "How far is this place from latitude: 48.8566, longitude: 2.3522?",
        "image",
        "Negative examples: latitude: 40.7128, longitude: -74.006; latitude: -1e-05, longitude: 0.5",
    ]


def test_without_candidate_image() -> None:
    q = ablate(QUERY, RankConfig(prompt_candidate_image=False))
    assert _parts(q)[:3] == ["image", "How far is this place from latitude: 48.8566, longitude: 2.3522, Paris Ile-de-France France?",
                             _parts(QUERY)[3]]
    assert [c.image for c in q.candidates] == [None, None]


@pytest.mark.parametrize("switch", ["prompt_negatives", "prompt_descriptions", "prompt_candidate_image"])
def test_each_switch_reaches_the_tokens(tiny_world, switch: str) -> None:  # type: ignore[no-untyped-def]
    from georank.rank.tokenizer import load_processor

    proc = load_processor(tiny_world / "models" / "ranker" / "base", min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    cfg = RankConfig(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    base = encode_query(proc, QUERY, cfg)
    abl = encode_query(proc, QUERY, cfg.model_copy(update={switch: False}))
    assert abl.prefix_len == base.prefix_len  # the shared prefix (through "latitude:") is the same
    assert len(abl.pairs[0].input_ids) < len(base.pairs[0].input_ids)  # something was left out of the retrieved candidate's prompt
    assert len(abl.pairs[0].images) == (1 if switch == "prompt_candidate_image" else 2)

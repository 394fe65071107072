"""The GeoRanker network: Qwen2-VL + a bias-free linear score head on the last token.

``score = value_head(norm(h_L)[:, -1])``: the final (post-norm) hidden state of the LAST prompt
token, prompts LEFT-padded so that position -1 is always the last real token. The head is
named ``value_head`` as in the released checkpoint (a PEFT "module to save", stored inside
``adapter_model.safetensors`` as ``base_model.model.value_head.weight``).

Only the backbone (:class:`~transformers.Qwen2VLModel`) is kept: the vocabulary projection
(``lm_head``) is never loaded into this module and vocabulary logits are never computed.
Runs on executors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, Qwen2VLModel


@dataclass
class RankerInputs:
    """One padded batch for the ranker (all tensors on the model's device).

    input_ids: LongTensor (b, t), left-padded; when ``past_key_values`` holds a prefix, only the
        new (suffix) tokens.
    attention_mask: LongTensor (b, past + t), 1 for real tokens (prefix and suffix).
    position_ids: LongTensor (3, b, t), M-RoPE positions of the ``t`` new tokens.
    mm_token_type_ids: IntTensor (b, t), 1 at image-pad tokens.
    pixel_values: FloatTensor (n_patches, c * tps * 14 * 14) for the images of these tokens, or None.
    image_grid_thw: LongTensor (n_images, 3), or None.
    image_features: FloatTensor (n_image_tokens, hidden), the vision tower's output for this batch's
        image tokens in order, IN PLACE of ``pixel_values`` (the scorer's feature cache), or None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    image_features: torch.Tensor | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "mm_token_type_ids": self.mm_token_type_ids,
            "pixel_values": self.pixel_values,
            "image_grid_thw": self.image_grid_thw,
            "image_features": self.image_features,
        }


class GeoRankerModel(nn.Module):
    """Qwen2-VL backbone + score head. Attribute names mirror the released checkpoint's
    module tree (``model.*`` for the backbone, ``value_head`` for the head), so adapter keys
    ``base_model.model.<name>`` address this module directly.
    """

    base_model_prefix = "model"  # read by transformers' key-conversion helpers that PEFT calls

    def __init__(self, backbone: Qwen2VLModel) -> None:
        super().__init__()
        self.model = backbone
        self.config = backbone.config  # PEFT and transformers helpers look for .config
        text_config: Any = backbone.config.text_config
        hidden_size = text_config.hidden_size
        self.value_head = nn.Linear(hidden_size, 1, bias=False)  # (1, hidden) weight, no bias
        self.value_head.to(device=backbone.device, dtype=backbone.dtype)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """Scores (b,) float32 of left-padded prompts (or suffixes after a cached prefix); ``inputs``
        as :meth:`last_hidden` takes them."""
        return self.value_head(self.last_hidden(input_ids, attention_mask, **inputs)).squeeze(-1).float()  # (b,)

    def last_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The state the score head reads: (b, hidden), post-norm, at each prompt's last token
        (left padding puts every prompt's last real token at -1)."""
        out = self._backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            mm_token_type_ids=mm_token_type_ids,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            image_features=image_features,
            past_key_values=past_key_values,
            use_cache=past_key_values is not None,
        )
        return out.last_hidden_state[:, -1, :]

    def _backbone(self, *, image_features: torch.Tensor | None, **kwargs: Any) -> Any:
        """The backbone on pixels (its own vision tower), or on ``image_features`` scattered into
        the token embeddings at the image tokens, as the backbone does with its tower's output;
        position ids must then be given (M-RoPE needs the image grids, which features lack)."""
        if image_features is None:
            return self.model(**kwargs)
        input_ids = kwargs.pop("input_ids")
        if kwargs.get("pixel_values") is not None:
            raise ValueError("the ranker takes pixel_values or image_features, not both")
        if kwargs.get("position_ids") is None:
            raise ValueError("image_features need explicit position_ids (M-RoPE over the image grids)")
        embeds = self.model.get_input_embeddings()(input_ids)  # (b, t, hidden)
        is_image = input_ids == self.config.image_token_id  # (b, t)
        n_tokens = int(is_image.sum())
        if n_tokens != image_features.shape[0]:
            raise ValueError(f"image features: expected {n_tokens} rows, one per image token; got {image_features.shape[0]}")
        embeds = embeds.masked_scatter(is_image.unsqueeze(-1).expand_as(embeds), image_features.to(embeds.device, embeds.dtype))
        kwargs.update(pixel_values=None, image_grid_thw=None, mm_token_type_ids=None)
        return self.model(input_ids=None, inputs_embeds=embeds, **kwargs)

    def image_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """The vision tower (+ merger) on a batch of images: (n_tokens_i, hidden) per image, what
        the backbone scatters at each image's tokens."""
        out = self.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return list(feats)

    def encode_prefix(self, inputs: RankerInputs) -> DynamicCache:
        """Run a left-padded batch of prefixes once and return their KV cache (b, kv_heads, p, d)."""
        out = self._backbone(**inputs.as_kwargs(), use_cache=True)
        return out.past_key_values

    def score(self, inputs: RankerInputs, past_key_values: DynamicCache | None = None) -> torch.Tensor:
        """Scores (b,) float32; with ``past_key_values`` the batch is suffixes after that cache."""
        return self.forward(**inputs.as_kwargs(), past_key_values=past_key_values)


def select_cache_rows(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache holding ``cache``'s batch rows ``rows`` (n,), e.g. one prefix per candidate.

    The source cache is left untouched (a forward pass appends to the cache it is given, by
    concatenation, so a broadcast view of one row is enough when every row is the same photo:
    the prefix is then copied once, by that concatenation, instead of twice).
    """
    n = int(rows.numel())
    if n > 0 and bool((rows == rows[0]).all()):
        r = int(rows[0])
        layers = [(k[r : r + 1].expand(n, -1, -1, -1), v[r : r + 1].expand(n, -1, -1, -1)) for k, v, *_ in cache]
    else:
        layers = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v, *_ in cache]
    # Built from empty slices (DynamicCache's constructor concatenates, i.e. copies, what it is
    # given), then pointed at the selected rows, as DynamicLayer.batch_select_indices does.
    out = DynamicCache(ddp_cache_data=[(k[:, :, :0], v[:, :, :0]) for k, v in layers])
    for layer, (k, v) in zip(out.layers, layers):
        layer.keys, layer.values = k, v  # type: ignore[union-attr]
    return out

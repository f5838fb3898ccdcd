"""Text and image conditioning for AniSora from ComfyUI's own encoders (no encoder is loaded here).

* CONDITIONING: ``[[tensor [1, L, D], {...}], ...]`` from core's CLIPTextEncode (Wan: UMT5-XXL, D = 4096).
  Wan pads prompt embeddings with zeros to 512 tokens (diffusers' ``max_sequence_length``; native Wan
  ``text_len``) and truncates longer ones. ComfyUI's UMT5 already zeroes the padded positions
  (``zero_out_masked``), so its CONDITIONING gives the same 512 rows either way.
* CLIP_VISION_OUTPUT: ``.penultimate_hidden_states`` [1, 257, 1280] (ViT-H/14, the layer Wan I2V reads).
* Micro-conditions: AniSora's prompts end with ``aesthetic score: A. motion score: M.`` (digest A1.5); since
  text arrives encoded, :func:`micro_condition_prompt` builds that text for the encoder.
"""
from __future__ import annotations

import torch

from ..errors import AnimeVideoInputError
from .model import TextConditioning

MAX_TEXT_TOKENS = 512
NO_TEXT_SENTENCE = "There is no text in the video."


def micro_condition_prompt(prompt: str, aesthetic_score: float | None = 5.5, motion_score: float | None = 3.0,
                           no_text: bool = False) -> str:
    parts = [prompt.strip()]
    if aesthetic_score is not None:
        parts.append(f"aesthetic score: {aesthetic_score:g}.")
    if motion_score is not None:
        parts.append(f"motion score: {motion_score:g}.")
    if no_text:
        parts.append(NO_TEXT_SENTENCE)
    return " ".join(p for p in parts if p)


def conditioning_tensor(cond, input_name: str = "positive") -> tuple[torch.Tensor, list[str]]:
    """The [1, L, D] embedding of a CONDITIONING (the first entry; more entries are reported, not mixed)."""
    notes = []
    if isinstance(cond, torch.Tensor):
        x = cond
    else:
        if not isinstance(cond, (list, tuple)) or not cond or not isinstance(cond[0], (list, tuple)):
            raise AnimeVideoInputError(f"{input_name}: expected a CONDITIONING from CLIP Text Encode.")
        x = cond[0][0]
        if len(cond) > 1:
            notes.append(f"{input_name}: {len(cond)} conditioning entries; only the first is used.")
    if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
        raise AnimeVideoInputError(f"{input_name}: expected prompt embeddings [1, tokens, dim], got "
                                   f"{getattr(x, 'shape', type(x))}.")
    if x.ndim == 2:
        x = x[None]
    if x.shape[0] != 1:
        x = x[:1]
        notes.append(f"{input_name}: a batch of prompts; only the first is used.")
    return x.float(), notes


def pad_prompt_embeds(x: torch.Tensor, length: int = MAX_TEXT_TOKENS) -> torch.Tensor:
    """[1, L, D] -> [1, length, D]: zero-padded after the tokens, or truncated."""
    if x.shape[1] >= length:
        return x[:, :length]
    return torch.cat([x, x.new_zeros(x.shape[0], length - x.shape[1], x.shape[2])], dim=1)


def clip_vision_tokens(output, input_name: str = "clip_vision_output") -> torch.Tensor:
    x = getattr(output, "penultimate_hidden_states", None)
    if x is None and isinstance(output, dict):
        x = output.get("penultimate_hidden_states")
    if x is None and isinstance(output, torch.Tensor):
        x = output
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise AnimeVideoInputError(
            f"{input_name}: expected a CLIP_VISION_OUTPUT (core's CLIP Vision Encode with clip_vision_h) holding "
            "penultimate_hidden_states [1, 257, 1280].")
    return x[:1].float()


def build_text(positive, negative=None, clip_vision_output=None, cfg: float = 1.0) -> tuple[TextConditioning, list]:
    pos, notes = conditioning_tensor(positive, "positive")
    neg = None
    if negative is not None:
        neg, more = conditioning_tensor(negative, "negative")
        notes += more
    elif cfg > 1.0:
        raise AnimeVideoInputError(
            f"negative: cfg {cfg:g} > 1 runs an unconditional pass, which needs a negative prompt's CONDITIONING "
            "(CLIP Text Encode of the negative prompt). Connect one, or set cfg to 1 (AniSora V3: 8 steps, cfg 1).")
    img = clip_vision_tokens(clip_vision_output) if clip_vision_output is not None else None
    return TextConditioning(pos, neg, img), notes

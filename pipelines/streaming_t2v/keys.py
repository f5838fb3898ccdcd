"""The released ``streaming_t2v.ckpt`` layout and the architecture read from its shapes.

The checkpoint is the Lightning ``state_dict`` of the official ``VideoLDM`` (Picsart-AI-Research/StreamingT2V,
branch ``StreamingModelscope``, ``t2v_enhanced/model/video_ldm.py``; ``model_init.py`` loads it strictly), so it
holds every sub-module under its attribute name:

* ``base_model.``: ``controlnet/unet_3d_condition.py::UNet3DConditionModel`` (ModelScope UNet + CAM mergers + APM
  mixing) -> ``model.build_base_unet`` (diffusers ``UNet3DConditionModel``), same names;
* ``unet.``: ``controlnet/controlnet.py::ControlNetModel`` (the CAM) -> ``model.CAMEncoder``, same names;
* ``resampler.``: ``controlnet/image_embedder.py::ImgEmbContextResampler`` -> ``model.ImgEmbContextResampler``;
* ``image_encoder.model.``: ``FrozenOpenCLIPImageEmbedder.model``, open_clip ViT-H-14 with ``transformer`` deleted:
  ``visual.*`` -> transformers ``CLIPVisionModelWithProjection`` (the SVD loader's rules); the text leftovers
  (``token_embedding``, ``positional_embedding``, ``ln_final``, ``text_projection``, ``logit_scale``) are unused;
* ``text_encoder.``: transformers ``CLIPTextModel`` of damo-vilab/text-to-video-ms-1.7b, same class and names
  (transformers 5 drops the ``text_model.`` level: :func:`text_keys_installed`);
* ``vae.``: diffusers ``AutoencoderKL`` of damo-vilab/text-to-video-ms-1.7b, same class and names.

The names were written from the official modules (built on the meta device at full size by
``scripts/reference_fixtures/make_streaming_t2v.py``, which stores the resulting key list;
``tests/test_streaming_t2v_keys.py`` checks this module against it).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from ..errors import AnimeVideoModelError
from ..svd.detect import detect_clip_config

Shapes = Mapping[str, Sequence[int]]

BASE_PREFIX = "base_model."
CAM_PREFIX = "unet."
RESAMPLER_PREFIX = "resampler."
IMAGE_ENCODER_PREFIX = "image_encoder.model.visual."
IMAGE_ENCODER_LEFTOVERS = "image_encoder.model."  # token_embedding, positional_embedding, ln_final, ...
TEXT_PREFIX = "text_encoder."
VAE_PREFIX = "vae."

TRANSFORMER_IN_HEADS = 8  # UNet3DConditionModel.transformer_in: 8 heads of attention_head_dim
TEXT_HEAD_DIM = 64  # OpenCLIP ViT-H text tower (ModelScope's text encoder): 16 heads of 64
NORM_GROUPS = 32
VAE_SCALING_FACTOR = 0.18215  # damo-vilab/text-to-video-ms-1.7b vae/config.json

# damo-vilab/text-to-video-ms-1.7b scheduler/scheduler_config.json (the official code builds its DDIMScheduler from it)
SCHEDULER_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                        num_train_timesteps=1000, prediction_type="epsilon", set_alpha_to_one=False, steps_offset=1)


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m[1]) for k in shapes if (m := rx.match(k))})


def sub_shapes(shapes: Shapes, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


def is_streaming_t2v(keys: Sequence[str]) -> bool:
    ks = set(keys)
    return (any(k.startswith(BASE_PREFIX + "cross_attention_merger_down_blocks.") for k in ks)
            and any(k.startswith(CAM_PREFIX + "controlnet_cond_embedding.") for k in ks))


def require_streaming_t2v(keys: Sequence[str], file_name: str):
    if not is_streaming_t2v(keys):
        from .. import registry

        registry.require(list(keys), ("streaming_t2v",), name=file_name, expected=(
            "The loader needs the released streaming_t2v.ckpt (keys base_model.cross_attention_merger_*, "
            "unet.controlnet_cond_embedding.*, resampler.*, image_encoder.*, text_encoder.*, vae.*)."))
    missing = [p for p in (RESAMPLER_PREFIX, IMAGE_ENCODER_PREFIX, TEXT_PREFIX, VAE_PREFIX)
               if not any(k.startswith(p) for k in keys)]
    if missing:
        raise AnimeVideoModelError(
            f"'{file_name}' is an incomplete StreamingT2V checkpoint: nothing under {', '.join(missing)} "
            "(the released streaming_t2v.ckpt holds all of them; download it again).")


def detect_unet_config(shapes: Shapes) -> dict:
    """diffusers ``UNet3DConditionModel`` kwargs from the ``base_model.`` shapes (prefix stripped)."""
    levels = _indices(shapes, r"down_blocks\.(\d+)\.")
    boc = tuple(shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in levels)
    lpb = len(_indices(shapes, r"down_blocks\.0\.resnets\.(\d+)\."))
    down = tuple("CrossAttnDownBlock3D" if f"down_blocks.{i}.attentions.0.proj_in.weight" in shapes
                 else "DownBlock3D" for i in levels)
    up_levels = _indices(shapes, r"up_blocks\.(\d+)\.")
    up = tuple("CrossAttnUpBlock3D" if f"up_blocks.{i}.attentions.0.proj_in.weight" in shapes
               else "UpBlock3D" for i in up_levels)
    xattn = [v for k, v in shapes.items() if k.endswith("attn2.to_k.weight") and k.startswith(("down", "mid", "up"))]
    if not xattn:
        raise AnimeVideoModelError("The StreamingT2V UNet has no cross-attention layers.")
    inner = shapes["transformer_in.proj_in.weight"][0]
    if inner % TRANSFORMER_IN_HEADS:
        raise AnimeVideoModelError(f"transformer_in width {inner} is not {TRANSFORMER_IN_HEADS} heads wide.")
    head_dim = inner // TRANSFORMER_IN_HEADS
    for c in boc:
        if c % head_dim or c % NORM_GROUPS:
            raise AnimeVideoModelError(f"UNet width {c} does not fit {head_dim}-wide heads and {NORM_GROUPS} groups.")
    return dict(in_channels=shapes["conv_in.weight"][1], out_channels=shapes["conv_out.weight"][0],
                block_out_channels=boc, layers_per_block=lpb, down_block_types=down, up_block_types=up,
                cross_attention_dim=xattn[0][1], attention_head_dim=head_dim, norm_num_groups=NORM_GROUPS,
                sample_size=32)


def detect_cam_config(shapes: Shapes) -> dict:
    """``model.CAMEncoder`` kwargs (besides the UNet config) from the ``unet.`` shapes."""
    blocks = _indices(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    chans = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    chans += [shapes[f"controlnet_cond_embedding.blocks.{i}.weight"][0] for i in blocks if i % 2 == 1]
    return dict(conditioning_channels=tuple(chans))


def detect_resampler_config(shapes: Shapes) -> dict:
    from .model import NUM_IMAGE_TOKENS

    inner, image_dim = shapes["context_embedding.0.weight"]
    out = shapes["context_embedding.2.weight"][0]
    if out % NUM_IMAGE_TOKENS:
        raise AnimeVideoModelError(f"The APM resampler's output {out} is not {NUM_IMAGE_TOKENS} tokens wide.")
    return dict(image_dim=image_dim, inner_dim=inner, context_dim=out // NUM_IMAGE_TOKENS)


def detect_text_config(shapes: Shapes) -> dict:
    """transformers ``CLIPTextConfig`` kwargs from the ``text_encoder.`` shapes."""
    vocab, hidden = shapes["text_model.embeddings.token_embedding.weight"]
    if hidden % TEXT_HEAD_DIM:
        raise AnimeVideoModelError(f"Text-encoder width {hidden} is not a multiple of {TEXT_HEAD_DIM}-wide heads.")
    layers = _indices(shapes, r"text_model\.encoder\.layers\.(\d+)\.")
    return dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=len(layers),
                intermediate_size=shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0],
                num_attention_heads=hidden // TEXT_HEAD_DIM,
                max_position_embeddings=shapes["text_model.embeddings.position_embedding.weight"][0],
                hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=hidden,
                bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0)  # CLIP: the two specials last, '!' = 0


TEXT_MODEL = "text_model."  # transformers 4.x CLIPTextModel (the release's) nests everything under text_model.


def text_keys_released(sd: dict, model_keys) -> dict:
    """Installed transformers' CLIPTextModel keys -> the release's (``text_model.`` first, as transformers 4)."""
    if any(k.startswith(TEXT_MODEL) for k in model_keys):
        return dict(sd)
    return {TEXT_MODEL + k: v for k, v in sd.items()}


def text_keys_installed(sd: dict, model_keys) -> dict:
    """The release's CLIPTextModel keys -> the installed transformers' (transformers 5 drops ``text_model.``)."""
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    if any(k.startswith(TEXT_MODEL) for k in model_keys):
        return sd
    return {k[len(TEXT_MODEL):] if k.startswith(TEXT_MODEL) else k: v for k, v in sd.items()}


def detect_vae_config(shapes: Shapes) -> dict:
    """diffusers ``AutoencoderKL`` kwargs from the ``vae.`` shapes (the SD / ModelScope VAE)."""
    levels = _indices(shapes, r"encoder\.down_blocks\.(\d+)\.")
    boc = tuple(shapes[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"][0] for i in levels)
    return dict(in_channels=shapes["encoder.conv_in.weight"][1], out_channels=shapes["decoder.conv_out.weight"][0],
                block_out_channels=boc, down_block_types=("DownEncoderBlock2D",) * len(boc),
                up_block_types=("UpDecoderBlock2D",) * len(boc),
                layers_per_block=len(_indices(shapes, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")),
                latent_channels=shapes["decoder.conv_in.weight"][1], norm_num_groups=NORM_GROUPS,
                scaling_factor=VAE_SCALING_FACTOR)


def detect_image_encoder_config(shapes: Shapes) -> dict:
    return detect_clip_config(shapes)

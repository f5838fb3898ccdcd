"""What is this checkpoint? Architecture and size read from tensor names and shapes, never file names.

Head counts are not stored in weights, so the architectures' own rules apply: the SVD UNet uses
64-wide attention heads, the OpenCLIP ViT-H image encoder 80-wide heads.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from ..errors import AnimeVideoModelError
from .keymap import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX

Shapes = Mapping[str, Sequence[int]]

UNET_HEAD_DIM = 64
SGM_VAE_LAYERS = 2  # res blocks per encoder level in SVD's VAE (num_res_blocks)
OPENCLIP_VIT_H_HEAD_WIDTH = 80


def _strip(keys, prefix: str) -> set[str]:
    return {k[len(prefix):] if k.startswith(prefix) else k for k in keys}


def is_sgm_unet(keys) -> bool:
    """An sgm-layout UNet (``model.diffusion_model.``-prefixed or bare) with SVD's temporal layers."""
    ks = _strip(keys, UNET_PREFIX)
    return "input_blocks.0.0.weight" in ks and any(".time_stack." in k for k in ks)


def is_svd_bundle(keys) -> bool:
    """svd.safetensors and its kin: the temporal UNet and the VAE in one sgm file (the image encoder is checked
    when loading, to say it is missing)."""
    return any(k.startswith(UNET_PREFIX) for k in keys) and is_sgm_unet(keys) and \
        any(k.startswith(VAE_PREFIX) for k in keys)


def is_svd_unet(keys) -> bool:
    return is_sgm_unet(keys) and not any(k.startswith(VAE_PREFIX) for k in keys)


def is_svd_vae(keys) -> bool:
    """SVD's temporal VAE (sgm names, with or without ``first_stage_model.``): a 2D encoder, a decoder with
    time_stack / time_mix layers."""
    ks = _strip(keys, VAE_PREFIX)
    return "encoder.conv_in.weight" in ks and "decoder.conv_out.weight" in ks and \
        any(k.startswith("decoder.") and (".time_stack." in k or "time_mix" in k) for k in ks)


def is_svd_image_encoder(keys) -> bool:
    """OpenCLIP's ViT visual tower as SVD stores it (``conditioner.embedders.0.open_clip.model.visual.``)."""
    ks = _strip(keys, CLIP_PREFIX)
    return {"class_embedding", "conv1.weight", "positional_embedding", "proj"} <= ks and \
        any(k.startswith("transformer.resblocks.0.") for k in ks)


def describe_checkpoint(keys: Sequence[str]) -> str:
    """A human description of what a state dict holds, for error messages (the architecture registry's)."""
    from .. import registry

    return registry.describe(list(keys))


SVD_EXPECTED = (
    "The SVD loader needs an sgm single file with model.diffusion_model.*, first_stage_model.* and "
    "conditioner.embedders.0.open_clip.model.visual.* (svd.safetensors, svd_xt.safetensors, "
    "svd_xt_1_1.safetensors or an anime fine-tune saved the same way).")


def require_svd(keys_or_shapes, file_name: str):
    from .. import registry

    ks = list(keys_or_shapes)
    registry.require(keys_or_shapes, "svd", name=file_name, expected=SVD_EXPECTED)
    if not any(k.startswith(CLIP_PREFIX) for k in ks):
        raise AnimeVideoModelError(
            f"'{file_name}' has the SVD UNet and VAE but no image encoder "
            f"({CLIP_PREFIX}*); use the full released file, not a pruned UNet-only copy."
        )


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m[1]) for k in shapes if (m := rx.match(k))})


def detect_unet_config(shapes: Shapes) -> dict:
    """diffusers ``UNetSpatioTemporalConditionModel`` kwargs from sgm UNet tensor shapes (prefix stripped)."""
    inputs = _indices(shapes, r"input_blocks\.(\d+)\.")
    n_slots_total = len(inputs)  # levels * (layers_per_block + 1)
    downs = _indices(shapes, r"input_blocks\.(\d+)\.0\.op\.weight")
    if downs:
        layers_per_block = downs[0] - 1
    else:  # a single level
        layers_per_block = n_slots_total - 1
    slots = layers_per_block + 1
    levels = n_slots_total // slots
    block_out, down_types, up_types, tdepth = [], [], [], []
    for level in range(levels):
        first = 1 + level * slots
        block_out.append(shapes[f"input_blocks.{first}.0.out_layers.3.weight"][0])
        attn = f"input_blocks.{first}.1.proj_in.weight" in shapes
        down_types.append("CrossAttnDownBlockSpatioTemporal" if attn else "DownBlockSpatioTemporal")
        depth = len(_indices(shapes, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\."))
        tdepth.append(max(depth, 1))
    up_types = [
        "CrossAttnUpBlockSpatioTemporal" if t.startswith("CrossAttn") else "UpBlockSpatioTemporal"
        for t in reversed(down_types)
    ]
    attn2 = [k for k in shapes if k.endswith("transformer_blocks.0.attn2.to_k.weight")]
    cross_dim = shapes[attn2[0]][1] if attn2 else 1024
    adm_in = shapes["label_emb.0.0.weight"][1]
    for c in block_out:
        if c % UNET_HEAD_DIM:
            raise AnimeVideoModelError(
                f"SVD UNet width {c} is not a multiple of the architecture's head width {UNET_HEAD_DIM}."
            )
    return dict(
        in_channels=shapes["input_blocks.0.0.weight"][1],
        out_channels=shapes["out.2.weight"][0],
        block_out_channels=tuple(block_out),
        down_block_types=tuple(down_types),
        up_block_types=tuple(up_types),
        layers_per_block=layers_per_block,
        transformer_layers_per_block=tuple(tdepth),
        cross_attention_dim=cross_dim,
        num_attention_heads=tuple(c // UNET_HEAD_DIM for c in block_out),
        addition_time_embed_dim=adm_in // 3,
        projection_class_embeddings_input_dim=adm_in,
        num_frames=25,
    )


def detect_vae_config(shapes: Shapes) -> dict:
    """diffusers ``AutoencoderKLTemporalDecoder`` kwargs from sgm VAE shapes (prefix stripped)."""
    levels = _indices(shapes, r"encoder\.down\.(\d+)\.")
    layers = _indices(shapes, r"encoder\.down\.0\.block\.(\d+)\.")
    if len(layers) != SGM_VAE_LAYERS or "decoder.mid.block_2.conv1.weight" not in shapes:
        raise AnimeVideoModelError(
            f"The VAE has {len(layers)} res blocks per level"
            f"{'' if 'decoder.mid.block_2.conv1.weight' in shapes else ' and no second middle block'}; "
            f"SVD's temporal VAE has {SGM_VAE_LAYERS} per level and two in the middle (sgm's VideoDecoder), "
            "the only layout the temporal decoder can be built from.")
    block_out = tuple(shapes[f"encoder.down.{lv}.block.0.conv2.weight"][0] for lv in levels)
    return dict(
        in_channels=shapes["encoder.conv_in.weight"][1],
        out_channels=shapes["decoder.conv_out.weight"][0],
        down_block_types=("DownEncoderBlock2D",) * len(levels),
        block_out_channels=block_out,
        layers_per_block=len(layers),
        latent_channels=shapes["encoder.conv_out.weight"][0] // 2,
    )


def detect_clip_config(shapes: Shapes) -> dict:
    """transformers ``CLIPVisionConfig`` kwargs from OpenCLIP visual shapes (prefix stripped)."""
    hidden = shapes["class_embedding"][0]
    patch = shapes["conv1.weight"][-1]
    tokens = shapes["positional_embedding"][0] - 1
    side = int(round(tokens ** 0.5))
    layers = _indices(shapes, r"transformer\.resblocks\.(\d+)\.")
    if hidden % OPENCLIP_VIT_H_HEAD_WIDTH:
        raise AnimeVideoModelError(
            f"Image-encoder width {hidden} is not a multiple of ViT-H's head width {OPENCLIP_VIT_H_HEAD_WIDTH}."
        )
    return dict(
        hidden_size=hidden,
        intermediate_size=shapes["transformer.resblocks.0.mlp.c_fc.weight"][0],
        num_hidden_layers=len(layers),
        num_attention_heads=hidden // OPENCLIP_VIT_H_HEAD_WIDTH,
        patch_size=patch,
        image_size=side * patch,
        projection_dim=shapes["proj"][1],
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )


def split_prefixes(shapes: Shapes) -> tuple[dict, dict, dict]:
    unet, vae, clip = {}, {}, {}
    for k, v in shapes.items():
        if k.startswith(UNET_PREFIX):
            unet[k[len(UNET_PREFIX):]] = v
        elif k.startswith(VAE_PREFIX):
            vae[k[len(VAE_PREFIX):]] = v
        elif k.startswith(CLIP_PREFIX):
            clip[k[len(CLIP_PREFIX):]] = v
    return unet, vae, clip

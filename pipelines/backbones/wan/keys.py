"""Wan2.1 (AniSora V2/V3/anymask) weight layouts: native names <-> diffusers names, and configs from shapes.

Native -> diffusers uses diffusers' own converters (``convert_wan_transformer_to_diffusers``,
``convert_wan_vae_to_diffusers``). The inverse (diffusers -> native) is ours; it exists so tests and the
tiny-model writer can produce files in the real released layout, and the round trip is tested.

Configs are read from tensor shapes only (never fetched from the Hub).
"""
from __future__ import annotations

import re

import torch

from ...errors import AnimeVideoModelError

NATIVE_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# Real Wan2.1 transformers (1.3B: 1536 wide, 14B: 5120 wide) use 128-dim heads; this is not visible in the
# weights (q/k norms span all heads), so it is the default. Files we write for tests record theirs.
DEFAULT_HEAD_DIM = 128
HEAD_DIM_METADATA = "animevideo.attention_head_dim"


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------

def strip_prefix(keys_or_sd):
    """Drop ComfyUI/sgm-style ``model.diffusion_model.`` prefixes (dict in, dict out; else a key list)."""
    def strip(k):
        for p in NATIVE_PREFIXES:
            if k.startswith(p):
                return k[len(p):]
        return k
    if isinstance(keys_or_sd, dict):
        return {strip(k): v for k, v in keys_or_sd.items()}
    return [strip(k) for k in keys_or_sd]


def is_native_wan_transformer(keys) -> bool:
    keys = set(strip_prefix(keys))
    return "head.modulation" in keys and "patch_embedding.weight" in keys


def is_diffusers_wan_transformer(keys) -> bool:
    keys = set(keys)
    return "condition_embedder.time_proj.weight" in keys and "patch_embedding.weight" in keys


def is_wan_transformer(keys) -> bool:
    return is_native_wan_transformer(keys) or is_diffusers_wan_transformer(keys)


def is_native_wan_vae(keys) -> bool:
    return "decoder.middle.0.residual.0.gamma" in set(keys)


def is_diffusers_wan_vae(keys) -> bool:
    return "decoder.mid_block.resnets.0.norm1.gamma" in set(keys)


# ---------------------------------------------------------------------------------------------
# Transformer: diffusers -> native (inverse of diffusers' converter)
# ---------------------------------------------------------------------------------------------

_TOP_TO_NATIVE = {
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "condition_embedder.image_embedder.norm1.": "img_emb.proj.0.",
    "condition_embedder.image_embedder.ff.net.0.proj.": "img_emb.proj.1.",
    "condition_embedder.image_embedder.ff.net.2.": "img_emb.proj.3.",
    "condition_embedder.image_embedder.norm2.": "img_emb.proj.4.",
    "proj_out.": "head.head.",
    "patch_embedding.": "patch_embedding.",
}
_BLOCK_TO_NATIVE = [  # applied in order to the part after "blocks.N."
    ("attn1.", "self_attn."), ("attn2.", "cross_attn."),
    ("to_out.0.", "o."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
    ("add_k_proj.", "k_img."), ("add_v_proj.", "v_img."), ("norm_added_k.", "norm_k_img."),
    ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."),
]


def transformer_to_native(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        out[_transformer_key_to_native(key)] = value
    return out


def _transformer_key_to_native(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    m = re.match(r"blocks\.(\d+)\.(.*)$", key)
    if m:
        rest = m.group(2)
        if rest == "scale_shift_table":
            return f"blocks.{m.group(1)}.modulation"
        # diffusers norm2 (the cross-attention norm) is native norm3, and the other way round
        if rest.startswith("norm2."):
            rest = "norm3." + rest[len("norm2."):]
        elif rest.startswith("norm3."):
            rest = "norm2." + rest[len("norm3."):]
        for a, b in _BLOCK_TO_NATIVE:
            rest = rest.replace(a, b)
        return f"blocks.{m.group(1)}.{rest}"
    for a, b in _TOP_TO_NATIVE.items():
        if key.startswith(a):
            return b + key[len(a):]
    raise KeyError(f"no native Wan name for diffusers key '{key}'")


def transformer_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    sd = strip_prefix(dict(sd))
    if is_diffusers_wan_transformer(sd.keys()):
        return sd
    return convert_wan_transformer_to_diffusers(sd)


def diffusers_names(keys) -> dict[str, str]:
    """{key as stored: its diffusers name} for a Wan transformer file (names only, no tensors touched)."""
    keys = list(keys)
    if is_diffusers_wan_transformer(strip_prefix(keys)):
        return dict(zip(keys, strip_prefix(keys)))
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    converted = convert_wan_transformer_to_diffusers({k: k for k in keys})  # values: the stored names
    return {stored: new for new, stored in converted.items()}


def transformer_config(sd: dict[str, torch.Tensor], head_dim: int | None = None) -> dict:
    """WanTransformer3DModel config from a diffusers-named state dict's shapes."""
    try:
        pe = sd["patch_embedding.weight"]  # [dim, in_channels, pt, ph, pw]
        dim, in_channels = pe.shape[0], pe.shape[1]
        patch = tuple(int(s) for s in pe.shape[2:])
        num_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        out_channels = sd["proj_out.weight"].shape[0] // (patch[0] * patch[1] * patch[2])
        text_dim = sd["condition_embedder.text_embedder.linear_1.weight"].shape[1]
        freq_dim = sd["condition_embedder.time_embedder.linear_1.weight"].shape[1]
        ffn_dim = sd["blocks.0.ffn.net.0.proj.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise AnimeVideoModelError(f"This does not look like a complete Wan2.1 transformer (missing {e}).") from None
    head_dim = int(head_dim or DEFAULT_HEAD_DIM)
    if dim % head_dim:
        raise AnimeVideoModelError(
            f"Wan transformer width {dim} is not a multiple of the head size {head_dim}; this is not a Wan2.1 "
            "checkpoint this loader knows (Wan2.1 1.3B/14B use 128-dim heads).")
    image_dim = None
    added_kv = None
    if "condition_embedder.image_embedder.ff.net.0.proj.weight" in sd:
        image_dim = sd["condition_embedder.image_embedder.ff.net.0.proj.weight"].shape[1]
    if "blocks.0.attn2.add_k_proj.weight" in sd:
        added_kv = sd["blocks.0.attn2.add_k_proj.weight"].shape[1]
    pos_embed = sd.get("condition_embedder.image_embedder.pos_embed")
    cfg = dict(
        patch_size=patch, num_attention_heads=dim // head_dim, attention_head_dim=head_dim,
        in_channels=int(in_channels), out_channels=int(out_channels), text_dim=int(text_dim),
        freq_dim=int(freq_dim), ffn_dim=int(ffn_dim), num_layers=int(num_layers),
        cross_attn_norm="blocks.0.norm2.weight" in sd,
        qk_norm="rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in sd else None,
        eps=1e-6, image_dim=None if image_dim is None else int(image_dim),
        added_kv_proj_dim=None if added_kv is None else int(added_kv),
    )
    if pos_embed is not None:  # first-last-frame Wan only; the argument is new in diffusers 0.34, AniSora lacks it
        cfg["pos_embed_seq_len"] = int(pos_embed.shape[1])
    return cfg


# ---------------------------------------------------------------------------------------------
# VAE: diffusers -> native (inverse of diffusers' converter), config from shapes
# ---------------------------------------------------------------------------------------------

_RES_TO_NATIVE = {"norm1.gamma": "residual.0.gamma", "conv1.": "residual.2.", "norm2.gamma": "residual.3.gamma",
                  "conv2.": "residual.6.", "conv_shortcut.": "shortcut."}


def _res_part(rest: str) -> str:
    for a, b in _RES_TO_NATIVE.items():
        if rest.startswith(a):
            return b + rest[len(a):]
    raise KeyError(rest)


def _vae_key_to_native(key: str) -> str:
    fixed = {
        "encoder.conv_in.": "encoder.conv1.", "decoder.conv_in.": "decoder.conv1.",
        "encoder.norm_out.gamma": "encoder.head.0.gamma", "decoder.norm_out.gamma": "decoder.head.0.gamma",
        "encoder.conv_out.": "encoder.head.2.", "decoder.conv_out.": "decoder.head.2.",
        "quant_conv.": "conv1.", "post_quant_conv.": "conv2.",
    }
    for a, b in fixed.items():
        if key.startswith(a):
            return b + key[len(a):]
    m = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", key)
    if m:
        side, kind, i, rest = m.groups()
        if kind == "attentions":
            return f"{side}.middle.1.{rest}"
        return f"{side}.middle.{2 * int(i)}.{_res_part(rest)}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.(.*)$", key)
    if m:
        i, rest = m.groups()
        try:
            rest = _res_part(rest)
        except KeyError:
            pass  # a resample / time_conv of a downsampling stage keeps its name
        return f"encoder.downsamples.{i}.{rest}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)$", key)
    if m:
        b, kind, j, rest = m.groups()
        b, j = int(b), int(j)
        if kind == "upsamplers":
            return f"decoder.upsamples.{4 * b + 3}.{rest}"
        return f"decoder.upsamples.{4 * b + j}.{_res_part(rest)}"
    raise KeyError(f"no native Wan VAE name for diffusers key '{key}'")


def vae_to_native(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {_vae_key_to_native(k): v for k, v in sd.items()}


def vae_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    if is_diffusers_wan_vae(sd.keys()):
        return dict(sd)
    if not is_native_wan_vae(sd.keys()):
        raise AnimeVideoModelError(
            "This file is not a Wan2.1 VAE (no 'decoder.middle.0.residual.0.gamma'); expected Wan2.1_VAE.pth or "
            "wan_2.1_vae.safetensors in models/vae.")
    return convert_wan_vae_to_diffusers(dict(sd))


def vae_config(sd: dict[str, torch.Tensor]) -> dict:
    """AutoencoderKLWan config from a diffusers-named Wan2.1 VAE state dict."""
    try:
        base_dim = sd["encoder.conv_in.weight"].shape[0]
        z_dim = sd["post_quant_conv.weight"].shape[0]
    except KeyError as e:
        raise AnimeVideoModelError(f"Incomplete Wan VAE (missing {e}).") from None
    if "decoder.up_blocks.0.resnets.0.conv1.weight" not in sd or z_dim != 16:
        raise AnimeVideoModelError(
            f"Only the Wan2.1 VAE layout is supported (16 latent channels); this VAE has {z_dim}. The Wan2.2 VAE "
            "(48 channels) belongs to the Wan2.2-5B models, not to AniSora V2/V3/anymask.")
    levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down_blocks."))
    # encoder.down_blocks is flat: num_res_blocks resnets (+ 1 resample) per level; Wan2.1 has 4 levels, 2 resnets
    mults = []
    i = 0
    while f"encoder.down_blocks.{i}.conv1.weight" in sd or f"encoder.down_blocks.{i}.resample.1.weight" in sd:
        w = sd.get(f"encoder.down_blocks.{i}.conv1.weight")
        if w is not None:
            mults.append(w.shape[0] // base_dim)
        i += 1
    num_res = 2
    dim_mult = mults[::num_res]
    if len(dim_mult) != 4 or levels != 4 * num_res + 3:
        raise AnimeVideoModelError("Unexpected Wan VAE depth; only the Wan2.1 VAE layout (4 levels) is supported.")
    temporal = [f"encoder.down_blocks.{num_res * (s + 1) + s}.time_conv.weight" in sd for s in range(3)]
    return dict(base_dim=int(base_dim), z_dim=int(z_dim), dim_mult=[int(m) for m in dim_mult],
                num_res_blocks=num_res, attn_scales=[], temperal_downsample=temporal)

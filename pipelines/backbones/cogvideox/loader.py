"""Load the CogVideoX-5B image-to-video backbone (AniSora V1) from its released layouts.

Diffusers folders (``transformer/``, ``vae/``, optional ``scheduler/``, e.g. the community copy
``Disty0/Index-anisora-5B-diffusers``), single diffusers-layout transformer / VAE files, and AniSora's released
SAT files (transformer ``5B/…/mp_rank_00_model_states.pt``, VAE ``3d-vae.pt``; keys converted by :mod:`.keys`;
pickles only through ``torch.load(weights_only=True)``). The architecture is read from tensor shapes; configs
are never fetched. The AniSora V1 method (pipelines/anisora/cogvideox.py) wraps the parts into its model.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ...checkpoint_io import empty_weights, explain_load_errors, materialize, own_module_tensors, read_state_dict
from ...errors import AnimeVideoModelError
from ... import registry
from ...registry import Architecture
from .detect import (SAT_PREFIX, _read_json, _transformer_dir, cogvideox_layout, is_cogvideox_folder,
                     is_cogvideox_vae, is_sat_vae_state_dict)
from .keys import sat_to_diffusers, sat_vae_to_diffusers

SCALING_FACTOR_5B = 0.7
TEXT_LENGTH = 226
TEMPORAL_RATIO = 4
SPATIAL_RATIO = 8

# CogVideoX-5b-I2V's scheduler, used when a folder ships none (single files).
DEFAULT_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "snr_shift_scale": 1.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}
# Learned-position tables of known checkpoints: tokens -> (sample_frames, latent height, latent width).
KNOWN_SAMPLE_SIZES = {
    13 * 30 * 45: (49, 60, 90),  # CogVideoX-5b-I2V, 480x720
    13 * 45 * 80: (49, 90, 160),  # 720x1280 (AniSora V1's sampling size)
    13 * 40 * 68: (49, 80, 136),  # 640x1088 (AniSora's 24 GB config)
}

EXPECTED_TRANSFORMER = ("AniSora V1 is a CogVideoX-5B image-to-video transformer: diffusers keys such as "
                        "patch_embed.text_proj.weight, or SAT keys such as mixins.patch_embed.text_proj.weight "
                        "(e.g. the folder Disty0/Index-anisora-5B-diffusers in models/diffusers).")
EXPECTED_VAE = ("The CogVideoX VAE is the vae/ folder of a CogVideoX diffusers copy, its "
                "diffusion_pytorch_model.safetensors, or AniSora's SAT 3d-vae.pt.")
SAT_REFUSED_HINT = ("Use the diffusers copy of AniSora V1 (e.g. Disty0/Index-anisora-5B-diffusers, folder under "
                    "models/diffusers) or convert the file to .safetensors.")


@dataclass(eq=False)
class CogVideoXParts:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    layout: str  # "diffusers-folder", "diffusers-file" or "sat-file"
    scheduler_config: dict
    source: str


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or pickled CogVideoX checkpoint (memory-mapped; DeepSpeed/SAT ``{"module": …}``
    wrappers unwrapped)."""
    return read_state_dict(path, mmap=True, refused_hint=SAT_REFUSED_HINT)


def _sample_size_for(tokens: int, patch: int) -> tuple[int, int, int]:
    if tokens in KNOWN_SAMPLE_SIZES:
        return KNOWN_SAMPLE_SIZES[tokens]
    # An unknown table: the most (odd) latent frames that divide it, then the grid nearest 3:2.
    for t in (13, 11, 9, 7, 5, 3, 1):  # CogVideoX clips have an odd latent frame count
        if tokens % t:
            continue
        n = tokens // t
        pairs = [(h, n // h) for h in range(1, int(math.isqrt(n)) + 1) if n % h == 0]
        h, w = min(pairs, key=lambda hw: abs(hw[1] / hw[0] - 1.5))
        return (t - 1) * TEMPORAL_RATIO + 1, h * patch, w * patch
    return 49, 60, 90


def transformer_config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict:
    """``CogVideoXTransformer3DModel`` arguments for a diffusers-layout state dict's shapes."""
    need = ("patch_embed.proj.weight", "patch_embed.text_proj.weight", "time_embedding.linear_1.weight",
            "proj_out.weight", "transformer_blocks.0.attn1.norm_q.weight")
    missing = [k for k in need if k not in shapes]
    if missing:
        raise AnimeVideoModelError(f"Not a CogVideoX transformer: no {missing[0]}.")
    proj = shapes["patch_embed.proj.weight"]
    if len(proj) != 4:
        raise AnimeVideoModelError(
            "This is a CogVideoX 1.5 transformer (temporal patching); AniSora V1 is CogVideoX 1.0 (5B I2V) and "
            "only that layout is supported.")
    inner, in_channels, patch = proj[0], proj[1], proj[2]
    if in_channels != 32:
        raise AnimeVideoModelError(
            f"This CogVideoX transformer takes {in_channels} input channels (text-to-video); AniSora V1 is the "
            "32-channel image-to-video layout (16 noise + 16 guide latent channels).")
    head_dim = shapes["transformer_blocks.0.attn1.norm_q.weight"][0]
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("transformer_blocks."))
    cfg = dict(
        num_attention_heads=inner // head_dim,
        attention_head_dim=head_dim,
        in_channels=in_channels,
        out_channels=shapes["proj_out.weight"][0] // (patch * patch),
        time_embed_dim=shapes["time_embedding.linear_1.weight"][0],
        text_embed_dim=shapes["patch_embed.text_proj.weight"][1],
        num_layers=layers,
        patch_size=patch,
        attention_bias="transformer_blocks.0.attn1.to_q.bias" in shapes,
        patch_bias="patch_embed.proj.bias" in shapes,
        norm_elementwise_affine="norm_final.weight" in shapes,
        temporal_compression_ratio=TEMPORAL_RATIO,
        max_text_seq_length=TEXT_LENGTH,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings="patch_embed.pos_embedding" in shapes,
    )
    if "ofs_embedding.linear_1.weight" in shapes:
        cfg["ofs_embed_dim"] = shapes["ofs_embedding.linear_1.weight"][0]
    if cfg["use_learned_positional_embeddings"]:
        tokens = shapes["patch_embed.pos_embedding"][1] - TEXT_LENGTH
        p2 = patch * patch
        frames, sh, sw = _sample_size_for(tokens, patch) if tokens > 0 else (49, 60, 90)
        if tokens <= 0 or ((frames - 1) // TEMPORAL_RATIO + 1) * (sh // patch) * (sw // patch) != tokens:
            raise AnimeVideoModelError(
                f"The learned positional table has {tokens + TEXT_LENGTH} rows, which does not fit "
                f"{TEXT_LENGTH} text tokens plus a video grid (patch {patch}, {p2} pixels per token).")
        cfg.update(sample_frames=frames, sample_height=sh, sample_width=sw)
    ff = shapes.get("transformer_blocks.0.ff.net.0.proj.weight")
    if ff is not None and ff[0] != 4 * inner:
        raise AnimeVideoModelError(f"Unexpected CogVideoX feed-forward width {ff[0]} (expected 4 x {inner}).")
    return cfg


def vae_config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict:
    """``AutoencoderKLCogVideoX`` arguments for a diffusers-layout VAE state dict (the CogVideoX-5B rules for
    what shapes cannot tell: 32 norm groups, x4 temporal compression, scaling factor 0.7)."""
    if "encoder.conv_in.conv.weight" not in shapes or "decoder.conv_out.conv.weight" not in shapes:
        raise AnimeVideoModelError("Not a CogVideoX VAE (diffusers layout): no encoder.conv_in.conv.weight.")
    levels = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down_blocks."))
    block_out = tuple(shapes[f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight"][0] for i in range(levels))
    lpb = 1 + max(int(k.split(".")[4]) for k in shapes if k.startswith("encoder.down_blocks.0.resnets."))
    return dict(
        block_out_channels=block_out,
        down_block_types=("CogVideoXDownBlock3D",) * levels,
        up_block_types=("CogVideoXUpBlock3D",) * levels,
        layers_per_block=lpb,
        latent_channels=shapes["encoder.conv_out.conv.weight"][0] // 2,
        in_channels=shapes["encoder.conv_in.conv.weight"][1],
        out_channels=shapes["decoder.conv_out.conv.weight"][0],
        temporal_compression_ratio=TEMPORAL_RATIO,
        scaling_factor=SCALING_FACTOR_5B,
        use_quant_conv="quant_conv.weight" in shapes,
        use_post_quant_conv="post_quant_conv.weight" in shapes,
    )


def _materialize(cls, config: dict, sd: dict[str, torch.Tensor], dtype: torch.dtype, what: str):
    with empty_weights():
        model = cls(**config)
    return materialize(model, {k: v.to(dtype) for k, v in sd.items()}, what)


def _load_transformer_file(path: str, dtype: torch.dtype):
    from diffusers import CogVideoXTransformer3DModel

    name = os.path.basename(path)
    sd = read_checkpoint(path)
    layout = cogvideox_layout(sd.keys())
    if layout is None:
        registry.require(sd, "cogvideox", name=name, expected=EXPECTED_TRANSFORMER)
    sd = sat_to_diffusers(sd) if layout == "sat" else {k[len(SAT_PREFIX):] if k.startswith(SAT_PREFIX) else k: v
                                                     for k, v in sd.items()}
    cfg = transformer_config_from_shapes({k: tuple(v.shape) for k, v in sd.items()})
    return _materialize(CogVideoXTransformer3DModel, cfg, sd, dtype, f"transformer in '{name}'"), layout


def _load_vae_file(path: str, dtype: torch.dtype):
    from diffusers import AutoencoderKLCogVideoX

    name = os.path.basename(path)
    sd = read_checkpoint(path)
    registry.require(sd, "cogvideox_vae", name=name, expected=EXPECTED_VAE)
    if is_sat_vae_state_dict(sd):
        sd = sat_vae_to_diffusers(sd)
    cfg = vae_config_from_shapes({k: tuple(v.shape) for k, v in sd.items()})
    return _materialize(AutoencoderKLCogVideoX, cfg, sd, dtype, f"VAE in '{name}'")


def vae_dtype_for(dtype: torch.dtype) -> torch.dtype:
    # CogVideoX's VAE is run in bf16/fp32 upstream; fp16 risks overflow in its 3D convs.
    return torch.float32 if dtype == torch.float16 else dtype


def load_cogvideox_parts(transformer_path_or_folder: str, vae_path_or_none: str | None,
                         dtype: torch.dtype) -> CogVideoXParts:
    """Load the CogVideoX I2V transformer and VAE from a diffusers folder (its ``vae/`` used unless a VAE file is given) or from a single
    transformer file (diffusers or SAT layout) plus a diffusers-layout VAE file or folder."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    path = transformer_path_or_folder
    common = dict(local_files_only=True)
    scheduler_config = None
    if os.path.isdir(path):
        tdir = _transformer_dir(path)
        if tdir is None:
            raise AnimeVideoModelError(
                f"'{os.path.basename(path)}' is not a diffusers CogVideoX folder (no transformer/config.json with "
                "_class_name CogVideoXTransformer3DModel).")
        tcfg = _read_json(os.path.join(tdir, "config.json")) or {}
        if tcfg.get("in_channels", 16) != 32 or tcfg.get("patch_size_t") is not None:
            raise AnimeVideoModelError(
                f"'{os.path.basename(path.rstrip('/'))}' holds a CogVideoX transformer with "
                f"{tcfg.get('in_channels', 16)} input channels (patch_size_t {tcfg.get('patch_size_t')}): "
                "text-to-video or CogVideoX 1.5. AniSora V1 is the CogVideoX 1.0 image-to-video layout (32 input "
                "channels), e.g. Disty0/Index-anisora-5B-diffusers.")
        with explain_load_errors(os.path.basename(tdir.rstrip("/")), tdir):
            transformer = CogVideoXTransformer3DModel.from_pretrained(tdir, torch_dtype=dtype, **common)
        transformer = own_module_tensors(transformer).eval().requires_grad_(False)
        layout = "diffusers-folder"
        root = os.path.dirname(tdir) if tdir != path else path
        sched = _read_json(os.path.join(root, "scheduler", "scheduler_config.json"))
        if isinstance(sched, dict):
            scheduler_config = sched
        if vae_path_or_none is None and os.path.isdir(os.path.join(root, "vae")):
            vae_path_or_none = os.path.join(root, "vae")
    else:
        transformer, layout = _load_transformer_file(path, dtype)
        layout = f"{layout}-file"
    cfg = transformer.config
    if cfg.in_channels != 32 or cfg.patch_size_t is not None:
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}' is not a CogVideoX 1.0 image-to-video transformer (in_channels "
            f"{cfg.in_channels}, patch_size_t {cfg.patch_size_t}); AniSora V1 needs 32 input channels.")
    if vae_path_or_none is None:
        raise AnimeVideoModelError(
            "vae: no VAE given. A single transformer file needs the CogVideoX VAE (diffusers layout file, or a vae/ "
            "folder); a diffusers folder brings its own vae/.")
    if os.path.isdir(vae_path_or_none):
        with explain_load_errors(os.path.basename(vae_path_or_none.rstrip("/")), vae_path_or_none):
            vae = AutoencoderKLCogVideoX.from_pretrained(vae_path_or_none, torch_dtype=vae_dtype_for(dtype), **common)
        vae = own_module_tensors(vae).eval().requires_grad_(False)
    else:
        vae = _load_vae_file(vae_path_or_none, vae_dtype_for(dtype))
    if vae.config.latent_channels * 2 != cfg.in_channels:
        raise AnimeVideoModelError(
            f"vae: its {vae.config.latent_channels} latent channels do not fit the transformer "
            f"({cfg.in_channels} = 2 x {cfg.in_channels // 2} input channels); use the CogVideoX VAE.")
    return CogVideoXParts(transformer=transformer, vae=vae, layout=layout,
                          scheduler_config=scheduler_config or dict(DEFAULT_SCHEDULER_CONFIG),
                          source=os.path.basename(path.rstrip("/")))


def load_transformer(source: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The transformer alone, from a file (diffusers or SAT names) or a diffusers folder."""
    if os.path.isdir(source):
        return load_cogvideox_parts(source, None, dtype).transformer
    return _load_transformer_file(source, dtype)[0]


def load_vae(source: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    return _load_vae_file(source, dtype)


ARCHITECTURES = (
    Architecture("cogvideox", "a CogVideoX video transformer (AniSora V1)", "cogvideox",
                 lambda keys, shapes: cogvideox_layout(keys) is not None, load_transformer,
                 hint="load it with AnimeVideo Load AniSora", detect_folder=is_cogvideox_folder),
    Architecture("cogvideox_vae", "a CogVideoX VAE (3D causal)", "cogvideox_vae",
                 lambda keys, shapes: is_cogvideox_vae(shapes), load_vae),
)

"""AniSora V1: the CogVideoX-5B image-to-video backbone (32 input channels), on diffusers' modules.

Loading (:func:`load_cogvideox`): diffusers folders (``transformer/``, ``vae/``, optional ``scheduler/``, e.g.
the community copy ``Disty0/Index-anisora-5B-diffusers``), single diffusers-layout transformer / VAE files,
and AniSora's released SAT files (transformer ``5B/…/mp_rank_00_model_states.pt``, VAE ``3d-vae.pt``; keys
converted here, when the file holds only tensors: ``torch.load(weights_only=True)``).
The architecture is read from tensor shapes; configs are never fetched.

Conditioning (:func:`build_guide_latents`), as AniSora's V1 code does it:
- every keyframe is VAE-encoded alone as a 1-frame clip (a sample of the latent distribution, as diffusers'
  ``CogVideoXImageToVideoPipeline`` does for its first frame), multiplied by the VAE scaling factor (0.7) and
  by the keyframe's strength, and written into latent slot ``k(i) = 0 if i == 0 else (i - 1) // 4 + 1``;
  all other slots are zeros (the zeros *are* the mask: V1 has no mask channel);
- the transformer input is ``cat([noise latent (16), guide latents (16)], channels)``;
- ``num_frames`` must be 8k+1 (4k+1 for the VAE, and an odd latent count: CogVideoX's decoder restores the
  causal first frame only then, and SAT allows 9/11/13 latent frames): others are snapped (ties up), reported;
  width and height are snapped to multiples of 16 (VAE x8, patch 2);
- two keyframes in one latent slot: the later frame wins (reported).

Motion masks: V1 has no mask channel, so the *latent-blend fallback* (digest A6.5) is used: the whole clip
made of the nearest keyframe is VAE-encoded once; after every sampler step the static region (1 − mask, reduced
to latent slots by a min over the slot's pixel frames and 8×8 pixels, then eroded by one latent pixel, i.e.
the motion mask dilated by one) is replaced by that latent noised to the step's level (clean after the last
step), weighted by the keyframe strength. This mirrors the paper's latent post-processing of the training target.

Sampling (:func:`generate`), as ``CogVideoXImageToVideoPipeline`` does: v-prediction, zero-terminal-SNR
DDPM (the scheduler config of the folder, else CogVideoX-5b-I2V's), ``CogVideoXDPMScheduler`` (DPM-Solver++(2M)
SDE, the official V1 sampler) or ``CogVideoXDDIMScheduler`` (``sampler="ddim"``); CFG over text only, the
unconditional branch keeps the guide latents; DynamicCFG ``w = 1 + s·(1 − cos(π·x⁵))/2`` with ``s = cfg``:
by default (``dynamic_cfg_timestep_quirk``, digest A6.7: V1's behaviour) the original's ``x = (steps − t) / steps``
with ``t`` the discrete DDPM timestep (SAT passes ``step_index=num_steps − timestep``, diffusers' pipeline the
same; w is then a pseudo-random value in [1, 1+s]); with the quirk off the intended ``x = step_index / steps``
(w ramps 1 → 1+s). ``cfg <= 1`` skips the unconditional pass.
One CPU generator seeded with ``seed`` draws, in diffusers' order, the keyframe latent samples, the initial
noise and the SDE noise, so a first-frame-only run equals diffusers' pipeline with the same generator.

Text: prompt embeddings ``[1, L, 4096]`` (T5-XXL) are zero-padded or truncated to the transformer's 226 tokens
(the learned positional table covers exactly 226 text positions). diffusers pads with the T5 outputs of pad
tokens instead; SAT's unconditional branch is an all-zero embedding (ComfyUI's ConditioningZeroOut gives it).

Positions: with the learned positional table (CogVideoX-5B-I2V / AniSora V1) diffusers only runs at the trained
resolution and swaps in sin-cos positions for other frame counts; here, as in the original SAT code, the first
``226 + tokens`` rows of the table are used (equal to diffusers at the trained size and frame count; at other
frame counts it is the trained table's first frames). RoPE is computed as diffusers' pipeline does.

Request/hook extras: ``request.fit`` fits keyframes/masks of another size (crop / pad / stretch; None =
bilinear stretch), ``request.vae_tiling`` switches CogVideoX's tiled VAE encode/decode, and ``hooks.device`` /
``hooks.offload_device`` keep only the part at work (VAE, then transformer, then VAE) on the compute device.

Known differences from the original SAT sampler (kept for parity with diffusers): the zero-terminal-SNR
rescale is applied to the 1000-step table (SAT rescales the subsampled step set); keyframe latents are a
sample of the VAE posterior (SAT's guides are the encoder's output, with no added noise); latents are kept in
float32 between steps (diffusers casts them to the model dtype; identical in float32).
"""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..checkpoint_io import (SAFETENSORS_EXTENSIONS, PICKLE_EXTENSIONS, explain_load_errors, own_module_tensors,
                             owned_tensors, torch_load_weights, unwrap_state_dict)
from ..errors import AnimeVideoInputError, AnimeVideoModelError
from .model import AniSoraHooks, AniSoraModel, AniSoraRequest, AniSoraResult, TextConditioning, on_device

BACKBONE = "cogvideox"
SCALING_FACTOR_5B = 0.7
TEXT_LENGTH = 226
TEMPORAL_RATIO = 4
SPATIAL_RATIO = 8
SAT_PREFIX = "model.diffusion_model."

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


# ---------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------

def _strip(keys) -> list[str]:
    return [k[len(SAT_PREFIX):] if k.startswith(SAT_PREFIX) else k for k in keys]


def cogvideox_layout(keys) -> str | None:
    """"diffusers", "sat" or None for a transformer state dict's keys."""
    ks = set(_strip(keys))
    if "patch_embed.text_proj.weight" in ks and "transformer_blocks.0.norm1.linear.weight" in ks:
        return "diffusers"
    if ("mixins.patch_embed.text_proj.weight" in ks or "transformer.layers.0.attention.query_key_value.weight" in ks) \
            and any(k.startswith("mixins.adaln_layer.adaLN_modulations.") for k in ks):
        return "sat"
    return None


def is_cogvideox_state_dict(keys) -> bool:
    """A CogVideoX transformer, in diffusers or SAT key layout."""
    return cogvideox_layout(keys) is not None


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _transformer_dir(path: str) -> str | None:
    for d in (os.path.join(path, "transformer"), path):
        cfg = _read_json(os.path.join(d, "config.json"))
        if isinstance(cfg, dict) and cfg.get("_class_name") == "CogVideoXTransformer3DModel":
            return d
    return None


def is_cogvideox_folder(path: str) -> bool:
    """A diffusers folder holding a CogVideoX transformer (a whole pipeline, or just its ``transformer/``)."""
    return bool(path) and os.path.isdir(path) and _transformer_dir(path) is not None


# ---------------------------------------------------------------------------------------------
# reading files
# ---------------------------------------------------------------------------------------------

def _read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or pickled checkpoint (torch.load(weights_only=True)); DeepSpeed/SAT
    ``{"module": …}`` wrappers are unwrapped."""
    name = os.path.basename(path)
    lower = path.lower()
    if lower.endswith(SAFETENSORS_EXTENSIONS):
        from safetensors.torch import load_file

        with explain_load_errors(name, path):
            return owned_tensors(load_file(path))
    if not lower.endswith(PICKLE_EXTENSIONS):
        raise AnimeVideoModelError(
            f"'{name}' has an unsupported extension; expected one of "
            f"{', '.join(SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS)}.")
    import argparse

    hint = ("Use the diffusers copy of AniSora V1 (e.g. Disty0/Index-anisora-5B-diffusers, folder under "
            "models/diffusers) or convert the file to .safetensors.")
    # DeepSpeed/SAT checkpoints carry their run's argparse.Namespace next to the weights: a plain attribute
    # container, so it is allowed; any other Python object is still refused by weights_only.
    with explain_load_errors(name, path), torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj = torch_load_weights(path, name, hint, map_location="cpu", mmap=True)  # no second RAM copy
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch_load_weights(path, name, hint, map_location="cpu")  # a legacy (non-zip) file
    if isinstance(obj, dict) and isinstance(obj.get("module"), dict):
        obj = obj["module"]
    return unwrap_state_dict(obj)


def read_keys(path: str) -> list[str]:
    """Tensor names of a checkpoint file (safetensors: header only; pickles: memory-mapped, ``module`` unwrapped)."""
    if path.lower().endswith(SAFETENSORS_EXTENSIONS):
        from safetensors import safe_open

        with explain_load_errors(os.path.basename(path), path), safe_open(path, framework="pt") as f:
            return list(f.keys())
    return list(_read_checkpoint(path).keys())


def is_cogvideox_file(path: str) -> bool:
    """A CogVideoX transformer file (diffusers or SAT layout, including SAT's ``{"module": …}`` .pt)."""
    return os.path.isfile(path) and is_cogvideox_state_dict(read_keys(path))


# ---------------------------------------------------------------------------------------------
# SAT -> diffusers (AniSora's released 5B / 5B_RL transformer files)
# ---------------------------------------------------------------------------------------------

_SAT_BLOCK_RENAMES = (  # inside transformer.layers.{i}.
    ("input_layernorm.", "norm1.norm."),
    ("post_attention_layernorm.", "norm2.norm."),
    ("attention.dense.", "attn1.to_out.0."),
    ("mlp.dense_h_to_4h.", "ff.net.0.proj."),
    ("mlp.dense_4h_to_h.", "ff.net.2."),
)
_SAT_TOP_RENAMES = (
    ("transformer.final_layernorm.", "norm_final."),
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("ofs_embed.0.", "ofs_embedding.linear_1."),
    ("ofs_embed.2.", "ofs_embedding.linear_2."),
    ("mixins.pos_embed.pos_embedding", "patch_embed.pos_embedding"),
    ("mixins.patch_embed.", "patch_embed."),
    ("mixins.final_layer.norm_final.", "norm_out.norm."),
    ("mixins.final_layer.linear.", "proj_out."),
    ("mixins.final_layer.adaLN_modulation.1.", "norm_out.linear."),
)
_SAT_DROPPED = ("freqs_sin", "freqs_cos", "embed_tokens", "position_embeddings", "mixins.pos_embed.freqs")


def sat_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a SAT CogVideoX transformer state dict to diffusers ``CogVideoXTransformer3DModel`` names:
    ``query_key_value`` split into q/k/v (dim 0), the 12-way ``adaLN_modulations`` split into norm1 (chunks
    0-2, 6-8) and norm2 (3-5, 9-11), the per-layer q/k layernorm lists and the mixins renamed."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    if any(k.startswith(SAT_PREFIX) for k in sd):  # a whole SAT model: keep the diffusion transformer only
        sd = {k: v for k, v in sd.items() if k.startswith(SAT_PREFIX)}
    for key, v in sd.items():
        k = key[len(SAT_PREFIX):] if key.startswith(SAT_PREFIX) else key
        if any(d in k for d in _SAT_DROPPED):
            continue
        if k.startswith("transformer.layers."):
            _, _, i, rest = k.split(".", 3)
            base = f"transformer_blocks.{i}."
            if rest.startswith("attention.query_key_value."):
                q, kk, vv = v.chunk(3, dim=0)
                wb = rest.rsplit(".", 1)[1]
                for which, part in (("to_q", q), ("to_k", kk), ("to_v", vv)):
                    out[base + f"attn1.{which}.{wb}"] = part
                continue
            for a, b in _SAT_BLOCK_RENAMES:
                if rest.startswith(a):
                    out[base + b + rest[len(a):]] = v
                    break
            else:
                unknown.append(key)
            continue
        if k.startswith("mixins.adaln_layer."):
            parts = k.split(".")
            if parts[2] == "adaLN_modulations":  # mixins.adaln_layer.adaLN_modulations.{i}.1.{weight|bias}
                i, wb = parts[3], parts[5]
                c = v.chunk(12, dim=0)
                out[f"transformer_blocks.{i}.norm1.linear.{wb}"] = torch.cat(c[0:3] + c[6:9])
                out[f"transformer_blocks.{i}.norm2.linear.{wb}"] = torch.cat(c[3:6] + c[9:12])
                continue
            if parts[2] in ("query_layernorm_list", "key_layernorm_list"):
                i, wb = parts[3], parts[4]
                which = "norm_q" if parts[2].startswith("query") else "norm_k"
                out[f"transformer_blocks.{i}.attn1.{which}.{wb}"] = v
                continue
            unknown.append(key)
            continue
        for a, b in _SAT_TOP_RENAMES:
            if k.startswith(a):
                out[b + k[len(a):]] = v
                break
        else:
            unknown.append(key)
    if unknown:
        raise AnimeVideoModelError(
            f"The SAT CogVideoX file has {len(unknown)} keys this loader does not know (e.g. {unknown[:3]}); "
            "use the diffusers copy of AniSora V1 (e.g. Disty0/Index-anisora-5B-diffusers) instead.")
    return out


def diffusers_to_sat(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`sat_to_diffusers` (with the ``model.diffusion_model.`` prefix); for tests and tiny
    SAT files."""
    out: dict[str, torch.Tensor] = {}
    blocks: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.startswith("transformer_blocks."):
            _, i, rest = k.split(".", 2)
            blocks.setdefault(i, {})[rest] = v
            continue
        for b, a in _SAT_TOP_RENAMES:  # (sat, diffusers)
            if k.startswith(a):
                out[b + k[len(a):]] = v
                break
        else:
            raise KeyError(k)
    for i, b in blocks.items():
        layer = f"transformer.layers.{i}."
        for wb in ("weight", "bias"):
            if f"attn1.to_q.{wb}" in b:
                out[layer + f"attention.query_key_value.{wb}"] = torch.cat(
                    [b.pop(f"attn1.to_q.{wb}"), b.pop(f"attn1.to_k.{wb}"), b.pop(f"attn1.to_v.{wb}")])
            n1, n2 = b.pop(f"norm1.linear.{wb}").chunk(6), b.pop(f"norm2.linear.{wb}").chunk(6)
            out[f"mixins.adaln_layer.adaLN_modulations.{i}.1.{wb}"] = torch.cat(n1[0:3] + n2[0:3] + n1[3:6] + n2[3:6])
            for which, lst in (("norm_q", "query_layernorm_list"), ("norm_k", "key_layernorm_list")):
                if f"attn1.{which}.{wb}" in b:
                    out[f"mixins.adaln_layer.{lst}.{i}.{wb}"] = b.pop(f"attn1.{which}.{wb}")
        for rest, v in b.items():
            for a, d in _SAT_BLOCK_RENAMES:
                if rest.startswith(d):
                    out[layer + a + rest[len(d):]] = v
                    break
            else:
                raise KeyError(rest)
    return {SAT_PREFIX + k: v for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# architecture from shapes
# ---------------------------------------------------------------------------------------------

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
    with torch.device("meta"):
        model = cls(**config)
    sd = {k: v.to(dtype) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise AnimeVideoModelError(
            f"The {what} weights do not fit the detected architecture: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}).")
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            raise AnimeVideoModelError(f"The {what} has no value for {name}.")
    return model.eval().requires_grad_(False)


def _load_transformer_file(path: str, dtype: torch.dtype):
    from diffusers import CogVideoXTransformer3DModel

    name = os.path.basename(path)
    sd = _read_checkpoint(path)
    layout = cogvideox_layout(sd.keys())
    if layout is None:
        raise AnimeVideoModelError(
            f"'{name}' is not a CogVideoX transformer (AniSora V1): expected diffusers keys such as "
            "patch_embed.text_proj.weight, or SAT keys such as mixins.patch_embed.text_proj.weight.")
    sd = sat_to_diffusers(sd) if layout == "sat" else {k[len(SAT_PREFIX):] if k.startswith(SAT_PREFIX) else k: v
                                                     for k, v in sd.items()}
    cfg = transformer_config_from_shapes({k: tuple(v.shape) for k, v in sd.items()})
    return _materialize(CogVideoXTransformer3DModel, cfg, sd, dtype, f"transformer in '{name}'"), layout


_SAT_VAE_RENAMES = (  # applied in order, as plain substring replacements
    ("block.", "resnets."),
    ("down.", "down_blocks."),
    ("downsample", "downsamplers.0"),
    ("upsample", "upsamplers.0"),
    ("nin_shortcut", "conv_shortcut"),
    ("encoder.mid.block_1", "encoder.mid_block.resnets.0"),
    ("encoder.mid.block_2", "encoder.mid_block.resnets.1"),
    ("decoder.mid.block_1", "decoder.mid_block.resnets.0"),
    ("decoder.mid.block_2", "decoder.mid_block.resnets.1"),
)


def is_sat_vae_state_dict(keys) -> bool:
    return any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys)


def sat_vae_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAT CogVideoX VAE (``3d-vae.pt``) names -> ``AutoencoderKLCogVideoX`` names: resnet / sampler / shortcut
    renames, and SAT's decoder ``up.{i}`` counted from the bottom, i.e. ``up_blocks.{levels-1-i}``."""
    ups = [int(k.split(".")[2]) for k in sd if k.startswith("decoder.up.")]
    levels = 1 + max(ups) if ups else 4
    out = {}
    for key, v in sd.items():
        if key.startswith("loss"):
            continue
        k = key
        for a, b in _SAT_VAE_RENAMES:
            k = k.replace(a, b)
        if k.startswith("decoder.up."):
            parts = k.split(".")
            parts[1], parts[2] = "up_blocks", str(levels - 1 - int(parts[2]))
            k = ".".join(parts)
        out[k] = v
    return out


def diffusers_vae_to_sat(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`sat_vae_to_diffusers` (for tests and tiny SAT files)."""
    ups = [int(k.split(".")[2]) for k in sd if k.startswith("decoder.up_blocks.")]
    levels = 1 + max(ups)
    out = {}
    for key, v in sd.items():
        k = key
        if k.startswith("decoder.up_blocks."):
            parts = k.split(".")
            parts[1], parts[2] = "up", str(levels - 1 - int(parts[2]))
            k = ".".join(parts)
        for a, b in reversed(_SAT_VAE_RENAMES):
            k = k.replace(b, a)
        out[k] = v
    return out


def _load_vae_file(path: str, dtype: torch.dtype):
    from diffusers import AutoencoderKLCogVideoX

    name = os.path.basename(path)
    sd = _read_checkpoint(path)
    if is_sat_vae_state_dict(sd):
        sd = sat_vae_to_diffusers(sd)
    cfg = vae_config_from_shapes({k: tuple(v.shape) for k, v in sd.items()})
    return _materialize(AutoencoderKLCogVideoX, cfg, sd, dtype, f"VAE in '{name}'")


def vae_dtype_for(dtype: torch.dtype) -> torch.dtype:
    # CogVideoX's VAE is run in bf16/fp32 upstream; fp16 risks overflow in its 3D convs.
    return torch.float32 if dtype == torch.float16 else dtype


def load_cogvideox(transformer_path_or_folder: str, vae_path_or_none: str | None, dtype: torch.dtype) -> AniSoraModel:
    """Load AniSora V1 from a diffusers folder (its ``vae/`` used unless a VAE file is given) or from a single
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
    return AniSoraModel(
        backbone=BACKBONE, transformer=transformer, vae=vae, dtype=dtype, source=os.path.basename(path.rstrip("/")),
        extras={"layout": layout, "scheduler_config": scheduler_config or dict(DEFAULT_SCHEDULER_CONFIG),
                "vae_scaling_factor": float(vae.config.scaling_factor)})


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------

def latent_slot(i: int) -> int:
    """Latent frame holding pixel frame ``i`` in the causal VAE: slot 0 is frame 0 alone, slot k >= 1 holds
    pixel frames 4k-3 .. 4k."""
    return 0 if i == 0 else (i - 1) // TEMPORAL_RATIO + 1


def slot_frames(k: int) -> tuple[int, int]:
    return (0, 0) if k == 0 else (TEMPORAL_RATIO * k - 3, TEMPORAL_RATIO * k)


def snap_num_frames(n: int) -> tuple[int, str | None]:
    """Nearest 8k+1 (ties go up). The causal VAE packs 4 frames per latent after the first (4k+1), and its
    decoder only restores the causal first frame for an odd number of latent frames, so CogVideoX clips have
    an odd latent count: 1, 9, 17, …, 49 frames (AniSora's SAT code allows 9/11/13 latent frames)."""
    n = int(n)
    if n < 1:
        raise AnimeVideoInputError(f"num_frames: {n} is not allowed; use 8k+1 frames (1, 9, 17, ..., 49).")
    step = 2 * TEMPORAL_RATIO
    snapped = step * max(0, math.floor((n - 1) / step + 0.5)) + 1
    if snapped == n:
        return n, None
    return snapped, (f"num_frames: {n} is not 8k+1 (CogVideoX needs 4k+1 frames with an odd number of latent "
                     f"frames, e.g. 49); snapped to {snapped}.")


def snap_size(v: int, name: str) -> tuple[int, str | None]:
    m = SPATIAL_RATIO * 2  # VAE x8, then 2x2 patches
    s = max(m, int(round(v / m)) * m)
    if s == v:
        return v, None
    return s, f"{name}: {v} is not a multiple of {m}; snapped to {s}."


def plan_keyframes(guide, num_frames: int):
    """[(resolved keyframe, slot)] with one keyframe per slot (the later frame wins), and the info lines."""
    try:
        resolved = guide.resolve_keyframes(num_frames) if guide is not None else []
    except AnimeVideoInputError as e:
        raise AnimeVideoInputError(f"{e} (AniSora V1 clip: {num_frames} frames after snapping to 4k+1)") from None
    by_slot, lines = {}, []
    for r in resolved:
        k = latent_slot(r.index)
        if k in by_slot:
            lines.append(f"keyframe at frame {by_slot[k].index} dropped: frame {r.index} uses the same "
                         f"latent slot {k}.")
        by_slot[k] = r
    for k in sorted(by_slot):
        r = by_slot[k]
        a, b = slot_frames(k)
        asked = "" if r.requested == r.index else f" (asked {r.requested})"
        span = "frame 0 alone" if k == 0 else f"pixel frames {a}-{b}, shown as frame {b}"
        lines.append(f"keyframe frame {r.index}{asked} -> latent slot {k} ({span}), strength {r.keyframe.strength:g}.")
    return [(by_slot[k], k) for k in sorted(by_slot)], lines


def _pixels(image: torch.Tensor, height: int, width: int, fit: str | None = None) -> torch.Tensor:
    """[H,W,3] 0..1 -> [1,3,H,W] -1..1 at the clip size (bilinear stretch as diffusers' VideoProcessor resizes,
    or the guide's ``fit`` mode: crop / pad / stretch)."""
    from ..guides import fit_frame

    return fit_frame(image.float(), height, width, fit).permute(2, 0, 1)[None] * 2 - 1


def build_guide_latents(model: AniSoraModel, guide, num_frames: int, height: int, width: int,
                        generator: torch.Generator | None = None, fit: str | None = None):
    """The 16 guide channels [1, T, 16, h, w] (float32) and info lines: each keyframe VAE-encoded alone as a
    1-frame clip (latent sample drawn with ``generator``), times the scaling factor and its strength, at its slot."""
    vae = model.vae
    device, vdtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    T = (num_frames - 1) // TEMPORAL_RATIO + 1
    c = vae.config.latent_channels
    out = torch.zeros(1, T, c, height // SPATIAL_RATIO, width // SPATIAL_RATIO, device=device)
    plan, lines = plan_keyframes(guide, num_frames)
    scale = model.extras.get("vae_scaling_factor", vae.config.scaling_factor)
    for r, k in plan:
        x = _pixels(r.keyframe.image, height, width, fit).to(device, vdtype)[:, :, None]  # [1,3,1,H,W]
        z = vae.encode(x).latent_dist.sample(generator)  # [1,16,1,h,w]
        out[:, k] = z[:, :, 0].float() * scale * r.keyframe.strength
    if not plan:
        lines.append("no keyframe: all guide slots are zero (text-to-video, as V1's 5% guide dropout trained).")
    return out, lines


def build_static_blend(model: AniSoraModel, guide, num_frames: int, height: int, width: int,
                       fit: str | None = None):
    """(clean static latents [1,T,16,h,w], blend weight [1,T,1,h,w], info) for a motion mask, else None."""
    if guide is None or guide.motion_mask is None:
        return None
    resolved = guide.resolve_keyframes(num_frames)
    if not resolved:
        raise AnimeVideoInputError(
            "guide: a motion mask needs at least one keyframe (the picture whose unmasked part stays still); "
            "add an AnimeVideoKeyframe before the mask.")
    vae = model.vae
    device, vdtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    idx = torch.tensor([r.index for r in resolved])
    nearest = [resolved[int((idx - f).abs().argmin())] for f in range(num_frames)]
    frames = {}
    video = torch.cat([frames.setdefault(id(n), _pixels(n.keyframe.image, height, width, fit)) for n in nearest])
    video = video.permute(1, 0, 2, 3)[None].to(device, vdtype)  # [1,3,F,H,W]
    scale = model.extras.get("vae_scaling_factor", vae.config.scaling_factor)
    z = (vae.encode(video).latent_dist.mode().float() * scale).permute(0, 2, 1, 3, 4)  # [1,T,16,h,w]
    mask = guide.mask_video(num_frames, height, width, fit)  # 1 = may move
    strength = torch.tensor([n.keyframe.strength for n in nearest]).view(-1, 1, 1)
    still = (1.0 - mask) * strength  # [F,H,W]
    T = z.shape[1]
    slots = []
    for k in range(T):
        a, b = slot_frames(k)
        slots.append(still[a:b + 1].amin(0))
    w = torch.stack(slots)[:, None]  # [T,1,H,W]
    w = -F.max_pool2d(-w, SPATIAL_RATIO)  # a latent pixel is static only if all its pixels are
    w = -F.max_pool2d(-w, 3, stride=1, padding=1)  # erode the static region = dilate the motion mask by one
    w = w[None].to(device)  # [1,T,1,h,w]
    frac = float((w > 0).float().mean())
    info = (f"motion mask: latent-blend fallback (V1 has no mask channel): after every step the static region "
            f"({frac:.0%} of latent pixels, mask dilated by 1 latent pixel) is reset to the keyframe's latent "
            f"noised to that step.")
    return z, w, info


# ---------------------------------------------------------------------------------------------
# text, positions, CFG
# ---------------------------------------------------------------------------------------------

def fit_text(emb: torch.Tensor, name: str, text_dim: int, length: int = TEXT_LENGTH):
    """[1, L, D] -> [1, length, D]: zero-padded or truncated; returns (tensor, note or None)."""
    if emb.ndim == 2:
        emb = emb[None]
    if emb.ndim != 3 or emb.shape[0] != 1:
        raise AnimeVideoInputError(
            f"{name}: expected prompt embeddings [1, tokens, {text_dim}], got {tuple(emb.shape)}.")
    if emb.shape[-1] != text_dim:
        raise AnimeVideoInputError(
            f"{name}: the embeddings are {emb.shape[-1]}-wide; AniSora V1 (CogVideoX) takes T5-XXL embeddings "
            f"({text_dim}-wide). Encode the prompt with a T5-XXL text encoder (CLIPLoader with t5xxl).")
    L = emb.shape[1]
    if L == length:
        return emb, None
    if L > length:
        return emb[:, :length], f"{name}: {L} tokens truncated to {length}."
    pad = emb.new_zeros(1, length - L, emb.shape[-1])
    return torch.cat([emb, pad], 1), f"{name}: {L} tokens zero-padded to {length}."


def dynamic_cfg_scale(scale: float, step_index: int, timestep: int, steps: int, quirk: bool) -> float:
    """DynamicCFG weight w = 1 + s(1 − cos(π x⁵))/2 with x = step_index/steps, or (quirk) x = (steps − t)/steps
    with t the discrete DDPM timestep, exactly as CogVideoX's SAT code and diffusers compute it."""
    x = (steps - timestep) / steps if quirk else step_index / steps
    return 1 + scale * (1 - math.cos(math.pi * x ** 5.0)) / 2


def _crop_region(grid_h: int, grid_w: int, base_w: int, base_h: int):
    # The grid's aspect fitted inside the base grid, centred (how diffusers places CogVideoX 1.0's RoPE).
    if grid_h / grid_w > base_h / base_w:
        rh, rw = base_h, int(round(base_h / grid_h * grid_w))
    else:
        rw, rh = base_w, int(round(base_w / grid_w * grid_h))
    top, left = int(round((base_h - rh) / 2.0)), int(round((base_w - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def rotary_embedding(transformer, latent_h: int, latent_w: int, latent_t: int, device):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cfg = transformer.config
    p = cfg.patch_size
    gh, gw = latent_h // p, latent_w // p
    crops = _crop_region(gh, gw, cfg.sample_width // p, cfg.sample_height // p)
    return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops, grid_size=(gh, gw),
                                   temporal_size=latent_t, device=device)


@contextmanager
def learned_positions(transformer, latent_t: int, latent_h: int, latent_w: int, notes: list[str]):
    """Use the first rows of the learned positional table (as SAT does) when the clip is not the trained size."""
    pe = transformer.patch_embed
    if not pe.use_learned_positional_embeddings:
        yield
        return
    frames = (latent_t - 1) * pe.temporal_compression_ratio + 1
    if (latent_h, latent_w, frames) == (pe.sample_height, pe.sample_width, pe.sample_frames):
        yield
        return
    p = pe.patch_size
    need = pe.max_text_seq_length + latent_t * (latent_h // p) * (latent_w // p)
    table = pe.pos_embedding
    if need > table.shape[1]:
        th, tw = pe.sample_height * SPATIAL_RATIO, pe.sample_width * SPATIAL_RATIO
        raise AnimeVideoInputError(
            f"width/height/num_frames: this AniSora V1 model's learned positions cover {table.shape[1]} tokens "
            f"(trained at {tw}x{th}, {pe.sample_frames} frames); {need} are needed. Use at most {pe.sample_frames} "
            f"frames at {tw}x{th}, or fewer frames / a smaller size.")
    if (latent_h, latent_w) != (pe.sample_height, pe.sample_width):
        notes.append(
            f"size: the model was trained at {pe.sample_width * SPATIAL_RATIO}x{pe.sample_height * SPATIAL_RATIO}; "
            "at another size its learned positions are used as the original SAT code uses them (first rows of the "
            "table), which may lower quality.")
    saved = (pe.sample_height, pe.sample_width, pe.sample_frames, table)
    pe.sample_height, pe.sample_width, pe.sample_frames = latent_h, latent_w, frames
    pe.pos_embedding = table[:, :need]
    try:
        yield
    finally:
        pe.sample_height, pe.sample_width, pe.sample_frames, pe.pos_embedding = saved


def make_scheduler(model: AniSoraModel, sampler: str):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    cfg = {k: v for k, v in model.extras.get("scheduler_config", DEFAULT_SCHEDULER_CONFIG).items()
           if not k.startswith("_")}
    if (sampler or "").lower() == "ddim":
        return CogVideoXDDIMScheduler.from_config(cfg), "DDIM (CogVideoXDDIMScheduler)"
    return CogVideoXDPMScheduler.from_config(cfg), "DPM-Solver++(2M) SDE (CogVideoXDPMScheduler, AniSora V1's sampler)"


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------

def set_vae_tiling(vae, enabled: bool):
    """CogVideoX's own tiling (diffusers' defaults: tiles of half the VAE's sample size, overlapping)."""
    if enabled:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


@torch.no_grad()
def generate(model: AniSoraModel, guide, text: TextConditioning, request: AniSoraRequest,
             hooks: AniSoraHooks | None = None) -> AniSoraResult:
    from diffusers import CogVideoXDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    hooks = hooks or AniSoraHooks()
    tr, vae = model.transformer, model.vae
    dtype = next(tr.parameters()).dtype
    info: list[str] = []
    num_frames, note = snap_num_frames(request.num_frames)
    width, wnote = snap_size(request.width, "width")
    height, hnote = snap_size(request.height, "height")
    info += [n for n in (note, wnote, hnote) if n]
    steps = int(request.steps)
    if steps < 1:
        raise AnimeVideoInputError(f"steps: {steps} is not allowed; use 1 or more (AniSora V1 uses 50).")
    cfg_scale = float(request.cfg)
    do_cfg = cfg_scale > 1.0

    text_dim = tr.config.text_embed_dim
    length = tr.config.max_text_seq_length
    pos, n1 = fit_text(text.positive, "positive", text_dim, length)
    embeds, text_notes = pos, [n1]
    if do_cfg:
        if text.negative is None:
            raise AnimeVideoInputError(
                f"negative: cfg {cfg_scale:g} > 1 needs a negative conditioning (AniSora V1's original uses an "
                "all-zero one: ConditioningZeroOut on the positive); or set cfg to 1 to skip guidance.")
        neg, n2 = fit_text(text.negative, "negative", text_dim, length)
        embeds = torch.cat([neg, pos])
        text_notes.append(n2)
    info += [n for n in text_notes if n]

    gen = torch.Generator("cpu").manual_seed(int(request.seed))
    T, h, w = (num_frames - 1) // TEMPORAL_RATIO + 1, height // SPATIAL_RATIO, width // SPATIAL_RATIO
    fit = getattr(request, "fit", None)
    set_vae_tiling(vae, bool(getattr(request, "vae_tiling", False)))
    with on_device(vae, hooks):
        image_latents, lines = build_guide_latents(model, guide, num_frames, height, width, gen, fit)
        blend = build_static_blend(model, guide, num_frames, height, width, fit)
    info += lines
    if hooks.device is not None:
        tr.to(hooks.device)
    device = next(tr.parameters()).device
    embeds = embeds.to(device, dtype)
    c = vae.config.latent_channels
    latents = randn_tensor((1, T, c, h, w), generator=gen, device=device, dtype=torch.float32)
    if blend is not None:
        static_z, static_w, line = blend
        static_z, static_w = static_z.to(device), static_w.to(device)
        info.append(line)
        blend_noise = randn_tensor(static_z.shape, generator=torch.Generator("cpu").manual_seed(int(request.seed) + 1),
                                   device=device, dtype=torch.float32)

    scheduler, sampler_name = make_scheduler(model, request.sampler)
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    latents = latents * scheduler.init_noise_sigma
    if do_cfg and request.dynamic_cfg:
        how = "timestep quirk (x = (steps - t)/steps, as the original)" if request.dynamic_cfg_timestep_quirk \
            else "x = step/steps, w ramps 1 -> 1+s"
        cfg_line = f"DynamicCFG s={cfg_scale:g} ({how})"
    elif do_cfg:
        cfg_line = f"CFG {cfg_scale:g}"
    else:
        cfg_line = "no CFG (cfg <= 1)"
    info.insert(0, f"AniSora V1 (CogVideoX I2V): {width}x{height}, {num_frames} frames -> latent {T}x{h}x{w}; "
                   f"{sampler_name}, {steps} steps; {cfg_line}. (shift is not used by this backbone.)")

    rotary = rotary_embedding(tr, h, w, T, device) if tr.config.use_rotary_positional_embeddings else None
    ofs = latents.new_full((1,), 2.0).to(dtype) if tr.config.ofs_embed_dim else None
    alphas = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    final_alpha = float(scheduler.final_alpha_cumprod)
    is_dpm = isinstance(scheduler, CogVideoXDPMScheduler)
    old_x0 = None
    image_in = image_latents.to(device, dtype)  # the VAE may sit on another device (offload)
    with on_device(tr, hooks), learned_positions(tr, T, h, w, info):
        for i, t in enumerate(timesteps):
            x_in = torch.cat([latents, latents]) if do_cfg else latents
            x_in = scheduler.scale_model_input(x_in, t)
            g_in = torch.cat([image_in, image_in]) if do_cfg else image_in
            x_in = torch.cat([x_in.to(dtype), g_in], dim=2)
            out = tr(hidden_states=x_in, encoder_hidden_states=embeds, timestep=t.expand(x_in.shape[0]),
                     ofs=ofs, image_rotary_emb=rotary, return_dict=False)[0].float()
            if do_cfg:
                scale = dynamic_cfg_scale(cfg_scale, i, int(t.item()), steps, request.dynamic_cfg_timestep_quirk) \
                    if request.dynamic_cfg else cfg_scale
                u, cnd = out.chunk(2)
                out = u + scale * (cnd - u)
            if is_dpm:
                latents, old_x0 = scheduler.step(out, old_x0, t, timesteps[i - 1] if i > 0 else None, latents,
                                                 eta=0.0, generator=gen, return_dict=False)
            else:
                latents = scheduler.step(out, t, latents, eta=0.0, generator=gen, return_dict=False)[0]
            latents = latents.float()
            if blend is not None:
                prev = int(t.item()) - scheduler.config.num_train_timesteps // steps
                a = float(alphas[prev]) if prev >= 0 else final_alpha
                noised = a ** 0.5 * static_z + (1 - a) ** 0.5 * blend_noise
                latents = static_w * noised + (1 - static_w) * latents
                if old_x0 is not None:
                    old_x0 = static_w * static_z + (1 - static_w) * old_x0.float()
            if hooks.on_step is not None:
                hooks.on_step(i + 1, steps)

    scale = model.extras.get("vae_scaling_factor", vae.config.scaling_factor)
    with on_device(vae, hooks):
        vdevice, vdtype = next(vae.parameters()).device, next(vae.parameters()).dtype
        z = (1 / scale * latents.permute(0, 2, 1, 3, 4)).to(vdevice, vdtype)  # as diffusers multiplies
        video = vae.decode(z).sample  # [1,3,F,H,W] in -1..1
    frames = (video[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()  # [F,H,W,3]
    return AniSoraResult(frames=frames, info="\n".join(info), latents=z.float().cpu())

"""Tiny random-weight SVD models in the real on-disk layouts, for tests and CPU demos.

They keep the real architecture's rules (64-wide UNet heads, 80-wide ViT-H heads, a x8 VAE,
CLIP input 224 px with patch 14) and shrink only widths and depths, so the real loaders read them
through the same code paths as the released checkpoints.
"""
from __future__ import annotations

import json
import os

import torch

from . import keymap

TINY_UNET = dict(
    block_out_channels=(64, 128),
    layers_per_block=2,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    cross_attention_dim=32,
    num_attention_heads=(1, 2),
    transformer_layers_per_block=1,
    addition_time_embed_dim=16,
    projection_class_embeddings_input_dim=48,
    num_frames=25,
)
TINY_VAE = dict(
    block_out_channels=(32, 32, 64, 64),
    down_block_types=("DownEncoderBlock2D",) * 4,
    # 2 as released: sgm's VideoDecoder always has two mid resnets (with the attention between them), and
    # diffusers' TemporalDecoder gives its mid block ``layers_per_block`` of them, so only 2 is a valid sgm file.
    layers_per_block=2,
    latent_channels=4,
)
TINY_CLIP = dict(
    hidden_size=80,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=1,
    patch_size=14,
    image_size=224,
    projection_dim=32,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)

SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}
FEATURE_EXTRACTOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}
MODEL_INDEX = {
    "_class_name": "StableVideoDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
}


def _randomize(module: torch.nn.Module, gen: torch.Generator, std: float = 0.05):
    """Every tensor random (not the library's init), so a wrong key mapping cannot go unnoticed."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            if "norm" in name and name.endswith("weight") or "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + noise)
            elif name.endswith("mix_factor"):
                p.copy_(torch.rand(p.shape, generator=gen) * 2 - 1)
            else:
                p.copy_(noise)
    return module.eval()


def build_tiny_svd(seed: int = 0, unet_overrides: dict | None = None):
    """(unet, vae, image_encoder) as diffusers/transformers modules with random weights."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    gen = torch.Generator().manual_seed(seed)
    unet = _randomize(UNetSpatioTemporalConditionModel(**{**TINY_UNET, **(unet_overrides or {})}), gen)
    vae = _randomize(AutoencoderKLTemporalDecoder(**TINY_VAE), gen)
    with torch.no_grad():  # keep the quant_conv identity: sgm files have none
        c = vae.quant_conv.weight.shape[0]
        vae.quant_conv.weight.copy_(torch.eye(c).reshape(c, c, 1, 1))
        vae.quant_conv.bias.zero_()
    clip = _randomize(CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP)), gen, std=0.1)
    return unet, vae, clip


def to_sgm_state_dict(unet, vae, clip) -> dict[str, torch.Tensor]:
    """The three modules as one sgm single-file state dict (Stability's released layout)."""
    lpb = unet.config.layers_per_block
    ups = {i for i, t in enumerate(unet.config.up_block_types) if t.startswith("CrossAttn")}
    out = {}
    for k, v in unet.state_dict().items():
        out[keymap.UNET_PREFIX + keymap.unet_key_to_sgm(k, lpb, ups)] = v.contiguous()
    levels = len(vae.config.block_out_channels)
    for k, v in keymap.vae_state_dict_to_sgm(vae.state_dict(), levels).items():
        out[keymap.VAE_PREFIX + k] = v.contiguous()
    for k, v in keymap.clip_state_dict_to_openclip(clip.state_dict()).items():
        out[keymap.CLIP_PREFIX + k] = v.contiguous()
    return out


def write_sgm_file(path: str, unet, vae, clip):
    from safetensors.torch import save_file

    save_file(to_sgm_state_dict(unet, vae, clip), path)


def write_diffusers_folder(path: str, unet, vae, clip):
    unet.save_pretrained(os.path.join(path, "unet"), safe_serialization=True)
    vae.save_pretrained(os.path.join(path, "vae"), safe_serialization=True)
    clip.save_pretrained(os.path.join(path, "image_encoder"), safe_serialization=True)
    for sub, name, cfg in (
        ("scheduler", "scheduler_config.json", SCHEDULER_CONFIG),
        ("feature_extractor", "preprocessor_config.json", FEATURE_EXTRACTOR_CONFIG),
    ):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
        with open(os.path.join(path, sub, name), "w") as f:
            json.dump(cfg, f, indent=2)
    with open(os.path.join(path, "model_index.json"), "w") as f:
        json.dump(MODEL_INDEX, f, indent=2)

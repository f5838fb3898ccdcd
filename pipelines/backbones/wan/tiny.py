"""Tiny random-weight AniSora V3 (Wan2.1-I2V layout) models, written in the real released formats.

The transformer goes to ``diffusion_models/anisora_v3_i2v_14b.safetensors`` with native Wan key names and
the VAE to ``vae/wan_2.1_vae.safetensors`` with native Wan VAE names, so the shipped workflows and the
loader tests read them through exactly the code that reads the real files. Only the sizes are tiny;
the layout (36 input channels, CLIP-image cross-attention, 16-channel causal VAE with 8x/4x
compression) is the real one.
"""
from __future__ import annotations

import os

import torch

from . import keys as wan_keys

TRANSFORMER_FILE = "diffusion_models/anisora_v3_i2v_14b.safetensors"
VAE_FILE = "vae/wan_2.1_vae.safetensors"  # the name of Comfy-Org's repackaged Wan2.1 VAE (native names)
TINY_FILES = (TRANSFORMER_FILE, VAE_FILE)

# The tiny encoders tests/integration/fake_encoders emits embeddings for: these must match. Core ComfyUI's
# model detection (comfy/model_detection.py, Wan 2.1) reads only dim, ffn_dim, layers and in/out channels from
# the weights and fixes the rest (heads = dim // 128, freq_dim 256, text_dim 4096, CLIP-image width 1280), so
# the tiny file keeps those real values and is small in heads, layers and ffn only: it then loads in core's
# Load Diffusion Model as well as in our loader.
TINY_TEXT_DIM = 4096
TINY_IMAGE_DIM = 1280
TINY_HEAD_DIM = 128

TINY_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=TINY_HEAD_DIM, in_channels=36,
    out_channels=16, text_dim=TINY_TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=TINY_IMAGE_DIM, added_kv_proj_dim=2 * TINY_HEAD_DIM,
)
TINY_VAE_CONFIG = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                       temperal_downsample=[False, True, True])


def _randomize(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.2):
    # Random (not default-initialised) weights everywhere, so a mis-mapped tensor changes the output.
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module


def build_tiny_transformer(seed: int = 0):
    from diffusers import WanTransformer3DModel

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return _randomize(WanTransformer3DModel(**TINY_TRANSFORMER_CONFIG), gen).eval()


def build_tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    gen = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(**TINY_VAE_CONFIG)
    with torch.no_grad():  # moderate weights keep the 30-conv causal VAE numerically tame
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / max(1, p[0].numel()) ** 0.5))
    return vae.eval()


def write_native_transformer(path: str, transformer, dtype: torch.dtype | None = None):
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in transformer.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    native = wan_keys.transformer_to_native(sd)
    meta = {}
    if transformer.config.attention_head_dim != wan_keys.DEFAULT_HEAD_DIM:
        meta[wan_keys.HEAD_DIM_METADATA] = str(transformer.config.attention_head_dim)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file(native, path, metadata=meta or None)


def write_native_vae(path: str, vae):
    sd = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    native = wan_keys.vae_to_native(sd)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if path.endswith((".pth", ".pt")):
        torch.save(native, path)
    else:
        from safetensors.torch import save_file

        save_file(native, path)


def write_diffusers_folder(path: str, transformer, vae):
    transformer.save_pretrained(os.path.join(path, "transformer"))
    vae.save_pretrained(os.path.join(path, "vae"))


def write_tiny_anisora(models_dir: str, seed: int = 0) -> list[str]:
    transformer = build_tiny_transformer(seed)
    vae = build_tiny_vae(seed)
    write_native_transformer(os.path.join(models_dir, TRANSFORMER_FILE), transformer)
    write_native_vae(os.path.join(models_dir, VAE_FILE), vae)
    return list(TINY_FILES)


def native_config(transformer) -> dict:
    """The config.json Wan-AI ships beside native weights (WanModel's arguments)."""
    c = transformer.config
    return {"_class_name": "WanModel", "_diffusers_version": "0.33.0",
            "dim": c.num_attention_heads * c.attention_head_dim, "eps": c.eps, "ffn_dim": c.ffn_dim,
            "freq_dim": c.freq_dim, "in_dim": c.in_channels, "model_type": "i2v",
            "num_heads": c.num_attention_heads, "num_layers": c.num_layers, "out_dim": c.out_channels,
            "text_len": 512}


def write_native_folder(path: str, transformer, num_shards: int = 2, dtype: torch.dtype | None = None) -> list[str]:
    """A native Wan folder as Wan-AI publishes one: config.json, the weights in ``num_shards``
    diffusion_pytorch_model-0000k-of-0000n.safetensors files and diffusion_pytorch_model.safetensors.index.json
    (its weight_map: tensor name -> shard). Returns the shard names."""
    import json

    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in transformer.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    native = wan_keys.transformer_to_native(sd)
    keys = list(native)
    os.makedirs(path, exist_ok=True)
    shards, weight_map = [], {}
    per = -(-len(keys) // num_shards)
    for i in range(num_shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {k: native[k] for k in keys[i * per:(i + 1) * per]}
        save_file(part, os.path.join(path, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
        shards.append(name)
    total = sum(v.numel() * v.element_size() for v in native.values())
    with open(os.path.join(path, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(native_config(transformer), f, indent=2)
    return shards

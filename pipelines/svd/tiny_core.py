"""A random-weight SVD checkpoint that core ComfyUI's *Image Only Checkpoint Loader* recognises, for the
real-ComfyUI tests of the core SVD graph (Image Only Checkpoint Loader -> SVD_img2vid_Conditioning -> KSampler).

Core picks the model class by matching the UNet config it reads from the weights against fixed values
(``comfy/supported_models.py`` ``SVD_img2vid.unet_config``; ``comfy/model_detection.py`` reads them):

* ``model_channels`` 320 (``input_blocks.0.0.weight`` out channels), ``in_channels`` 8;
* ``transformer_depth`` [1, 1, 1, 1, 1, 1, 0, 0]: four levels of two res blocks, attention on the first three
  (and the output blocks read the same way);
* ``context_dim`` 1024 (the cross-attention ``to_k`` input), ``adm_in_channels`` 768 (``label_emb``: three
  256-wide time ids), linear proj_in, temporal res blocks and temporal attention;

and builds the video VAE at fixed sizes (128 base channels, x[1, 2, 4, 4]; ``comfy/sd.py`` VAE) whatever the
file holds. What core does not read, the pack shrinks: every level keeps 320 channels (core derives the channel
multipliers from ``out_layers.3`` by integer division, so 1 is the smallest), which takes the UNet from 1.52 B to
0.21 B parameters. The VAE stays at its released size (98 M). The CLIP image encoder is the small one of
``tiny.py``: core finds no ViT-H in it and returns no CLIP_VISION (the tests feed SVD_img2vid_Conditioning a
stand-in, as they do for the AniSora encoders). Weights are written in float16 as Stability released SVD.

The file goes to ``checkpoints/svd_xt_1_1.safetensors`` (the released name; the pack's other tiny SVD,
``svd_xt.safetensors``, keeps its small sizes for the pack's own loader).
"""
from __future__ import annotations

import torch

from . import keymap, tiny

CORE_SVD_FILE = "checkpoints/svd_xt_1_1.safetensors"
TINY_FILES = (CORE_SVD_FILE,)

# diffusers' UNetSpatioTemporalConditionModel with SVD's released topology and every width core checks
CORE_UNET = dict(
    tiny.TINY_UNET,
    block_out_channels=(320, 320, 320, 320),
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    cross_attention_dim=1024,
    num_attention_heads=(5, 5, 5, 5),  # 64-wide heads (core: num_head_channels 64)
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=768,
)
# AutoencoderKLTemporalDecoder's defaults are the released SVD VAE (core builds exactly these sizes)
CORE_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                layers_per_block=2, latent_channels=4)
WEIGHT_STD = 0.02


class _NoisePool:
    """Gaussian float16 noise for 0.3 B weights in a second: tensors are cut from one pool of fresh draws at
    random offsets (drawing every weight anew takes ~20 s of CPU in each test session for nothing the tests
    read: only core's loader and sampler consume this file)."""

    SIZE = 1 << 22

    def __init__(self, gen: torch.Generator):
        self.gen = gen
        pool = torch.randn(self.SIZE, generator=gen, dtype=torch.float16)
        self.pool = torch.cat([pool, pool])

    def take(self, shape, scale: float) -> torch.Tensor:
        n = int(torch.Size(shape).numel())
        start = int(torch.randint(self.SIZE, (1,), generator=self.gen))
        flat = self.pool[start:start + min(n, self.SIZE)] * scale
        if n > self.SIZE:
            flat = flat.repeat(-(-n // self.SIZE))[:n]
        return flat.reshape(shape)


def _random_like(name: str, shape, noise: _NoisePool) -> torch.Tensor:
    """The rules of ``tiny._randomize``: norm scales near 1, mix factors in [-1, 1], small noise elsewhere."""
    if name.endswith("mix_factor"):
        return torch.rand(shape, generator=noise.gen, dtype=torch.float16) * 2 - 1
    weight = noise.take(shape, WEIGHT_STD)
    if ("norm" in name or "layer_norm" in name) and name.endswith("weight"):
        weight += 1.0
    return weight


def core_svd_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The sgm single-file state dict (Stability's released key layout, via the pack's tested key maps)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    noise = _NoisePool(torch.Generator().manual_seed(seed))
    with torch.device("meta"):  # shapes and names only
        unet = UNetSpatioTemporalConditionModel(**CORE_UNET)
        vae = AutoencoderKLTemporalDecoder(**CORE_VAE)
    out = {}
    lpb = unet.config.layers_per_block
    ups = {i for i, t in enumerate(unet.config.up_block_types) if t.startswith("CrossAttn")}
    for k, v in unet.state_dict().items():
        out[keymap.UNET_PREFIX + keymap.unet_key_to_sgm(k, lpb, ups)] = _random_like(k, v.shape, noise)
    vae_sd = {k: _random_like(k, v.shape, noise) for k, v in vae.state_dict().items()}  # sgm: no quant_conv
    for k, v in keymap.vae_state_dict_to_sgm(vae_sd, len(vae.config.block_out_channels)).items():
        out[keymap.VAE_PREFIX + k] = v.contiguous()
    _, _, clip = tiny.build_tiny_svd(seed)
    for k, v in keymap.clip_state_dict_to_openclip(clip.state_dict()).items():
        out[keymap.CLIP_PREFIX + k] = v.half().contiguous()
    return out


def write_core_svd(models_dir: str, seed: int = 0) -> list[str]:
    import os

    from safetensors.torch import save_file

    path = os.path.join(models_dir, CORE_SVD_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(core_svd_state_dict(seed), path)
    return list(TINY_FILES)

"""Tiny random-weight ModelScopeT2V and I2VGen-XL folders in the released diffusers layouts, and the full-size
configs of the released folders (for key-table checks on the meta device).

The tiny folders keep the released structure (component sub-folders, file names, config classes, model_index.json,
a CLIP BPE tokenizer with its 77-token limit, a x8 VAE, the 224 px / patch 14 image encoder) and shrink only widths
and depths, so the pack's loader and diffusers' own pipelines read them through the same code paths as the released
``damo-vilab/text-to-video-ms-1.7b`` and ``ali-vilab/i2vgen-xl``.
"""
from __future__ import annotations

import json
import os

import torch

MODELSCOPE_FOLDER = "diffusers/text-to-video-ms-1.7b"
I2VGENXL_FOLDER = "diffusers/i2vgen-xl"
TINY_FILES = (MODELSCOPE_FOLDER, I2VGENXL_FOLDER)

# ---------------------------------------------------------------------------------------------
# The released configurations (full size). The UNets are diffusers' class defaults, which is what
# scripts/convert_ms_text_to_video_to_diffusers.py and convert_i2vgen_to_diffusers.py build and check the
# converted key set against (UNet3DConditionModel(sample_size=32) / in_channels 4); the text towers are
# OpenCLIP ViT-H/14's (laion2b), 1024 wide: 23 layers in ModelScope's folder (the penultimate layer, as SD 2's),
# all 24 in I2VGen-XL's (its pipeline takes the penultimate hidden state, clip_skip=1).
# ---------------------------------------------------------------------------------------------

_DOWN = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D")
_UP = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D")

FULL_MODELSCOPE_UNET = dict(
    sample_size=32, in_channels=4, out_channels=4, down_block_types=_DOWN, up_block_types=_UP,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024, attention_head_dim=64,
)
FULL_I2VGENXL_UNET = dict(
    sample_size=32, in_channels=4, out_channels=4, down_block_types=_DOWN, up_block_types=_UP,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, norm_num_groups=32, cross_attention_dim=1024,
    attention_head_dim=64, num_attention_heads=None,
)
FULL_VAE = dict(  # Stable Diffusion's x8 KL autoencoder, as both folders ship it
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=256, scaling_factor=0.18215,
)
_OPENCLIP_H_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                        max_position_embeddings=77, hidden_act="gelu", projection_dim=512, layer_norm_eps=1e-5,
                        bos_token_id=0, eos_token_id=2, pad_token_id=1)
FULL_MODELSCOPE_TEXT = dict(_OPENCLIP_H_TEXT, num_hidden_layers=23)
FULL_I2VGENXL_TEXT = dict(_OPENCLIP_H_TEXT, num_hidden_layers=24)
FULL_I2VGENXL_IMAGE = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                           patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)

MODELSCOPE_SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
# I2VGen-XL's original DiffusionDDIM: cosine schedule with zero terminal SNR, v prediction.
I2VGENXL_SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2",
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True, "set_alpha_to_one": True, "steps_offset": 1, "timestep_spacing": "leading",
    "trained_betas": None,
}
FEATURE_EXTRACTOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224},
}
MODELSCOPE_INDEX = {
    "_class_name": "TextToVideoSDPipeline",
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet3DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
I2VGENXL_INDEX = {
    "_class_name": "I2VGenXLPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "I2VGenXLUNet"],
    "vae": ["diffusers", "AutoencoderKL"],
}

# ---------------------------------------------------------------------------------------------
# Tiny sizes
# ---------------------------------------------------------------------------------------------

TINY_WIDTH = 32  # cross-attention width = text hidden size = image-embedding size
TINY_MODELSCOPE_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=32, cross_attention_dim=TINY_WIDTH,
    attention_head_dim=8,
)
TINY_I2VGENXL_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=32, cross_attention_dim=TINY_WIDTH,
    attention_head_dim=4,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=64, scaling_factor=0.18215,
)
TINY_TEXT = dict(hidden_size=TINY_WIDTH, intermediate_size=64, num_attention_heads=2, max_position_embeddings=77,
                 hidden_act="gelu", projection_dim=TINY_WIDTH, layer_norm_eps=1e-5)
TINY_IMAGE = dict(hidden_size=80, intermediate_size=160, num_attention_heads=1, num_hidden_layers=2, patch_size=14,
                  image_size=224, projection_dim=TINY_WIDTH, hidden_act="gelu", layer_norm_eps=1e-5)

# ---------------------------------------------------------------------------------------------
# A byte-level CLIP BPE vocabulary without merges: every word is tokenized to its bytes, the same algorithm
# (and the same 77-token padding and truncation) as the released 49408-token vocabulary.
# ---------------------------------------------------------------------------------------------

START, END = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte -> printable character table, in CLIP's order (so '!' is token 0, the OpenCLIP pad)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tiny_vocab() -> dict[str, int]:
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + [START, END]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(folder: str):
    os.makedirs(folder, exist_ok=True)
    vocab = tiny_vocab()
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    special = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": "!"}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                   "errors": "replace", "add_prefix_space": False}, f, indent=2)


def text_config(num_layers: int) -> dict:
    vocab = tiny_vocab()
    return dict(TINY_TEXT, vocab_size=len(vocab), num_hidden_layers=num_layers, bos_token_id=vocab[START],
                eos_token_id=vocab[END], pad_token_id=0)


# ---------------------------------------------------------------------------------------------
# Building and writing
# ---------------------------------------------------------------------------------------------

def _randomize(module: torch.nn.Module, gen: torch.Generator, std: float = 0.05) -> torch.nn.Module:
    """Every tensor random (zero-initialised output layers included), so nothing can be silently skipped."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            if ("norm" in name or "layer_norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)
    return module.eval()


def build_tiny_modelscope(seed: int = 0) -> dict:
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    gen = torch.Generator().manual_seed(seed)
    return {
        "unet": _randomize(UNet3DConditionModel(**TINY_MODELSCOPE_UNET), gen),
        "vae": _randomize(AutoencoderKL(**TINY_VAE), gen),
        "text_encoder": _randomize(CLIPTextModel(CLIPTextConfig(**text_config(2))), gen, std=0.1),
    }


def build_tiny_i2vgenxl(seed: int = 0) -> dict:
    from diffusers import AutoencoderKL, I2VGenXLUNet
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    gen = torch.Generator().manual_seed(seed + 1)
    return {
        "unet": _randomize(I2VGenXLUNet(**TINY_I2VGENXL_UNET), gen),
        "vae": _randomize(AutoencoderKL(**TINY_VAE), gen),
        # 3 layers: the pipeline reads the penultimate one, so the last must be there and unused
        "text_encoder": _randomize(CLIPTextModel(CLIPTextConfig(**text_config(3))), gen, std=0.1),
        "image_encoder": _randomize(CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_IMAGE)), gen, std=0.1),
    }


def _write_json(path: str, data: dict):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def _released_text_keys(folder: str):
    """transformers 5 saves CLIPTextModel without its ``text_model.`` level; the released folders (written by
    transformers 4) have it, and both versions read that layout, so the tiny file is rewritten to it."""
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    sd = load_file(path)
    if not all(k.startswith("text_model.") for k in sd):
        save_file({k if k.startswith("text_model.") else "text_model." + k: v.contiguous() for k, v in sd.items()},
                  path, metadata={"format": "pt"})


def write_folder(path: str, modules: dict, scheduler: dict, index: dict):
    for sub, module in modules.items():
        module.save_pretrained(os.path.join(path, sub), safe_serialization=True)
    _released_text_keys(os.path.join(path, "text_encoder"))
    write_tokenizer(os.path.join(path, "tokenizer"))
    _write_json(os.path.join(path, "scheduler", "scheduler_config.json"), scheduler)
    if "feature_extractor" in index:
        _write_json(os.path.join(path, "feature_extractor", "preprocessor_config.json"), FEATURE_EXTRACTOR)
    _write_json(os.path.join(path, "model_index.json"), index)


def write_tiny_modelscope(path: str, seed: int = 0):
    write_folder(path, build_tiny_modelscope(seed), MODELSCOPE_SCHEDULER, MODELSCOPE_INDEX)


def write_tiny_i2vgenxl(path: str, seed: int = 0):
    write_folder(path, build_tiny_i2vgenxl(seed), I2VGENXL_SCHEDULER, I2VGENXL_INDEX)


def write_tiny_t2v(root: str, seed: int = 0) -> list[str]:
    """Both folders under ``root`` (a ComfyUI models/ layout) at their released names; returns what was written."""
    write_tiny_modelscope(os.path.join(root, MODELSCOPE_FOLDER), seed)
    write_tiny_i2vgenxl(os.path.join(root, I2VGENXL_FOLDER), seed)
    return list(TINY_FILES)

"""A tiny random-weight ``streaming_t2v.ckpt`` in the released layout (a Lightning ``{"state_dict": ...}``), plus a
tiny CLIP BPE tokenizer folder beside it, for tests and CPU demos.

It keeps the release's rules (CAM mergers 64-wide heads and 3 per down block, 2 layers per block, transformer_in
8 heads, x8 VAE, CLIP input 224 / patch 14, 16 APM tokens mixed into 77 text tokens) and shrinks widths and depths.
Every parameter is random (mergers, alpha and the zero-initialised convs included), so a wrong mapping shows.
"""
from __future__ import annotations

import json
import os

import torch

from ..svd.keymap import clip_state_dict_to_openclip
from ..svd.tiny import TINY_CLIP
from . import keys
from .model import CAMEncoder, ImgEmbContextResampler, build_base_unet

FILE_NAME = "streaming_t2v.ckpt"  # the released name (huggingface.co/PAIR/StreamingT2V)
FOLDER = "streaming_t2v"  # models/streaming_t2v/ (nodes/comfy_bridge.py PACK_FOLDERS)

TINY_UNET = dict(in_channels=4, out_channels=4, block_out_channels=(64, 64), layers_per_block=2,
                 down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=64,
                 attention_head_dim=16, norm_num_groups=32, sample_size=4)
TINY_CAM = dict(conditioning_channels=(8, 16, 16, 32))  # 3 stride-2 convs: pixels -> latent size, as released
TINY_RESAMPLER = dict(image_dim=TINY_CLIP["projection_dim"], inner_dim=48, context_dim=64)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=77)
TINY_VAE = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=32,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                scaling_factor=keys.VAE_SCALING_FACTOR)


def _byte_characters() -> list[str]:
    """GPT-2/CLIP's byte -> printable character table (every byte one character)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def tiny_tokenizer_files() -> tuple[dict, str]:
    """A byte-level CLIP BPE vocabulary with no merges (every character one token) and the two specials."""
    chars = _byte_characters()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, "#version: 0.2\n"


def randomize_(module: torch.nn.Module, gen: torch.Generator, std: float = 0.05) -> torch.nn.Module:
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen) * std
                p.copy_(noise + 1.0 if isinstance(mod, norms) and name == "weight" else noise)
    return module


def build_tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The released layout's keys with tiny random tensors."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    parts = {
        keys.BASE_PREFIX: build_base_unet(TINY_UNET),
        keys.CAM_PREFIX: CAMEncoder(TINY_UNET, **TINY_CAM),
        keys.RESAMPLER_PREFIX: ImgEmbContextResampler(**TINY_RESAMPLER),
    }
    sd = {}
    for prefix, mod in parts.items():
        randomize_(mod, gen)
        sd.update({prefix + k: v for k, v in mod.state_dict().items()})
    clip = randomize_(CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP)), gen)
    visual = clip_state_dict_to_openclip(clip.state_dict())
    sd.update({keys.IMAGE_ENCODER_PREFIX + k: v for k, v in visual.items()})
    width = TINY_CLIP["projection_dim"]
    # open_clip keeps these after FrozenOpenCLIPImageEmbedder deletes the text transformer
    sd.update({keys.IMAGE_ENCODER_LEFTOVERS + k: v for k, v in {
        "token_embedding.weight": torch.randn(514, width, generator=gen) * 0.05,
        "positional_embedding": torch.randn(77, width, generator=gen) * 0.05,
        "ln_final.weight": torch.ones(width), "ln_final.bias": torch.zeros(width),
        "text_projection": torch.randn(width, width, generator=gen) * 0.05,
        "logit_scale": torch.tensor(4.6052)}.items()})
    vocab, _ = tiny_tokenizer_files()
    text_cfg = dict(keys.detect_text_config({
        "text_model.embeddings.token_embedding.weight": (len(vocab), TINY_TEXT["hidden_size"]),
        "text_model.encoder.layers.0.mlp.fc1.weight": (TINY_TEXT["intermediate_size"], TINY_TEXT["hidden_size"]),
        "text_model.embeddings.position_embedding.weight": (77, TINY_TEXT["hidden_size"]),
        **{f"text_model.encoder.layers.{i}.x": () for i in range(TINY_TEXT["num_hidden_layers"])}}))
    text = randomize_(CLIPTextModel(CLIPTextConfig(**text_cfg)), gen)
    text_sd = keys.text_keys_released(text.state_dict(), text.state_dict().keys())
    sd.update({keys.TEXT_PREFIX + k: v for k, v in text_sd.items()})
    vae = randomize_(AutoencoderKL(**TINY_VAE), gen, std=0.02)
    sd.update({keys.VAE_PREFIX + k: v for k, v in vae.state_dict().items()})
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def write_tiny_streaming_t2v(folder: str, seed: int = 0, dtype: torch.dtype = torch.float16) -> str:
    """``folder``/streaming_t2v.ckpt (+ ``folder``/tokenizer/); returns the checkpoint path."""
    os.makedirs(folder, exist_ok=True)
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in build_tiny_state_dict(seed).items()}
    path = os.path.join(folder, FILE_NAME)
    torch.save({"state_dict": sd, "epoch": 0, "global_step": 0}, path)
    tok = os.path.join(folder, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    vocab, merges = tiny_tokenizer_files()
    with open(os.path.join(tok, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(tok, "merges.txt"), "w") as f:
        f.write(merges)
    return path


TINY_FILES = (f"{FOLDER}/{FILE_NAME}", f"{FOLDER}/tokenizer")


def write_tiny_models(models_dir: str, seed: int = 0) -> list[str]:
    """:data:`TINY_FILES` under a ComfyUI ``models/`` folder (scripts/make_tiny_models.py)."""
    write_tiny_streaming_t2v(os.path.join(models_dir, FOLDER), seed)
    return list(TINY_FILES)

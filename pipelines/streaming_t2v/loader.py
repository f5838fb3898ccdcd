"""Load the released ``streaming_t2v.ckpt`` (a Lightning checkpoint, read with ``weights_only=True``).

Architecture and sizes come from the tensor shapes (keys.py); head widths follow the architecture's rules.
The text tokenizer is not in the checkpoint: a ``tokenizer/`` folder (vocab.json + merges.txt, CLIP BPE) beside
the checkpoint is used when present, otherwise the caller passes one (ComfyUI ships CLIP's in comfy/sd1_tokenizer).
"""
from __future__ import annotations

import logging
import os

import torch

from ..checkpoint_io import empty_weights, materialize, read_state_dict
from ..errors import AnimeVideoModelError
from ..svd.keymap import clip_state_dict_to_transformers
from . import keys
from .model import NUM_TEXT_TOKENS, CAMEncoder, ImgEmbContextResampler, StreamingT2VModel, build_base_unet

log = logging.getLogger("AnimeVideo")


def _take(sd: dict, prefix: str, dtype: torch.dtype) -> dict:
    out = {}
    for k in [k for k in sd if k.startswith(prefix)]:
        out[k[len(prefix):]] = sd.pop(k).to(dtype)
    return out


def load_streaming_t2v(path: str, dtype: torch.dtype = torch.float32, vae_dtype: torch.dtype | None = None,
                       sd: dict | None = None) -> StreamingT2VModel:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    name = os.path.basename(path)
    sd = dict(read_state_dict(path) if sd is None else sd)
    keys.require_streaming_t2v(list(sd), name)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    unet_cfg = keys.detect_unet_config(keys.sub_shapes(shapes, keys.BASE_PREFIX))
    cam_cfg = keys.detect_cam_config(keys.sub_shapes(shapes, keys.CAM_PREFIX))
    res_cfg = keys.detect_resampler_config(keys.sub_shapes(shapes, keys.RESAMPLER_PREFIX))
    clip_cfg = keys.detect_image_encoder_config(keys.sub_shapes(shapes, keys.IMAGE_ENCODER_PREFIX))
    text_cfg = keys.detect_text_config(keys.sub_shapes(shapes, keys.TEXT_PREFIX))
    vae_cfg = keys.detect_vae_config(keys.sub_shapes(shapes, keys.VAE_PREFIX))
    width = unet_cfg["cross_attention_dim"]
    if res_cfg["context_dim"] != width or text_cfg["hidden_size"] != width:
        raise AnimeVideoModelError(
            f"'{name}': the text encoder ({text_cfg['hidden_size']}), the APM tokens ({res_cfg['context_dim']}) and "
            f"the UNet's cross-attention ({unet_cfg['cross_attention_dim']}) must have one width.")
    if res_cfg["image_dim"] != clip_cfg["projection_dim"]:
        raise AnimeVideoModelError(f"'{name}': the APM resampler reads {res_cfg['image_dim']}-d image embeddings, the "
                                   f"image encoder gives {clip_cfg['projection_dim']}-d.")

    with empty_weights():
        base = build_base_unet(unet_cfg)
        cam = CAMEncoder(unet_cfg, **cam_cfg)
        resampler = ImgEmbContextResampler(**res_cfg)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg))
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
        vae = AutoencoderKL(**vae_cfg)
    base = materialize(base, _take(sd, keys.BASE_PREFIX, dtype), "StreamingT2V UNet")
    cam = materialize(cam, _take(sd, keys.CAM_PREFIX, dtype), "StreamingT2V CAM")
    resampler = materialize(resampler, _take(sd, keys.RESAMPLER_PREFIX, dtype), "APM resampler")
    clip = materialize(clip, clip_state_dict_to_transformers(_take(sd, keys.IMAGE_ENCODER_PREFIX, dtype)),
                        "image encoder")
    _take(sd, keys.IMAGE_ENCODER_LEFTOVERS, dtype)  # the deleted text tower's leftovers: unused
    text_sd = keys.text_keys_installed(_take(sd, keys.TEXT_PREFIX, dtype), text.state_dict().keys())
    text = materialize(text, text_sd, "text encoder")
    vae = materialize(vae, _take(sd, keys.VAE_PREFIX, vae_dtype or dtype), "VAE")
    if sd:  # training-time extras would not change inference: say so, do not refuse the file
        log.warning("%s: %d tensors outside the parts StreamingT2V runs were ignored (e.g. %s)", name, len(sd),
                    sorted(sd)[:3])
    model = StreamingT2VModel(base, cam, resampler, clip, text, vae,
                              image_size=clip_cfg["image_size"]).eval().requires_grad_(False)
    model.source = path
    model.tokenizer_dir = _beside(path)
    return model


def _beside(path: str) -> str | None:
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer")
    return folder if os.path.isfile(os.path.join(folder, "vocab.json")) else None


def load_tokenizer(folder: str):
    """CLIP BPE tokenizer as ModelScope's (77 tokens, padded with '!', the SD2/OpenCLIP convention)."""
    from transformers import CLIPTokenizer

    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    if not (os.path.isfile(vocab) and os.path.isfile(merges)):
        raise AnimeVideoModelError(f"No CLIP tokenizer in '{folder}' (it needs vocab.json and merges.txt).")
    return CLIPTokenizer(vocab, merges, pad_token="!", model_max_length=NUM_TEXT_TOKENS)


def _load_entry(source, **options):
    if isinstance(source, dict):
        return load_streaming_t2v(options.pop("name", "streaming_t2v.ckpt"), sd=source, **options)
    return load_streaming_t2v(source, **options)


def _architectures():
    from ..registry import Architecture, keys_only

    return (Architecture("streaming_t2v", "a StreamingT2V checkpoint (ModelScope UNet with CAM and APM)",
                         "streaming_t2v", keys_only(keys.is_streaming_t2v), _load_entry,
                         hint="load it with AnimeVideo Load StreamingT2V", takes_state_dict=True),)


ARCHITECTURES = _architectures()

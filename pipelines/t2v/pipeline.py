"""ModelScopeT2V text-to-video and I2VGen-XL image(+text)-to-video: check -> encode text (and image) -> noise ->
sample -> decode, reproducing diffusers' ``TextToVideoSDPipeline`` and ``I2VGenXLPipeline`` on the same noise.

Text goes through the model's own tokenizer and CLIP text tower (ModelScope: the last hidden state of its 23-layer
OpenCLIP ViT-H tower; I2VGen-XL: the penultimate hidden state through the final LayerNorm, diffusers' clip_skip=1).
An empty prompt is allowed: it is encoded like any text, so with an empty negative prompt the conditional and
unconditional passes see the same text and guidance then acts only through I2VGen-XL's image (for ModelScope the
clip is an unconditional sample).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import AnimeVideoInputError
from . import sampler
from .loader import I2VGENXL, MODELSCOPE, T2VModel


@dataclass
class T2VRequest:
    prompt: str = ""
    negative_prompt: str = ""
    width: int = 256
    height: int = 256
    num_frames: int = 16
    steps: int = 50
    guidance_scale: float = 9.0
    eta: float = 0.0
    seed: int = 0
    scheduler: str = "as released"
    fps: int = 16  # I2VGen-XL's frame-rate condition (diffusers' target_fps); ModelScope has none
    decode_chunk_size: int = 8
    # Text embeddings made elsewhere (core's CLIP Text Encode on the same OpenCLIP-H tower): [1, T, width];
    # each one given replaces the encoding of its text
    prompt_embeds: torch.Tensor | None = None
    negative_embeds: torch.Tensor | None = None


@dataclass
class T2VResult:
    frames: torch.Tensor  # [F, H, W, 3] float32 0..1
    latents: torch.Tensor  # [B, C, F, h, w] model space (scaled)
    notes: list[str] = field(default_factory=list)


@dataclass
class T2VHooks:
    on_step: Callable[[sampler.StepInfo], None] | None = None
    on_decode_chunk: Callable[[int, int], None] | None = None


# diffusers' pipelines: ModelScope reads the last hidden state, I2VGen-XL the penultimate one (clip_skip=1)
CLIP_SKIP = {MODELSCOPE: None, I2VGENXL: 1}


def check_request(model: T2VModel, req: T2VRequest):
    step = model.spatial_factor
    for name, v in (("width", req.width), ("height", req.height)):
        if v <= 0 or v % step:
            lo, hi = max(step, v // step * step), (v // step + 1) * step
            raise AnimeVideoInputError(f"{name}: {v} is not a multiple of {step}, this model's size step; use {lo} "
                                       f"or {hi}.")
    if req.num_frames < 1:
        raise AnimeVideoInputError(f"num_frames: {req.num_frames} is too small; at least 1 frame is needed.")
    if req.steps < 1:
        raise AnimeVideoInputError(f"steps: {req.steps} is too small; at least 1 step is needed.")
    if req.decode_chunk_size < 1:
        raise AnimeVideoInputError(f"decode_chunk_size: {req.decode_chunk_size}; at least 1 is needed.")
    if not 0.0 <= req.eta <= 1.0:
        raise AnimeVideoInputError(f"eta: {req.eta} is outside 0..1 (0 = deterministic DDIM, 1 = DDPM-like).")
    if model.kind == I2VGENXL and req.fps < 1:
        raise AnimeVideoInputError(f"fps: {req.fps}; I2VGen-XL's frame-rate condition must be at least 1.")
    for name, text in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt)):
        if not isinstance(text, str):
            raise AnimeVideoInputError(f"{name}: expected text, got {type(text).__name__}.")


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, padding="longest", return_tensors="pt").input_ids[0])


def encode_text(model: T2VModel, texts: list[str], clip_skip: int | None) -> torch.Tensor:
    """[len(texts), 77, width] from the model's tokenizer and text tower (padded and truncated to its limit)."""
    tok = model.tokenizer(texts, padding="max_length", max_length=model.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt")
    te = model.text_encoder
    device = next(te.parameters()).device
    mask = tok.attention_mask.to(device) if getattr(te.config, "use_attention_mask", False) else None
    ids = tok.input_ids.to(device)
    if clip_skip is None:
        out = te(ids, attention_mask=mask)[0]
    else:
        hidden = te(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
        # transformers 4 nests the tower under .text_model, 5 does not
        out = getattr(te, "text_model", te).final_layer_norm(hidden)
    return out.to(te.dtype)


def check_embeds(model: T2VModel, name: str, embeds: torch.Tensor) -> torch.Tensor:
    width = model.unet.config.cross_attention_dim
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[-1] != width:
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise AnimeVideoInputError(
            f"{name}: a text conditioning of shape {shape}; this {model.kind} needs [1, tokens, {width}] from its "
            f"OpenCLIP ViT-H text tower (core's Load CLIP, type stable_diffusion, on the folder's "
            f"text_encoder/model.safetensors). A {shape[-1] if isinstance(shape, tuple) else '?'}-wide one is "
            "another model's text encoder.")
    return embeds


def same_length(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences of different lengths (core splits long prompts into 77-token parts) repeated to their least
    common multiple so they batch, as ComfyUI's cross-attention conditioning does."""
    if a.shape[1] == b.shape[1]:
        return a, b
    n = math.lcm(a.shape[1], b.shape[1])
    return a.repeat(1, n // a.shape[1], 1), b.repeat(1, n // b.shape[1], 1)


def text_conditioning(model: T2VModel, req: T2VRequest, cfg: bool) -> tuple[torch.Tensor, list[str]]:
    notes = []
    limit = model.tokenizer.model_max_length
    clip_skip = CLIP_SKIP[model.kind]
    if req.prompt_embeds is not None:
        cond = check_embeds(model, "positive", req.prompt_embeds).to(model.device)
        notes.append("text: the positive conditioning input replaces the prompt.")
    else:
        n = token_count(model.tokenizer, req.prompt)
        if n > limit:
            notes.append(f"prompt: {n} tokens, cut to the text encoder's {limit} (the end was dropped).")
        if not req.prompt.strip():
            notes.append("prompt is empty: the text condition is the empty text"
                         + (" (ModelScope then samples without a text condition)." if model.kind == MODELSCOPE
                            else "; the image still conditions the clip."))
        cond = encode_text(model, [req.prompt], clip_skip)
    if not cfg:
        return cond, notes
    if req.negative_embeds is not None:
        uncond = check_embeds(model, "negative", req.negative_embeds).to(model.device)
    else:
        n = token_count(model.tokenizer, req.negative_prompt)
        if n > limit:
            notes.append(f"negative_prompt: {n} tokens, cut to the text encoder's {limit} (the end was dropped).")
        uncond = encode_text(model, [req.negative_prompt], clip_skip)
    uncond, cond = same_length(uncond.to(cond.dtype), cond)
    return torch.cat([uncond, cond]), notes


# ---------------------------------------------------------------------------------------------
# I2VGen-XL's image conditions (the original's PIL transforms, as diffusers ports them)
# ---------------------------------------------------------------------------------------------

def to_pil(image_chw: torch.Tensor):
    from PIL import Image

    arr = (image_chw.detach().float().cpu().permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr)


def center_crop_wide(img, width: int, height: int):
    """Box-resize so the image covers width x height, then centre-crop (i2vgen-xl's utils/transforms.py)."""
    from PIL import Image

    scale = min(img.width / width, img.height / height)
    img = img.resize((round(img.width // scale), round(img.height // scale)), resample=Image.BOX)
    x1, y1 = (img.width - width) // 2, (img.height - height) // 2
    return img.crop((x1, y1, x1 + width, y1 + height))


def pil_to_tensor(img) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def image_embedding(model: T2VModel, image: torch.Tensor, width: int) -> torch.Tensor:
    """[1, 1, D]: the CLIP image embedding of a width x width centre crop resized (bilinear) to the encoder's size."""
    from PIL import Image

    crop = center_crop_wide(to_pil(image[0]), width, width).resize(model.clip_size, Image.BILINEAR)
    x = pil_to_tensor(crop)
    mean = torch.tensor(model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.image_std).view(1, 3, 1, 1)
    x = ((x - mean) / std).to(device=model.device, dtype=model.image_encoder.dtype)
    return model.image_encoder(x).image_embeds.unsqueeze(1)


def image_latents(model: T2VModel, image: torch.Tensor, width: int, height: int, num_frames: int,
                  generator: torch.Generator) -> torch.Tensor:
    """[1, 4, F, h, w]: frame 0 the VAE latent of the width x height crop (a posterior sample, scaled); frames
    1..F-1 constant planes (i+1)/(F-1), I2VGen-XL's frame-position mask."""
    x = pil_to_tensor(center_crop_wide(to_pil(image[0]), width, height)) * 2 - 1
    vae = model.vae
    dist = vae.encode(x.to(device=model.device, dtype=vae.dtype)).latent_dist
    eps = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32).to(dist.mean.device, dist.mean.dtype)
    latent = ((dist.mean + dist.std * eps) * model.scaling_factor).unsqueeze(2)
    planes = [torch.full_like(latent, (i + 1) / (num_frames - 1)) for i in range(num_frames - 1)]
    return torch.cat([latent] + planes, dim=2)


def image_noise_generator(seed: int) -> torch.Generator:
    """The VAE posterior sample's noise: its own stream (diffusers draws it from the global RNG), seed + 1."""
    return torch.Generator("cpu").manual_seed((int(seed) + 1) & 0xFFFF_FFFF_FFFF_FFFF)


# ---------------------------------------------------------------------------------------------
# Decode and run
# ---------------------------------------------------------------------------------------------

@torch.inference_mode()
def decode(model: T2VModel, latents: torch.Tensor, chunk: int,
           on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """[B, C, F, h, w] scaled latents -> [B*F, H, W, 3] in 0..1, ``chunk`` frames through the VAE at a time."""
    vae = model.vae
    z = (latents / model.scaling_factor).permute(0, 2, 1, 3, 4).flatten(0, 1)
    out = []
    for start in range(0, z.shape[0], chunk):
        part = vae.decode(z[start:start + chunk].to(vae.dtype)).sample.float()
        out.append((part / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu())
        if on_chunk is not None:
            on_chunk(min(start + chunk, z.shape[0]), z.shape[0])
    return torch.cat(out)


def latent_shape(model: T2VModel, req: T2VRequest) -> tuple[int, ...]:
    f = model.spatial_factor
    return (1, model.latent_channels, req.num_frames, req.height // f, req.width // f)


@torch.inference_mode()
def text_to_video(model: T2VModel, req: T2VRequest, hooks: T2VHooks | None = None,
                  noise: torch.Tensor | None = None) -> T2VResult:
    if model.kind != MODELSCOPE:
        raise AnimeVideoInputError(f"text_to_video needs a ModelScopeT2V model, got {model.kind}.")
    return _run(model, req, hooks or T2VHooks(), noise, image=None)


@torch.inference_mode()
def image_to_video(model: T2VModel, image: torch.Tensor, req: T2VRequest, hooks: T2VHooks | None = None,
                   noise: torch.Tensor | None = None) -> T2VResult:
    """image: [1, 3, H, W] in 0..1, any size (centre-cropped to width x height as I2VGen-XL does)."""
    if model.kind != I2VGENXL:
        raise AnimeVideoInputError(f"image_to_video needs an I2VGen-XL model, got {model.kind}.")
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise AnimeVideoInputError(f"image: expected one RGB image [1, 3, H, W], got {tuple(image.shape)}.")
    return _run(model, req, hooks or T2VHooks(), noise, image=image)


def _run(model: T2VModel, req: T2VRequest, hooks: T2VHooks, noise, image) -> T2VResult:
    check_request(model, req)
    device, dtype = model.device, model.unet.dtype
    cfg = req.guidance_scale > 1.0
    text, notes = text_conditioning(model, req, cfg)
    drawn, generator = sampler.draw_latent_noise(req.seed, latent_shape(model, req))
    noise = drawn if noise is None else noise
    scheduler = sampler.make_scheduler(model.scheduler_config, req.scheduler)
    unet = model.unet

    if image is None:
        def predict(x, t):
            return unet(x.to(dtype), t, encoder_hidden_states=text.to(dtype), return_dict=False)[0]
    else:
        embeds = image_embedding(model, image, req.width)
        lat = image_latents(model, image, req.width, req.height, req.num_frames, image_noise_generator(req.seed))
        if cfg:  # the unconditional pass sees a zero image embedding and the same image latents
            embeds = torch.cat([torch.zeros_like(embeds), embeds])
            lat = torch.cat([lat, lat])
        fps = torch.tensor([int(req.fps)] * (2 if cfg else 1), device=device)

        def predict(x, t):
            return unet(x.to(dtype), t, encoder_hidden_states=text.to(dtype), fps=fps,
                        image_latents=lat.to(dtype), image_embeddings=embeds.to(dtype), return_dict=False)[0]

    latents = sampler.sample(scheduler, predict, noise.to(device), req.steps, req.guidance_scale,
                             generator=generator, eta=req.eta, on_step=hooks.on_step)
    frames = decode(model, latents, req.decode_chunk_size, hooks.on_decode_chunk)
    return T2VResult(frames=frames, latents=latents, notes=notes)

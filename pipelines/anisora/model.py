"""The shared shapes of the AniSora backbones (Wan2.1-I2V layout for V2/V3/anymask, CogVideoX-5B-I2V for V1).

Each backbone module (``wan.py``, ``cogvideox.py``) provides ``load_*`` returning an :class:`AniSoraModel`
and ``generate(model, guide, text, request, hooks) -> AniSoraResult``; the node dispatches on
``model.backbone``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(eq=False)
class AniSoraModel:
    backbone: str  # "wan" or "cogvideox"
    transformer: torch.nn.Module
    vae: torch.nn.Module
    dtype: torch.dtype
    source: str
    extras: dict = field(default_factory=dict)
    # Wan2.2-I2V-A14B (AniSora V3.2): ``transformer`` is the high-noise expert, ``transformer_2`` the low-noise
    # one; timesteps t >= boundary_ratio * 1000 go to the first (diffusers' WanImageToVideoPipeline convention).
    transformer_2: torch.nn.Module | None = None
    boundary_ratio: float | None = None

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def modules_for_memory(self):
        return [self.transformer] + ([self.transformer_2] if self.transformer_2 is not None else []) + [self.vae]

    def to(self, device) -> "AniSoraModel":
        for m in self.modules_for_memory():
            m.to(device)
        return self


@dataclass
class TextConditioning:
    """Prompt embeddings as a text encoder gave them (ComfyUI CONDITIONING's tensor), [1, L, D]."""

    positive: torch.Tensor
    negative: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None  # Wan I2V CLIP-vision tokens [1, 257, 1280] (penultimate layer)


@dataclass
class AniSoraRequest:
    width: int = 832
    height: int = 480
    num_frames: int = 81  # 4k+1
    steps: int = 8
    cfg: float = 1.0  # <= 1: no unconditional pass (distilled weights: AniSora V3 uses 8 steps, guidance 1)
    cfg_low_noise: float | None = None  # Wan2.2 experts: the low-noise expert's guidance (None: cfg, as diffusers)
    shift: float = 5.0
    seed: int = 0
    sampler: str = "unipc"  # "unipc" or "euler" (flow matching)
    dynamic_cfg: bool = True  # CogVideoX only (DynamicCFG, digest A2)
    # CogVideoX only (digest A2/A6.7): True = the original's DynamicCFG (x = (steps - t)/steps, t the DDPM timestep;
    # SAT and diffusers both compute it so); False = the intended ramp x = step/steps.
    dynamic_cfg_timestep_quirk: bool = True
    fit: str | None = None  # how keyframes/masks of another size meet width x height: crop/pad/stretch (None: stretch)
    vae_tiling: bool = False  # decode (and encode) the VAE in overlapping spatial tiles: less memory


@dataclass
class AniSoraHooks:
    on_step: Callable[[int, int], None] | None = None  # (step, total), also the interrupt point
    # Where to compute (None: where the transformer already is) and where idle parts wait (None: they stay
    # on ``device``). With both set, only the part at work (VAE or transformer) sits on ``device``.
    device: torch.device | None = None
    offload_device: torch.device | None = None
    # (step, total, rgb [h, w, 3] uint8): a preview of the clip's middle frame after each step (Wan backbone)
    on_preview: Callable[[int, int, torch.Tensor], None] | None = None


@dataclass
class AniSoraResult:
    frames: torch.Tensor  # [F, H, W, 3] float32 0..1
    info: str
    # The final latents as core ComfyUI's LATENT holds them: the VAE's own (raw, unnormalised) latent
    # [1, C, T_lat, h, w], so core's VAE Decode with the same VAE decodes them.
    latents: torch.Tensor | None = None


@contextlib.contextmanager
def on_device(module: torch.nn.Module, hooks: AniSoraHooks):
    """Run one phase with ``module`` on ``hooks.device`` (if set); afterwards park it on ``hooks.offload_device``
    (if set and different), so only the part at work holds accelerator memory."""
    dev, off = hooks.device, hooks.offload_device
    if dev is not None:
        module.to(dev)
    try:
        yield module
    finally:
        if dev is not None and off is not None and torch.device(off) != torch.device(dev):
            module.to(off)
            if torch.device(dev).type == "cuda":
                torch.cuda.empty_cache()

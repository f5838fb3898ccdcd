"""Run configs for the two training stages: a small JSON file per run (``<run_dir>/config.json``).

Defaults are the thesis' (appendix C.1 and C.2); ``load_config`` also reads YAML when PyYAML is
installed. Unknown keys are an error naming them, so a typo never trains with a silent default.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from ...errors import AnimeVideoInputError
from ..vqgan import THESIS_CONFIG as VQGAN_THESIS

CONFIG_FILE = "config.json"


@dataclass
class VQGANTrainConfig:
    stage: str = "vqgan"
    data: str = ""  # a folder made by scripts/ganime_prepare_dataset.py
    model: dict = field(default_factory=VQGAN_THESIS.to_dict)  # VQGANConfig fields
    batch_size: int = 64
    steps: int = 100_000
    lr: float = 3e-5
    betas: tuple[float, float] = (0.5, 0.9)
    clip_norm: float = 1.0
    reconstruction_weight: float = 1.0  # MAE
    perceptual_weight: float = 4.0  # VGG19
    codebook_weight: float = 1.0
    vgg: str = ""  # VGG19 weights (default: models/ganime/vgg19-dcbb9e9d.pth)
    use_discriminator: bool = False  # the thesis' final VQ-GAN was trained without it (B7)
    disc_start: int = 0
    disc_weight: float = 0.8
    disc_factor: float = 1.0
    disc_lr: float = 5e-5
    disc_layers: int = 3
    disc_filters: int = 64
    jitter: bool = True  # resize to 72x142, random crop back, horizontal flip p=0.5
    frame_step: int = 5  # frames taken from the clips (the thesis sampled 1 in 5)
    save_every: int = 1000
    log_every: int = 50
    seed: int = 0
    device: str = "auto"


@dataclass
class GPTTrainConfig:
    stage: str = "gpt"
    data: str = ""
    vqgan: str = ""  # the trained VQ-GAN (our safetensors file); frozen here
    size: str = "gpt2-medium"  # a GPT-2 preset, or "custom" with the model fields below
    model: dict = field(default_factory=dict)  # TransformerConfig overrides (n_layer, n_embd, ...)
    init_from: str = ""  # a Hugging Face GPT-2 folder (pretrained weights help, thesis Fig. 26) or our file
    batch_size: int = 64
    steps: int = 2_200  # ~ 500 epochs of the thesis' 28213 clips at batch 64 would be 220k; set your own
    lr_start: float = 5e-6
    lr_max: float = 1e-4
    warmup_fraction: float = 0.15
    weight_decay: float = 1e-4
    clip_norm: float = 0.0  # 0: off (the original did not clip)
    frames_before: int = 1
    teacher_forcing_steps: int = 200  # optimizer steps with ground-truth previous frames (the original's unit, B14)
    reencode_previous: bool = False  # own frames as pixels re-encoded (faithful) or as predicted codes (fast)
    max_clip_frames: int = 0  # 0: whole clips (truncated to the shortest of the batch)
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"


STAGES = {"vqgan": VQGANTrainConfig, "gpt": GPTTrainConfig}


def from_dict(d: dict):
    stage = d.get("stage")
    if stage not in STAGES:
        raise AnimeVideoInputError(f"config: 'stage' must be one of {', '.join(STAGES)}, got {stage!r}.")
    cls = STAGES[stage]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise AnimeVideoInputError(f"config: unknown keys {unknown} for the {stage} stage; known: {sorted(names)}.")
    cfg = cls(**d)
    if hasattr(cfg, "betas"):
        cfg.betas = tuple(cfg.betas)
    if stage == "vqgan":
        cfg.model = {**VQGAN_THESIS.to_dict(), **cfg.model}
    return cfg


def to_dict(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def load_config(path: str):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise AnimeVideoInputError("config: reading YAML needs PyYAML (pip install pyyaml); or use JSON.") from None
        d = yaml.safe_load(text)
    else:
        d = json.loads(text)
    if not isinstance(d, dict):
        raise AnimeVideoInputError(f"config: '{path}' does not hold a mapping.")
    return from_dict(d)


def save_config(cfg, run_dir: str) -> str:
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CONFIG_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(to_dict(cfg), f, indent=1)
    return path

"""Tiny random-weight metric networks in the released files' key layouts, under the released file names.

- ``metrics/i3d_pretrained_400.pt``: I3D with every width / 16 (at least 1), 400 logits, a raw state dict as VideoGPT saves it
  (batch-norm ``weight`` present, no ``num_batches_tracked``);
- ``metrics/pt_inception-2015-12-05-6726825d.pth``: the FID Inception-v3 with every width / 16 (128-d features),
  1008-class ``fc``;
- ``metrics/alexnet-owt-7be5be79.pth`` and ``metrics/vgg16-397923af.pth``: torchvision ``features.*`` (+ a small
  ``classifier.*``, which the loader ignores) with widths / 8;
- ``metrics/lpips/alex.pth`` and ``metrics/lpips/vgg.pth``: the heads ``linN.model.1.weight`` for those widths.

Batch-norm statistics are set from one forward pass on random input (train mode, momentum 1), so activations
keep a useful scale through the deep random networks instead of fading to zero.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from . import i3d as i3d_net
from . import inception as inception_net
from . import lpips as lpips_net
from .loader import ALEX_FILE, I3D_FILE, INCEPTION_FILE, LPIPS_HEADS, VGG16_FILE

FOLDER = "metrics"
I3D_DIVISOR = 16
INCEPTION_DIVISOR = 16
BACKBONE_DIVISOR = 8
TINY_FILES = tuple(f"{FOLDER}/{f}" for f in (I3D_FILE, INCEPTION_FILE, ALEX_FILE, VGG16_FILE,
                                             LPIPS_HEADS["alex"], LPIPS_HEADS["vgg"]))

ALEX_WIDTHS = (64, 192, 384, 256, 256)
ALEX_KERNELS = (11, 5, 3, 3, 3)
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


@torch.no_grad()
def _calibrate_batch_norms(model: nn.Module, run, x: torch.Tensor) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    model.train()
    run(x)
    model.eval()


def build_tiny_i3d(seed: int = 0) -> i3d_net.InceptionI3d:
    torch.manual_seed(seed)
    model = i3d_net.InceptionI3d(400, I3D_DIVISOR)
    _calibrate_batch_norms(model, model.trunk, torch.rand(2, 3, 16, 96, 96) * 2 - 1)  # small: only a scale is needed
    return model.requires_grad_(False)


def build_tiny_inception(seed: int = 0) -> inception_net.FIDInceptionV3:
    torch.manual_seed(seed)
    model = inception_net.FIDInceptionV3(INCEPTION_DIVISOR)
    _calibrate_batch_norms(model, model, torch.rand(4, 3, 139, 139) * 2 - 1)
    return model.requires_grad_(False)


def tiny_backbone_state_dict(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision-layout ``features.*`` (+ ``classifier.*``) with widths / 8."""
    gen = torch.Generator().manual_seed(seed)
    spec = lpips_net.SPECS[kind]
    widths = ALEX_WIDTHS if kind == "alex" else VGG16_WIDTHS
    kernels = ALEX_KERNELS if kind == "alex" else (3,) * len(VGG16_WIDTHS)
    sd, cin = {}, 3
    for idx, width, k in zip(spec.convs, widths, kernels):
        cout = width // BACKBONE_DIVISOR
        bound = (cin * k * k) ** -0.5
        sd[f"features.{idx}.weight"] = (torch.rand(cout, cin, k, k, generator=gen) * 2 - 1) * bound * 3 ** 0.5
        sd[f"features.{idx}.bias"] = (torch.rand(cout, generator=gen) * 2 - 1) * 0.1
        cin = cout
    first_fc = "classifier.1" if kind == "alex" else "classifier.0"  # torchvision's first Linear (ignored)
    pooled = 36 if kind == "alex" else 49  # its 6x6 / 7x7 adaptive pool
    sd[f"{first_fc}.weight"] = torch.randn(64, cin * pooled, generator=gen) * 0.01
    sd[f"{first_fc}.bias"] = torch.zeros(64)
    return sd


def tiny_heads_state_dict(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    backbone = lpips_net.build_backbone(tiny_backbone_state_dict(kind, seed))
    # the released heads are non-negative (trained with clamping); keep that property
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) * 0.2
            for i, c in enumerate(backbone.tap_widths())}


def _state_dict(model: nn.Module, drop_counters: bool = True) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()
            if not (drop_counters and k.endswith("num_batches_tracked"))}


def _save(root: str, rel: str, sd: dict) -> str:
    path = os.path.join(root, FOLDER, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(sd, tmp)  # raw state dicts, as released
    os.replace(tmp, path)
    return f"{FOLDER}/{rel}"


def write_tiny_metrics(models_dir: str, seed: int = 0) -> list[str]:
    """Write every tiny metric network under ``models_dir/metrics``; returns the relative paths written."""
    written = [
        _save(models_dir, I3D_FILE, _state_dict(build_tiny_i3d(seed + 31))),
        _save(models_dir, INCEPTION_FILE, _state_dict(build_tiny_inception(seed + 32))),
        _save(models_dir, ALEX_FILE, tiny_backbone_state_dict("alex", seed + 33)),
        _save(models_dir, VGG16_FILE, tiny_backbone_state_dict("vgg", seed + 34)),
        _save(models_dir, LPIPS_HEADS["alex"], tiny_heads_state_dict("alex", seed + 33)),
        _save(models_dir, LPIPS_HEADS["vgg"], tiny_heads_state_dict("vgg", seed + 34)),
    ]
    return written

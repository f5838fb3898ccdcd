"""Losses for the VQ-GAN stage: VGG19 perceptual loss, PatchGAN discriminator, hinge loss, adaptive weight.

Perceptual loss (the thesis' choice, from FILM / Zhou et al.): L1 between VGG19 features at conv1_2,
conv2_2, conv3_2, conv4_2 and conv5_2 (after ReLU) with weights 1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5,
average pooling between stages. The VGG weights come from a file in ``models/ganime``:
torchvision's ``vgg19-dcbb9e9d.pth`` (keys ``features.N.*``, used as is) or a safetensors file with
the same keys. Inputs are preprocessed the way those weights expect: ``torchvision`` ((x - mean) / std
on 0..1) or ``matconvnet`` (x * 255 - mean, the thesis' MatConvNet file); the sum is scaled so both
give about the magnitude of the thesis' loss (1/255 for matconvnet, the mean std 0.226 for torchvision).
"""
from __future__ import annotations

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...checkpoint_io import read_state_dict
from ...errors import AnimeVideoModelError

VGG19_WIDTHS = (64, 128, 256, 512, 512)
VGG19_CONVS_PER_STAGE = (2, 2, 4, 4, 4)
LAYER_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
PREPROCESS = ("torchvision", "matconvnet")
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
MATCONVNET_MEAN = (123.68, 116.779, 103.939)
DEFAULT_VGG_FILE = "vgg19-dcbb9e9d.pth"


class VGG19Features(nn.Module):
    """VGG19's conv stack up to conv5_2 with torchvision's module indices (so its weights load as is)."""

    def __init__(self, widths=VGG19_WIDTHS, pool: str = "avg", preprocess: str = "torchvision"):
        super().__init__()
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}")
        self.widths, self.preprocess = tuple(widths), preprocess
        layers, self.taps, in_ch = [], [], 3
        for stage, (width, n_conv) in enumerate(zip(self.widths, VGG19_CONVS_PER_STAGE)):
            last_stage = stage == len(self.widths) - 1
            for j in range(2 if last_stage else n_conv):  # the last stage stops at conv5_2
                layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = width
                if j == 1:  # after convN_2's ReLU
                    self.taps.append(len(layers) - 1)
            if not last_stage:
                layers.append(nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.requires_grad_(False)

    def prepare(self, x01: torch.Tensor) -> torch.Tensor:
        if self.preprocess == "matconvnet":
            return x01 * 255.0 - x01.new_tensor(MATCONVNET_MEAN).view(1, 3, 1, 1)
        mean = x01.new_tensor(TORCHVISION_MEAN).view(1, 3, 1, 1)
        std = x01.new_tensor(TORCHVISION_STD).view(1, 3, 1, 1)
        return (x01 - mean) / std

    def forward(self, x01: torch.Tensor) -> list[torch.Tensor]:
        h, out = self.prepare(x01), []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
                if len(out) == len(self.taps):
                    break
        return out


class PerceptualLoss(nn.Module):
    def __init__(self, vgg: VGG19Features, weights=LAYER_WEIGHTS):
        super().__init__()
        self.vgg, self.weights = vgg.eval(), tuple(weights)
        self.scale = 1.0 / 255.0 if vgg.preprocess == "matconvnet" else sum(TORCHVISION_STD) / 3

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1]."""
        fr, ff = self.vgg((real + 1) / 2), self.vgg((fake + 1) / 2)
        total = sum(w * (a - b).abs().mean() for w, a, b in zip(self.weights, fr, ff))
        return total * self.scale


def vgg_from_state_dict(sd: dict, preprocess: str = "torchvision", name: str = "VGG file") -> VGG19Features:
    convs = sorted(int(k.split(".")[1]) for k in sd if k.startswith("features.") and k.endswith(".weight"))
    if not convs:
        raise AnimeVideoModelError(f"'{name}' holds no VGG19 'features.N.weight' tensors; use torchvision's "
                                   f"{DEFAULT_VGG_FILE} or a file with the same keys.")
    widths = []
    for stage_first in (0, 5, 10, 19, 28):
        key = f"features.{stage_first}.weight"
        if key not in sd:
            raise AnimeVideoModelError(f"'{name}' lacks {key}: not a VGG19 feature stack.")
        widths.append(int(sd[key].shape[0]))
    model = VGG19Features(tuple(widths), preprocess=preprocess)
    wanted = model.features.state_dict()
    try:
        model.features.load_state_dict({k[len("features."):]: v for k, v in sd.items()
                                        if k.startswith("features.") and k[len("features."):] in wanted}, strict=True)
    except RuntimeError as e:
        raise AnimeVideoModelError(f"'{name}' does not fit VGG19's layers: {str(e).splitlines()[0]}") from None
    return model.requires_grad_(False)


def load_vgg(path: str) -> VGG19Features:
    if not os.path.isfile(path):
        raise AnimeVideoModelError(
            f"The perceptual loss needs VGG19 weights: '{path}' was not found. Put torchvision's {DEFAULT_VGG_FILE} "
            "(or a safetensors file with its features.* keys) in models/ganime, or train with perceptual_weight 0.")
    preprocess = "torchvision"
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            preprocess = json.loads((f.metadata() or {}).get("config", "{}")).get("preprocess", preprocess)
    return vgg_from_state_dict(read_state_dict(path), preprocess, os.path.basename(path))


def save_vgg(model: VGG19Features, path: str) -> str:
    from safetensors.torch import save_file

    sd = {f"features.{k}": v.contiguous() for k, v in model.features.state_dict().items()}
    save_file(sd, path, metadata={"config": json.dumps({"preprocess": model.preprocess})})
    return path


class PatchDiscriminator(nn.Module):
    """PatchGAN (thesis Table 3): 4x4 convs, stride 2 for the first ``n_layers``, BatchNorm, LeakyReLU 0.2;
    64x128 in -> 8x16 logits."""

    def __init__(self, n_layers: int = 3, filters: int = 64):
        super().__init__()
        layers = [nn.Conv2d(3, filters, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(filters * prev, filters * mult, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(filters * mult), nn.LeakyReLU(0.2)]
        prev, mult = mult, min(2 ** n_layers, 8)
        same = (1, 2, 1, 2)  # TF's "same" for a 4x4 stride-1 conv: the extra row/column at the end
        layers += [nn.ZeroPad2d(same), nn.Conv2d(filters * prev, filters * mult, 4, 1, 0, bias=False),
                   nn.BatchNorm2d(filters * mult), nn.LeakyReLU(0.2), nn.ZeroPad2d(same),
                   nn.Conv2d(filters * mult, 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float = 0.8, delta: float = 1e-6) -> torch.Tensor:
    """lambda = |grad nll| / (|grad g| + delta) at the decoder's last layer, clipped to [0, 1e4], times the weight."""
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    lam = nll_grad.norm() / (g_grad.norm() + delta)
    return lam.clamp(0.0, 1e4).detach() * disc_weight

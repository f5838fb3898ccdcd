"""LPIPS v0.1 (Zhang et al. 2018) with the released linear heads, AlexNet or VGG16 backbone.

Two released files, both read as plain state dicts:

- the backbone: torchvision's ImageNet weights, ``alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``
  (keys ``features.N.weight``; the ``classifier.*`` part is ignored), which the ``lpips`` package and
  torchmetrics download at run time;
- the heads: ``alex.pth`` or ``vgg.pth`` from the lpips package (``lpips/weights/v0.1/``, also shipped inside
  torchmetrics), keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight`` of shape [1, C_l, 1, 1].

The distance, as ``lpips.LPIPS(net=..., version='0.1')`` computes it: inputs in [-1, 1] are shifted and scaled
(the ScalingLayer constants), the five ReLU taps are unit-normalised over channels (eps 1e-10), squared
differences go through each head (a 1x1 convolution without bias), are averaged over positions, and the five
layers are summed. Pairs are frame i of one clip with frame i of the other; the clip score is the mean over
frames (digest A2).

The backbone's kind comes from its first convolution (11x11: AlexNet; 3x3 with VGG16's 13 convolutions: VGG16)
and its widths from every convolution, so tiny test networks in the same layout load the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint_io import empty_weights
from ..errors import AnimeVideoModelError
from .i3d import check_keys

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# torchvision ``features`` indices: the convolutions, the max pools and the ReLU taps LPIPS reads
ALEX_CONVS = (0, 3, 6, 8, 10)
ALEX_POOLS = (2, 5)  # the pool at 12 comes after the last tap
ALEX_TAPS = (1, 4, 7, 9, 11)
ALEX_GEOMETRY = {0: (4, 2), 3: (1, 2), 6: (1, 1), 8: (1, 1), 10: (1, 1)}  # stride, padding
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_POOLS = (4, 9, 16, 23)
VGG16_TAPS = (3, 8, 15, 22, 29)


@dataclass(frozen=True)
class BackboneSpec:
    kind: str  # "alex" or "vgg"
    convs: tuple
    pools: tuple
    taps: tuple


SPECS = {
    "alex": BackboneSpec("alex", ALEX_CONVS, ALEX_POOLS, ALEX_TAPS),
    "vgg": BackboneSpec("vgg", VGG16_CONVS, VGG16_POOLS, VGG16_TAPS),
}


class Backbone(nn.Module):
    """torchvision's ``features`` Sequential up to the last LPIPS tap, widths from the state dict."""

    def __init__(self, spec: BackboneSpec, widths: dict[int, tuple[int, int, int]]):
        super().__init__()
        self.spec = spec
        layers = []
        for i in range(spec.taps[-1] + 1):
            if i in spec.convs:
                cout, cin, k = widths[i]
                stride, pad = ALEX_GEOMETRY[i] if spec.kind == "alex" else (1, 1)
                layers.append(nn.Conv2d(cin, cout, k, stride, pad))
            elif i in spec.pools:
                layers.append(nn.MaxPool2d(3, 2) if spec.kind == "alex" else nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)

    def tap_widths(self) -> list[int]:
        out = []
        for t in self.spec.taps:
            conv = max(c for c in self.spec.convs if c < t)
            out.append(self.features[conv].out_channels)
        return out

    def forward(self, x):
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.spec.taps:
                taps.append(x)
        return taps


class LPIPS(nn.Module):
    def __init__(self, backbone: Backbone):
        super().__init__()
        self.net = backbone
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in backbone.tap_widths())
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    @property
    def kind(self) -> str:
        return self.net.spec.kind

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] each -> [B] distances."""
        n = a.shape[0]
        taps = self.net((torch.cat([a, b]) - self.shift) / self.scale)
        total = 0
        for tap, lin in zip(taps, self.lins):
            t = tap / (tap.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            total = total + lin((t[:n] - t[n:]) ** 2).mean(dim=(2, 3))
        return total[:, 0]


def backbone_kind(sd: dict) -> str:
    w = sd.get("features.0.weight")
    if w is None or w.ndim != 4:
        raise AnimeVideoModelError("no 'features.0.weight' convolution (a torchvision AlexNet/VGG16 file has one)")
    if w.shape[-1] == 11 and all(f"features.{i}.weight" in sd for i in ALEX_CONVS):
        return "alex"
    if w.shape[-1] == 3 and all(f"features.{i}.weight" in sd for i in VGG16_CONVS) \
            and "features.31.weight" not in sd:  # VGG19 has convolutions past 28
        return "vgg"
    raise AnimeVideoModelError("the 'features.N' convolutions are neither AlexNet's nor VGG16's")


def build_backbone(sd: dict) -> Backbone:
    spec = SPECS[backbone_kind(sd)]
    widths = {}
    for i in spec.convs:
        w = sd[f"features.{i}.weight"]
        widths[i] = (int(w.shape[0]), int(w.shape[1]), int(w.shape[-1]))
    with empty_weights():
        backbone = Backbone(spec, widths)
    present = {k: v for k, v in sd.items()
               if k.startswith("features.") and int(k.split(".")[1]) <= spec.taps[-1]}
    expected = {f"features.{k}": tuple(v.shape) for k, v in backbone.features.state_dict().items()}
    check_keys(present, expected)
    backbone.features.load_state_dict({k[len("features."):]: v for k, v in present.items()}, assign=True)
    return backbone


def build_lpips(backbone_sd: dict, heads_sd: dict) -> LPIPS:
    """From the two released state dicts; the heads must fit the backbone's tap widths."""
    backbone = build_backbone(backbone_sd)
    with empty_weights():
        model = LPIPS(backbone)
    heads = {}
    for i, c in enumerate(backbone.tap_widths()):
        w = heads_sd.get(f"lin{i}.model.1.weight")
        if w is None or tuple(w.shape) != (1, c, 1, 1):
            got = "missing" if w is None else tuple(w.shape)
            raise AnimeVideoModelError(
                f"head 'lin{i}.model.1.weight' is {got}; the {backbone.spec.kind} backbone needs [1, {c}, 1, 1] "
                f"(use the lpips heads file for the same network: '{backbone.spec.kind}.pth')")
        heads[f"{i}.weight"] = w
    model.lins.load_state_dict(heads, assign=True)
    model.shift = torch.tensor(SHIFT).view(1, 3, 1, 1)
    model.scale = torch.tensor(SCALE).view(1, 3, 1, 1)
    return model.float().eval().requires_grad_(False)


def is_heads_state_dict(sd: dict) -> bool:
    return "lin0.model.1.weight" in sd


def heads_kind(sd: dict) -> str:
    """'alex' or 'vgg' from the released head widths (tiny heads: whichever fits; checked against the backbone)."""
    widths = tuple(int(sd[f"lin{i}.model.1.weight"].shape[1]) for i in range(5) if f"lin{i}.model.1.weight" in sd)
    if widths == (64, 192, 384, 256, 256):
        return "alex"
    if widths == (64, 128, 256, 512, 512):
        return "vgg"
    return "custom"

"""The "informative drawings" line-drawing generator (Chan, Durand, Isola, CVPR 2022), written for this pack.

This is the network behind ControlNet-1.1's "lineart" annotator (``sk_model.pth``, and ``sk_model2.pth`` for
its "coarse" variant, same architecture), which LVCD uses to make its sketch hints. A ResNet-style
image-to-image generator:

- stem: reflection pad 3, 7x7 conv ``input_nc -> base``, instance norm, ReLU;
- ``n_down`` stride-2 3x3 convs, each doubling the width (instance norm, ReLU);
- ``n_residual_blocks`` residual blocks (reflection pad 1, 3x3 conv, IN, ReLU, reflection pad 1, 3x3 conv, IN);
- ``n_down`` stride-2 3x3 transposed convs (padding 1, output padding 1), each halving the width (IN, ReLU);
- head: reflection pad 3, 7x7 conv ``base -> output_nc``, sigmoid.

Instance norms are affine-free and keep no running statistics, so they have no entries in the state dict.
The released files are raw state dicts with ``input_nc=3, output_nc=1, base=64, n_down=2,
n_residual_blocks=3`` (4,290,945 parameters). The module names below (``model0`` .. ``model4`` as
sequentials, ``conv_block`` inside the residual blocks) reproduce the released parameter names, so those files
load with ``strict=True``:

``model0.1.*``, ``model1.{0,3}.*``, ``model2.N.conv_block.{1,5}.*``, ``model3.{0,3}.*``, ``model4.1.*``.

Sizes are read from the tensor shapes (:func:`config_from_state_dict`), so a tiny random-weight copy in the same
layout goes through the same code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import AnimeVideoModelError

STEM_KEY = "model0.1.weight"
HEAD_KEY = "model4.1.weight"
DETECT_KEYS = (STEM_KEY, HEAD_KEY, "model1.0.weight", "model3.0.weight")
IN_EPS = 1e-5  # nn.InstanceNorm2d's default


@dataclass(frozen=True)
class GeneratorConfig:
    input_nc: int = 3
    output_nc: int = 1
    n_residual_blocks: int = 3
    base: int = 64
    n_down: int = 2

    @property
    def size_multiple(self) -> int:
        """Frame sides the generator maps back to themselves: each down step halves them (rounding up)."""
        return 2 ** self.n_down

    @property
    def min_side(self) -> int:
        """The smallest side the reflection pads accept: the stem's pad of 3 needs 4 px, the residual blocks'
        pad of 1 needs 2 px at the bottleneck."""
        return max(4, 2 * self.size_multiple)


RELEASED = GeneratorConfig()  # sk_model.pth / sk_model2.pth


def _norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch)  # affine=False, no running stats: nothing in the state dict


class ResidualBlock(nn.Module):
    """x + F(x), F = pad, conv3, IN, ReLU, pad, conv3, IN (indices 1 and 5 hold the weights)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class LineartGenerator(nn.Module):
    """Image [b, input_nc, h, w] in 0..1 -> line map [b, output_nc, h', w'] in 0..1 (lines dark, paper white).

    h' = h when h is a multiple of ``config.size_multiple`` (see :func:`..extract.extract_lineart`, which pads)."""

    def __init__(self, config: GeneratorConfig = RELEASED):
        super().__init__()
        self.config = c = config
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c.input_nc, c.base, 7), _norm(c.base), nn.ReLU())
        down, ch = [], c.base
        for _ in range(c.n_down):
            down += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), _norm(ch * 2), nn.ReLU()]
            ch *= 2
        self.model1 = nn.Sequential(*down)
        self.model2 = nn.Sequential(*[ResidualBlock(ch) for _ in range(c.n_residual_blocks)])
        up = []
        for _ in range(c.n_down):
            up += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1), _norm(ch // 2), nn.ReLU()]
            ch //= 2
        self.model3 = nn.Sequential(*up)
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c.base, c.output_nc, 7), nn.Sigmoid())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def is_lineart_state_dict(sd: dict) -> bool:
    return all(k in sd for k in DETECT_KEYS)


def _indices(sd: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd for m in [rx.match(k)] if m})


def config_from_state_dict(sd: dict) -> GeneratorConfig:
    """Read every size from the shapes; raise :class:`AnimeVideoModelError` when the layout does not fit."""
    missing = [k for k in DETECT_KEYS if k not in sd]
    if missing:
        raise AnimeVideoModelError(f"not an informative-drawings generator: missing {', '.join(missing)}")
    stem, head = sd[STEM_KEY], sd[HEAD_KEY]
    if stem.ndim != 4 or head.ndim != 4 or tuple(stem.shape[2:]) != (7, 7) or tuple(head.shape[2:]) != (7, 7):
        raise AnimeVideoModelError("not an informative-drawings generator: the first and last convs are not 7x7")
    base, input_nc = int(stem.shape[0]), int(stem.shape[1])
    output_nc = int(head.shape[0])
    down = _indices(sd, r"model1\.(\d+)\.weight$")
    up = _indices(sd, r"model3\.(\d+)\.weight$")
    n_down = len(down)
    if n_down == 0 or down != [3 * i for i in range(n_down)] or up != [3 * i for i in range(n_down)]:
        raise AnimeVideoModelError(
            f"not an informative-drawings generator: down layers at model1.{down}, up layers at model3.{up}")
    blocks = _indices(sd, r"model2\.(\d+)\.conv_block\.")
    if blocks != list(range(len(blocks))):
        raise AnimeVideoModelError(f"residual blocks are not numbered 0..n-1: model2.{blocks}")
    return GeneratorConfig(input_nc=input_nc, output_nc=output_nc, n_residual_blocks=len(blocks), base=base,
                           n_down=n_down)


def build_from_state_dict(sd: dict, dtype: torch.dtype = torch.float32) -> LineartGenerator:
    """The generator with ``sd`` loaded strictly (any missing, extra or mis-shaped tensor is an error)."""
    cfg = config_from_state_dict(sd)
    model = LineartGenerator(cfg)
    expected = model.state_dict()
    extra = sorted(set(sd) - set(expected))
    missing = sorted(set(expected) - set(sd))
    wrong = sorted(k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape))
    if extra or missing or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
        if extra:
            parts.append(f"unexpected {', '.join(extra[:4])}" + (" ..." if len(extra) > 4 else ""))
        if wrong:
            parts.append("wrong shapes for " + ", ".join(
                f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k].shape)})" for k in wrong[:3]))
        raise AnimeVideoModelError("the informative-drawings layout does not fit: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model.to(dtype).eval().requires_grad_(False)

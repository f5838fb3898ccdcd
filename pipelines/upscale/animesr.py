"""AnimeSR (NeurIPS 2022): the MSRSWVSR network, written for this pack.

Multi-scale, unidirectional recurrent, sliding-window video super-resolution. Each output frame t is
computed from

- the LR window (frame t-1, frame t, frame t+1), 9 channels;
- the previous SR output, folded back to LR size by ``pixel_unshuffle`` (3 * s * s channels);
- the previous hidden state (``num_feat`` channels);

by one multi-scale convolutional cell whose output splits into the SR residual (pixel-shuffled and added to a
bilinear x s enlargement of frame t) and the next hidden state (after a LeakyReLU 0.1). Released weights:
``num_feat=64, num_block=(5, 3, 2), netscale=4`` (1,495,376 parameters).

Parameter names match the official ``animesr/archs/vsr_arch.py`` so the released raw state dicts
(``AnimeSR_v2.pth``, ``AnimeSR_v1-PaperModel.pth``) load with ``strict=True``:
``recurrent_cell.{conv_s1_first,conv_s2_first,conv_s4_first}.0.*``, ``recurrent_cell.body_s{1,2,4}_first.N.conv{1,2}.*``
and ``recurrent_cell.fusion.{0,2}.*``.

The fed-back SR frame is the *unclamped* output, as in the model's own forward (the official video script's CPU
path clamps it in place before feeding it back, which shifts later frames; see originals.md §9).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_io import empty_weights
from ..errors import AnimeVideoModelError

KEY_PREFIX = "recurrent_cell."
DETECT_KEYS = ("recurrent_cell.conv_s1_first.0.weight", "recurrent_cell.fusion.2.weight")
MOD = 4  # the cell downsamples twice by 2: frame sides must be multiples of 4
LRELU = 0.1


class ResidualBlockNoBN(nn.Module):
    """x + conv2(relu(conv1(x))), both convs 3x3 with bias (BasicSR's block, residual scale 1)."""

    def __init__(self, num_feat: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class RightAlignMSConvResidualBlocks(nn.Module):
    """Three scales (1, 1/2, 1/4) of residual blocks, the shorter stacks aligned to the end of the longest.

    While both run, each full-scale block takes the sum of its own input and the bilinear enlargements of the
    coarser scales' latest outputs; the 1/2 scale likewise takes the 1/4 scale's. A two-conv fusion of the three
    scales gives ``num_out_ch`` channels.
    """

    def __init__(self, num_in_ch: int, num_state_ch: int, num_out_ch: int, num_block=(5, 3, 2)):
        super().__init__()
        num_block = tuple(int(n) for n in num_block)
        if len(num_block) != 3 or not (num_block[0] >= num_block[1] >= num_block[2] >= 0):
            raise ValueError(f"num_block must be three non-increasing counts, got {num_block}")
        self.num_block = num_block
        c = num_state_ch
        self.conv_s1_first = nn.Sequential(nn.Conv2d(num_in_ch, c, 3, 1, 1), nn.LeakyReLU(LRELU, inplace=True))
        self.conv_s2_first = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.LeakyReLU(LRELU, inplace=True))
        self.conv_s4_first = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.LeakyReLU(LRELU, inplace=True))
        self.body_s1_first = nn.ModuleList(ResidualBlockNoBN(c) for _ in range(num_block[0]))
        self.body_s2_first = nn.ModuleList(ResidualBlockNoBN(c) for _ in range(num_block[1]))
        self.body_s4_first = nn.ModuleList(ResidualBlockNoBN(c) for _ in range(num_block[2]))
        self.fusion = nn.Sequential(
            nn.Conv2d(3 * c, 2 * num_out_ch, 3, 1, 1),
            nn.LeakyReLU(LRELU, inplace=True),
            nn.Conv2d(2 * num_out_ch, num_out_ch, 3, 1, 1),
        )

    def forward(self, x):
        n1, n2, n4 = self.num_block
        s1 = self.conv_s1_first(x)
        s2 = self.conv_s2_first(s1)
        s4 = self.conv_s4_first(s2)
        s2_on = s4_on = False
        for i in range(n1):
            inp = s1
            if s2_on:
                inp = inp + _up(s2, 2)
            if s4_on:
                inp = inp + _up(s4, 4)
            s1 = self.body_s1_first[i](inp)
            j = i - (n1 - n2)
            if j >= 0:
                s2 = self.body_s2_first[j](s2 + _up(s4, 2) if s4_on else s2)
                s2_on = True
            k = i - (n1 - n4)
            if k >= 0:
                s4 = self.body_s4_first[k](s4)
                s4_on = True
        return self.fusion(torch.cat((s1, _up(s2, 2), _up(s4, 4)), dim=1))


@dataclass(frozen=True)
class AnimeSRConfig:
    num_feat: int = 64
    num_block: tuple[int, int, int] = (5, 3, 2)
    netscale: int = 4


class MSRSWVSR(nn.Module):
    def __init__(self, num_feat: int = 64, num_block=(5, 3, 2), netscale: int = 4):
        super().__init__()
        self.num_feat = int(num_feat)
        self.netscale = int(netscale)
        sr_ch = 3 * self.netscale * self.netscale
        self.recurrent_cell = RightAlignMSConvResidualBlocks(9 + sr_ch + self.num_feat, self.num_feat,
                                                             self.num_feat + sr_ch, num_block)

    @property
    def config(self) -> AnimeSRConfig:
        return AnimeSRConfig(self.num_feat, tuple(self.recurrent_cell.num_block), self.netscale)

    def initial_state(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero previous SR frame and zero hidden state for LR frames shaped like ``lr`` [b, 3, h, w]."""
        b, _, h, w = lr.shape
        s = self.netscale
        return lr.new_zeros(b, 3, h * s, w * s), lr.new_zeros(b, self.num_feat, h, w)

    def cell(self, window: torch.Tensor, prev_sr: torch.Tensor, state: torch.Tensor):
        """One step. window: [b, 9, h, w] = (frame t-1, t, t+1); prev_sr: [b, 3, h*s, w*s]; state: [b, F, h, w].

        Returns (SR frame t, unclamped [b, 3, h*s, w*s]; next state [b, F, h, w]).
        """
        s = self.netscale
        inp = torch.cat((window, F.pixel_unshuffle(prev_sr, s), state), dim=1)
        out = self.recurrent_cell(inp)
        sr_ch = 3 * s * s
        sr = F.pixel_shuffle(out[:, :sr_ch], s) + F.interpolate(window[:, 3:6], scale_factor=s, mode="bilinear",
                                                                align_corners=False)
        return sr, F.leaky_relu(out[:, sr_ch:], LRELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A whole clip at once: [b, n, 3, h, w] -> [b, n, 3, h*s, w*s] (unclamped); h and w multiples of 4.

        Border frames reuse themselves as their missing neighbour (a one-frame clip uses itself three times).
        """
        n = x.shape[1]
        sr, state = self.initial_state(x[:, 0])
        outs = []
        for i in range(n):
            window = torch.cat((x[:, max(i - 1, 0)], x[:, i], x[:, min(i + 1, n - 1)]), dim=1)
            sr, state = self.cell(window, sr, state)
            outs.append(sr)
        return torch.stack(outs, dim=1)


# ---------------------------------------------------------------------------------------------
# Detection and strict loading
# ---------------------------------------------------------------------------------------------

def is_animesr_state_dict(state_dict) -> bool:
    return all(k in state_dict for k in DETECT_KEYS)


def _block_count(keys, scale: int) -> int:
    pat = re.compile(rf"^recurrent_cell\.body_s{scale}_first\.(\d+)\.")
    idx = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def config_from_state_dict(state_dict) -> AnimeSRConfig:
    """num_feat, num_block and netscale read from the tensor shapes (as spandrel does for its architectures)."""
    try:
        w_first = state_dict["recurrent_cell.conv_s1_first.0.weight"]
        w_last = state_dict["recurrent_cell.fusion.2.weight"]
    except KeyError as e:
        raise AnimeVideoModelError(f"Not an AnimeSR state dict: {e.args[0]} is missing.") from None
    num_feat, in_ch = int(w_first.shape[0]), int(w_first.shape[1])
    sr_ch = int(w_last.shape[0]) - num_feat
    scale = math.isqrt(max(0, sr_ch // 3))
    if sr_ch <= 0 or 3 * scale * scale != sr_ch or in_ch != 9 + sr_ch + num_feat:
        raise AnimeVideoModelError(
            f"AnimeSR state dict with inconsistent shapes: first conv {tuple(w_first.shape)}, last fusion conv "
            f"{tuple(w_last.shape)} (expected in = 9 + 3*s*s + num_feat and out = num_feat + 3*s*s)."
        )
    keys = list(state_dict.keys())
    num_block = tuple(_block_count(keys, s) for s in (1, 2, 4))
    if not (num_block[0] >= num_block[1] >= num_block[2]):
        raise AnimeVideoModelError(f"AnimeSR state dict with block counts {num_block}; expected non-increasing.")
    return AnimeSRConfig(num_feat, num_block, scale)


def build_from_state_dict(state_dict, dtype: torch.dtype = torch.float32) -> MSRSWVSR:
    cfg = config_from_state_dict(state_dict)
    with empty_weights():
        model = MSRSWVSR(cfg.num_feat, cfg.num_block, cfg.netscale)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as e:
        raise AnimeVideoModelError(f"AnimeSR weights do not match the architecture {cfg}: {e}") from None
    return model.to(dtype=dtype).eval().requires_grad_(False)

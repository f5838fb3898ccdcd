"""I3D (Inception-v1 inflated to 3D, Kinetics-400) for FVD and KVD.

The weights: ``i3d_pretrained_400.pt``, VideoGPT's conversion of the TF-Hub module ``deepmind/i3d-kinetics-400/1``
(the network of the original FVD, Unterthiner et al. 2019) to a plain PyTorch state dict in piergiaj/pytorch_i3d's
module layout (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias`` ...).
It is the file TATS, cd-fvd (content-debiased FVD) and common_metrics_on_video_quality's "videogpt" FVD load. We
use it rather than StyleGAN-V's ``i3d_torchscript.pt`` (the other common port) because a TorchScript archive
holds code and cannot be read with ``torch.load(weights_only=True)``; both come from the same TF-Hub weights.

The TF module's batch norms have no scale (gamma); VideoGPT's conversion stores ``bn.weight`` as ones. Its
epsilon is Sonnet's 1e-3 (VideoGPT's own port uses PyTorch's 1e-5; :data:`BN_EPS` keeps TF's).
Convolutions and pools use TF "SAME" padding computed from the input size, as the original.

Output: the 400 Kinetics logits (pre-softmax), averaged over time: the standard FVD embedding. Input:
[B, 3, T, 224, 224] in [-1, 1]; T >= 9 (the final 2x7x7 average pool needs two time steps after the x8
temporal reduction; GANime pads shorter clips, see :mod:`.video`).

Widths come from the state dict (``Conv3d_1a_7x7``'s width sets a divisor d; every layer then has
max(1, released width // d) channels, and the strict shape check catches anything else), so the tiny test
network in the same layout loads through the same code.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint_io import empty_weights
from ..errors import AnimeVideoModelError

BN_EPS = 1e-3
STEM_WIDTH = 64  # Conv3d_1a_7x7 in the released network
# (module name, input channels, [b0, b1a, b1b, b2a, b2b, b3b]) of the released network
MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
FEATURE_WIDTH = 1024  # Mixed_5c output
MIN_FRAMES = 9
INPUT_SIZE = 224


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (front, back) for one dimension."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


def symmetric_same_pad(kernel, stride):
    """TF 'SAME' padding that does not depend on the input size: stride 1 and odd kernels pad (k - 1) / 2 on
    both sides, so the convolution or pool can pad by itself instead of copying the input through F.pad."""
    if all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride)):
        return tuple((k - 1) // 2 for k in kernel)
    return None


class Unit3D(nn.Module):
    """Conv3d (+ BN + ReLU) with SAME padding; names ``conv3d`` and ``bn`` as in the released file."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), bn: bool = True,
                 relu: bool = True, bias: bool = False, eps: float = BN_EPS):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.fixed_pad = symmetric_same_pad(self.kernel, self.stride)
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=self.fixed_pad or 0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=eps, momentum=0.01) if bn else None

    def forward(self, x):
        x = self.conv3d(x if self.fixed_pad is not None else pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x  # x is this unit's own fresh output

    @torch.no_grad()
    def fuse_batch_norm(self) -> None:
        """Fold the (inference-mode) batch norm into the convolution: w' = w g / sqrt(v + eps), b' = beta - m g /
        sqrt(v + eps). Same function up to rounding, one pass over the activations fewer."""
        if self.bn is None:
            return
        bn, conv = self.bn, self.conv3d
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1, 1))
        base = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_(bn.bias + (base - bn.running_mean) * scale)
        self.conv3d, self.bn = fused.requires_grad_(False), None


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.fixed_pad = symmetric_same_pad(self.kernel, self.stride)

    def forward(self, x):
        # inputs follow a ReLU (>= 0), so the zero padding of TF's graph and max_pool3d's own (-inf) padding
        # give the same maxima
        if self.fixed_pad is not None:
            return F.max_pool3d(x, self.kernel, self.stride, padding=self.fixed_pad)
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    def __init__(self, cin: int, widths, eps: float = BN_EPS):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(cin, w0, eps=eps)
        self.b1a = Unit3D(cin, w1a, eps=eps)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3), eps=eps)
        self.b2a = Unit3D(cin, w2a, eps=eps)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3), eps=eps)
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, w3, eps=eps)

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    def __init__(self, num_classes: int = 400, divisor: int = 1, eps: float = BN_EPS):
        super().__init__()
        d = int(divisor)
        self.divisor, self.num_classes = d, int(num_classes)

        def c(width):
            return max(1, width // d)

        self.Conv3d_1a_7x7 = Unit3D(3, c(64), (7, 7, 7), (2, 2, 2), eps=eps)
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(c(64), c(64), eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(c(64), c(192), (3, 3, 3), eps=eps)
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        pools = {"Mixed_4b": MaxPoolSame((3, 3, 3), (2, 2, 2)), "Mixed_5b": MaxPoolSame((2, 2, 2), (2, 2, 2))}
        self.order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
        prev = c(192)
        for name, _, widths in MIXED:
            if name in pools:  # MaxPool3d_4a_3x3 before Mixed_4b, MaxPool3d_5a_2x2 before Mixed_5b
                pool_name = "MaxPool3d_4a_3x3" if name == "Mixed_4b" else "MaxPool3d_5a_2x2"
                setattr(self, pool_name, pools[name])
                self.order.append(pool_name)
            ws = [c(w) for w in widths]
            setattr(self, name, InceptionModule(prev, ws, eps))
            prev = ws[0] + ws[2] + ws[4] + ws[5]  # the four branches' outputs, concatenated
            self.order.append(name)
        self.logits = Unit3D(prev, self.num_classes, bn=False, relu=False, bias=True)

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def fuse_batch_norms(self) -> "InceptionI3d":
        """For inference: every batch norm folded into its convolution (the state dict no longer has the released
        layout afterwards; the loader fuses after loading)."""
        for m in self.modules():
            if isinstance(m, Unit3D):
                m.fuse_batch_norm()
        self.fused = True
        return self

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Every layer up to Mixed_5c (any input size)."""
        for name in self.order:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> [B, num_classes] logits averaged over time (and space)."""
        x = self.trunk(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # dropout sits here in training; identity in eval
        return self.logits(x).mean(dim=(2, 3, 4))


def divisor_from_state_dict(sd: dict) -> int:
    w = sd.get("Conv3d_1a_7x7.conv3d.weight")
    if w is None or w.ndim != 5:
        raise AnimeVideoModelError("no 'Conv3d_1a_7x7.conv3d.weight' 5-D tensor")
    stem = int(w.shape[0])
    if stem < 1 or STEM_WIDTH % stem:
        raise AnimeVideoModelError(f"stem width {stem} does not divide the released {STEM_WIDTH}")
    return STEM_WIDTH // stem


def is_i3d_state_dict(sd: dict) -> bool:
    return "Conv3d_1a_7x7.conv3d.weight" in sd and "logits.conv3d.weight" in sd


def build_from_state_dict(sd: dict, eps: float = BN_EPS) -> InceptionI3d:
    """Build and load (strictly: every tensor must be present with the right shape)."""
    d = divisor_from_state_dict(sd)
    classes = int(sd["logits.conv3d.weight"].shape[0])
    with empty_weights():
        model = InceptionI3d(classes, d, eps)
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    check_keys(sd, expected)
    model.load_state_dict(sd, strict=False, assign=True)
    for m in model.modules():  # the buffers that are not in the file
        if isinstance(m, nn.BatchNorm3d):
            m.num_batches_tracked = torch.zeros((), dtype=torch.long)
    return model.float().eval().requires_grad_(False)


def check_keys(sd: dict, expected: dict) -> None:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {expected[k]})" for k in expected
             if k in sd and tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {', '.join(wrong[:2])})")
        raise AnimeVideoModelError("the tensors do not match the layout: " + "; ".join(parts))


def temporal_steps_after_stem(frames: int) -> int:
    """Time steps reaching the final average pool (three stride-2 reductions with SAME padding)."""
    for _ in range(3):
        frames = math.ceil(frames / 2)
    return frames

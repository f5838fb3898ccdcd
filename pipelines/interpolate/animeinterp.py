"""AnimeInterp (Li et al., CVPR 2021): our own implementation of the released architecture.

Parameter names follow the released ``anime_interp_full.ckpt`` (after its ``module.`` prefix is
stripped), so that file loads strictly:

- ``flownet``: RFR, a RAFT-style recurrent flow refiner. One residual encoder (``fnet``, no
  normalisation) gives both the matching features and the context; an all-pairs correlation
  pyramid (4 levels, radius 4) is looked up around the current flow; a motion encoder, a separable
  ConvGRU and a flow head update the flow at 1/8 resolution for 12 iterations; a learned convex
  combination upsamples it to full resolution. ``attention2`` exists in the checkpoint but the
  released forward pass never uses its output, so it is loaded and not run.
- ``feat_ext``: three-scale PReLU feature pyramid of the frames (32/64/96 channels at 1, 1/2, 1/4).
- forward splatting ("summation" plus normalisation, :mod:`.softsplat`) of both frames and their
  features to time ``t`` along ``t * F12`` and ``(1 - t) * F21``;
- ``synnet``: GridNet fusing the two warped frames and feature pyramids into the frame at ``t``.

The released code hard-codes its widths; here they are constructor parameters
(:class:`AnimeInterpConfig`, defaults = released), read back from a state dict's shapes by
:func:`config_from_state_dict`, so tiny test models run exactly this code.

Behaviour kept from the released code: inputs are 0..1 RGB and are mapped to -1..1 for the
feature and flow networks; the warped images are the 0..1 frames; flow grids use
``align_corners=True`` (the README's instruction for torch > 1.1); an initial flow, when given, is
added to the coordinates twice (once before the loop and once at its first step), exactly as the
released RFR does; without one, refinement starts from zero flow, which is what the released code
computes for ``flow_init=None``. The segment-guided matching (SGM) that produced the released
initial flows is not part of this module (see ``pipelines/interpolate/__init__.py``).

Two ways to run it, computing the same frames:

- :meth:`AnimeInterp.forward` ``(I1, I2, F12i, F21i, t)`` -> ``(It, F12, F21, F12in, F21in)``,
  the released call, everything recomputed per call;
- :meth:`AnimeInterp.encode_frame`, :meth:`pair_flows` and :meth:`synthesize`, which the clip
  runner uses: each frame's features once, one correlation volume for both flow directions, the
  flows once per pair for any number of in-between times.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .softsplat import splat_normalized

UPSAMPLE = 8  # RFR works at 1/8 resolution and upsamples by 8 (the mask has 9 * 8 * 8 channels)


@dataclass(frozen=True)
class AnimeInterpConfig:
    """Widths of the released model (defaults) or of a smaller one in the same layout."""

    feat_widths: tuple[int, int, int] = (32, 64, 96)  # feat_ext at 1, 1/2, 1/4
    grid_widths: tuple[int, int, int] = (32, 64, 96)  # synnet rows
    encoder_widths: tuple[int, int, int] = (64, 96, 128)  # fnet conv1/layer1, layer2, layer3
    hidden_dim: int = 128  # GRU state; fnet's output is hidden_dim + context_dim wide
    context_dim: int = 128
    corr_levels: int = 4
    corr_radius: int = 4
    motion_corr_widths: tuple[int, int] = (256, 192)  # update_block.encoder.convc1, convc2
    motion_flow_widths: tuple[int, int] = (128, 64)  # convf1, convf2
    motion_dim: int = 128  # motion features incl. the 2 flow channels
    flow_head_dim: int = 256
    mask_dim: int = 256
    attention_dim: int = 32
    iters: int = 12  # refinement iterations (not stored in the weights)

    @property
    def feature_dim(self) -> int:
        return self.hidden_dim + self.context_dim

    @property
    def corr_planes(self) -> int:
        return self.corr_levels * (2 * self.corr_radius + 1) ** 2

    @property
    def min_size(self) -> int:
        """Smallest side that keeps the coarsest correlation level at least 2 px (1 px gives NaN)."""
        return UPSAMPLE * 2 ** (self.corr_levels - 1) * 2

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Building blocks (names match the released checkpoint)
# ---------------------------------------------------------------------------------------------

def conv(cin: int, cout: int, k, stride: int = 1, padding=None) -> nn.Conv2d:
    if padding is None:
        padding = tuple(x // 2 for x in k) if isinstance(k, tuple) else k // 2
    return nn.Conv2d(cin, cout, k, stride=stride, padding=padding)


class EncoderBlock(nn.Module):
    """Two 3x3 convs with a ReLU residual; a strided 1x1 ``downsample.0`` when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride)
        self.conv2 = conv(cout, cout, 3)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride)) if stride != 1 else None

    def forward(self, x):
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class FeatureEncoder(nn.Module):
    """``flownet.fnet``: 7x7/2 stem, three stages of two residual blocks (strides 1, 2, 2), 1x1 out."""

    def __init__(self, widths=(64, 96, 128), output_dim: int = 256):
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(3, w1, 7, stride=2, padding=3)
        self.layer1 = nn.Sequential(EncoderBlock(w1, w1, 1), EncoderBlock(w1, w1, 1))
        self.layer2 = nn.Sequential(EncoderBlock(w1, w2, 2), EncoderBlock(w2, w2, 1))
        self.layer3 = nn.Sequential(EncoderBlock(w2, w3, 2), EncoderBlock(w3, w3, 1))
        self.conv2 = nn.Conv2d(w3, output_dim, 1)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class MotionEncoder(nn.Module):
    """``update_block.encoder``: correlation and current flow -> motion features (flow appended)."""

    def __init__(self, corr_planes: int, corr_widths=(256, 192), flow_widths=(128, 64), out_dim: int = 128):
        super().__init__()
        self.convc1 = nn.Conv2d(corr_planes, corr_widths[0], 1)
        self.convc2 = conv(corr_widths[0], corr_widths[1], 3)
        self.convf1 = conv(2, flow_widths[0], 7)
        self.convf2 = conv(flow_widths[0], flow_widths[1], 3)
        self.conv = conv(corr_widths[1] + flow_widths[1], out_dim - 2, 3)

    def forward(self, flow, corr):
        c = F.relu(self.convc2(F.relu(self.convc1(corr))))
        f = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([c, f], dim=1))), flow], dim=1)


class SepConvGRU(nn.Module):
    """``update_block.gru``: a 1x5 GRU step followed by a 5x1 one."""

    def __init__(self, hidden_dim: int, input_dim: int):
        super().__init__()
        n = hidden_dim + input_dim
        for axis, k in (("1", (1, 5)), ("2", (5, 1))):
            for gate in ("z", "r", "q"):
                setattr(self, f"conv{gate}{axis}", conv(n, hidden_dim, k))

    def _step(self, h, x, axis: str):
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(getattr(self, f"convz{axis}")(hx))
        r = torch.sigmoid(getattr(self, f"convr{axis}")(hx))
        q = torch.tanh(getattr(self, f"convq{axis}")(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q

    def forward(self, h, x):
        return self._step(self._step(h, x, "1"), x, "2")


class FlowHead(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.conv1 = conv(input_dim, hidden_dim, 3)
        self.conv2 = conv(hidden_dim, 2, 3)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """``flownet.update_block``: one refinement step; ``mask`` weights the convex upsampling."""

    def __init__(self, cfg: AnimeInterpConfig):
        super().__init__()
        self.encoder = MotionEncoder(cfg.corr_planes, cfg.motion_corr_widths, cfg.motion_flow_widths, cfg.motion_dim)
        self.gru = SepConvGRU(cfg.hidden_dim, cfg.context_dim + cfg.motion_dim)
        self.flow_head = FlowHead(cfg.hidden_dim, cfg.flow_head_dim)
        self.mask = nn.Sequential(conv(cfg.hidden_dim, cfg.mask_dim, 3), nn.ReLU(inplace=True),
                                  nn.Conv2d(cfg.mask_dim, 9 * UPSAMPLE * UPSAMPLE, 1))

    def forward(self, net, inp, corr, flow):
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], dim=1))
        return net, self.flow_head(net)

    def upsample_mask(self, net):
        return 0.25 * self.mask(net)


class ErrorAttention(nn.Module):
    """``flownet.attention2``: in the checkpoint, unused by the released forward pass."""

    def __init__(self, in_channels: int = 6, width: int = 32, out_channels: int = 1):
        super().__init__()
        self.conv1 = conv(in_channels, width, 5)
        self.conv2 = conv(width, width, 3)
        self.conv3 = conv(width + in_channels, out_channels, 3)
        self.prelu1 = nn.PReLU()
        self.prelu2 = nn.PReLU()

    def forward(self, x):
        y = self.prelu1(self.conv1(x))
        return self.conv3(self.prelu2(torch.cat([self.conv2(y), x], dim=1)))


def coords_grid(batch: int, h: int, w: int, device) -> torch.Tensor:
    """[batch, 2, h, w] pixel coordinates, channel 0 = x (column), channel 1 = y (row)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys])[None].expand(batch, 2, h, w).clone()


class CorrPyramid:
    """All-pairs correlation of two 1/8 feature maps, average-pooled into ``levels`` levels.

    ``lookup`` samples a (2r+1)^2 window around each pixel's current match on every level. The
    window is laid out as RAFT's: the first window axis is the x offset, the second the y offset,
    and the trained ``convc1`` depends on that order.
    """

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int, radius: int,
                 volume: torch.Tensor | None = None):
        b, d, h, w = fmap1.shape
        if volume is None:
            volume = correlation_volume(fmap1, fmap2)
        corr = volume.reshape(b * h * w, 1, h, w)
        self.pyramid = [corr]
        for _ in range(levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)
        self.radius = radius
        self.shape = (b, h, w)

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        b, h, w = self.shape
        r = self.radius
        lin = torch.arange(-r, r + 1, device=coords.device, dtype=coords.dtype)
        ox, oy = torch.meshgrid(lin, lin, indexing="ij")  # ox varies along the first window axis
        offsets = torch.stack([ox, oy], dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for i, corr in enumerate(self.pyramid):
            pts = centre / 2 ** i + offsets
            hl, wl = corr.shape[-2:]
            grid = torch.stack([2 * pts[..., 0] / (wl - 1) - 1, 2 * pts[..., 1] / (hl - 1) - 1], dim=-1)
            sampled = F.grid_sample(corr, grid.to(corr.dtype), mode="bilinear", padding_mode="zeros",
                                    align_corners=True)
            out.append(sampled.view(b, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


def correlation_volume(fmap1: torch.Tensor, fmap2: torch.Tensor) -> torch.Tensor:
    """[b, h*w, h*w] dot products of every pixel of ``fmap1`` with every pixel of ``fmap2`` / sqrt(d)."""
    b, d, h, w = fmap1.shape
    f1 = fmap1.float().reshape(b, d, h * w)
    f2 = fmap2.float().reshape(b, d, h * w)
    return torch.matmul(f1.transpose(1, 2), f2) / math.sqrt(d)


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, 2, H, W] flow -> [N, 2, 8H, 8W]: each fine pixel a softmax-weighted mix of a 3x3 neighbourhood."""
    n, _, h, w = flow.shape
    mask = torch.softmax(mask.float().view(n, 1, 9, UPSAMPLE, UPSAMPLE, h, w), dim=2)
    patches = F.unfold(UPSAMPLE * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
    up = torch.sum(mask * patches, dim=2)  # [n, 2, 8, 8, h, w]
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, 2, UPSAMPLE * h, UPSAMPLE * w)


class RFR(nn.Module):
    """``flownet``: recurrent flow refinement."""

    def __init__(self, cfg: AnimeInterpConfig):
        super().__init__()
        self.cfg = cfg
        self.hidden_dim = cfg.hidden_dim
        self.context_dim = cfg.context_dim
        self.attention2 = ErrorAttention(6, cfg.attention_dim, 1)
        self.fnet = FeatureEncoder(cfg.encoder_widths, cfg.feature_dim)
        self.update_block = UpdateBlock(cfg)

    def refine(self, fmap1: torch.Tensor, fmap2: torch.Tensor, context: torch.Tensor, iters: int,
               flow_init: torch.Tensor | None = None, volume: torch.Tensor | None = None) -> torch.Tensor:
        """Flow from ``fmap1``'s frame to ``fmap2``'s at 8x the feature resolution, in float32 pixels.

        ``flow_init`` is at the feature resolution (1/8) and, as in the released code, is added twice.
        """
        cfg = self.cfg
        b, _, h, w = fmap1.shape
        dt = context.dtype
        pyramid = CorrPyramid(fmap1, fmap2, cfg.corr_levels, cfg.corr_radius, volume)
        net, inp = torch.split(context, [self.hidden_dim, self.context_dim], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)
        coords0 = coords_grid(b, h, w, fmap1.device)
        coords1 = coords0.clone()
        if flow_init is not None:
            coords1 = coords1 + 2 * flow_init.float()
        for _ in range(int(iters)):
            corr = pyramid.lookup(coords1)
            net, delta = self.update_block(net, inp, corr.to(dt), (coords1 - coords0).to(dt))
            coords1 = coords1 + delta.float()
        return convex_upsample(coords1 - coords0, self.update_block.upsample_mask(net))

    def forward(self, image1, image2, iters: int = 12, flow_init=None):
        """The released single-direction call on -1..1 images of any size -> (flow, flow_init at 1/8).

        Frames whose sides are not multiples of 8 are resized to the multiple below and the flow is
        scaled and resized back, as in the released code.
        """
        h, w = image1.shape[-2:]
        h8, w8 = h // UPSAMPLE * UPSAMPLE, w // UPSAMPLE * UPSAMPLE
        init = None
        if flow_init is not None:
            init = resize_flow(flow_init.float(), (h8 // UPSAMPLE, w8 // UPSAMPLE), mode="nearest")
        if (h8, w8) != (h, w):
            image1 = F.interpolate(image1, size=(h8, w8), mode="bilinear", align_corners=False)
            image2 = F.interpolate(image2, size=(h8, w8), mode="bilinear", align_corners=False)
        fmap1, fmap2 = self.fnet(torch.cat([image1, image2], dim=0)).chunk(2)
        context = self.fnet(image1)
        flow = self.refine(fmap1, fmap2, context, iters, init)
        if (h8, w8) != (h, w):
            flow = resize_flow(flow, (h, w), mode="bilinear")
        return flow, init


def resize_flow(flow: torch.Tensor, size: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """Resize a flow field and scale its vectors by the same factors (x by width, y by height)."""
    h, w = flow.shape[-2:]
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(flow, size=size, mode=mode, **kwargs)
    return torch.cat([out[:, :1] * (size[1] / w), out[:, 1:] * (size[0] / h)], dim=1)


class FeatureExtractor(nn.Module):
    """``feat_ext``: conv/PReLU pairs at 1, 1/2 and 1/4 resolution."""

    def __init__(self, widths=(32, 64, 96)):
        super().__init__()
        w1, w2, w3 = widths
        specs = [(3, w1, 1), (w1, w1, 1), (w1, w2, 2), (w2, w2, 1), (w2, w3, 2), (w3, w3, 1)]
        for i, (cin, cout, stride) in enumerate(specs, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, stride=stride, padding=1))
            setattr(self, f"prelu{i}", nn.PReLU())

    def forward(self, x):
        outs = []
        for i in range(1, 7):
            x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
            if i % 2 == 0:
                outs.append(x)
        return tuple(outs)


def prelu_block(cin: int, cout: int, stride: int = 1, up: bool = False) -> nn.Sequential:
    """GridNet's PReLU-conv-PReLU-conv block (lateral, strided down, or after a 2x bilinear up)."""
    layers = [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)] if up else []
    layers += [nn.PReLU(), nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
               nn.PReLU(), nn.Conv2d(cout, cout, 3, stride=1, padding=1)]
    return nn.Sequential(*layers)


class GridNet(nn.Module):
    """``synnet``: a 3-row, 6-column grid (rows at 1, 1/2, 1/4) fusing images and feature pyramids."""

    def __init__(self, in_channels, in_channels1, in_channels2, in_channels3, out_channels, widths=(32, 64, 96)):
        super().__init__()
        a, b, c = widths
        self.residual_model_head = prelu_block(in_channels, a)
        self.residual_model_head1 = prelu_block(in_channels1, a)
        self.residual_model_head2 = prelu_block(in_channels2, b)
        self.residual_model_head3 = prelu_block(in_channels3, c)
        for name, width in (("0", a), ("1", b), ("2", c)):
            for col in ("1", "4", "5"):
                setattr(self, f"residual_model_{name}{col}", prelu_block(width, width))
        self.residual_model_tail = prelu_block(a, out_channels)
        self.downsample_model_10 = prelu_block(a, b, stride=2)
        self.downsample_model_20 = prelu_block(b, c, stride=2)
        self.downsample_model_11 = prelu_block(a, b, stride=2)
        self.downsample_model_21 = prelu_block(b, c, stride=2)
        self.upsample_model_04 = prelu_block(b, a, up=True)
        self.upsample_model_14 = prelu_block(c, b, up=True)
        self.upsample_model_05 = prelu_block(b, a, up=True)
        self.upsample_model_15 = prelu_block(c, b, up=True)

    def forward(self, x, x1, x2, x3):
        # Sums grouped as in the released code, so float rounding matches it too.
        x00 = self.residual_model_head(x) + self.residual_model_head1(x1)
        x01 = self.residual_model_01(x00) + x00
        x10 = self.downsample_model_10(x00) + self.residual_model_head2(x2)
        x20 = self.downsample_model_20(x10) + self.residual_model_head3(x3)
        x11 = (self.residual_model_11(x10) + x10) + self.downsample_model_11(x01)
        x21 = (self.residual_model_21(x20) + x20) + self.downsample_model_21(x11)
        x24 = self.residual_model_24(x21) + x21
        x25 = self.residual_model_25(x24) + x24
        x14 = self.upsample_model_14(x24) + (self.residual_model_14(x11) + x11)
        x04 = self.upsample_model_04(x14) + (self.residual_model_04(x01) + x01)
        x15 = self.upsample_model_15(x25) + (self.residual_model_15(x14) + x14)
        x05 = self.upsample_model_05(x15) + (self.residual_model_05(x04) + x04)
        return self.residual_model_tail(x05)


class FrameState(NamedTuple):
    """What the runner keeps of one (padded) frame: the 0..1 image, its pyramid and its flow features."""

    image: torch.Tensor  # [B, 3, H, W] 0..1
    feats: tuple  # feat_ext at 1, 1/2, 1/4
    fmap: torch.Tensor  # flownet.fnet at 1/8


class AnimeInterp(nn.Module):
    def __init__(self, cfg: AnimeInterpConfig | None = None):
        super().__init__()
        cfg = cfg or AnimeInterpConfig()
        self.cfg = cfg
        self.iters = cfg.iters
        self.flownet = RFR(cfg)
        self.feat_ext = FeatureExtractor(cfg.feat_widths)
        f1, f2, f3 = cfg.feat_widths
        self.synnet = GridNet(6, 2 * f1, 2 * f2, 2 * f3, 3, cfg.grid_widths)

    # -- placement -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def size_multiple(self) -> int:
        return UPSAMPLE  # the flow works at 1/8; GridNet's rows at 1/4 then fit as well

    @property
    def min_size(self) -> int:
        return self.cfg.min_size

    # -- the released call -------------------------------------------------------------------------
    def forward(self, I1, I2, F12i=None, F21i=None, t=0.5, iters: int | None = None):  # noqa: N803
        """0..1 frames [B, 3, H, W] -> (It, F12, F21, F12in, F21in), computed as the released model does."""
        iters = self.iters if iters is None else iters
        dt = self.dtype
        I1o = ((I1 - 0.5) / 0.5).to(dt)  # noqa: N806
        I2o = ((I2 - 0.5) / 0.5).to(dt)  # noqa: N806
        feat11, feat12, feat13 = self.feat_ext(I1o)
        feat21, feat22, feat23 = self.feat_ext(I2o)
        F12, F12in = self.flownet(I1o, I2o, iters, F12i)  # noqa: N806
        F21, F21in = self.flownet(I2o, I1o, iters, F21i)  # noqa: N806
        F1t, F2t = t * F12, (1 - t) * F21  # noqa: N806
        warped = []
        for image, flow, feats in ((I1, F1t, (feat11, feat12, feat13)), (I2, F2t, (feat21, feat22, feat23))):
            warped.append([splat_normalized(image.to(dt), flow)[0]]
                          + [splat_normalized(f, resize_flow(flow, f.shape[-2:]))[0] for f in feats])
        (I1t, f1t1, f1t2, f1t3), (I2t, f2t1, f2t2, f2t3) = warped  # noqa: N806
        It = self.synnet(torch.cat([I1t, I2t], 1), torch.cat([f1t1, f2t1], 1),  # noqa: N806
                         torch.cat([f1t2, f2t2], 1), torch.cat([f1t3, f2t3], 1))
        return It, F12, F21, F12in, F21in

    # -- the runner's path ---------------------------------------------------------------------------
    def check_size(self, h: int, w: int):
        m = self.size_multiple
        if h % m or w % m or min(h, w) < self.min_size:
            raise ValueError(f"AnimeInterp needs sides that are multiples of {m} and at least {self.min_size} px "
                             f"(smaller flow pyramids give NaN); got {w}x{h}. Pad the frames first.")

    def encode_frame(self, image: torch.Tensor) -> FrameState:
        """A 0..1 frame [B, 3, H, W] (sides multiples of 8, >= min_size) -> what every pair with it needs."""
        self.check_size(*image.shape[-2:])
        x = ((image - 0.5) / 0.5).to(self.dtype)
        return FrameState(image.to(self.dtype), self.feat_ext(x), self.flownet.fnet(x))

    def pair_flows(self, a: FrameState, b: FrameState, iters: int | None = None,
                   init12: torch.Tensor | None = None, init21: torch.Tensor | None = None,
                   batch_directions: bool | None = None):
        """(F12, F21), full-resolution float32 flows.

        The context features are the matching features (the released RFR runs its one encoder for
        both) and the second direction's correlation volume is the transpose of the first's. The two
        directions are refined as one batch on accelerators and one after the other on the CPU,
        where the smaller working set is faster (``batch_directions`` overrides).
        """
        iters = self.iters if iters is None else iters
        if batch_directions is None:
            batch_directions = a.fmap.device.type != "cpu"
        h, w = a.fmap.shape[-2:]
        inits = [None if f is None else resize_flow(f.float(), (h, w)) for f in (init12, init21)]
        vol = correlation_volume(a.fmap, b.fmap)
        if not batch_directions:
            f12 = self.flownet.refine(a.fmap, b.fmap, a.fmap, iters, inits[0], vol)
            f21 = self.flownet.refine(b.fmap, a.fmap, b.fmap, iters, inits[1], vol.transpose(1, 2))
            return f12, f21
        init = None
        if inits[0] is not None or inits[1] is not None:
            zeros = a.fmap.new_zeros((a.fmap.shape[0], 2, h, w), dtype=torch.float32)
            init = torch.cat([zeros if f is None else f for f in inits])
        volume = torch.cat([vol, vol.transpose(1, 2)])
        fmap1 = torch.cat([a.fmap, b.fmap])
        fmap2 = torch.cat([b.fmap, a.fmap])
        flow = self.flownet.refine(fmap1, fmap2, fmap1, iters, init, volume)
        return flow.chunk(2)

    def synthesize(self, a: FrameState, b: FrameState, F12: torch.Tensor, F21: torch.Tensor, t: float):  # noqa: N803
        """The frame at time ``t`` (0 = a, 1 = b) from the two frames' states and the pair's flows."""
        n = a.image.shape[0]
        flow = torch.cat([t * F12, (1 - t) * F21])
        top = torch.cat([torch.cat([a.image, a.feats[0]], 1), torch.cat([b.image, b.feats[0]], 1)])
        top = splat_normalized(top, flow)[0]
        levels = [splat_normalized(torch.cat([a.feats[i], b.feats[i]]), resize_flow(flow, a.feats[i].shape[-2:]))[0]
                  for i in (1, 2)]
        images, f1 = top[:, :3], top[:, 3:]
        pair = lambda x: torch.cat([x[:n], x[n:]], dim=1)  # noqa: E731  [2n, c] -> [n, 2c] (frame a first)
        return self.synnet(pair(images), pair(f1), pair(levels[0]), pair(levels[1]))

    def warp_to(self, a: FrameState, b: FrameState, F12, F21, t: float):  # noqa: N803
        """The two frames splatted to ``t`` (normalised), before fusion: (I1t, I2t)."""
        flow = torch.cat([t * F12, (1 - t) * F21])
        warped = splat_normalized(torch.cat([a.image, b.image]), flow)[0]
        return warped.chunk(2)


def build(cfg: AnimeInterpConfig | None = None, device="cpu", dtype=torch.float32) -> AnimeInterp:
    return AnimeInterp(cfg).to(device=device, dtype=dtype).eval().requires_grad_(False)

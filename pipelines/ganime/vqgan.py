"""GANime's frame tokenizer: encoder -> 1x1 conv -> vector quantizer -> 1x1 conv -> decoder.

The architecture follows the thesis (appendix C.1) and the behaviour of the original code:

- ``channels * channels_multiplier[i]`` channels at level ``i`` (taming-style, not cumulative; B5);
  ``num_res_blocks`` ResBlocks per encoder level and ``num_res_blocks + 1`` per decoder level;
- a downsample after every encoder level but the last: 2x2 **average pool, then a 3x3 conv**;
  an upsample before every decoder level but the first: **bilinear x2** (half-pixel centres, as
  Keras' ``UpSampling2D``), then a 3x3 conv;
- attention blocks where the *nominal* resolution (``resolution >> level``, from the config's
  square ``resolution``, B6) is in ``attention_resolution``, plus the mid attention;
- GroupNorm(32, eps 1e-6), swish, ``tanh`` on the decoder output;
- single-head attention over the h*w positions. ``attention="faithful"`` leaves out the 1/sqrt(d)
  scaling, as Keras' ``Attention()`` layer the original used does (use it for converted weights);
  ``"scaled"`` is the usual scaled dot product, our default for newly trained models;
- a codebook of ``num_embeddings x embedding_dim``, nearest code by squared distance, the
  straight-through estimator, codebook + beta * commitment loss. No EMA, no restarts.

With the thesis config a 64x128 frame becomes 8x16 = 128 codes, read row by row.
Images are [B, 3, H, W] in [-1, 1].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTENTION_MODES = ("scaled", "faithful")


@dataclass(frozen=True)
class VQGANConfig:
    channels: int = 32
    channels_multiplier: tuple[int, ...] = (2, 4, 8, 8)
    num_res_blocks: int = 1
    attention_resolution: tuple[int, ...] = (16,)
    resolution: int = 128  # nominal (square) resolution the attention rule counts from
    z_channels: int = 512
    embedding_dim: int = 128
    num_embeddings: int = 50257
    beta: float = 0.25
    dropout: float = 0.0
    image_size: tuple[int, int] = (64, 128)  # (height, width) the model works at
    norm_groups: int = 32
    attention: str = "scaled"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "channels_multiplier", tuple(int(m) for m in self.channels_multiplier))
        object.__setattr__(self, "attention_resolution", tuple(int(r) for r in self.attention_resolution))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        f = self.downsample_factor
        h, w = self.image_size
        if h % f or w % f:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the downsample factor {f}")
        for c in self.level_channels + (self.channels, self.z_channels):
            if c % self.norm_groups:
                raise ValueError(f"{c} channels do not split into {self.norm_groups} GroupNorm groups")

    @property
    def num_levels(self) -> int:
        return len(self.channels_multiplier)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.channels * m for m in self.channels_multiplier)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.num_levels - 1)

    @property
    def latent_size(self) -> tuple[int, int]:
        f = self.downsample_factor
        return self.image_size[0] // f, self.image_size[1] // f

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.latent_size
        return h * w

    def attention_levels(self) -> tuple[bool, ...]:
        """Per level: does it hold attention blocks? (nominal resolution rule, B6)."""
        return tuple((self.resolution >> i) in self.attention_resolution for i in range(self.num_levels))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra")
        for k in ("channels_multiplier", "attention_resolution", "image_size"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VQGANConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names})


# The thesis model (appendix C.1 / configs/kny_image_full_vgg19.yaml).
THESIS_CONFIG = VQGANConfig()


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, ch: int, groups: int, mode: str = "scaled"):
        super().__init__()
        self.mode = mode
        self.norm = group_norm(ch, groups)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, c, h * w).transpose(1, 2) for m in (self.q, self.k, self.v))
        scale = 1.0 if self.mode == "faithful" else c ** -0.5
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=scale)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """2x2 average pool, then a 3x3 conv (the original's order)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.avg_pool2d(x, 2))


class Upsample(nn.Module):
    """Bilinear x2 (half-pixel centres), then a 3x3 conv: the thesis' fix for checkerboard artefacts."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class Level(nn.Module):
    def __init__(self, blocks, attns, resample):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)  # empty, or one per block
        self.resample = resample

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attns):
                x = self.attns[i](x)
        return x


class Mid(nn.Module):
    def __init__(self, ch: int, cfg: VQGANConfig):
        super().__init__()
        self.block_1 = ResBlock(ch, ch, cfg.norm_groups, cfg.dropout)
        self.attn_1 = AttnBlock(ch, cfg.norm_groups, cfg.attention)
        self.block_2 = ResBlock(ch, ch, cfg.norm_groups, cfg.dropout)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        g, ch = cfg.norm_groups, cfg.channels
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        attn_levels = cfg.attention_levels()
        levels, block_in = [], ch
        for i, block_out in enumerate(cfg.level_channels):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(block_in, block_out, g, cfg.dropout))
                block_in = block_out
                if attn_levels[i]:
                    attns.append(AttnBlock(block_in, g, cfg.attention))
            down = Downsample(block_in) if i != cfg.num_levels - 1 else None
            levels.append(Level(blocks, attns, down))
        self.down = nn.ModuleList(levels)
        self.mid = Mid(block_in, cfg)
        self.norm_out = group_norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if level.resample is not None:
                h = level.resample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        g = cfg.norm_groups
        block_in = cfg.level_channels[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = Mid(block_in, cfg)
        attn_levels = cfg.attention_levels()
        ups: list = [None] * cfg.num_levels
        for i in reversed(range(cfg.num_levels)):
            block_out = cfg.level_channels[i]
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(block_in, block_out, g, cfg.dropout))
                block_in = block_out
                if attn_levels[i]:
                    attns.append(AttnBlock(block_in, g, cfg.attention))
            ups[i] = Level(blocks, attns, Upsample(block_in) if i != 0 else None)
        self.up = nn.ModuleList(ups)  # indexed by level; run from the deepest level up
        self.norm_out = group_norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            h = self.up[i](h)
            if self.up[i].resample is not None:
                h = self.up[i].resample(h)
        return torch.tanh(self.conv_out(swish(self.norm_out(h))))

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight differentiates against (the decoder's conv_out)."""
        return self.conv_out.weight


class VectorQuantizer(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, beta: float = 0.25):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.beta = num_embeddings, embedding_dim, beta
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)  # Keras' default uniform initializer

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` [n, d]; chunked to bound the distance matrix."""
        e = self.embedding.weight.float()
        e_sq = (e * e).sum(1)
        out = []
        for rows in flat.float().split(chunk):
            d = (rows * rows).sum(1, keepdim=True) + e_sq - 2.0 * rows @ e.t()
            out.append(d.argmin(1))
        return torch.cat(out) if out else flat.new_zeros(0, dtype=torch.long)

    def forward(self, z: torch.Tensor):
        """z [B, d, h, w] -> (straight-through quantized z, indices [B, h, w], codebook+commitment loss)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.nearest(flat)
        q = self.embedding(idx).view(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
        codebook_loss = F.mse_loss(q, z.detach())
        commitment_loss = self.beta * F.mse_loss(q.detach(), z)
        q_st = z + (q - z).detach()
        return q_st, idx.view(b, h, w), codebook_loss + commitment_loss

    def lookup(self, indices: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
        """indices [B, h*w] or [B, h, w] -> [B, d, h, w]."""
        h, w = latent_size
        b = indices.shape[0]
        q = self.embedding(indices.reshape(b, h * w).long())
        return q.view(b, h, w, self.embedding_dim).permute(0, 3, 1, 2)


class VQGAN(nn.Module):
    def __init__(self, cfg: VQGANConfig = THESIS_CONFIG):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embedding_dim, 1)
        self.quantize = VectorQuantizer(cfg.num_embeddings, cfg.embedding_dim, cfg.beta)
        self.post_quant_conv = nn.Conv2d(cfg.embedding_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def encode(self, x: torch.Tensor):
        """[B,3,H,W] in [-1,1] -> (quantized [B,d,h,w] (straight-through), indices [B,h,w], vq loss)."""
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(quant))

    def forward(self, x: torch.Tensor):
        quant, indices, vq_loss = self.encode(x)
        return self.decode(quant), indices, vq_loss

    @torch.no_grad()
    def encode_to_codes(self, x: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] -> codes [B, tokens_per_frame] (row-major over the latent grid)."""
        out = [self.encode(part.to(self.device, self.dtype))[1].flatten(1) for part in x.split(chunk)]
        return torch.cat(out)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """codes [B, T] -> images [B, 3, H, W] in [-1, 1]."""
        out = []
        for part in codes.split(chunk):
            q = self.quantize.lookup(part.to(self.device), self.config.latent_size).to(self.dtype)
            out.append(self.decode(q))
        return torch.cat(out)

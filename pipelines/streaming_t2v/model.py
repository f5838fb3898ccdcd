"""StreamingT2V (ModelScope variant): the base ModelScope UNet3D plus CAM and APM, on diffusers' blocks.

Module and parameter names follow the official code (Picsart-AI-Research/StreamingT2V, branch
``StreamingModelscope``, ``t2v_enhanced/model/video_ldm.py::VideoLDM``) so the released checkpoint's keys load
without renaming:

* ``base_model``: diffusers' ``UNet3DConditionModel`` (the ModelScope UNet) with
  - ``cross_attention_merger_down_blocks.{i}`` / ``cross_attention_merger_mid_block``: the CAM mergers
    (``conditioning.py::ConditionalModel`` holding a ``CrossAttention`` as ``temporal_transformer``): per spatial
    position, the 16 frames of a UNet skip feature attend to the 8 CAM frames; ``proj_out`` starts at zero;
  - ``...attentions.*.transformer_blocks.0.attn2.{conv, conv_ln, alpha}``: the APM token mixing in every
    spatial cross-attention (``attention_processor.py`` + ``processor.py``): K/V come from
    ``text77 + SiLU(alpha) * LayerNorm(Conv1d(93->77, k=3)(text77 | image16))``, alpha starts at 0;
* ``unet``: the CAM, a ControlNet-style copy of the UNet encoder (``controlnet.py::ControlNetModel``) run on the
  first 8 noisy latent frames plus the conditioning frames' features (``controlnet_cond_embedding``);
* ``resampler``: ``image_embedder.py::ImgEmbContextResampler``: mean over anchor frames -> Linear -> SiLU ->
  Linear -> 16 tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_TEXT_TOKENS = 77
NUM_IMAGE_TOKENS = 16  # ImgEmbContextResampler.expansion_factor
MERGER_HEAD_DIM = 64  # ConditionalModel(attention_head_dim=64)
MERGER_NORM_GROUPS = 32


# ---------------------------------------------------------------------------------------------
# CAM merger: temporal cross-attention from the UNet's 16 frames to the CAM's 8 frames
# ---------------------------------------------------------------------------------------------

class CrossAttentionMerger(nn.Module):
    """``conditioning.py::CrossAttention``: x + proj_out(attn(proj_in(GroupNorm(x)), cam)) along time."""

    def __init__(self, channels: int, head_dim: int = MERGER_HEAD_DIM, norm_groups: int = MERGER_NORM_GROUPS):
        super().__init__()
        from diffusers.models.attention_processor import Attention

        if channels % head_dim:
            raise ValueError(f"CAM merger width {channels} is not a multiple of the {head_dim}-wide heads")
        self.attention = Attention(query_dim=channels, cross_attention_dim=channels, heads=channels // head_dim,
                                   dim_head=head_dim, bias=False, upcast_attention=False)
        self.norm = nn.GroupNorm(num_groups=norm_groups, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)  # the CAM starts as a no-op (ConditionalModel's zero init)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        """x: [B, F, C, H, W] UNet features; cam: [B, Fc, C, H, W] CAM features -> [B, F, C, H, W]."""
        b, f, c, h, w = x.shape
        xn = self.norm(x.permute(0, 2, 1, 3, 4))  # GroupNorm over (C/G, F, H, W), as on "B C F H W"
        xn = xn.permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c)
        kv = cam.permute(0, 3, 4, 1, 2).reshape(b * h * w, cam.shape[1], c)
        out = self.proj_out(self.attention(self.proj_in(xn), encoder_hidden_states=kv))
        return x + out.reshape(b, h, w, f, c).permute(0, 3, 4, 1, 2)


class ConditionalModel(nn.Module):
    """Name holder so keys read ``...merger.{i}.temporal_transformer.*`` as in the official checkpoint."""

    def __init__(self, channels: int):
        super().__init__()
        self.temporal_transformer = CrossAttentionMerger(channels)

    def forward(self, x, cam):
        return self.temporal_transformer(x, cam)


def merger_channels(block_out_channels, layers_per_block: int) -> list[int]:
    """Widths of the UNet's skip features in order (conv_in, then each down block's resnets and downsampler),
    which is also the official code's merger order (3 per down block: its input width, then its output width)."""
    if layers_per_block != 2:
        raise ValueError("StreamingT2V's CAM mergers come 3 per down block, which fits 2 layers per block only")
    widths = []
    prev = block_out_channels[0]
    for i, out in enumerate(block_out_channels):
        widths += [prev, out, out]
        prev = out
    return widths


# ---------------------------------------------------------------------------------------------
# APM: image tokens mixed into every spatial cross-attention
# ---------------------------------------------------------------------------------------------

class ImgEmbContextResampler(nn.Module):
    """Mean of the anchor frames' CLIP embeddings -> Linear -> SiLU -> Linear -> 16 tokens of the text width."""

    def __init__(self, image_dim: int = 1024, inner_dim: int = 1280, context_dim: int = 1024,
                 num_tokens: int = NUM_IMAGE_TOKENS):
        super().__init__()
        self.context_embedding = nn.Sequential(nn.Linear(image_dim, inner_dim), nn.SiLU(),
                                               nn.Linear(inner_dim, context_dim * num_tokens))
        self.num_tokens = num_tokens
        self.context_dim = context_dim

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """[B, F, D_img] (the anchor frames of each video) -> [B, 16, D_ctx]."""
        x = self.context_embedding(image_embeds.mean(dim=1, keepdim=True))
        return x.view(-1, self.num_tokens, self.context_dim)


class ImageTokenMixingProcessor:
    """Spatial cross-attention with the APM mixing on its context, then diffusers' own SDPA attention."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if encoder_hidden_states is not None and encoder_hidden_states.shape[1] > NUM_TEXT_TOKENS:
            encoder_hidden_states = mix_image_tokens(attn, encoder_hidden_states)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)


def mix_image_tokens(attn, context: torch.Tensor) -> torch.Tensor:
    """[N, 77 + 16, D] -> [N, 77, D]: text + SiLU(alpha) * LayerNorm(Conv1d over tokens)."""
    text = context[:, :NUM_TEXT_TOKENS]
    mixed = attn.conv_ln(attn.conv(context))
    return text + mixed * F.silu(attn.alpha)


def spatial_cross_attentions(unet: nn.Module):
    """(name, Attention) of every attn2 in the UNet's spatial transformers (Transformer2DModel)."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    for name, mod in unet.named_modules():
        if isinstance(mod, Transformer2DModel):
            for i, block in enumerate(mod.transformer_blocks):
                if getattr(block, "attn2", None) is not None:
                    yield f"{name}.transformer_blocks.{i}.attn2", block.attn2


def add_apm(unet: nn.Module, context_dim: int, num_tokens: int = NUM_TEXT_TOKENS + NUM_IMAGE_TOKENS):
    """Give every spatial cross-attention the mixing conv/LayerNorm and a zero alpha (the official names)."""
    for _, attn in spatial_cross_attentions(unet):
        attn.conv = nn.Conv1d(num_tokens, NUM_TEXT_TOKENS, kernel_size=3, padding="same")
        attn.conv_ln = nn.LayerNorm(context_dim)
        attn.alpha = nn.Parameter(torch.tensor(0.0))
        attn.set_processor(ImageTokenMixingProcessor())


def add_mergers(unet: nn.Module):
    cfg = unet.config
    widths = merger_channels(cfg.block_out_channels, cfg.layers_per_block)
    unet.cross_attention_merger_down_blocks = nn.ModuleList([ConditionalModel(c) for c in widths])
    unet.cross_attention_merger_mid_block = ConditionalModel(cfg.block_out_channels[-1])


def build_base_unet(unet_config: dict) -> nn.Module:
    """The ModelScope UNet3D with the CAM mergers and APM mixing attached (on whatever device is current)."""
    from diffusers import UNet3DConditionModel

    unet = UNet3DConditionModel(**unet_config)
    add_mergers(unet)
    add_apm(unet, unet.config.cross_attention_dim)
    return unet


def run_down_blocks(blocks, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, f: int):
    """diffusers' UNet3D down path: (features after the last block, the skip tuple starting with ``x``); the
    base UNet and the CAM encoder run it alike."""
    res = (x,)
    for block in blocks:
        if getattr(block, "has_cross_attention", False):
            x, r = block(hidden_states=x, temb=emb, encoder_hidden_states=context, num_frames=f)
        else:
            x, r = block(hidden_states=x, temb=emb, num_frames=f)
        res += r
    return x, res


def _time_embedding(unet, timestep, batch: int, num_frames: int, dtype, device):
    t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=device)
    t = t.reshape(-1).to(device).expand(batch)
    emb = unet.time_embedding(unet.time_proj(t).to(dtype))
    return emb.repeat_interleave(num_frames, dim=0)


def base_unet_forward(unet, sample: torch.Tensor, timestep, context: torch.Tensor,
                      cam_down: list[torch.Tensor] | None = None, cam_mid: torch.Tensor | None = None) -> torch.Tensor:
    """``unet_3d_condition.py::UNet3DConditionModel.forward`` with ``merging_mode`` attention_cross_attention.

    sample [B, C, F, h, w]; context [B, 77 (+16), D]; cam_down / cam_mid: the CAM's features [B*Fc, C, h', w'].
    Without CAM features this is diffusers' UNet3DConditionModel.forward (the mergers are skipped).
    """
    b, _, f = sample.shape[:3]
    emb = _time_embedding(unet, timestep, b, f, unet.dtype, sample.device)
    context = context.repeat_interleave(f, dim=0)
    x = sample.permute(0, 2, 1, 3, 4).reshape(b * f, *sample.shape[1:2], *sample.shape[3:])
    x = unet.conv_in(x)
    x = unet.transformer_in(x, num_frames=f, return_dict=False)[0]

    x, res = run_down_blocks(unet.down_blocks, x, emb, context, f)

    def merge(merger, feat, cam):
        out = merger(feat.reshape(b, f, *feat.shape[1:]), cam.reshape(b, -1, *cam.shape[1:]))
        return out.reshape(b * f, *feat.shape[1:])

    if cam_down is not None:
        if len(cam_down) != len(res):
            raise ValueError(f"CAM gave {len(cam_down)} skip features, the UNet has {len(res)}")
        res = tuple(merge(m, r, c) for m, r, c in zip(unet.cross_attention_merger_down_blocks, res, cam_down))

    x = unet.mid_block(x, emb, encoder_hidden_states=context, num_frames=f)
    if cam_mid is not None:
        x = merge(unet.cross_attention_merger_mid_block, x, cam_mid)

    upsample_size = None
    forward_upsample_size = any(s % (2 ** unet.num_upsamplers) for s in sample.shape[-2:])
    for i, block in enumerate(unet.up_blocks):
        skips, res = res[-len(block.resnets):], res[:-len(block.resnets)]
        if i < len(unet.up_blocks) - 1 and forward_upsample_size:
            upsample_size = res[-1].shape[2:]
        if getattr(block, "has_cross_attention", False):
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=skips, encoder_hidden_states=context,
                      upsample_size=upsample_size, num_frames=f)
        else:
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=skips, upsample_size=upsample_size,
                      num_frames=f)
    x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
    return x.reshape(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)


# ---------------------------------------------------------------------------------------------
# CAM: the ControlNet-style encoder copy
# ---------------------------------------------------------------------------------------------

class ControlNetConditioningEmbedding(nn.Module):
    """``controlnet.py::ControlNetConditioningEmbedding``: conv stack from RGB frames to the UNet's first width,
    stride 2 after each level (x8 down to the latent size), zero-initialised output conv."""

    def __init__(self, out_channels: int, block_out_channels=(32, 96, 256, 512), in_channels: int = 3):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


class CAMEncoder(nn.Module):
    """``controlnet.py::ControlNetModel`` as StreamingT2V configures it: merging_mode addition, frame_expansion
    none, zero_conv_mode Identity (so its output convs have no weights), text-only context (77 tokens)."""

    def __init__(self, unet_config: dict, conditioning_channels=(32, 96, 256, 512), num_frames: int = 8):
        super().__init__()
        from diffusers import UNet3DConditionModel
        from diffusers.models.unets.unet_3d_blocks import UNetMidBlock3DCrossAttn, get_down_block
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

        cfg = dict(UNet3DConditionModel.load_config(unet_config) if isinstance(unet_config, str) else unet_config)
        boc = tuple(cfg.get("block_out_channels", (320, 640, 1280, 1280)))
        lpb = cfg.get("layers_per_block", 2)
        head = cfg.get("attention_head_dim", 64)
        heads = (head,) * len(boc) if isinstance(head, int) else tuple(head)
        groups = cfg.get("norm_num_groups", 32)
        eps = cfg.get("norm_eps", 1e-5)
        xdim = cfg.get("cross_attention_dim", 1024)
        down_types = cfg.get("down_block_types", ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",))
        self.num_frames = num_frames
        self.conv_in = nn.Conv2d(cfg.get("in_channels", 4), boc[0], kernel_size=3, padding=1)
        temb = boc[0] * 4
        self.time_proj = Timesteps(boc[0], True, 0)
        self.time_embedding = TimestepEmbedding(boc[0], temb, act_fn="silu")
        self.transformer_in = TransformerTemporalModel(num_attention_heads=8, attention_head_dim=heads[0],
                                                       in_channels=boc[0], num_layers=1, norm_num_groups=groups)
        self.controlnet_cond_embedding = ControlNetConditioningEmbedding(boc[0], conditioning_channels)
        self.down_blocks = nn.ModuleList()
        out = boc[0]
        for i, kind in enumerate(down_types):
            prev, out = out, boc[i]
            self.down_blocks.append(get_down_block(
                kind, num_layers=lpb, in_channels=prev, out_channels=out, temb_channels=temb,
                add_downsample=i < len(boc) - 1, resnet_eps=eps, resnet_act_fn="silu", resnet_groups=groups,
                cross_attention_dim=xdim, num_attention_heads=heads[i], downsample_padding=1,
                dual_cross_attention=False))
        self.mid_block = UNetMidBlock3DCrossAttn(
            in_channels=boc[-1], temb_channels=temb, resnet_eps=eps, resnet_act_fn="silu", output_scale_factor=1,
            cross_attention_dim=xdim, num_attention_heads=heads[-1], resnet_groups=groups, dual_cross_attention=False)

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def forward(self, sample: torch.Tensor, timestep, text_context: torch.Tensor, cond_frames: torch.Tensor):
        """sample [B, C, F, h, w] (the first ``num_frames`` are used); text_context [B, 77, D];
        cond_frames [B*Fc, 3, H, W] in [-1, 1] -> (skip features, mid feature), each [B*Fc, C, h', w']."""
        sample = sample[:, :, :self.num_frames]
        b, _, f = sample.shape[:3]
        emb = _time_embedding(self, timestep, b, f, self.dtype, sample.device)
        context = text_context[:, :NUM_TEXT_TOKENS].repeat_interleave(f, dim=0)
        x = sample.permute(0, 2, 1, 3, 4).reshape(b * f, sample.shape[1], *sample.shape[3:])
        x = self.conv_in(x)
        cond = self.controlnet_cond_embedding(cond_frames.to(x.dtype))
        x = self.transformer_in(x, num_frames=f, return_dict=False)[0]
        x = x + cond  # Merger(merge_mode="addition", frame_expansion="none")
        x, res = run_down_blocks(self.down_blocks, x, emb, context, f)
        x = self.mid_block(x, emb, encoder_hidden_states=context, num_frames=f)
        return list(res), x


class StreamingT2VModel(nn.Module):
    """The parts of the released ``VideoLDM`` used at inference, under the checkpoint's prefixes."""

    def __init__(self, base_model, unet, resampler, image_encoder=None, text_encoder=None, vae=None,
                 image_size: int = 224):
        super().__init__()
        self.base_model = base_model
        self.unet = unet
        self.resampler = resampler
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.vae = vae
        self.image_size = image_size

    @property
    def dtype(self):
        return self.base_model.dtype

    @property
    def device(self):
        return self.base_model.device

    def predict_noise(self, latents, timestep, context, cam_frames, text_context=None):
        """Noise prediction of the extended model. context [B, 93, D] (77 text + 16 image tokens) for the base;
        the CAM reads the 77 text tokens; cam_frames [B*8, 3, H, W] in [-1, 1]."""
        text = context[:, :NUM_TEXT_TOKENS] if text_context is None else text_context
        cam_down, cam_mid = self.unet(latents, timestep, text, cam_frames)
        return base_unet_forward(self.base_model, latents, timestep, context, cam_down, cam_mid)

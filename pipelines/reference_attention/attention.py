"""LVCD's behaviour swaps for the SVD UNet and ControlNet (paper §4.1-4.2, digest B3/B4). No weights change.

Installed on a diffusers ``UNetSpatioTemporalConditionModel`` or an :class:`~.controlnet.SVDControlNet`:

(a) spatial ``attn1`` of every spatial transformer block -> *reference attention*: query frame p attends to
    ``[K,V of frame plan.self_index[p] ; K,V of frame plan.ref_index[p]]`` (2·h·w keys), with the logit bias
    ``plan.ref_log_bias[p]`` on the reference half in layers whose per-network index (down -> mid -> up) is
    ``<= plan.bias_max_layer``;
(b) temporal ``attn1`` -> masked: the ``plan.num_ref_frames`` leading reference-path frames attend only to
    themselves, the video frames only among the video frames;
(c) the (3,1,1) temporal convolutions of every ``TemporalResnetBlock`` -> zero-interleaved: a reference-path frame
    sees zero temporal neighbours and the first video frame sees zero on its left (LVCD's ``Conv3d_Masked``);
(d) temporal position ids of every ``TransformerSpatioTemporalModel``: reference-path frames all get position 0,
    video frames 0..V-1.

With no plan set (``handle.plan is None``) every swapped piece runs the stock computation for any frame count,
so the same installed UNet also serves plain SVD image-to-video.

Install after choosing the attention backend (``pipelines.attention.select_attention_backend``): the stock path
delegates to the processor that was in place at install time.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .plan import FramePlan

_HANDLE_ATTR = "_lvcd_attention"


def _transformer_models(module: nn.Module) -> list[nn.Module]:
    """The ``TransformerSpatioTemporalModel`` s of a network in LVCD's layer order: down -> mid -> up."""
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    if isinstance(module, TransformerSpatioTemporalModel):
        return [module]
    parts = [getattr(module, n, None) for n in ("down_blocks", "mid_block", "up_blocks")]
    if all(p is None for p in parts):  # some other container: registration order
        return [m for m in module.modules() if isinstance(m, TransformerSpatioTemporalModel)]
    out = []
    for part in parts:
        if part is None:
            continue
        for block in (part if isinstance(part, nn.ModuleList) else [part]):
            out.extend(m for m in block.modules() if isinstance(m, TransformerSpatioTemporalModel))
    return out


def temporal_mask(plan: FramePlan, device=None) -> torch.Tensor:
    """[T, T] bool, True = may attend: reference-path frames only themselves, video frames only video frames."""
    t, d = plan.num_frames, plan.num_ref_frames
    idx = torch.arange(t, device=device)
    is_ref = idx < d
    return (is_ref[:, None] & (idx[:, None] == idx[None, :])) | (~is_ref[:, None] & ~is_ref[None, :])


def position_ids(plan: FramePlan, device=None) -> torch.Tensor:
    """[T] long: 0 for each reference-path frame, then 0..V-1 for the video frames."""
    idx = torch.arange(plan.num_frames, device=device)
    return (idx - plan.num_ref_frames).clamp_min(0)


class LVCDAttention:
    """The handle of one installed network: the current :class:`FramePlan` (``None`` = stock SVD)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.plan: FramePlan | None = None
        self._spatial: list[tuple[nn.Module, object]] = []
        self._temporal: list[tuple[nn.Module, object]] = []
        self._convs: list[nn.Module] = []
        self._positions: list[nn.Module] = []

    @property
    def num_spatial_layers(self) -> int:
        return len(self._spatial)

    def set_plan(self, plan: FramePlan | None):
        if plan is not None and not isinstance(plan, FramePlan):
            raise TypeError(f"expected a FramePlan or None, got {type(plan).__name__}")
        self.plan = plan

    @contextlib.contextmanager
    def use(self, plan: FramePlan | None):
        before = self.plan
        self.set_plan(plan)
        try:
            yield self
        finally:
            self.plan = before

    def check_frames(self, frames: int, where: str):
        if self.plan is not None and frames != self.plan.num_frames:
            raise ValueError(f"{where}: the pass has {frames} frames but the frame plan is for "
                             f"{self.plan.num_frames}; set a plan for this frame count (or None)")

    # -- installation -------------------------------------------------------------------------------
    def _install(self):
        from diffusers.models.resnet import TemporalResnetBlock

        layer = 0
        if any(isinstance(m, _MaskedTemporalConvMixin) for m in self.module.modules()):
            raise RuntimeError("LVCD attention is already installed on this network by another handle")
        for tsm in _transformer_models(self.module):
            for block in tsm.transformer_blocks:
                base = block.attn1.processor
                block.attn1.set_processor(ReferenceAttnProcessor(self, layer, base))
                self._spatial.append((block.attn1, base))
                layer += 1
            for block in tsm.temporal_transformer_blocks:
                base = block.attn1.processor
                block.attn1.set_processor(MaskedTemporalAttnProcessor(self, base))
                self._temporal.append((block.attn1, base))
            tsm.time_proj.__class__ = _make_subclass(type(tsm.time_proj), _PositionTimestepsMixin)
            tsm.time_proj._lvcd_handle = self
            self._positions.append(tsm.time_proj)
        for m in self.module.modules():
            if isinstance(m, TemporalResnetBlock):
                for conv in (m.conv1, m.conv2):
                    if isinstance(conv, nn.Conv3d) and conv.kernel_size[0] == 3:
                        conv.__class__ = _make_subclass(type(conv), _MaskedTemporalConvMixin)
                        conv._lvcd_handle = self
                        self._convs.append(conv)

    def refresh(self) -> int:
        """Re-wrap the attention processors that were replaced since installation (an attention-backend switch
        such as ``enable_xformers_memory_efficient_attention`` resets every processor of a network); the
        replacement becomes the new stock path. Returns how many were re-wrapped."""
        count = 0
        for kind, items in ((ReferenceAttnProcessor, self._spatial), (MaskedTemporalAttnProcessor, self._temporal)):
            for i, (attn, _) in enumerate(items):
                proc = attn.processor
                if isinstance(proc, kind) and proc.handle is self:
                    continue
                wrapper = ReferenceAttnProcessor(self, i, proc) if kind is ReferenceAttnProcessor \
                    else MaskedTemporalAttnProcessor(self, proc)
                attn.set_processor(wrapper)
                items[i] = (attn, proc)
                count += 1
        return count

    def remove(self):
        """Put the stock processors and classes back."""
        for attn, base in self._spatial + self._temporal:
            attn.set_processor(base)
        for m in self._convs + self._positions:
            m.__class__ = m.__class__.__bases__[1]
            del m._lvcd_handle
        self._spatial, self._temporal, self._convs, self._positions = [], [], [], []
        if getattr(self.module, _HANDLE_ATTR, None) is self:
            delattr(self.module, _HANDLE_ATTR)


def install_lvcd_attention(module: nn.Module) -> LVCDAttention:
    """Install LVCD's attention/conv/position behaviour on ``module``; idempotent (returns the existing handle,
    re-wrapping any attention processor an attention-backend switch replaced in the meantime)."""
    handle = getattr(module, _HANDLE_ATTR, None)
    if isinstance(handle, LVCDAttention):
        handle.refresh()
        return handle
    handle = LVCDAttention(module)
    handle._install()
    object.__setattr__(module, _HANDLE_ATTR, handle)
    return handle


def get_lvcd_attention(module: nn.Module) -> LVCDAttention | None:
    handle = getattr(module, _HANDLE_ATTR, None)
    return handle if isinstance(handle, LVCDAttention) else None


# ---------------------------------------------------------------------------------------------
# attention processors (diffusers ``Attention`` processor protocol)
# ---------------------------------------------------------------------------------------------

def _project(attn, hidden_states):
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)


def _heads(attn, x):
    b, n, c = x.shape
    return x.view(b, n, attn.heads, c // attn.heads).transpose(1, 2)


def _finish(attn, out, residual, dtype):
    b, h, n, d = out.shape
    out = out.transpose(1, 2).reshape(b, n, h * d).to(dtype)
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def _sdpa(attn, q, k, v, mask):
    q, k, v = _heads(attn, q), _heads(attn, k), _heads(attn, v)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False), q.dtype


class ReferenceAttnProcessor:
    """Spatial self-attention over ``[own-half ; reference-half]`` keys chosen by the plan (Eqs. 5, 7, 8)."""

    def __init__(self, handle: LVCDAttention, layer_index: int, base):
        self.handle = handle
        self.layer_index = layer_index
        self.base = base

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        plan = self.handle.plan
        if (plan is None or not plan.reference_attention or encoder_hidden_states is not None
                or attention_mask is not None or hidden_states.ndim != 3):
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        bt, n, _ = hidden_states.shape
        t = plan.num_frames
        if bt % t:
            raise ValueError(f"reference attention: {bt} images are not a whole number of {t}-frame passes")
        b = bt // t
        residual = hidden_states
        q, k, v = _project(attn, hidden_states)
        dev = hidden_states.device
        self_idx, ref_idx = plan.self_index.to(dev), plan.ref_index.to(dev)

        def gather(x):
            x = x.view(b, t, n, x.shape[-1])
            return torch.cat([x[:, self_idx], x[:, ref_idx]], dim=2).reshape(bt, 2 * n, x.shape[-1])

        k, v = gather(k), gather(v)
        mask = None
        if self.layer_index <= plan.bias_max_layer and plan.has_bias:
            bias = plan.ref_log_bias.to(device=dev, dtype=q.dtype)
            mask = torch.zeros(t, 2 * n, device=dev, dtype=q.dtype)
            mask[:, n:] = bias[:, None]
            mask = mask.repeat(b, 1).view(bt, 1, 1, 2 * n)
        out, dtype = _sdpa(attn, q, k, v, mask)
        return _finish(attn, out, residual, dtype)


class MaskedTemporalAttnProcessor:
    """Temporal self-attention with reference-path frames isolated (LVCD's ``TemporalAttention_Masked``)."""

    def __init__(self, handle: LVCDAttention, base):
        self.handle = handle
        self.base = base

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        plan = self.handle.plan
        if plan is None or encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        self.handle.check_frames(hidden_states.shape[1], "temporal attention")
        if plan.num_ref_frames == 0:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        q, k, v = _project(attn, hidden_states)
        out, dtype = _sdpa(attn, q, k, v, temporal_mask(plan, hidden_states.device))
        return _finish(attn, out, hidden_states, dtype)


# ---------------------------------------------------------------------------------------------
# class swaps that keep parameter names (temporal conv) and buffers (none) unchanged
# ---------------------------------------------------------------------------------------------

_SUBCLASSES: dict[tuple[type, type], type] = {}


def _make_subclass(base: type, mixin: type) -> type:
    key = (base, mixin)
    if key not in _SUBCLASSES:
        _SUBCLASSES[key] = type(f"LVCD{base.__name__}", (mixin, base), {})
    return _SUBCLASSES[key]


class _MaskedTemporalConvMixin:
    """A (3,1,1) Conv3d over [B, C, T, H, W] with the reference-path frames zero-interleaved."""

    def forward(self, x):
        plan = self._lvcd_handle.plan
        if plan is None or plan.num_ref_frames == 0:
            return super().forward(x)
        self._lvcd_handle.check_frames(x.shape[2], "temporal convolution")
        d = plan.num_ref_frames
        kt = self.kernel_size[0]
        # A reference-path frame has zeros on both sides: only the centre tap of the kernel sees data.
        ref = F.conv3d(x[:, :, :d], self.weight[:, :, kt // 2: kt // 2 + 1], self.bias, self.stride,
                       (0,) + tuple(self.padding[1:]), self.dilation, self.groups)
        # The video frames are a clip of their own: zero padding on the left of the first one.
        vid = super().forward(x[:, :, d:])
        return torch.cat([ref, vid], dim=2)


class _PositionTimestepsMixin:
    """The frame-position sinusoid of ``TransformerSpatioTemporalModel`` with LVCD's position ids.

    diffusers feeds ``arange(T)`` repeated over the batch; each value p becomes ``max(p - d, 0)``."""

    def forward(self, timesteps):
        plan = self._lvcd_handle.plan
        if plan is not None and plan.num_ref_frames:
            timesteps = (timesteps - plan.num_ref_frames).clamp_min(0)
        return super().forward(timesteps)

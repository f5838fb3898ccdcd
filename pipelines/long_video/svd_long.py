"""SVD image-to-video of any length: the LVCD segment scheduler with the plain SVD UNet (the "autoregressive
extension" of the anime pipeline). One implementation with LVCD colorization (``.sampler``).

- The first segment is stock SVD: the same noise draws (augmentation noise, then latent noise, from the seed's
  CPU generator), the same conditioning, frame-linear CFG and attention as ``pipelines.svd.pipeline`` - a clip
  of at most one segment equals ``image_to_video`` exactly (tested).
- Later segments run T = 1 + o + N frames: the first image on the reference path, the previous segment's last
  o frames on the prev-reference path (concat = their final latents / 0.18215), then the N frames whose first
  ``known`` are blended from the previous segment (Overlapped Blending, bit-identical) and whose new frames read
  the previous results through prev-reference attention (``pipelines.reference_attention.attention`` installed on the UNet;
  with no plan set it computes stock SVD).

Guides (keyframes at any frame, motion masks; ``pipelines.svd.guided``) on long clips
-------------------------------------------------------------------------------------
One :class:`~..svd.guided.SVDGuidePlan` is made for the whole clip (global frame indices, ``-1`` = the clip's
last frame). Each pass maps it onto its frame axis (:func:`guide_frames`): video position j shows clip frame
``segment.start + j``; reference-path positions (the reference image and the prev-reference frames, which only
condition the pass) and ``tail="pad"`` padding are left alone. At every step of every pass the plan's hook
``D' = (1 - w) D + w g`` acts on those positions.

Order in an overlap: Overlapped Blending first, then the guide. A frame the pass shares with the previous one
first gets the previous pass's estimate (Eq. 6), then the guide is applied to it - the same estimate, the same
guide latent and weight as in the previous pass, so the guided result, the trajectory and the final latent are
bit-identical in both passes (tested); nothing has to "win". A keyframe inside an overlap is therefore held in
both passes, at its strength, and its first pass decides its value. The cache the next pass blends holds the
estimate before the guide, which the next pass then guides in the same way.

Where the guide runs: as a pass hook of the segment sampler (``LongSampler.pass_hooks``), after its own
Overlapped Blending hook and before the Euler step, so a guided clip of one segment equals ``image_to_video``
with ``plan.hook()`` bit for bit, and the final latents of held frames are the guide's exactly (tested).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..attention import select_attention_backend
from ..svd import conditioning, decode
from ..svd import pipeline as svd_pipeline
from ..svd import sampler as edm
from ..svd.guided import SVDGuidePlan
from ..svd.loader import SVDModel
from . import sampler as lv
from .segments import LongVideoOptions, Segment, plan_segments


class PlannedDenoiser:
    """The plain UNet denoiser with a frame plan set on the installed LVCD attention for each call."""

    def __init__(self, inner: edm.Denoiser, handle, plan):
        self.inner, self.handle, self.plan = inner, handle, plan

    def __call__(self, *args):
        if self.handle is None:
            return self.inner(*args)
        with self.handle.use(self.plan):
            return self.inner(*args)


def num_passes(num_frames: int, options: LongVideoOptions) -> int:
    return len(plan_segments(num_frames, options.segment_length, options.overlap, options.tail, "num_frames"))


# ---------------------------------------------------------------------------------------------- guides
def guide_frames(p: lv.SegmentPass) -> list[int]:
    """The clip frame the guide acts on at each position of the pass's frame axis; -1 = left alone
    (reference-path positions and ``tail="pad"`` padding)."""
    seg = p.segment
    real = seg.length - seg.pad
    return [-1] * p.num_ref_frames + [seg.start + j if j < real else -1 for j in range(seg.length)]


@dataclass(frozen=True)
class GuideLanding:
    """Where one keyframe acts in one pass."""

    keyframe: int  # 1-based, in frame order (as the guide's info numbers them)
    frame: int  # global clip frame
    segment: int
    position: int  # on the pass's frame axis (reference-path positions come first)
    video_position: int  # among the pass's video frames
    overlapped: bool  # a known frame of this pass: blended from the previous pass, then guided again

    def describe(self) -> str:
        ref = self.position - self.video_position
        where = f"segment {self.segment} position {self.position}"
        if ref:
            where += f" (after {ref} reference-path positions: video position {self.video_position})"
        return where + (", overlapped: blended from the previous segment, then held again (bit-identical)"
                        if self.overlapped else ", new frame")


def guide_landings(plan: SVDGuidePlan, passes: list[lv.SegmentPass]) -> list[GuideLanding]:
    out = []
    for k, frame in enumerate(plan.keyframe_frames):
        for p in passes:
            frames = guide_frames(p)
            if frame in frames:
                pos = frames.index(frame)
                j = pos - p.num_ref_frames
                out.append(GuideLanding(k + 1, frame, p.segment.index, pos, j, j < p.segment.known))
    return out


def long_guide_info(plan: SVDGuidePlan, passes: list[lv.SegmentPass], landings: list[GuideLanding]) -> str:
    n = len(passes)
    lines = [f"long video: the guide acts on every pass's video positions at every step ({n} segments; "
             "reference-path positions left alone; in overlaps Overlapped Blending first, then the guide):"]
    for k, frame in enumerate(plan.keyframe_frames):
        lands = [g for g in landings if g.keyframe == k + 1]
        lines.append(f"- keyframe {k + 1} at frame {frame}: " + "; ".join(g.describe() for g in lands))
    if plan.static is not None:
        lines.append(f"- motion mask: static region held on every frame, in all {n} segments")
    return "\n".join(lines)


@dataclass
class LongSVDResult(svd_pipeline.SVDResult):
    segments: list[Segment] = field(default_factory=list)
    guide_landings: list[GuideLanding] = field(default_factory=list)
    guide_info: str = ""  # where each keyframe landed (empty without a guide)


def long_image_to_video(model: SVDModel, images: torch.Tensor, req: svd_pipeline.SVDRequest,
                        options: LongVideoOptions, hooks: svd_pipeline.SVDRunHooks | None = None,
                        on_segment_step=None, guide: SVDGuidePlan | None = None) -> LongSVDResult:
    """images: [1,3,H,W] in 0..1 at the output size; ``req.num_frames`` may exceed one segment.
    ``on_segment_step(segment_index, state)`` is called once per step of every segment.
    ``guide``: a plan from ``plan_svd_guide(model, guide, images, req.num_frames, fit)`` for the whole clip."""
    hooks = hooks or svd_pipeline.SVDRunHooks()
    svd_pipeline.check_request(model, images, req)
    options = options.validate()
    if images.shape[0] != 1:
        raise ValueError("long_image_to_video takes one image")
    if guide is not None and guide.num_frames != req.num_frames:
        raise ValueError(f"guide planned for {guide.num_frames} frames, the request has {req.num_frames}")
    segments = plan_segments(req.num_frames, options.segment_length, options.overlap, options.tail, "num_frames")
    device = model.device
    f = model.spatial_factor
    _, _, h, w = images.shape
    gen = torch.Generator("cpu").manual_seed(int(req.seed) & 0xFFFF_FFFF_FFFF_FFFF)
    aug = torch.randn(images.shape, generator=gen, dtype=torch.float32)  # stock SVD's draw order
    first = torch.randn((1, segments[0].length, model.latent_channels, h // f, w // f), generator=gen,
                        dtype=torch.float32)
    cond = conditioning.build_conditioning(model, images.to(device), 1, req.fps, req.motion_bucket_id,
                                           req.augmentation_level, aug)
    ref = lv.ReferenceCond(cond.image_embeds, cond.image_latents[:, 0], cond.added_time_ids, 0)
    select_attention_backend(model.unet, device)
    handle = None
    if len(segments) > 1:
        from ..reference_attention.attention import install_lvcd_attention

        handle = install_lvcd_attention(model.unet)
    base = edm.UNetDenoiser(model.unet)

    def make_denoiser(p: lv.SegmentPass):
        return PlannedDenoiser(base, handle, p.plan)

    def guide_hooks(p: lv.SegmentPass):
        if p.segment.end > guide.num_frames:
            raise ValueError(f"guide planned for {guide.num_frames} frames, pass reaches {p.segment.end}")
        return [guide.hook(frames=guide_frames(p))]

    def on_step(i, st):
        if on_segment_step is not None:
            on_segment_step(i, st)
        if hooks.on_step is not None:
            hooks.on_step(st)

    sampler = lv.LongSampler(make_denoiser=make_denoiser, options=options, steps=req.steps, seed=req.seed,
                             scaling_factor=model.vae_scaling_factor, first_with_reference_path=False,
                             guidance=lv.frame_linear_guidance(req.min_cfg, req.max_cfg), on_step=on_step,
                             pass_hooks=guide_hooks if guide is not None else None)
    landings, info = [], ""
    if guide is not None:
        layout = [sampler.pass_for(s, segments, [ref]) for s in segments]
        landings = guide_landings(guide, layout)
        info = long_guide_info(guide, layout, landings)
    try:
        result = sampler.sample([ref], req.num_frames, (model.latent_channels, h // f, w // f), device=device,
                                segments=segments, input_name="num_frames", generator=gen, first_noise=first)
    finally:
        if handle is not None:
            handle.set_plan(None)
    frames = decode.decode_latents(model.vae, result.latents, model.vae_scaling_factor, req.decode_chunk_size,
                                   tile_size=req.tile_size, tile_overlap=req.tile_overlap,
                                   on_chunk=hooks.on_decode_chunk)
    return LongSVDResult(frames=frames, latents=result.latents[None], segments=segments,
                         guide_landings=landings, guide_info=info)

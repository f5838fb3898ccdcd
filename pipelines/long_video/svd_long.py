"""SVD image-to-video of any length: the LVCD segment scheduler with the plain SVD UNet (the "autoregressive
extension" of the anime pipeline). One implementation with LVCD colorization (``.sampler``).

- The first segment is stock SVD: the same noise draws (augmentation noise, then latent noise, from the seed's
  CPU generator), the same conditioning, frame-linear CFG and attention as ``pipelines.svd.pipeline`` - a clip
  of at most one segment equals ``image_to_video`` exactly (tested).
- Later segments run T = 1 + o + N frames: the first image on the reference path, the previous segment's last
  o frames on the prev-reference path (concat = their final latents / 0.18215), then the N frames whose first
  ``known`` are blended from the previous segment (Overlapped Blending, bit-identical) and whose new frames read
  the previous results through prev-reference attention (``pipelines.lvcd.attention`` installed on the UNet;
  with no plan set it computes stock SVD).
"""
from __future__ import annotations

import torch

from ..attention import select_attention_backend
from ..svd import conditioning, decode
from ..svd import pipeline as svd_pipeline
from ..svd import sampler as edm
from ..svd.loader import SVDModel
from . import sampler as lv
from .segments import LongVideoOptions, plan_segments


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


def long_image_to_video(model: SVDModel, images: torch.Tensor, req: svd_pipeline.SVDRequest,
                        options: LongVideoOptions, hooks: svd_pipeline.SVDRunHooks | None = None,
                        on_segment_step=None) -> svd_pipeline.SVDResult:
    """images: [1,3,H,W] in 0..1 at the output size; ``req.num_frames`` may exceed one segment.
    ``on_segment_step(segment_index, state)`` is called once per step of every segment."""
    hooks = hooks or svd_pipeline.SVDRunHooks()
    svd_pipeline.check_request(model, images, req)
    options = options.validate()
    if images.shape[0] != 1:
        raise ValueError("long_image_to_video takes one image")
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
        from ..lvcd.attention import install_lvcd_attention

        handle = install_lvcd_attention(model.unet)
    base = edm.UNetDenoiser(model.unet)

    def make_denoiser(p: lv.SegmentPass):
        return PlannedDenoiser(base, handle, p.plan)

    def on_step(i, st):
        if on_segment_step is not None:
            on_segment_step(i, st)
        if hooks.on_step is not None:
            hooks.on_step(st)

    sampler = lv.LongSampler(make_denoiser=make_denoiser, options=options, steps=req.steps, seed=req.seed,
                             scaling_factor=model.vae_scaling_factor, first_with_reference_path=False,
                             guidance=lv.frame_linear_guidance(req.min_cfg, req.max_cfg), on_step=on_step)
    try:
        result = sampler.sample([ref], req.num_frames, (model.latent_channels, h // f, w // f), device=device,
                                segments=segments, input_name="num_frames", generator=gen, first_noise=first)
    finally:
        if handle is not None:
            handle.set_plan(None)
    frames = decode.decode_latents(model.vae, result.latents, model.vae_scaling_factor, req.decode_chunk_size,
                                   tile_size=req.tile_size, tile_overlap=req.tile_overlap,
                                   on_chunk=hooks.on_decode_chunk)
    return svd_pipeline.SVDResult(frames=frames, latents=result.latents[None])

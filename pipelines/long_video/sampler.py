"""Sequential sampling of long clips in overlapping segments (LVCD §4.2; digest B4, B8.5-B8.7).

One implementation with two users: LVCD colorization (every segment has the reference path) and long
SVD image-to-video (the first segment is stock SVD; later ones add the reference path).

Per-segment batch (``with_reference_path``): T = 1 + o + N latent frames

    pos 0         the reference image (reference path), concat E(I^0), noise eps[0] fixed for the clip
    pos 1..o      prev-ref path: the previous segment's last o results (concat = their final latents /0.18215);
                  in the first segment dummies (concat E(I^0))
    pos o+1..     the N video frames, concat E(I^0)

Each segment runs the EDM Euler sampler of ``pipelines.svd.sampler`` (25 steps, no CFG by default). Its
``denoised_hooks`` implement Overlapped Blending (Eq. 6): at every step the denoised estimate of the known
(overlapped) frames is replaced by the previous segment's estimate of the same frames at the same step, and
the estimates the next segment will need are cached. Known frames also reuse their earlier noise, so their
whole trajectory - and their final latent - is bit-identical to the previous segment's.

Memory is bounded by one segment: the pass's tensors, a cache of ``steps x known`` latents and the final
latents of the clip (4 channels at 1/8 size, small).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from ..reference_attention.plan import FramePlan, normal_plan, prevref_plan, stock_plan
from ..svd import sampler as edm
from ..svd.conditioning import SVDConditioning
from .segments import LongVideoOptions, Segment, nearest_reference, plan_segments

DUMMY = -1  # frame index of reference-path positions that show the reference image


@dataclass
class ReferenceCond:
    """What one reference image contributes: CLIP embedding, unscaled concat latent, time ids."""

    image_embeds: torch.Tensor  # [1, 1, D]
    latent: torch.Tensor  # [1, C, h, w] unscaled (VAE posterior mode)
    time_ids: torch.Tensor  # [1, 3]
    frame_index: int = 0  # video frame this reference belongs to


@dataclass
class SegmentPass:
    """One sampling pass as the denoiser factory sees it."""

    segment: Segment
    plan: FramePlan | None  # None: stock SVD (no reference path, no attention patch)
    num_ref_frames: int  # d leading reference-path positions (0 without the reference path)
    frames: list[int]  # global video frame shown at each position; DUMMY = the reference image
    reference: int  # index of the reference used by this pass
    total_segments: int


class DenoiserFactory(Protocol):
    def __call__(self, p: SegmentPass) -> edm.Denoiser: ...


@dataclass
class LongSampleResult:
    latents: torch.Tensor  # [L, C, h, w] final latents (model space, scaled) of every video frame
    reference_latent: torch.Tensor | None  # [C, h, w] final latent of the reference position (first pass)
    segments: list[Segment]


@dataclass
class LongSampler:
    make_denoiser: DenoiserFactory
    options: LongVideoOptions = field(default_factory=LongVideoOptions)
    steps: int = 25
    seed: int = 0
    scaling_factor: float = 0.18215
    first_with_reference_path: bool = True  # LVCD: True; long SVD: False (first pass = stock SVD)
    guidance: Callable[[SegmentPass], torch.Tensor | None] | None = None  # [1, T, 1, 1, 1] or None (no CFG)
    on_step: Callable[[int, edm.StepState], None] | None = None  # (segment index, state), once per step
    on_segment: Callable[[SegmentPass, torch.Tensor], None] | None = None  # final latents [T, C, h, w]
    # more denoised hooks for a pass, run after Overlapped Blending (e.g. keyframe/motion-mask guides)
    pass_hooks: Callable[[SegmentPass], Sequence[edm.DenoisedHook]] | None = None

    # ------------------------------------------------------------------ layout
    def pass_for(self, seg: Segment, segments: list[Segment], refs: list[ReferenceCond]) -> SegmentPass:
        o = self.options.overlap
        with_ref = seg.index > 0 or self.first_with_reference_path
        ref = nearest_reference(seg, [r.frame_index for r in refs])
        video = [seg.frame(p) for p in range(seg.length)]
        if not with_ref:
            return SegmentPass(seg, None, 0, video, ref, len(segments))
        if seg.index == 0:
            prev = [DUMMY] * o
            plan = normal_plan(1 + o, seg.length)
        else:
            first_new = seg.start + seg.known
            prev = list(range(first_new - o, first_new))
            plan = prevref_plan(o, seg.length, shift=self.options.shift, alpha=self.options.alpha,
                                use_shift=self.options.prev_reference and self.options.shift > 0,
                                use_prev_reference=self.options.prev_reference, known=seg.known)
        return SegmentPass(seg, plan, 1 + o, [DUMMY] + prev + video, ref, len(segments))

    # ------------------------------------------------------------------ noise
    def _draw(self, gen, shape) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    def _noise_for(self, p: SegmentPass, prev: SegmentPass | None, prev_noise: torch.Tensor | None,
                   state: dict, gen, latent_shape) -> torch.Tensor:
        """[1, T, C, h, w]. First pass: drawn. Later: digest B4's roll, generalised to any known count."""
        c, h, w = latent_shape
        seg = p.segment
        if prev is None:
            noise = self._draw(gen, (1, len(p.frames), c, h, w))
            if p.num_ref_frames:
                state["ref0"] = noise[:, 0].clone()
            return noise
        if "ref0" not in state:  # first pass was stock SVD: the reference position gets its own noise
            state["ref0"] = self._draw(gen, (1, c, h, w))
        d_prev = prev.num_ref_frames
        pseg = prev.segment

        def prev_of(frame: int) -> torch.Tensor:
            return prev_noise[:, d_prev + frame - pseg.start]

        parts = [state["ref0"]]
        parts += [prev_of(f) for f in p.frames[1:p.num_ref_frames]]
        parts += [prev_of(seg.start + j) for j in range(seg.known)]
        new = seg.length - seg.known
        if self.options.fresh_noise_new_frames:
            parts += list(self._draw(gen, (1, new, c, h, w)).unbind(1))
        else:  # the reference code reuses the previous pass's noise of video positions 0..new-1
            parts += [prev_noise[:, d_prev + (j % pseg.length)] for j in range(new)]
        return torch.stack(parts, dim=1)

    # ------------------------------------------------------------------ loop
    def sample(self, refs: list[ReferenceCond], num_frames: int, latent_shape: tuple[int, int, int],
               device=None, segments: list[Segment] | None = None, input_name: str = "frames",
               generator: torch.Generator | None = None, first_noise: torch.Tensor | None = None) -> LongSampleResult:
        """refs: one or more references (their ``frame_index`` picks the nearest per segment);
        latent_shape: (C, h, w). Returns the final latents of all ``num_frames`` video frames.

        ``generator`` (CPU) draws all noise (default: seeded from ``seed``); ``first_noise`` [1, T, C, h, w]
        replaces the first pass's draw (long SVD passes stock SVD's noise, so its first segment is stock SVD)."""
        opts = self.options.validate()
        segments = segments or plan_segments(num_frames, opts.segment_length, opts.overlap, opts.tail, input_name)
        device = device if device is not None else refs[0].latent.device
        c, h, w = latent_shape
        out = torch.empty((num_frames, c, h, w), dtype=torch.float32, device=device)
        sigmas = edm.karras_sigmas(self.steps, device=device)
        gen = generator or torch.Generator("cpu").manual_seed(int(self.seed) & 0xFFFF_FFFF_FFFF_FFFF)
        state: dict = {}
        prev: SegmentPass | None = None
        prev_noise = None
        cache_prev: list[torch.Tensor] | None = None
        reference_latent = None
        for seg in segments:
            p = self.pass_for(seg, segments, refs)
            if prev is None and first_noise is not None:
                noise = first_noise.to(torch.float32).cpu()
                if p.num_ref_frames:
                    state["ref0"] = noise[:, 0].clone()
            else:
                noise = self._noise_for(p, prev, prev_noise, state, gen, latent_shape)
            cond = self._conditioning(p, refs[p.reference], out)
            nxt = segments[seg.index + 1] if seg.index + 1 < len(segments) else None
            # positions (within this pass) whose estimates the next pass blends
            keep = range(p.num_ref_frames + nxt.start - seg.start, p.num_ref_frames + seg.end - seg.start) \
                if nxt is not None and opts.overlapped_blending else range(0)
            cache_cur: list[torch.Tensor] = []
            blend = cache_prev if (opts.overlapped_blending and seg.known and cache_prev is not None) else None
            known_pos = slice(p.num_ref_frames, p.num_ref_frames + seg.known)

            def hook(st: edm.StepState, blend=blend, cache_cur=cache_cur, keep=keep, known_pos=known_pos):
                d = st.denoised
                if blend is not None:
                    d[:, known_pos] = blend[st.step]
                if len(keep):
                    cache_cur.append(d[:, keep.start:keep.stop].clone())
                return d

            def callback(st: edm.StepState, index=seg.index):
                if self.on_step is not None:
                    self.on_step(index, st)

            extra = list(self.pass_hooks(p)) if self.pass_hooks is not None else []
            run = edm.EDMEulerSampler(denoiser=self.make_denoiser(p), denoised_hooks=[hook, *extra], callback=callback)
            guidance = self.guidance(p) if self.guidance is not None else None
            x = run.sample(cond, noise.to(device), sigmas, guidance)[0].float()
            first_new = p.num_ref_frames + seg.known
            out[seg.start + seg.known:seg.end] = x[first_new:p.num_ref_frames + seg.end - seg.start]
            if seg.index == 0 and p.num_ref_frames:
                reference_latent = x[0].clone()
            if self.on_segment is not None:
                self.on_segment(p, x)
            prev, prev_noise, cache_prev = p, noise, cache_cur
            del x, cond
        return LongSampleResult(out, reference_latent, segments)

    def _conditioning(self, p: SegmentPass, ref: ReferenceCond, out: torch.Tensor) -> SVDConditioning:
        lat = ref.latent[0]
        parts = []
        for i, f in enumerate(p.frames):
            if 0 < i < p.num_ref_frames and f != DUMMY:
                parts.append(out[f].to(lat.dtype) / self.scaling_factor)  # previous final latent, unscaled
            else:
                parts.append(lat)
        return SVDConditioning(image_embeds=ref.image_embeds, image_latents=torch.stack(parts)[None],
                               added_time_ids=ref.time_ids)


def frame_linear_guidance(min_cfg: float, max_cfg: float):
    """SVD's frame-linear CFG over the video positions of a pass; reference-path positions get min_cfg.
    Returns None (no unconditional pass) when max_cfg <= 1."""
    def guidance(p: SegmentPass):
        if max_cfg <= 1.0:
            return None
        n = len(p.frames) - p.num_ref_frames
        g = torch.cat([torch.full((p.num_ref_frames,), float(min_cfg)), torch.linspace(min_cfg, max_cfg, n)])
        return g.view(1, -1, 1, 1, 1)
    return guidance


def stock_or_plan(p: SegmentPass) -> FramePlan:
    """The plan to install for a pass (stock SVD attention when the pass has no reference path)."""
    return p.plan if p.plan is not None else stock_plan(len(p.frames))

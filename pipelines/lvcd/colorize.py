"""LVCD colorization of a lineart sequence of any length from one or more coloured references (paper §4;
digest B4, B8).

``colorize(model, references, hints, options, steps, seed, callbacks) -> frames [L, H, W, 3]``

- ``references``: ``[(image, frame_index), ...]``; image [3, H, W] or [1, 3, H, W] in 0..1. Each segment uses the
  reference whose frame index is nearest to its new frames (one reference: the paper's method). A reference whose
  size differs from the lineart is centre-cropped to the lineart's aspect and resized to its size (documented
  behaviour, not an error).
- ``hints``: [L, 3, H, W] in 0..1, white lines on black (``pipelines.lineart.to_hint`` / ``extract_lineart``).
  H and W must be multiples of 8 (the VAE factor). LVCD was trained at 320x576 (H x W); other sizes are
  experimental (the node letterboxes/crops to 576x320 by default).
- ``reference_hints``: the references' own lineart ([3, H, W] each). When absent, a reference uses the hint of the
  frame it belongs to (its ``frame_index``) - right when the reference is a coloured version of that frame.
- The output holds the L lineart frames only: the reference itself is **not** in the output.

Decode: chunks of 10 latents = [reference latent] + 9 frames, overlapping by 3 (``long_video.decode``); the
reference latent is the reference image's encoded latent (scaled), as in the reference code (nearest reference per
chunk when there are several).

Colour fidelity: decoded pixels are clamped to [-1, 1] and mapped to [0, 1]; no min-max renormalisation (the peer
node stretches the whole clip). ``color_match=True`` additionally matches each output channel's clip-wide mean
and standard deviation to the reference's (the nearest reference per frame).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError
from ..image_ops import fit_image
from ..long_video import decode as lv_decode
from ..long_video import sampler as lv
from ..long_video.segments import LongVideoOptions, nearest_of, plan_segments
from ..svd import conditioning

FPS = 7.0  # the model sees fps id 6
MOTION_BUCKET_ID = 160.0
COND_AUG = 0.0
WORK_WIDTH, WORK_HEIGHT = 576, 320  # paper resolution


@dataclass
class ColorizeOptions:
    long_video: LongVideoOptions = field(default_factory=LongVideoOptions)
    color_match: bool = False
    control_scale: float = 1.0
    fps: float = FPS
    motion_bucket_id: float = MOTION_BUCKET_ID
    cond_aug: float = COND_AUG
    decode_chunk: int = 10  # latents per decode chunk, reference included
    decode_overlap: int = 3


@dataclass
class ColorizeCallbacks:
    on_step: Callable[[int, object], None] | None = None  # (segment index, StepState)
    on_decode_chunk: Callable[[int, int], None] | None = None


def _as_bchw(image: torch.Tensor, name: str) -> torch.Tensor:
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise AnimeVideoInputError(f"{name}: expected one RGB image [3, H, W], got {tuple(image.shape)}.")
    return image.float().clamp(0, 1)


def check_hints(hints: torch.Tensor, factor: int = 8, input_name: str = "lineart"):
    if hints.ndim != 4 or hints.shape[1] != 3:
        raise AnimeVideoInputError(f"{input_name}: expected hints [frames, 3, H, W], got {tuple(hints.shape)}.")
    if hints.shape[0] < 1:
        raise AnimeVideoInputError(f"{input_name}: got 0 frames; at least 1 lineart frame is needed.")
    h, w = hints.shape[-2:]
    for name, v in (("height", h), ("width", w)):
        if v % factor:
            lo, hi = max(factor, v // factor * factor), (v // factor + 1) * factor
            raise AnimeVideoInputError(f"{input_name}: {name} {v} is not a multiple of {factor}; resize to {lo} or "
                                       f"{hi} (LVCD was trained at 576x320).")


def prepare_reference(image: torch.Tensor, height: int, width: int, name: str = "reference") -> torch.Tensor:
    """[1, 3, height, width]: centre-cropped to the lineart's aspect and resized when the sizes differ."""
    x = _as_bchw(image, name)
    return fit_image(x, width, height, "crop").clamp(0, 1)


def reference_conds(model, refs: torch.Tensor, indices: Sequence[int], opts: ColorizeOptions) -> list[lv.ReferenceCond]:
    svd = model.svd
    device = model.device
    out = []
    for img, idx in zip(refs, indices):
        img = img[None].to(device)
        embeds = conditioning.encode_image_embeds(svd.image_encoder, img)
        latent = conditioning.encode_concat_latent(svd.vae, img, torch.zeros_like(img), opts.cond_aug)
        ids = conditioning.added_time_ids(opts.fps, opts.motion_bucket_id, opts.cond_aug, 1, embeds.dtype, device)
        out.append(lv.ReferenceCond(embeds, latent.to(svd.dtype), ids, int(idx)))
    return out


@torch.inference_mode()
def color_match(frames: torch.Tensor, reference: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """In place on frames [N, H, W, 3]: per-channel affine so the clip-wide mean/std equal the reference's."""
    n = frames.shape[0]
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for i in range(0, n, chunk):
        f = frames[i:i + chunk].double()
        s += f.sum((0, 1, 2))
        s2 += (f * f).sum((0, 1, 2))
    count = n * frames.shape[1] * frames.shape[2]
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    ref = reference.double().permute(0, 2, 3, 1).reshape(-1, 3)
    rmean, rstd = ref.mean(0), ref.std(0, unbiased=False)
    scale = (rstd / std.clamp_min(1e-6)).float()
    shift = (rmean - mean * rstd / std.clamp_min(1e-6)).float()
    for i in range(0, n, chunk):
        frames[i:i + chunk] = (frames[i:i + chunk] * scale + shift).clamp(0, 1)
    return frames


@torch.inference_mode()
def colorize(model, references: Sequence[tuple[torch.Tensor, int]], hints: torch.Tensor,
             options: ColorizeOptions | None = None, steps: int = 25, seed: int = 0,
             callbacks: ColorizeCallbacks | None = None,
             reference_hints: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """Colorize ``hints`` [L, 3, H, W]; returns IMAGE frames [L, H, W, 3] float32 0..1 (reference not included)."""
    from .denoiser import LVCDDenoiser  # the model half of LVCD

    opts = options or ColorizeOptions()
    cb = callbacks or ColorizeCallbacks()
    long = opts.long_video.validate()
    if not references:
        raise AnimeVideoInputError("reference: at least one coloured reference image is needed.")
    if steps < 1:
        raise AnimeVideoInputError(f"steps: {steps}; at least 1 step is needed.")
    factor = model.svd.spatial_factor
    check_hints(hints, factor)
    num_frames, _, height, width = hints.shape
    segments = plan_segments(num_frames, long.segment_length, long.overlap, long.tail, "lineart")
    indices = []
    for i, (_, idx) in enumerate(references):
        if not 0 <= int(idx) < num_frames:
            raise AnimeVideoInputError(
                f"reference_frame_indices: {idx} (reference {i + 1}) is outside the lineart frames "
                f"0..{num_frames - 1}.")
        indices.append(int(idx))
    refs = torch.cat([prepare_reference(img, height, width, f"reference {i + 1}")
                      for i, (img, _) in enumerate(references)])
    ref_hints = []
    for i, idx in enumerate(indices):
        given = reference_hints[i] if reference_hints is not None and i < len(reference_hints) else None
        if given is None:
            ref_hints.append(hints[idx])
        else:
            g = _as_bchw(given, f"reference_lineart {i + 1}")
            ref_hints.append(F.interpolate(g, size=(height, width), mode="bilinear", align_corners=False)[0]
                             if g.shape[-2:] != (height, width) else g[0])

    device = model.device
    conds = reference_conds(model, refs, indices, opts)

    def make_denoiser(p: lv.SegmentPass):
        rows = [ref_hints[p.reference] if f == lv.DUMMY else hints[f] for f in p.frames]
        h = torch.stack(rows).to(device)
        return LVCDDenoiser(model, h, p.plan, control_scale=opts.control_scale)

    sampler = lv.LongSampler(make_denoiser=make_denoiser, options=long, steps=int(steps), seed=int(seed),
                             scaling_factor=model.svd.vae_scaling_factor, first_with_reference_path=True,
                             on_step=cb.on_step)
    result = sampler.sample(conds, num_frames, (model.svd.latent_channels, height // factor, width // factor),
                            device=device, segments=segments, input_name="lineart")
    sf = model.svd.vae_scaling_factor
    # decode context: the reference's encoded latent, scaled - the reference code decodes
    # [encode(I^0) * 0.18215, frames...] (its output frame 0), not the denoised reference position
    ctx = [(c.latent[0].float() * sf) for c in conds]
    if len(ctx) == 1:
        context = ctx[0]
    else:
        def context(first_frame: int):
            return ctx[nearest_of(indices, first_frame)]
    frames = lv_decode.decode_with_context(model.svd.vae, result.latents, context, sf, chunk=opts.decode_chunk,
                                           overlap=opts.decode_overlap, on_chunk=cb.on_decode_chunk)
    if opts.color_match:
        if len(indices) == 1:
            color_match(frames, refs)
        else:  # each frame follows its nearest reference
            owner = [nearest_of(indices, f) for f in range(num_frames)]
            for k in range(len(indices)):
                sel = [f for f in range(num_frames) if owner[f] == k]
                if sel:
                    lo, hi = sel[0], sel[-1] + 1  # contiguous: the owners are sorted along the clip
                    color_match(frames[lo:hi], refs[k:k + 1])
    return frames

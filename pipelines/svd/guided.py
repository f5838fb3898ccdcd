"""Training-free guides on SVD: keyframes at any frame and motion-area masks through the denoised hook.

SVD has no mask channel, so a :class:`~..guides.Guide` acts on the sampling loop instead (AniSora's
"latent post-processing" of the static region, digest A1.3 / A6.5, applied at inference):

- **Frames.** SVD latents are per frame (the temporal VAE has no temporal compression), so pixel frame
  i is latent frame i; nothing is snapped. ``info`` still lists where each guide landed.
- **Guide latents.** Each keyframe image is fitted to the output size with the sampler's ``fit`` mode
  (as the conditioning image is), encoded alone by the VAE encoder (posterior *mode*, no sampling) and
  multiplied by ``vae_scaling_factor``: the model space the sampler runs in.
- **Known region per latent pixel.** A keyframe makes its whole frame known at its ``strength``. A
  motion mask (1 = may move) is fitted to the output size the same way; a latent pixel may move when any
  pixel of its 8x8 cell has mask >= 0.5; that moving region is dilated by one latent pixel (3x3), and
  what lies outside it is the static region, known on every frame from the keyframe nearest in time (or,
  without keyframes, from the sampler's conditioning image) at that keyframe's strength.
- **The step.** At every step the hook replaces the denoised estimate D of known latents by the guide:
  ``D' = (1 - w) * D + w * g`` (w = known weight; at w = 1 exactly g, at w = 0 exactly D).

Why the *clean* guide latent and not a noised copy (blended-diffusion style)? Our hook sits on D, and the
Euler step of the probability-flow ODE is ``x' = D' + (s'/s) (x - D')``. With D' = g it gives
``x' - g = (s'/s)(x - g)``, hence ``x_i = g + (s_i/s_0)(x_0 - g)``: the known latents ride exactly on the
guide's own noisy trajectory, noised at every step's sigma with the run's *own* initial noise (x_0 =
s_0-scaled noise, g/s_0 < 0.3% at s_0 = 700). That is the "appropriately noised guide" of A6.5 without
fresh noise at each step (which would fight the unknown neighbours), and at the last step (s' = 0) the
final latent is D' = g. The Euler update ``x + (x - D')/s * (0 - s)`` reproduces D' up to float rounding
(about 1e-9 here), so the last denoised estimate equals the guide bit for bit and the returned latent to
~1e-9 (a sampler that sets x = D at s' = 0 would make the latter bit-exact too).

Conditioning image: SVD is an image-to-video model, so the sampler's ``image`` stays a required input and
is always its CLIP embedding and concat latent (on every frame). For in-betweening, wire the first
keyframe's picture there as well; ``info`` says when the conditioning image is not the frame-0 keyframe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError
from ..guides import Guide, fit_frame
from .conditioning import encode_concat_latent
from .sampler import DenoisedHook, StepState

MOVE_THRESHOLD = 0.5  # a latent cell may move when any of its pixels has mask >= this
DILATE_LATENT_PX = 1  # the moving region grows by this many latent pixels before the static region is held


@dataclass
class SVDGuidePlan:
    """Guide latents and known weights for one clip, in SVD's latent layout."""

    latents: torch.Tensor  # [F, C, h, w] model space (scaled), the value known latents are pulled to
    weight: torch.Tensor  # [F, 1, h, w] in 0..1: 1 = denoised estimate replaced by ``latents`` exactly
    info: str
    static: torch.Tensor | None = None  # [F, 1, h, w] 1 = static region of the motion mask (before strength)
    keyframe_frames: list[int] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return self.latents.shape[0]

    def hook(self, frames: Sequence[int] | None = None) -> DenoisedHook:
        """A denoised hook for the EDM sampler. ``frames``: the clip frame of each position of the batch's
        frame axis (negative = a position outside the clip, left alone); None = the whole clip in order."""
        if frames is None:
            g, w = self.latents, self.weight
        else:
            idx = torch.tensor([max(int(f), 0) for f in frames])
            inside = torch.tensor([int(f) >= 0 for f in frames], dtype=self.weight.dtype).view(-1, 1, 1, 1)
            g, w = self.latents[idx], self.weight[idx] * inside
        cache: dict = {}

        def apply(state: StepState) -> torch.Tensor:
            d = state.denoised
            key = (d.device, d.dtype)
            if key not in cache:
                cache.clear()
                cache[key] = (g.to(device=d.device, dtype=d.dtype)[None], w.to(device=d.device, dtype=d.dtype)[None])
            gg, ww = cache[key]
            if gg.shape[1] != d.shape[1]:
                raise AnimeVideoInputError(
                    f"guide: planned for {gg.shape[1]} frames but the sampler runs {d.shape[1]}.")
            return d * (1 - ww) + gg * ww

        return apply

    def held(self) -> torch.Tensor:
        """[F, 1, h, w] bool: latents the hook sets exactly to the guide (weight 1)."""
        return self.weight == 1


@torch.inference_mode()
def encode_latents(vae, images: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """[N,3,H,W] 0..1 -> [N,C,h,w] model-space latents (posterior mode x scaling), one image at a time
    through the per-frame encoder (the temporal VAE's encoder has no temporal layers): the conditioning
    latent's encode, without noise augmentation."""
    out = []
    for im in images:
        x = im[None].contiguous()  # the same conv kernels whatever layout the frames arrive in (permuted views)
        out.append(encode_concat_latent(vae, x, torch.zeros_like(x), 0.0))
    return torch.cat(out).float() * scaling_factor


def latent_motion_mask(mask: torch.Tensor, factor: int, dilate: int = DILATE_LATENT_PX) -> torch.Tensor:
    """[F,H,W] pixel mask (1 = may move) -> [F,h,w] float {0,1} moving region at latent size, dilated."""
    f, h, w = mask.shape
    lh, lw = -(-h // factor), -(-w // factor)
    m = mask[:, None]
    if (lh * factor, lw * factor) != (h, w):
        m = F.pad(m, (0, lw * factor - w, 0, lh * factor - h))
    cell = F.max_pool2d(m, kernel_size=factor, stride=factor)
    moving = (cell >= MOVE_THRESHOLD).float()
    if dilate > 0:
        moving = F.max_pool2d(moving, kernel_size=2 * dilate + 1, stride=1, padding=dilate)
    return moving[:, 0]


def plan_svd_guide(model, guide: Guide | None, image: torch.Tensor, num_frames: int, fit: str | None = "crop",
                   conditioning_is: str = "the sampler's image input",
                   encode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> SVDGuidePlan | None:
    """Build the plan for one run. ``image``: the fitted conditioning image [1,3,H,W] 0..1 (output size).
    ``model`` gives ``spatial_factor`` and ``latent_channels``; ``encode`` ([N,3,H,W] 0..1 -> model-space latents
    [N,C,h,w]) defaults to :func:`encode_latents` with the model's own VAE (core ComfyUI's VAE comes in here
    for the MODEL patch).

    Returns None for no guide (or an empty one)."""
    if encode is None:
        def encode(images):
            return encode_latents(model.vae, images, model.vae_scaling_factor)
    if guide is None or (not guide.keyframes and guide.motion_mask is None):
        return None
    _, _, H, W = image.shape
    factor = model.spatial_factor
    h, w = H // factor, W // factor
    resolved = guide.resolve_keyframes(num_frames)
    lines = [f"SVD guide, training-free ({num_frames} frames {W}x{H} -> latent {num_frames}x{w}x{h}; "
             "SVD latents are per frame, so no frame is snapped):"]
    dropped = len(guide.keyframes) - len(resolved)

    sources = [fit_frame(r.keyframe.image, H, W, fit).permute(2, 0, 1) for r in resolved]
    uses_image = guide.motion_mask is not None and not resolved
    if uses_image:
        sources.append(image[0].float().cpu())
    kf_lat = encode(torch.stack(sources)).float().cpu() if sources else None
    c = model.latent_channels
    latents = torch.zeros(num_frames, c, h, w)
    weight = torch.zeros(num_frames, 1, h, w)
    for k, r in enumerate(resolved):
        latents[r.index] = kf_lat[k]
        weight[r.index] = r.keyframe.strength
        req = r.requested
        where = f"frame {r.index}" + (f" (frame_index {req} counts from the end)" if req < 0 else "")
        lines.append(f"- keyframe {k + 1}: frame_index {req} -> {where}, latent frame {r.index}, "
                     f"strength {r.keyframe.strength:g}")
    if dropped:
        lines.append(f"- {dropped} keyframe(s) landed on a frame another keyframe also names; the later one wins")

    static = None
    if guide.motion_mask is not None:
        mask = guide.mask_video(num_frames, H, W, fit)
        if float(mask.max()) < MOVE_THRESHOLD:
            raise AnimeVideoInputError(
                f"mask: no pixel of the motion mask reaches {MOVE_THRESHOLD} after fitting it to {W}x{H}, so "
                "nothing could move; paint the region that should move (white in ComfyUI's mask editor).")
        moving = latent_motion_mask(mask, factor)
        static = (1 - moving)[:, None]
        src_m = guide.motion_mask
        size_note = ("" if tuple(src_m.shape[-2:]) == (H, W) else
                     f", fitted from {src_m.shape[-1]}x{src_m.shape[-2]} ({fit or 'stretch'})")
        lines.append(f"- motion mask ({src_m.shape[0]} frame(s){size_note}): latent cells with any pixel >= "
                     f"{MOVE_THRESHOLD} may move, dilated by {DILATE_LATENT_PX} latent px; moving "
                     f"{float(moving.mean()) * 100:.1f}% of the latent, static region held on every frame")
        held_from = []
        slot = {r.index: k for k, r in enumerate(resolved)}
        for f in range(num_frames):
            if resolved:
                near = guide.nearest_keyframe(f, num_frames)
                k = slot[near.index]
                src, s = kf_lat[k], near.keyframe.strength
                held_from.append(near.index)
            else:
                src, s = kf_lat[-1], 1.0
            st = static[f] * s
            take = st > weight[f]  # a keyframe on this frame already holds more
            latents[f] = torch.where(take, src, latents[f])
            weight[f] = torch.maximum(weight[f], st)
        if resolved:
            spans = _spans(held_from)
            lines.append("  static region from: " + ", ".join(
                f"frames {a}-{b} <- keyframe at frame {k}" if a != b else f"frame {a} <- keyframe at frame {k}"
                for a, b, k in spans))
        else:
            lines.append(f"  static region from: the conditioning image ({conditioning_is}), all frames")
        if float(static.max()) == 0:
            lines.append("  note: the dilated mask covers the whole frame, so nothing is held still")

    frame0 = next((r for r in resolved if r.index == 0), None)
    lines.append(f"- conditioning image (CLIP embedding + concat latent): {conditioning_is}")
    if frame0 is not None:
        same = torch.allclose(fit_frame(frame0.keyframe.image, H, W, fit).permute(2, 0, 1), image[0].float().cpu(),
                              atol=1.0 / 255)
        if not same:
            lines.append("  note: it differs from the frame-0 keyframe; SVD follows the conditioning image, "
                         "so wire the same picture to both for in-betweening")
    elif resolved:
        lines.append("  note: no keyframe at frame 0; frame 0 follows the conditioning image")
    lines.append("- each step: denoised estimate of held latents replaced by the clean guide latents "
                 "(x stays on the guide's noisy trajectory; the final latents are the guide's)")
    return SVDGuidePlan(latents=latents, weight=weight, info="\n".join(lines), static=static,
                        keyframe_frames=[r.index for r in resolved])


def replace_denoised(plan: SVDGuidePlan) -> Callable[[torch.Tensor], torch.Tensor]:
    """The plan's per-step replacement for a sampler whose batch axis is the clip's frames (core ComfyUI's SVD
    latent [F, C, h, w]): ``denoised -> (1 - w) * denoised + w * guide`` (the same :meth:`SVDGuidePlan.hook`)."""
    apply = plan.hook()

    def replace(denoised: torch.Tensor) -> torch.Tensor:
        if denoised.shape[0] != plan.num_frames:
            raise AnimeVideoInputError(
                f"video_frames: the guide was planned for {plan.num_frames} frames but the sampler runs "
                f"{denoised.shape[0]}; set the same video_frames here and in SVD_img2vid_Conditioning.")
        state = StepState(step=0, total=0, sigma=torch.zeros(()), x=denoised[None], denoised=denoised[None])
        return apply(state)[0]

    return replace


def _spans(values: list[int]) -> list[tuple[int, int, int]]:
    out = []
    for i, v in enumerate(values):
        if out and out[-1][2] == v:
            out[-1] = (out[-1][0], i, v)
        else:
            out.append((i, i, v))
    return out


def no_guide_info(num_frames: int, width: int, height: int) -> str:
    return (f"SVD image to video: {num_frames} frames {width}x{height}, no guide "
            "(frame 0 follows the conditioning image)")

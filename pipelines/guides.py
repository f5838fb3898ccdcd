"""Backbone-neutral guides: keyframes at any frame and motion-area masks (AniSora's spatiotemporal mask).

A guide says, in pixel-frame units and pixels, which parts of the clip are given:
- a keyframe gives every pixel of one frame (``frame_index``; negative counts from the end);
- a motion mask (1 = the region allowed to move) gives the pixels *outside* it on every frame, taken from
  the keyframe nearest in time.

:meth:`Guide.known_video` turns that into one video and one known-mask, the form AniSora's Φ4 packing
and the training-free SVD hook both start from; each backbone adapter then maps it to its latent layout
and reports where each guide landed.

Sizes: keyframe images and masks of another size than the clip are fitted to it. With ``fit=None``
(the default) they are stretched (bilinear); a backbone whose conditioning image is fitted with one of
:data:`~.image_ops.FIT_MODES` (crop / pad / stretch) passes that mode, so keyframes and a mask painted on
the input picture line up with it pixel for pixel (pad fills the letterbox as "static" in masks).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from .errors import AnimeVideoInputError
from .image_ops import FIT_MODES, fit_image


@dataclass(frozen=True)
class Keyframe:
    image: torch.Tensor  # [H, W, 3] float32 0..1 (one ComfyUI IMAGE frame)
    frame_index: int  # pixel-frame index; negative counts from the end (-1 = last frame)
    strength: float = 1.0  # 0..1: how firmly the frame is held (1 = exactly)


@dataclass(frozen=True)
class ResolvedKeyframe:
    index: int  # 0-based pixel frame in the clip
    requested: int  # what the user asked for
    keyframe: Keyframe


@dataclass(frozen=True)
class Guide:
    keyframes: tuple[Keyframe, ...] = ()
    motion_mask: torch.Tensor | None = None  # [M, H, W] float 0..1, 1 = may move; M = 1 or num_frames
    notes: tuple[str, ...] = field(default=())

    def with_keyframe(self, image: torch.Tensor, frame_index: int, strength: float = 1.0) -> "Guide":
        if image.ndim == 4:
            if image.shape[0] != 1:
                raise AnimeVideoInputError(
                    f"image: a keyframe is one image, got a batch of {image.shape[0]}; pick one frame "
                    "(e.g. with core's ImageFromBatch) or chain one keyframe node per frame.")
            image = image[0]
        if image.ndim != 3 or image.shape[-1] != 3:
            raise AnimeVideoInputError(f"image: expected an IMAGE [H,W,3], got shape {tuple(image.shape)}.")
        if not 0.0 <= strength <= 1.0:
            raise AnimeVideoInputError(f"strength: {strength} is outside 0..1.")
        return replace(self, keyframes=self.keyframes + (Keyframe(image.float(), int(frame_index), float(strength)),))

    def with_motion_mask(self, mask: torch.Tensor) -> "Guide":
        if not isinstance(mask, torch.Tensor):
            raise AnimeVideoInputError(f"mask: expected a MASK tensor, got {type(mask).__name__}.")
        if mask.ndim == 2:
            mask = mask[None]
        if mask.ndim != 3:
            raise AnimeVideoInputError(f"mask: expected a MASK [N,H,W] or [H,W], got shape {tuple(mask.shape)}.")
        if float(mask.max()) <= 0.0:
            raise AnimeVideoInputError(
                "mask: the motion mask is empty (nothing may move). Paint the region that should move "
                "(white in ComfyUI's mask editor), or leave the mask out for a whole-frame animation.")
        notes = self.notes
        if self.motion_mask is not None:
            notes = notes + ("a later motion mask replaced an earlier one",)
        return replace(self, motion_mask=mask.float().clamp(0, 1), notes=notes)

    def resolve_keyframes(self, num_frames: int) -> list[ResolvedKeyframe]:
        """Keyframes sorted by frame, negative indices resolved; a later keyframe at the same frame wins."""
        out: dict[int, ResolvedKeyframe] = {}
        for kf in self.keyframes:
            i = kf.frame_index + num_frames if kf.frame_index < 0 else kf.frame_index
            if not 0 <= i < num_frames:
                raise AnimeVideoInputError(
                    f"frame_index: {kf.frame_index} is outside the clip of {num_frames} frames; allowed "
                    f"0..{num_frames - 1}, or -{num_frames}..-1 counting from the end.")
            out[i] = ResolvedKeyframe(i, kf.frame_index, kf)
        return [out[i] for i in sorted(out)]

    def mask_video(self, num_frames: int, height: int, width: int, fit: str | None = None) -> torch.Tensor | None:
        """The motion mask as [num_frames, H, W] at the clip size (resized if the sizes differ: bilinear
        stretch, or ``fit`` as for the images; one mask frame is used for every frame; a mask video of
        another length is resampled by nearest frame)."""
        if self.motion_mask is None:
            return None
        m = fit_mask(self.motion_mask, height, width, fit)
        if m.shape[0] == 1:
            m = m.expand(num_frames, -1, -1)
        elif m.shape[0] != num_frames:
            pick = (torch.linspace(0, m.shape[0] - 1, num_frames) + 0.5).floor().long()  # ties go up
            m = m[pick]
        return m.clamp(0, 1)

    def known_video(self, num_frames: int, height: int, width: int, fit: str | None = None):
        """(video [F,H,W,3], known [F,H,W]) in 0..1: keyframe frames known everywhere (at their strength);
        with a motion mask, pixels outside it known on every frame from the nearest keyframe.
        Keyframe images of another size are resized to the clip size (bilinear stretch, or ``fit``)."""
        video = torch.zeros(num_frames, height, width, 3)
        known = torch.zeros(num_frames, height, width)
        resolved = self.resolve_keyframes(num_frames)
        if not resolved and self.motion_mask is not None:
            raise AnimeVideoInputError(
                "guide: a motion mask needs at least one keyframe (the picture whose unmasked part stays "
                "still); add an AnimeVideoKeyframe before the mask.")
        for r in resolved:
            video[r.index] = fit_frame(r.keyframe.image, height, width, fit)
            known[r.index] = r.keyframe.strength
        mask = self.mask_video(num_frames, height, width, fit)
        if mask is not None:
            idx = torch.tensor([r.index for r in resolved])
            for f in range(num_frames):
                nearest = resolved[int((idx - f).abs().argmin())]
                still = 1.0 - mask[f]
                keep = known[f] >= still  # a keyframe at this frame already gives more
                src = fit_frame(nearest.keyframe.image, height, width, fit)
                video[f] = torch.where(keep[..., None], video[f], src)
                known[f] = torch.maximum(known[f], still * nearest.keyframe.strength)
        return video, known

    def nearest_keyframe(self, frame: int, num_frames: int) -> ResolvedKeyframe | None:
        """The keyframe nearest in time to ``frame`` (the earlier one on a tie), or None without keyframes."""
        resolved = self.resolve_keyframes(num_frames)
        if not resolved:
            return None
        return min(resolved, key=lambda r: (abs(r.index - frame), r.index))

    def describe(self) -> str:
        """One line for logs and ``info`` outputs: what the guide holds, before it meets a clip."""
        parts = [f"keyframe at frame_index {k.frame_index} (strength {k.strength:g})" for k in self.keyframes]
        if self.motion_mask is not None:
            m = self.motion_mask
            parts.append(f"motion mask {m.shape[0]}x{m.shape[1]}x{m.shape[2]} ({float(m.mean()) * 100:.1f}% may move)")
        return "; ".join(parts + list(self.notes)) or "empty guide"


def fit_frame(image: torch.Tensor, height: int, width: int, fit: str | None = None) -> torch.Tensor:
    """[H,W,3] -> [height,width,3]: bilinear stretch when ``fit`` is None, else ``image_ops.fit_image``."""
    if image.shape[:2] == (height, width):
        return image
    x = image.permute(2, 0, 1)[None]
    if fit is None:
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    else:
        x = fit_image(x, width, height, fit)
    return x[0].permute(1, 2, 0).clamp(0, 1)


def fit_mask(mask: torch.Tensor, height: int, width: int, fit: str | None = None) -> torch.Tensor:
    """[N,H,W] -> [N,height,width] with the same geometry :func:`fit_frame` gives an image of that size:
    bilinear stretch when ``fit`` is None; with a fit mode the crop window / letterbox of the images
    (the letterbox is 0: nothing moves there)."""
    if mask.shape[-2:] == (height, width):
        return mask.clamp(0, 1)
    if fit is None:
        return F.interpolate(mask[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)
    if fit not in FIT_MODES:
        raise AnimeVideoInputError(f"fit: '{fit}' is not one of {', '.join(FIT_MODES)}.")
    return fit_image(mask[:, None].expand(-1, 3, -1, -1), width, height, fit)[:, 0].clamp(0, 1)

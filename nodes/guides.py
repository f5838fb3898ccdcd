"""Guide nodes: keyframes at any frame and motion-area masks, one backbone-neutral ANIMEVIDEO_GUIDE wire.

Chain them (each takes an optional incoming guide); a sampler with a ``guide`` input maps the guide to its
latent layout and reports in its ``info`` output where each part landed. The work is in ``pipelines.guides``.
"""
from __future__ import annotations

import torch

from ..pipelines.errors import AnimeVideoInputError
from ..pipelines.guides import Guide
from ..pipelines.image_ops import comfy_image_to_bchw

GUIDE = "ANIMEVIDEO_GUIDE"
CATEGORY = "AnimeVideo/Guides"
GUIDE_IN_TOOLTIP = "An earlier guide to add to (chain keyframe and mask nodes); leave empty to start a new one."


def incoming(guide) -> Guide:
    if guide is None:
        return Guide()
    if not isinstance(guide, Guide):
        raise AnimeVideoInputError(f"guide: expected an {GUIDE} from an AnimeVideo guide node, got "
                                   f"{type(guide).__name__}.")
    return guide


class AnimeVideoKeyframe:
    DESCRIPTION = ("Places one picture at a frame of the clip (first, last or anywhere). Chain several for "
                   "in-betweening; the sampler holds each frame to its picture.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The keyframe (one image). Fitted to the sampler's output size "
                                    "with its fit mode, like the sampler's own image."}),
                "frame_index": ("INT", {"default": 0, "min": -4096, "max": 4095, "tooltip": "The frame it "
                                "goes to: 0 is the first frame; a negative index counts from the end (-1 is "
                                "the last frame). Must lie inside the clip's num_frames."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                             "How firmly the frame is held: 1 = exactly this picture (up to the VAE). SVD: lower "
                             "blends the model's own frame in at every step. AniSora Wan: the mask is binary "
                             "as trained, so 0.5-1 holds the frame and below 0.5 is an error. AniSora V1: "
                             "scales the keyframe latent."}),
            },
            "optional": {
                "guide": (GUIDE, {"tooltip": GUIDE_IN_TOOLTIP}),
            },
        }

    RETURN_TYPES = (GUIDE,)
    RETURN_NAMES = ("guide",)
    OUTPUT_TOOLTIPS = ("The guide with this keyframe added, for a sampler's guide input or the next guide node.",)
    FUNCTION = "add"
    CATEGORY = CATEGORY

    def add(self, image, frame_index, strength, guide=None):
        x = comfy_image_to_bchw(image, "image")  # alpha dropped, grey expanded, shape checked
        if x.shape[0] != 1:
            raise AnimeVideoInputError(
                f"image: got a batch of {x.shape[0]} images; a keyframe is one image. Pick one frame (e.g. "
                "core's ImageFromBatch) or chain one keyframe node per frame.")
        return (incoming(guide).with_keyframe(x[0].permute(1, 2, 0), int(frame_index), float(strength)),)


class AnimeVideoKeyframesFromBatch:
    DESCRIPTION = ("Places a batch of pictures on consecutive frames from start_frame: e.g. the last frames of "
                   "one clip (core's Image From Batch) at frame 0 of the next, to extend a clip; or a few frames "
                   "of a reference clip anywhere. Each picture becomes one keyframe.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The pictures, in order (an IMAGE batch; one keyframe each). "
                                     "Fitted to the sampler's output size with its fit mode."}),
                "start_frame": ("INT", {"default": 0, "min": -4096, "max": 4095, "tooltip": "The frame the first "
                                "picture goes to; the next ones follow. Negative counts from the end: -N with N "
                                "pictures places them on the clip's last N frames."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                             "How firmly each frame is held (as in Keyframe Guide). AniSora Wan: 0.5-1 holds, "
                             "below 0.5 is an error."}),
            },
            "optional": {
                "guide": (GUIDE, {"tooltip": GUIDE_IN_TOOLTIP}),
            },
        }

    RETURN_TYPES = (GUIDE,)
    RETURN_NAMES = ("guide",)
    OUTPUT_TOOLTIPS = ("The guide with one keyframe per picture, for a sampler's guide input or the next guide "
                       "node.",)
    FUNCTION = "add"
    CATEGORY = CATEGORY

    def add(self, images, start_frame, strength, guide=None):
        x = comfy_image_to_bchw(images, "images")  # alpha dropped, grey expanded, shape checked
        n, start = x.shape[0], int(start_frame)
        if start < 0 and start + n > 0:
            raise AnimeVideoInputError(
                f"start_frame: {start} with {n} pictures would run past the clip's last frame (negative start "
                f"frames count from the end); use {-n} to end on the last frame, or a start frame of 0 or more.")
        out = incoming(guide)
        for i in range(n):
            out = out.with_keyframe(x[i].permute(1, 2, 0), start + i, float(strength))
        return (out,)


class AnimeVideoMotionMask:
    DESCRIPTION = ("Localized animation: only the masked region may move, the rest of every frame stays "
                   "the keyframe's (or the sampler image's) picture.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "The region allowed to move (1/white). Paint it in ComfyUI's "
                                  "mask editor on the input picture and take Load Image's MASK output. One "
                                  "mask for all frames, or one per frame. Fitted to the output size with the "
                                  "sampler's fit mode when its size differs."}),
            },
            "optional": {
                "guide": (GUIDE, {"tooltip": GUIDE_IN_TOOLTIP + " The still part is taken from the keyframe "
                                  "nearest in time; without keyframes, from the sampler's image."}),
                "invert": ("BOOLEAN", {"default": False, "tooltip": "On: the mask marks the region that "
                                       "stays still instead."}),
            },
        }

    RETURN_TYPES = (GUIDE,)
    RETURN_NAMES = ("guide",)
    OUTPUT_TOOLTIPS = ("The guide with this motion mask (a later mask replaces an earlier one).",)
    FUNCTION = "add"
    CATEGORY = CATEGORY

    def add(self, mask, guide=None, invert=False):
        if not isinstance(mask, torch.Tensor):
            raise AnimeVideoInputError(f"mask: expected a MASK tensor, got {type(mask).__name__}.")
        m = mask.float()
        if invert:
            m = 1.0 - m.clamp(0, 1)
        return (incoming(guide).with_motion_mask(m),)


NODE_CLASS_MAPPINGS = {
    "AnimeVideoKeyframe": AnimeVideoKeyframe,
    "AnimeVideoMotionMask": AnimeVideoMotionMask,
    "AnimeVideoKeyframesFromBatch": AnimeVideoKeyframesFromBatch,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoKeyframe": "Keyframe Guide (AnimeVideo)",
    "AnimeVideoMotionMask": "Motion Mask Guide (AnimeVideo)",
    "AnimeVideoKeyframesFromBatch": "Keyframes From Batch Guide (AnimeVideo)",
}

"""Guide nodes: keyframes at any frame and motion-area masks, one backbone-neutral ANIMEVIDEO_GUIDE wire.

Chain them (each takes an optional incoming guide); a sampler with a ``guide`` input maps the guide to its
latent layout and reports in its ``info`` output where each part landed. The work is in ``pipelines.guides``.
"""
from __future__ import annotations

import torch

from ..pipelines import storyboard
from ..pipelines.errors import AnimeVideoInputError
from ..pipelines.guides import Guide
from ..pipelines.image_ops import FIT_MODES, comfy_image_to_bchw

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


MAX_STORYBOARD_SIDE = 16384  # px: a bigger picture is refused before it is drawn


class AnimeVideoGuidePreview:
    DESCRIPTION = ("Shows a guide chain as a storyboard before (or after) sampling: one thumbnail per frame, "
                   "keyframes outlined in orange with their strength, the region a motion mask lets move tinted "
                   "cyan, frames the guide leaves free in grey. Connect the sampler's frames to see the result "
                   "under the same marks.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "guide": (GUIDE, {"tooltip": "The guide chain to show (the last Keyframe / Motion Mask node's "
                                  "output, the one the sampler gets)."}),
                "num_frames": ("INT", {"default": 14, "min": 1, "max": 4096, "tooltip": "The sampler's "
                                       "num_frames: negative keyframe indices count back from it. Ignored when "
                                       "frames is connected (its frame count is used)."}),
                "width": ("INT", {"default": 1024, "min": 16, "max": 8192, "step": 8, "tooltip": "The sampler's "
                                  "output width (sets the thumbnails' aspect and how keyframes and masks are "
                                  "fitted). Ignored when frames is connected."}),
                "height": ("INT", {"default": 576, "min": 16, "max": 8192, "step": 8, "tooltip": "The sampler's "
                                   "output height. Ignored when frames is connected."}),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip": "The sampler's fit mode: how keyframe "
                                          "pictures and the mask meet the output size (crop / pad / stretch)."}),
            },
            "optional": {
                "frames": ("IMAGE", {"tooltip": "Optional: the sampled clip. Its frames become the thumbnails, "
                                     "with the keyframe outlines and the motion tint over them."}),
                "thumb_height": ("INT", {"default": 72, "min": 16, "max": 512, "tooltip": "Height of each "
                                         "thumbnail in pixels."}),
                "columns": ("INT", {"default": 8, "min": 1, "max": 64, "tooltip": "Thumbnails per row."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("storyboard", "info")
    OUTPUT_TOOLTIPS = ("The storyboard picture, for a Preview Image.",
                       "Where each keyframe lands and how much of the frame may move (also shown on the node).")
    FUNCTION = "preview"
    CATEGORY = CATEGORY

    def preview(self, guide, num_frames, width, height, fit, frames=None, thumb_height=72, columns=8):
        g = incoming(guide)
        if fit not in FIT_MODES:
            raise AnimeVideoInputError(f"fit: '{fit}' is not one of {', '.join(FIT_MODES)}.")
        clip = None
        if frames is not None:
            clip = comfy_image_to_bchw(frames, "frames").permute(0, 2, 3, 1)
            if clip.shape[0] == 0:
                raise AnimeVideoInputError("frames: the batch is empty; connect the sampled clip or leave it out.")
            num_frames, height, width = int(clip.shape[0]), int(clip.shape[1]), int(clip.shape[2])
        for name, value, low in (("num_frames", num_frames, 1), ("width", width, 1), ("height", height, 1),
                                 ("thumb_height", thumb_height, 16), ("columns", columns, 1)):
            if int(value) != value or value < low:
                raise AnimeVideoInputError(f"{name}: {value} is not allowed; give a whole number of at least {low}.")
        layout = storyboard.storyboard_layout(int(num_frames), int(width), int(height), int(thumb_height),
                                              int(columns))
        if max(layout.size) > MAX_STORYBOARD_SIDE:
            raise AnimeVideoInputError(
                f"num_frames: {num_frames} thumbnails of {layout.thumb_w}x{layout.thumb_h} px in {layout.columns} "
                f"columns make a {layout.size[1]}x{layout.size[0]} px picture (at most {MAX_STORYBOARD_SIDE} px a "
                "side); raise columns or lower thumb_height.")
        picture, layout = storyboard.guide_storyboard(g, int(num_frames), int(width), int(height), fit, clip,
                                                      int(thumb_height), int(columns))
        lines = [f"Guide on a clip of {num_frames} frames, {width}x{height}, fit {fit}: {g.describe()}."]
        for r in g.resolve_keyframes(int(num_frames)):
            asked = "" if r.requested == r.index else f" (frame_index {r.requested})"
            lines.append(f"Frame {r.index}{asked}: keyframe, strength {r.keyframe.strength:g}.")
        if g.motion_mask is not None:
            lines.append("Tinted region: may move on the frames between keyframes; the rest is held to the nearest "
                         "keyframe.")
        info = "\n".join(lines)
        image = torch.from_numpy(picture).float().div(255)[None]
        return {"ui": {"text": [info]}, "result": (image, info)}


NODE_CLASS_MAPPINGS = {
    "AnimeVideoKeyframe": AnimeVideoKeyframe,
    "AnimeVideoMotionMask": AnimeVideoMotionMask,
    "AnimeVideoGuidePreview": AnimeVideoGuidePreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoKeyframe": "Keyframe Guide (AnimeVideo)",
    "AnimeVideoMotionMask": "Motion Mask Guide (AnimeVideo)",
    "AnimeVideoGuidePreview": "Guide Storyboard (AnimeVideo)",
}

"""AniSora on core ComfyUI's own Wan models: the guide (keyframes at any frame, motion masks) becomes the
conditioning core's KSampler hands to a core Wan MODEL (Load Diffusion Model), like core's WanImageToVideo.

The packing is ``pipelines.anisora.core_route`` (our own path's Φ4 packing, in core's concat convention); the
one VAE pass runs through core's VAE object.
"""
from __future__ import annotations

import torch

from ..pipelines.anisora import core_route
from ..pipelines.errors import AnimeVideoInputError
from ..pipelines.guides import Guide
from ..pipelines.image_ops import FIT_MODES
from . import comfy_bridge as bridge
from .common import check_clip_memory, clip_bytes
from .guides import GUIDE

CATEGORY = "AnimeVideo/AniSora"
MEMORY_ADVICE = "Lower length or width/height."


def conditioning_with(conditioning, values: dict):
    """A copy of a CONDITIONING with ``values`` set on every entry (core's node_helpers.conditioning_set_values)."""
    if not isinstance(conditioning, (list, tuple)) or not all(
            isinstance(t, (list, tuple)) and len(t) >= 2 and isinstance(t[1], dict) for t in conditioning):
        raise AnimeVideoInputError("positive/negative: expected a CONDITIONING from CLIP Text Encode.")
    return [[t[0], {**t[1], **values}] for t in conditioning]


class AnimeVideoAniSoraWanConditioning:
    DESCRIPTION = ("AniSora keyframes and motion masks for core's Wan nodes: turns the guide into AniSora's "
                   "spatiotemporal mask + guide latent on the prompt conditioning (like core's WanImageToVideo), "
                   "for KSampler with an AniSora V2/V3/anymask model from Load Diffusion Model (add "
                   "ModelSamplingSD3, shift 5; V3: 8 steps, cfg 1). Works with any core sampler, LoRA or model "
                   "patch. The info output says where each keyframe landed in latent time.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The prompt from CLIP Text Encode (CLIPLoader type "
                             "wan, umt5_xxl). Add AniSora's micro-conditions with AniSora Prompt."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt from CLIP Text Encode (used when "
                             "KSampler's cfg is above 1)."}),
                "vae": ("VAE", {"tooltip": "The Wan2.1 VAE from Load VAE (wan_2.1_vae.safetensors): encodes the "
                        "guide video once."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16, "tooltip": "Output width "
                          "in px, a multiple of 16. AniSora V3: 1280x720 or 832x480 (480p)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16, "tooltip": "Output "
                           "height in px, a multiple of 16."}),
                "length": ("INT", {"default": 81, "min": 1, "max": 1025, "step": 4, "tooltip": "Frames, 4k+1 "
                           "(49, 81 ...; other counts are snapped to the nearest and reported in info). 16 fps: "
                           "81 frames are 5 s."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Clips sampled at once "
                               "(the same guide, different noise)."}),
            },
            "optional": {
                "guide": (GUIDE, {"tooltip": "Keyframes (Keyframe Guide: frame_index 0 for image-to-video, -1 "
                          "for the last frame, any frame between) and optionally a motion mask (Motion Mask "
                          "Guide: only that region moves). The masks are binary: a keyframe strength of 0.5 or "
                          "more counts as 1, a lower one is an error. Empty: every frame is generated."}),
                "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIP Vision Encode (clip_vision_h, "
                                       "crop none) of the first keyframe: Wan2.1 I2V (AniSora V2/V3) reads it."}),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How keyframes and masks of another "
                        "size meet width x height: crop (centre crop), pad (letterbox) or stretch."}),
            },
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT", "STRING")
    RETURN_NAMES = ("positive", "negative", "latent", "info")
    OUTPUT_TOOLTIPS = ("The prompt with AniSora's mask + guide latent, for KSampler's positive.",
                       "The negative prompt with the same mask + guide latent, for KSampler's negative.",
                       "An empty latent of the clip's size (batch_size clips), for KSampler's latent_image.",
                       "Sizes and where each keyframe landed in latent time.")
    FUNCTION = "condition"
    CATEGORY = CATEGORY

    def condition(self, positive, negative, vae, width, height, length, batch_size, guide=None,
                  clip_vision_output=None, fit="crop"):
        if guide is not None and not isinstance(guide, Guide):
            raise AnimeVideoInputError(f"guide: expected an {GUIDE} from an AnimeVideo guide node.")
        if not callable(getattr(vae, "encode", None)):
            raise AnimeVideoInputError("vae: expected a VAE from Load VAE (the Wan2.1 VAE).")
        check_clip_memory(f"the AniSora guide video ({int(length)} frames of {int(width)}x{int(height)})",
                          clip_bytes(length, height, width), clip_bytes(length, height, width), MEMORY_ADVICE)

        progress = bridge.Progress(2, desc="AniSora conditioning")

        def encode(frames):  # core's VAE: IMAGE [F, H, W, 3] in 0..1 -> raw latent [1, 16, T, h, w]
            progress.set(1)  # the guide is packed; the one VAE pass follows
            bridge.check_interrupt()
            return vae.encode(frames[:, :, :, :3])

        try:
            core = core_route.build_core_condition(guide, int(length), int(height), int(width), encode, fit)
            progress.set(2)
        finally:
            progress.close()
        values = {"concat_latent_image": core.concat_latent_image, "concat_mask": core.concat_mask}
        if clip_vision_output is not None:
            values["clip_vision_output"] = clip_vision_output
        positive = conditioning_with(positive, values)
        negative = conditioning_with(negative, values)
        latent = torch.zeros((int(batch_size),) + core.latent_shape, device=bridge.intermediate_device())
        return (positive, negative, {"samples": latent}, core.condition.describe())


NODE_CLASS_MAPPINGS = {
    "AnimeVideoAniSoraWanConditioning": AnimeVideoAniSoraWanConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoAniSoraWanConditioning": "AniSora Wan Conditioning (AnimeVideo)",
}

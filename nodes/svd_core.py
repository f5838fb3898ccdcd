"""SVD keyframes and motion masks on core ComfyUI's own SVD graph: a MODEL patch that applies the pack's
training-free guide (``pipelines.svd.guided``) at every step of core's sampler, through core's
``sampler_post_cfg_function`` hook (it receives the denoised estimate after cfg and returns the one the sampler
steps with: any sampler, any scheduler).
"""
from __future__ import annotations

from ..pipelines.errors import AnimeVideoInputError
from ..pipelines.guides import Guide, fit_frame
from ..pipelines.image_ops import FIT_MODES
from ..pipelines.svd import guided
from . import comfy_bridge as bridge
from .guides import GUIDE

CATEGORY = "AnimeVideo/SVD"


class _LatentGeometry:
    def __init__(self, spatial_factor: int, latent_channels: int):
        self.spatial_factor, self.latent_channels = spatial_factor, latent_channels


class AnimeVideoSVDGuideModelPatch:
    DESCRIPTION = ("Keyframes at any frame and motion masks on core's SVD nodes (Image Only Checkpoint Loader -> "
                   "SVD_img2vid_Conditioning -> KSampler): patches the MODEL so that at every sampling step the "
                   "denoised estimate of the held latents is replaced by the clean guide latents (keyframe frames; "
                   "outside the motion mask, dilated by one latent pixel, every frame). Works with any core "
                   "sampler and scheduler.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SVD model from Image Only Checkpoint Loader (after any other "
                          "model patches)."}),
                "vae": ("VAE", {"tooltip": "The SVD VAE from Image Only Checkpoint Loader: encodes the keyframes."}),
                "guide": (GUIDE, {"tooltip": "Keyframes (Keyframe Guide: frame_index, -1 = last, strength) and "
                          "optionally a motion mask (Motion Mask Guide: only that region moves)."}),
                "width": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 8, "tooltip": "The width "
                          "set in SVD_img2vid_Conditioning."}),
                "height": ("INT", {"default": 576, "min": 64, "max": 4096, "step": 8, "tooltip": "The height "
                           "set in SVD_img2vid_Conditioning."}),
                "video_frames": ("INT", {"default": 14, "min": 1, "max": 4096, "tooltip": "The video_frames "
                                 "set in SVD_img2vid_Conditioning."}),
            },
            "optional": {
                "init_image": ("IMAGE", {"tooltip": "The init_image of SVD_img2vid_Conditioning: with a motion "
                               "mask and no keyframe, the static region is held from it."}),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How keyframes and masks of another size "
                        "meet width x height: crop (centre crop, as SVD_img2vid_Conditioning), pad or stretch."}),
            },
        }

    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The SVD model with the guide applied at every step, for KSampler.",
                       "Where each keyframe landed and what the motion mask holds.")
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, vae, guide, width, height, video_frames, init_image=None, fit="crop"):
        if not isinstance(guide, Guide):
            raise AnimeVideoInputError(f"guide: expected an {GUIDE} from an AnimeVideo guide node.")
        for name, value, need in (("model", model, "clone"), ("vae", vae, "encode")):
            if not callable(getattr(value, need, None)):
                raise AnimeVideoInputError(f"{name}: expected core's {name.upper()} from Image Only Checkpoint "
                                           "Loader.")
        width, height, frames = int(width), int(height), int(video_frames)
        factor = int(vae.spacial_compression_encode()) if hasattr(vae, "spacial_compression_encode") else 8
        if width % factor or height % factor:
            raise AnimeVideoInputError(f"width/height: {width}x{height} is not a multiple of the VAE's {factor}x "
                                       "(SVD_img2vid_Conditioning's latent would not match).")
        base = getattr(model, "model", None)
        process_in = getattr(base, "process_latent_in", None)
        if process_in is None:
            raise AnimeVideoInputError("model: expected core's SVD MODEL (Image Only Checkpoint Loader).")

        progress = bridge.Progress(2, desc="SVD guide")

        def encode(images):  # [N,3,H,W] 0..1 -> model-space latents, through core's VAE and latent format
            progress.set(1)  # the guide is planned; the VAE pass over its pictures follows
            bridge.check_interrupt()
            return process_in(vae.encode(images.permute(0, 2, 3, 1)[:, :, :, :3]).float())

        if init_image is not None:
            image = fit_frame(init_image[0, :, :, :3].float().cpu(), height, width, fit)
        elif guide.keyframes:
            image = fit_frame(guide.resolve_keyframes(frames)[0].keyframe.image, height, width, fit)
        else:
            raise AnimeVideoInputError("init_image: a motion mask without keyframes holds the static region from "
                                       "SVD_img2vid_Conditioning's init_image; connect it here too.")
        try:
            plan = guided.plan_svd_guide(_LatentGeometry(factor, int(getattr(vae, "latent_channels", 4))), guide,
                                         image.permute(2, 0, 1)[None], frames, fit,
                                         "SVD_img2vid_Conditioning's init_image", encode=encode)
            progress.set(2)
        finally:
            progress.close()
        if plan is None:
            raise AnimeVideoInputError("guide: it holds no keyframe and no motion mask.")
        replace = guided.replace_denoised(plan)
        patched = model.clone()
        patched.set_model_sampler_post_cfg_function(lambda args: replace(args["denoised"]))
        return (patched, plan.info)


NODE_CLASS_MAPPINGS = {"AnimeVideoSVDGuideModelPatch": AnimeVideoSVDGuideModelPatch}
NODE_DISPLAY_NAME_MAPPINGS = {"AnimeVideoSVDGuideModelPatch": "SVD Guide Model Patch (AnimeVideo)"}

"""SVD image-to-video nodes: a loader and a sampler. The work happens in ``pipelines.svd``."""
from __future__ import annotations

import os

import torch

from ..pipelines.checkpoint_io import FileIdentity, resolve_in_folders
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.image_ops import FIT_MODES, comfy_image_to_bchw, fit_image
from ..pipelines.svd import decode as svd_decode
from ..pipelines.svd import guided as svd_guided
from ..pipelines.svd import loader as svd_loader
from ..pipelines.svd import pipeline as svd_pipeline
from . import comfy_bridge as bridge
from ..pipelines import memory
from .common import (LoaderSpec, ModelHandle, ModelOnDevice, cached_model, can_fetch, check_clip_memory, clip_bytes,
                     diffusion_working_bytes, explain_missing, fetch_model, input_copy_bytes, make_loader_node,
                     with_fetchable)
from .guides import GUIDE, incoming as incoming_guide

SVD_MODEL = "ANIMEVIDEO_SVD"
LONG_VIDEO = "ANIMEVIDEO_LONG_VIDEO"  # from AnimeVideo Long Video Options (nodes/lvcd.py)
CKPT_EXTENSIONS = (".safetensors", ".sft", ".ckpt")
DTYPES = ["auto", "fp32", "fp16", "bf16"]
CATEGORY = "AnimeVideo/SVD"
MEMORY_ADVICE = ("Lower num_frames or width/height, or make the clip in parts " + memory.CHUNK_ADVICE +
                 " (long_video bounds the sampling memory, not the finished clip's).")

EXPECTED_SVD = (
    "Expected an SVD checkpoint in models/checkpoints: svd_xt.safetensors, svd.safetensors or "
    "svd_xt_1_1.safetensors (from huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt, "
    "…-img2vid or …-img2vid-xt-1-1), or an anime fine-tune in the same layout; or a diffusers folder "
    "with unet/, vae/ and image_encoder/ in models/diffusers (e.g. stable-video-diffusion-img2vid-xt)."
)


def svd_model_names() -> list[str]:
    files = with_fetchable(bridge.list_files("checkpoints", CKPT_EXTENSIONS), "checkpoints")
    folders = bridge.list_dirs("diffusers", svd_loader.is_diffusers_svd_folder)
    return files + folders


def resolve_svd_path(ckpt_name: str, download_if_missing: bool = False, fetch: bool = True) -> str | None:
    """A file in models/checkpoints or a folder in models/diffusers; a missing pinned file is downloaded into
    models/checkpoints when ``download_if_missing`` (``fetch`` False: only say whether it could be)."""
    try:
        return resolve_in_folders(ckpt_name, bridge.model_folders("checkpoints"), "ckpt_name")
    except FileNotFoundError:
        pass
    try:
        path = resolve_in_folders(ckpt_name, bridge.model_folders("diffusers"), "ckpt_name")
        if os.path.isdir(path):
            return path
    except FileNotFoundError:
        pass
    if can_fetch("checkpoints", ckpt_name, download_if_missing):
        return fetch_model("checkpoints", ckpt_name) if fetch else None
    raise AnimeVideoModelError(explain_missing(missing_model_message(ckpt_name), "checkpoints", ckpt_name,
                                               download_if_missing))


def missing_model_message(ckpt_name: str) -> str:
    return (
        f"ckpt_name: '{ckpt_name}' was not found in models/checkpoints ({bridge.models_dir_hint('checkpoints')}) "
        f"or models/diffusers ({bridge.models_dir_hint('diffusers')}). {EXPECTED_SVD}"
    )


def open_svd(ckpt_name: str, dtype: str = "auto", download_if_missing: bool = False):
    """(cache key, load, name, path) of the SVD model for these loader inputs (see LoaderSpec.open)."""
    path = resolve_svd_path(ckpt_name, download_if_missing)
    torch_dtype = svd_loader.resolve_dtype(dtype, bridge.torch_device())
    key = ("svd", FileIdentity.of(path), str(torch_dtype))
    return key, lambda: svd_loader.load_svd(path, torch_dtype).to(bridge.offload_device()), ckpt_name, path


def load_svd_cached(ckpt_name: str, dtype_name: str, download_if_missing: bool = False):
    """The managed SVD model (shared through the model cache)."""
    return cached_model(*open_svd(ckpt_name, dtype_name, download_if_missing))


class SVDHandle(ModelHandle):
    """What flows along the ANIMEVIDEO_SVD wire: the shared model plus this loader's placement choice."""


AnimeVideoLoadSVD = make_loader_node(LoaderSpec(
    node_id="AnimeVideoLoadSVD",
    description="Loads Stable Video Diffusion (sgm single file or diffusers folder) for the AnimeVideo samplers.",
    model_inputs=lambda: {"ckpt_name": (svd_model_names(), {
        "tooltip": "An SVD checkpoint in models/checkpoints (svd_xt.safetensors, svd.safetensors, "
                   "svd_xt_1_1.safetensors or an anime fine-tune in that layout) or a diffusers folder "
                   "in models/diffusers."})},
    dtypes=DTYPES,
    dtype_tooltip="Weight precision. auto: fp16 on a GPU, fp32 on the CPU. The VAE stays fp32 when fp16 is chosen "
                  "(it overflows in fp16).",
    return_type=SVD_MODEL, return_name="svd_model",
    output_tooltip="The loaded SVD model, for AnimeVideo SVD Sampler.",
    category=CATEGORY,
    open=open_svd,
    checks=lambda ckpt_name, download_if_missing: [
        lambda: resolve_svd_path(ckpt_name, download_if_missing, fetch=False)],
    requires="SVD",
    handle=lambda ref, keep_on_gpu, inputs: SVDHandle(keep_on_gpu=keep_on_gpu, ref=ref),
))


def svd_working_bytes(model, num_frames: int, width: int, height: int, max_cfg: float) -> int:
    """The run's activations beyond the weights, for core's load_models_gpu (see diffusion_working_bytes)."""
    f = model.spatial_factor
    return diffusion_working_bytes(num_frames, height // f, width // f, 320, model.dtype.itemsize,
                                   2 if max_cfg > 1 else 1)


def single_image(image, input_name="image") -> torch.Tensor:
    x = comfy_image_to_bchw(image, input_name)
    if x.shape[0] != 1:
        raise AnimeVideoInputError(
            f"{input_name}: got a batch of {x.shape[0]} images; this input takes one image. "
            "Pick one frame first (e.g. core's ImageFromBatch)."
        )
    return x


class AnimeVideoSVDSampler:
    DESCRIPTION = ("Image-to-video with Stable Video Diffusion: EDM Euler sampling with frame-linear CFG, "
                   "decoded in chunks by the temporal VAE.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "svd_model": (SVD_MODEL, {"tooltip": "From AnimeVideo Load SVD."}),
                "image": ("IMAGE", {"tooltip": "The first frame (one image)."}),
                "width": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 8,
                                  "tooltip": "Output width in px, a multiple of 8. SVD was trained at 1024x576."}),
                "height": ("INT", {"default": 576, "min": 64, "max": 4096, "step": 8,
                                   "tooltip": "Output height in px, a multiple of 8. SVD was trained at 1024x576."}),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How the image meets the output size: crop "
                        "(centre crop, as core does), pad (letterbox in black) or stretch (as diffusers does)."}),
                "num_frames": ("INT", {"default": 25, "min": 1, "max": 4096, "tooltip": "Frames to generate "
                               "(SVD: 14, SVD-XT: 25)."}),
                "fps": ("FLOAT", {"default": 7.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "The clip's "
                        "real frame rate; the model is conditioned on fps-1, as Stability and diffusers do."}),
                "motion_bucket_id": ("INT", {"default": 127, "min": 0, "max": 1023, "tooltip": "Amount of motion; "
                                     "higher moves more."}),
                "augmentation_level": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "Noise added to the conditioning image. Lower stays closer to "
                                       "the image; higher allows more change."}),
                "steps": ("INT", {"default": 25, "min": 1, "max": 200, "tooltip": "Euler steps on the Karras "
                          "schedule (sigma 700 to 0.002)."}),
                "min_cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "Guidance "
                            "at the first frame; it rises linearly to max_cfg at the last."}),
                "max_cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "Guidance "
                            "at the last frame. At 1 or below no unconditional pass is run (about 2x faster)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF, "control_after_generate": True,
                         "tooltip": "Noise seed; the same seed gives the same clip on any device."}),
                "decode_chunk_size": ("INT", {"default": 8, "min": 1, "max": 4096, "tooltip": "Frames the VAE "
                                      "decodes at once. Lower uses less memory."}),
            },
            "optional": {
                "decode_tile_size": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8, "tooltip": "Decode in "
                                     "spatial tiles of this many px (seams blended); 0 decodes whole frames. Use for "
                                     "large frames that run out of memory."}),
                "latent_preview": ("BOOLEAN", {"default": True, "tooltip": "Show a rough preview of the middle "
                                   "frame on the node at every step (when ComfyUI's preview method is not "
                                   "'none')."}),
                "guide": (GUIDE, {"tooltip": "Keyframes at any frame and/or a motion mask (AnimeVideo Keyframe "
                          "Guide, Motion Mask Guide), applied training-free: at every step the guided frames "
                          "and the mask's still region are pulled to the guide. The image input stays the "
                          "conditioning picture; wire the first keyframe there too. With long_video the guide covers the "
                          "whole clip (frame_index -1 = its last frame) and acts in every segment."}),
                "long_video": (LONG_VIDEO, {"tooltip": "From AnimeVideo Long Video Options: sample num_frames in "
                               "overlapping segments of segment_length (overlapped blending + prev-reference "
                               "attention), so clips of any length fit in the memory of one segment. The first "
                               "segment is plain SVD. Unconnected: one pass of num_frames, as before."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "LATENT", "FLOAT", "STRING")
    RETURN_NAMES = ("frames", "latent", "fps", "info")
    OUTPUT_TOOLTIPS = ("The clip as an IMAGE batch [frames, H, W, 3].",
                       "The clip's latents in ComfyUI's SVD layout (decodable by core's VAE Decode).",
                       "The frame rate, for core's Create Video.",
                       "What was run: where each guide landed (frame, latent frame, mask region).")
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, svd_model, image, width, height, fit, num_frames, fps, motion_bucket_id, augmentation_level,
               steps, min_cfg, max_cfg, seed, decode_chunk_size, decode_tile_size=0, latent_preview=True,
               guide=None, long_video=None):
        handle = svd_model
        # the decoded clip, the decoder's copy of it, the latents
        check_clip_memory(f"the SVD clip ({int(num_frames)} frames of {int(width)}x{int(height)})",
                          clip_bytes(num_frames, height, width),
                          clip_bytes(num_frames, height, width) + input_copy_bytes(image), MEMORY_ADVICE)
        managed = handle.managed
        model = managed.pack_model
        x = fit_image(single_image(image), int(width), int(height), fit)
        req = svd_pipeline.SVDRequest(
            num_frames=int(num_frames), fps=float(fps), motion_bucket_id=float(motion_bucket_id),
            augmentation_level=float(augmentation_level), steps=int(steps), min_cfg=float(min_cfg),
            max_cfg=float(max_cfg), seed=int(seed), decode_chunk_size=int(decode_chunk_size),
            tile_size=int(decode_tile_size) // model.spatial_factor if decode_tile_size else 0,
        )
        if long_video is not None:
            return self._sample_long(handle, managed, x, req, fit, latent_preview, guide, long_video)
        latent_preview = latent_preview and bridge.previews_enabled()
        decode_chunks = -(-req.num_frames // max(1, req.decode_chunk_size))
        progress = bridge.Progress(req.steps + decode_chunks, desc="SVD")
        mid = req.num_frames // 2

        def on_step(state):
            preview = svd_decode.latent_preview_rgb(state.denoised[0, mid]) if latent_preview else None
            progress.update(1, preview)

        def on_decode_chunk(done, total):
            progress.set(req.steps + -(-done // req.decode_chunk_size))

        hooks = svd_pipeline.SVDRunHooks(on_step=on_step, on_decode_chunk=on_decode_chunk)
        working = svd_working_bytes(model, req.num_frames, int(width), int(height), req.max_cfg)
        try:
            with ModelOnDevice(managed, handle.keep_on_gpu, working, "the SVD run", MEMORY_ADVICE):
                info = svd_guided.no_guide_info(req.num_frames, int(width), int(height))
                if guide is not None:
                    svd_pipeline.check_request(model, x, req)
                    plan = svd_guided.plan_svd_guide(model, incoming_guide(guide), x, req.num_frames, fit)
                    if plan is not None:
                        hooks.denoised_hooks = list(hooks.denoised_hooks) + [plan.hook()]
                        info = plan.info
                result = svd_pipeline.image_to_video(model, x, req, hooks)
        finally:
            progress.close()
        latent = {"samples": (result.latents[0] / model.vae_scaling_factor).float().cpu()}
        return (result.frames, latent, float(fps), info)

    def _sample_long(self, handle, managed, x, req, fit, latent_preview, guide, long_video):
        from ..pipelines.long_video import svd_long

        model = managed.pack_model
        latent_preview = latent_preview and bridge.previews_enabled()
        svd_pipeline.check_request(model, x, req)
        passes = svd_long.num_passes(req.num_frames, long_video.validate())
        sampling = passes * req.steps
        decode_chunks = -(-req.num_frames // max(1, req.decode_chunk_size))
        progress = bridge.Progress(sampling + decode_chunks, desc="SVD long video")

        def on_segment_step(i, state):
            bridge.check_interrupt()
            latent = state.denoised[0, state.denoised.shape[1] - 1]
            progress.update(1, svd_decode.latent_preview_rgb(latent) if latent_preview else None)

        def on_decode_chunk(done, total):
            progress.set(sampling + -(-done // req.decode_chunk_size))

        hooks = svd_pipeline.SVDRunHooks(on_decode_chunk=on_decode_chunk)
        plan = None
        working = svd_working_bytes(model, long_video.segment_length, x.shape[-1], x.shape[-2], req.max_cfg)
        try:
            with ModelOnDevice(managed, handle.keep_on_gpu, working, "the SVD long-video run", MEMORY_ADVICE):
                if guide is not None:  # one plan for the whole clip; each segment pass takes its frames
                    plan = svd_guided.plan_svd_guide(model, incoming_guide(guide), x, req.num_frames, fit)
                result = svd_long.long_image_to_video(model, x, req, long_video, hooks, on_segment_step, guide=plan)
        finally:
            progress.close()
        latent = {"samples": (result.latents[0] / model.vae_scaling_factor).float().cpu()}
        segs = result.segments
        info = (f"long video: {req.num_frames} frames at {x.shape[-1]}x{x.shape[-2]} in {passes} segments "
                f"(start, known): " + ", ".join(f"({s.start}, {s.known})" for s in segs))
        if plan is not None:
            info = "\n".join([plan.info, info, result.guide_info])
        return (result.frames, latent, float(req.fps), info)


NODE_CLASS_MAPPINGS = {
    "AnimeVideoLoadSVD": AnimeVideoLoadSVD,
    "AnimeVideoSVDSampler": AnimeVideoSVDSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoLoadSVD": "Load SVD (AnimeVideo)",
    "AnimeVideoSVDSampler": "SVD Image to Video (AnimeVideo)",
}

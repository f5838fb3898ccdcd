"""Text-to-video (ModelScopeT2V) and image+text-to-video (I2VGen-XL) nodes: two loaders and two samplers, the
initial-frame generators of the anime pipeline paper next to SVD. The work happens in ``pipelines.t2v``."""
from __future__ import annotations

import os

import torch

from ..pipelines import memory
from ..pipelines.checkpoint_io import FileIdentity, resolve_in_folders
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.svd import decode as svd_decode
from ..pipelines.t2v import loader as t2v_loader
from ..pipelines.t2v import pipeline as t2v_pipeline
from ..pipelines.t2v.sampler import SCHEDULER_CHOICES
from . import comfy_bridge as bridge
from .common import (LoaderSpec, ModelHandle, ModelOnDevice, check_clip_memory, clip_bytes, input_copy_bytes,
                     make_loader_node)
from .svd import single_image

MODELSCOPE_MODEL = "ANIMEVIDEO_MODELSCOPE_T2V"
I2VGENXL_MODEL = "ANIMEVIDEO_I2VGENXL"
DTYPES = ["auto", "fp32", "fp16", "bf16"]
CATEGORY = "AnimeVideo/Text to video"
MEMORY_ADVICE = "Lower num_frames or width/height, " + memory.CHUNK_ADVICE + "."
# diffusers' I2VGen-XL example's negative prompt (the original repo's demo uses the same words)
I2VGENXL_NEGATIVE = ("Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, "
                     "disconnected limbs, Ugly faces, incomplete arms")
KINDS = {
    t2v_loader.MODELSCOPE: dict(check=t2v_loader.is_modelscope_folder, folder="text-to-video-ms-1.7b"),
    t2v_loader.I2VGENXL: dict(check=t2v_loader.is_i2vgenxl_folder, folder="i2vgen-xl"),
}


def folder_names(kind: str) -> list[str]:
    return bridge.list_dirs("diffusers", KINDS[kind]["check"])


def missing_message(kind: str, name: str) -> str:
    repo, folder = t2v_loader.RELEASED[kind], KINDS[kind]["folder"]
    return (f"model_name: '{name}' is not a folder in models/diffusers ({bridge.models_dir_hint('diffusers')}). "
            f"Expected the {kind} diffusers folder: download huggingface.co/{repo} (its safetensors files and "
            f"configs) into models/diffusers/{folder}, e.g. `hf download {repo} --local-dir "
            f"models/diffusers/{folder} --include \"*.json\" \"*.txt\" \"*.fp16.safetensors\"`.")


def resolve_folder(kind: str, name: str) -> str:
    try:
        path = resolve_in_folders(name, bridge.model_folders("diffusers"), "model_name")
    except FileNotFoundError:
        raise AnimeVideoModelError(missing_message(kind, name)) from None
    if not os.path.isdir(path):
        raise AnimeVideoModelError(missing_message(kind, name))
    t2v_loader.require_kind(path, kind)
    return path


def open_t2v(kind: str, model_name: str, dtype: str = "auto"):
    """(cache key, load, name, path) of the model for these loader inputs (see LoaderSpec.open)."""
    path = resolve_folder(kind, model_name)
    torch_dtype = weights_dtype(dtype)
    key = ("t2v", kind, FileIdentity.of(path), str(torch_dtype))
    return (key, lambda: t2v_loader.load_folder(path, torch_dtype, kind).to(bridge.offload_device()),
            model_name, path)


def weights_dtype(name: str) -> torch.dtype:
    from ..pipelines.svd.loader import resolve_dtype  # the pack's one auto/fp32/fp16/bf16 rule

    return resolve_dtype(name, bridge.torch_device())


class T2VHandle(ModelHandle):
    """What flows along the model wire: the shared model plus this loader's placement choice."""


def _loader_spec(kind: str, node_id: str, description: str, return_type: str, return_name: str,
                 output_tooltip: str) -> LoaderSpec:
    return LoaderSpec(
        node_id=node_id, description=description,
        model_inputs=lambda: {"model_name": (folder_names(kind), {
            "tooltip": f"A {kind} diffusers folder in models/diffusers (huggingface.co/"
                       f"{t2v_loader.RELEASED[kind]}), told apart by its unet's class, not its name."})},
        dtypes=DTYPES,
        dtype_tooltip="Weight precision. auto: fp16 on a GPU, fp32 on the CPU. The VAE stays fp32 when fp16 is "
                      "chosen (it overflows in fp16).",
        return_type=return_type, return_name=return_name, output_tooltip=output_tooltip, category=CATEGORY,
        open=lambda model_name, dtype="auto": open_t2v(kind, model_name, dtype),
        checks=lambda model_name: [lambda: resolve_folder(kind, model_name)],
        download=False,
        requires="SVD",  # the same diffusers/transformers floors (UNet3D and I2VGen-XL are older)
        handle=lambda ref, keep_on_gpu, inputs: T2VHandle(keep_on_gpu=keep_on_gpu, ref=ref),
    )


AnimeVideoLoadModelScopeT2V = make_loader_node(_loader_spec(
    t2v_loader.MODELSCOPE, "AnimeVideoLoadModelScopeT2V",
    "Loads ModelScopeT2V (damo-vilab/text-to-video-ms-1.7b diffusers folder: UNet3D, SD VAE, OpenCLIP ViT-H text "
    "tower, tokenizer, scheduler) for AnimeVideo ModelScope Text to Video.",
    MODELSCOPE_MODEL, "t2v_model", "The loaded ModelScopeT2V model."))
AnimeVideoLoadI2VGenXL = make_loader_node(_loader_spec(
    t2v_loader.I2VGENXL, "AnimeVideoLoadI2VGenXL",
    "Loads I2VGen-XL (ali-vilab/i2vgen-xl diffusers folder: I2VGen-XL UNet, SD VAE, OpenCLIP ViT-H text and image "
    "towers, tokenizer, scheduler) for AnimeVideo I2VGen-XL Image to Video.",
    I2VGENXL_MODEL, "i2vgen_model", "The loaded I2VGen-XL model."))


def conditioning_tensor(value, name: str) -> torch.Tensor | None:
    """The text embedding of a core CONDITIONING ([[tensor, {...}]]), or None when unconnected."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 1 or not isinstance(value[0], (list, tuple)) \
            or not isinstance(value[0][0], torch.Tensor):
        n = len(value) if isinstance(value, (list, tuple)) else 0
        raise AnimeVideoInputError(
            f"{name}: expected one text conditioning from CLIP Text Encode, got {n or type(value).__name__} "
            "entries; combined or concatenated conditionings are not taken, encode one prompt.")
    return value[0][0].float()


def _text_inputs(negative_default: str) -> dict:
    return {
        "prompt": ("STRING", {"multiline": True, "default": "an anime girl with long hair turns around and smiles, "
                              "cherry blossoms falling, anime style", "tooltip": "What happens in the clip, encoded "
                              "by the model's own OpenCLIP ViT-H text tower (77 tokens; longer text is cut). Empty "
                              "is allowed: the clip is then not steered by text."}),
        "negative_prompt": ("STRING", {"multiline": True, "default": negative_default,
                                       "tooltip": "What to steer away from (the unconditional side of guidance)."}),
    }


def _sampling_inputs(steps: int = 50) -> dict:
    return {
        "steps": ("INT", {"default": steps, "min": 1, "max": 1000, "tooltip": "Scheduler steps."}),
        "guidance_scale": ("FLOAT", {"default": 9.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-"
                           "free guidance. At 1 or below no unconditional pass is run (about 2x faster)."}),
        "scheduler": (list(SCHEDULER_CHOICES), {"default": "as released", "tooltip": "as released: the folder's "
                      "own scheduler (DDIM for both models). dpm++ 2m: DPMSolverMultistep on the same schedule, as "
                      "StreamingT2V samples ModelScope. euler: EulerDiscrete on the same schedule."}),
        "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "DDIM's eta: 0 is "
                "deterministic, 1 adds fresh noise each step (StreamingT2V uses 1). Other schedulers ignore it."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF, "control_after_generate": True,
                 "tooltip": "Noise seed; the same seed gives the same clip as diffusers' pipeline with "
                 "torch.Generator().manual_seed(seed)."}),
        "decode_chunk_size": ("INT", {"default": 8, "min": 1, "max": 4096, "tooltip": "Frames the VAE decodes at "
                              "once (frames are decoded independently; lower uses less memory)."}),
    }


_OPTIONAL_TEXT = {
    "positive": ("CONDITIONING", {"tooltip": "Optional: core's CLIP Text Encode output, replacing the prompt. Load "
                 "the folder's text_encoder/model.safetensors with core's Load CLIP (type stable_diffusion, it is "
                 "detected as SD 2's OpenCLIP-H and read at the same layer). Gives core's prompt weighting and "
                 "prompts over 77 tokens."}),
    "negative": ("CONDITIONING", {"tooltip": "Optional: replaces negative_prompt, as positive does."}),
    "latent_preview": ("BOOLEAN", {"default": True, "tooltip": "Show a rough preview of the middle frame at every "
                       "step (when ComfyUI's preview method is not 'none')."}),
}


def _run(handle, req, image, latent_preview, title):
    managed = handle.managed
    model = managed.pack_model
    check_clip_memory(f"the {title} clip ({req.num_frames} frames of {req.width}x{req.height})",
                      clip_bytes(req.num_frames, req.height, req.width),
                      clip_bytes(req.num_frames, req.height, req.width) + input_copy_bytes(image), MEMORY_ADVICE)
    t2v_pipeline.check_request(model, req)
    latent_preview = latent_preview and bridge.previews_enabled()
    chunks = -(-req.num_frames // req.decode_chunk_size)
    progress = bridge.Progress(req.steps + chunks, desc=title)
    mid = req.num_frames // 2

    def on_step(info):
        preview = svd_decode.latent_preview_rgb(info.denoised[0, :, mid]) if latent_preview else None
        # a second-order scheduler (Heun) runs more model steps than `steps`: the bar follows its own count
        progress.set(-(-(info.step + 1) * req.steps // info.total), preview)  # also stops on Cancel

    def on_decode_chunk(done, total):
        progress.set(req.steps + -(-done // req.decode_chunk_size))

    hooks = t2v_pipeline.T2VHooks(on_step=on_step, on_decode_chunk=on_decode_chunk)
    try:
        with ModelOnDevice(managed, handle.keep_on_gpu, what=title, advice=MEMORY_ADVICE):
            if image is None:
                result = t2v_pipeline.text_to_video(model, req, hooks)
            else:
                result = t2v_pipeline.image_to_video(model, image, req, hooks)
    finally:
        progress.close()
    info = [f"{title}: {req.num_frames} frames at {req.width}x{req.height}, {req.steps} steps "
            f"({req.scheduler}), guidance {req.guidance_scale:g}, seed {req.seed}."] + result.notes
    return result.frames, "\n".join(info)


class AnimeVideoModelScopeT2V:
    DESCRIPTION = ("Text to video with ModelScopeT2V (the paper's text-only initial frames; StreamingT2V's default "
                   "initializer: 16 frames at 256x256). Same result as diffusers' TextToVideoSDPipeline for the same "
                   "seed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "t2v_model": (MODELSCOPE_MODEL, {"tooltip": "From AnimeVideo Load ModelScopeT2V."}),
                **_text_inputs(""),
                "width": ("INT", {"default": 256, "min": 64, "max": 4096, "step": 8, "tooltip": "Width in px, a "
                                  "multiple of 8. ModelScope was trained at 256x256."}),
                "height": ("INT", {"default": 256, "min": 64, "max": 4096, "step": 8, "tooltip": "Height in px, a "
                                   "multiple of 8."}),
                "num_frames": ("INT", {"default": 16, "min": 1, "max": 4096, "tooltip": "Frames to generate (16 as "
                               "trained, and as StreamingT2V's first chunk)."}),
                **_sampling_inputs(),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.01, "max": 1000.0, "step": 0.01, "tooltip": "The clip's "
                        "frame rate, passed on to the next nodes (ModelScope has no frame-rate condition; "
                        "StreamingT2V writes its clips at 8)."}),
            },
            "optional": dict(_OPTIONAL_TEXT),
        }

    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("frames", "fps", "info")
    OUTPUT_TOOLTIPS = ("The clip as an IMAGE batch [frames, H, W, 3].", "The frame rate, for the next nodes.",
                       "What was run, and what happened to the text (cut, empty).")
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(self, t2v_model, prompt, negative_prompt, width, height, num_frames, steps, guidance_scale,
                 scheduler, eta, seed, decode_chunk_size, fps, positive=None, negative=None, latent_preview=True):
        req = t2v_pipeline.T2VRequest(
            prompt=prompt, negative_prompt=negative_prompt, width=int(width), height=int(height),
            num_frames=int(num_frames), steps=int(steps), guidance_scale=float(guidance_scale), eta=float(eta),
            seed=int(seed), scheduler=scheduler, decode_chunk_size=int(decode_chunk_size),
            prompt_embeds=conditioning_tensor(positive, "positive"),
            negative_embeds=conditioning_tensor(negative, "negative"))
        frames, info = _run(t2v_model, req, None, latent_preview, "ModelScopeT2V")
        return (frames, float(fps), info)


class AnimeVideoI2VGenXL:
    DESCRIPTION = ("Image + text to video with I2VGen-XL: the image conditions through its CLIP embedding and its "
                   "VAE latent, the text through the OpenCLIP text tower, plus a frame-rate condition. Same result "
                   "as diffusers' I2VGenXLPipeline for the same seed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "i2vgen_model": (I2VGENXL_MODEL, {"tooltip": "From AnimeVideo Load I2VGen-XL."}),
                "image": ("IMAGE", {"tooltip": "The first frame (one image); centre-cropped to the output aspect "
                                    "as I2VGen-XL does."}),
                **_text_inputs(I2VGENXL_NEGATIVE),
                "width": ("INT", {"default": 1280, "min": 64, "max": 4096, "step": 8, "tooltip": "Width in px, a "
                                  "multiple of 8 (I2VGen-XL's default 1280x704)."}),
                "height": ("INT", {"default": 704, "min": 64, "max": 4096, "step": 8, "tooltip": "Height in px."}),
                "num_frames": ("INT", {"default": 16, "min": 1, "max": 4096, "tooltip": "Frames to generate (16 "
                               "as trained)."}),
                "fps": ("INT", {"default": 16, "min": 1, "max": 240, "tooltip": "The frame rate the model is "
                        "conditioned on (a micro-condition: lower moves more per frame) and the clip's rate for the "
                        "next nodes."}),
                **_sampling_inputs(),
            },
            "optional": dict(_OPTIONAL_TEXT),
        }

    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("frames", "fps", "info")
    OUTPUT_TOOLTIPS = AnimeVideoModelScopeT2V.OUTPUT_TOOLTIPS
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(self, i2vgen_model, image, prompt, negative_prompt, width, height, num_frames, fps, steps,
                 guidance_scale, scheduler, eta, seed, decode_chunk_size, positive=None, negative=None,
                 latent_preview=True):
        req = t2v_pipeline.T2VRequest(
            prompt=prompt, negative_prompt=negative_prompt, width=int(width), height=int(height),
            num_frames=int(num_frames), steps=int(steps), guidance_scale=float(guidance_scale), eta=float(eta),
            seed=int(seed), scheduler=scheduler, fps=int(fps), decode_chunk_size=int(decode_chunk_size),
            prompt_embeds=conditioning_tensor(positive, "positive"),
            negative_embeds=conditioning_tensor(negative, "negative"))
        frames, info = _run(i2vgen_model, req, single_image(image), latent_preview, "I2VGen-XL")
        return (frames, float(fps), info)


NODE_CLASS_MAPPINGS = {
    "AnimeVideoLoadModelScopeT2V": AnimeVideoLoadModelScopeT2V,
    "AnimeVideoModelScopeT2V": AnimeVideoModelScopeT2V,
    "AnimeVideoLoadI2VGenXL": AnimeVideoLoadI2VGenXL,
    "AnimeVideoI2VGenXL": AnimeVideoI2VGenXL,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoLoadModelScopeT2V": "Load ModelScopeT2V (AnimeVideo)",
    "AnimeVideoModelScopeT2V": "ModelScope Text to Video (AnimeVideo)",
    "AnimeVideoLoadI2VGenXL": "Load I2VGen-XL (AnimeVideo)",
    "AnimeVideoI2VGenXL": "I2VGen-XL Image to Video (AnimeVideo)",
}

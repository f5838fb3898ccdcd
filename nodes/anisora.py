"""AniSora nodes: loader (Wan2.1-I2V for V2/V3/anymask, CogVideoX for V1, detected from the weights), sampler
(guide = keyframes at any frame and motion masks) and the prompt micro-condition helper.

Text and CLIP-image conditioning come from ComfyUI's own encoders (CLIPLoader type wan + CLIP Text Encode,
CLIPVisionLoader + CLIP Vision Encode). The work happens in ``pipelines.anisora``.
"""
from __future__ import annotations

import os

from ..pipelines.anisora import loader as anisora_loader
from ..pipelines.anisora import text as anisora_text
from ..pipelines.backbones.wan import loader as wan_loader
from ..pipelines.anisora.model import AniSoraHooks, AniSoraRequest
import torch

from ..pipelines.checkpoint_io import FileIdentity, resolve_in_folders
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.guides import Guide
from ..pipelines.image_ops import FIT_MODES
from . import comfy_bridge as bridge
from ..pipelines import memory
from .common import (LoaderSpec, ModelHandle, ModelOnDevice, cached_model, check_clip_memory, clip_bytes,
                     diffusion_working_bytes, make_loader_node, resolve_model_file, with_fetchable)
from .guides import GUIDE

ANISORA_MODEL = "ANIMEVIDEO_ANISORA"
CATEGORY = "AnimeVideo/AniSora"
DTYPES = anisora_loader.DTYPES
TRANSFORMER_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt", ".bin", ".ckpt")
VAE_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt", ".ckpt")
VAE_FROM_FOLDER = "(from the diffusers folder)"
SAMPLERS = ["unipc", "euler"]
ANISORA_FPS = 16.0  # AniSora V1-V3 (and Wan2.1) are trained and released at 16 fps
MEMORY_ADVICE = ("Lower num_frames or width/height, or make the clip in parts " + memory.CHUNK_ADVICE + ".")
RUN_ADVICE = "Lower num_frames or width/height, turn on vae_tiling, or use dtype fp8_e4m3fn."

EXPECTED = (
    "Expected in models/diffusion_models an AniSora V2/V3/anymask transformer (Wan2.1-I2V-14B layout; e.g. "
    "IndexTeam/Index-anisora V3/diffusion_pytorch_model.safetensors renamed anisora_v3_i2v_14b.safetensors, or "
    "Kijai's Wan2_1-Anisora-I2V-480P-14B_fp8_e4m3fn.safetensors) with the Wan2.1 VAE in models/vae "
    "(Wan2.1_VAE.pth or wan_2.1_vae.safetensors); or a diffusers folder (transformer/ + vae/) in models/diffusers, "
    "Wan or AniSora V1 CogVideoX (e.g. Disty0/Index-anisora-5B-diffusers).")


def model_names(is_folder) -> list[str]:
    """Files in models/diffusion_models and the folders ``is_folder`` accepts there and in models/diffusers; the
    shards of a listed folder (ComfyUI lists each diffusion_pytorch_model-0000k-of-0000n file) are left out:
    the folder stands for them."""
    folders = bridge.list_dirs("diffusion_models", is_folder) + bridge.list_dirs("diffusers", is_folder)
    files = [f for f in bridge.list_files("diffusion_models", TRANSFORMER_EXTENSIONS)
             if not ("/" in f and f.rsplit("/", 1)[0] in folders and wan_loader.SHARD_NAME.match(f.rsplit("/", 1)[1]))]
    return files + list(dict.fromkeys(folders))


def transformer_names() -> list[str]:
    return model_names(anisora_loader.is_anisora_folder)


def vae_names() -> list[str]:
    return [VAE_FROM_FOLDER] + with_fetchable(bridge.list_files("vae", VAE_EXTENSIONS), "vae")


def default_vae(names: list[str]) -> str:
    """A VAE file when there is one (single-file transformers, the usual download, need it), the Wan2.1 VAE by
    name first; the diffusers folder's own VAE only when models/vae is empty."""
    files = [n for n in names if n != VAE_FROM_FOLDER]
    wan = [n for n in files if "wan" in n.lower() and "2.2" not in n and "2_2" not in n]
    return (wan or files or [VAE_FROM_FOLDER])[0]


def resolve_transformer(name: str, input_name: str = "transformer_name", expected: str = EXPECTED) -> str:
    for kind in ("diffusion_models", "diffusers"):
        try:
            path = resolve_in_folders(name, bridge.model_folders(kind), input_name)
        except FileNotFoundError:
            continue
        if kind == "diffusion_models" or os.path.isdir(path):
            return path
    raise AnimeVideoModelError(
        f"{input_name}: '{name}' was not found in models/diffusion_models "
        f"({bridge.models_dir_hint('diffusion_models')}) or models/diffusers ({bridge.models_dir_hint('diffusers')}). "
        f"{expected}")


def resolve_vae(name: str, transformer_path: str, download_if_missing: bool = False, fetch: bool = True) -> str | None:
    if name in (None, "", VAE_FROM_FOLDER):
        if anisora_loader.folder_has_vae(transformer_path):
            return None
        raise AnimeVideoModelError(
            f"vae_name: this transformer has no VAE beside it; pick the Wan2.1 VAE (Wan2.1_VAE.pth or "
            f"wan_2.1_vae.safetensors) from models/vae ({bridge.models_dir_hint('vae')}). '{VAE_FROM_FOLDER}' "
            "only works with a diffusers folder (vae/) or a native release folder that ships Wan2.1_VAE.pth.")
    return resolve_model_file(name, "vae", "vae_name", lambda: (
        f"vae_name: '{name}' was not found in models/vae ({bridge.models_dir_hint('vae')}). Expected the Wan2.1 "
        "VAE (Wan2.1_VAE.pth from IndexTeam/Index-anisora or Wan-AI/Wan2.1-I2V-14B-480P, or "
        "Comfy-Org's wan_2.1_vae.safetensors)."), download_if_missing, fetch)


def open_anisora(transformer_name: str, vae_name: str, dtype: str = "auto", download_if_missing: bool = False):
    """(cache key, load, name, path) of the AniSora model for these loader inputs (see LoaderSpec.open)."""
    tpath = resolve_transformer(transformer_name)
    vpath = resolve_vae(vae_name, tpath, download_if_missing)
    device = bridge.torch_device()
    key = ("anisora", FileIdentity.of(tpath), FileIdentity.of(vpath) if vpath else None, dtype, device.type)
    return (key, lambda: anisora_loader.load_anisora(tpath, vpath, dtype, device).to(bridge.offload_device()),
            transformer_name, tpath)


def load_anisora_cached(transformer_name: str, vae_name: str, dtype_name: str, download_if_missing: bool = False):
    """The managed AniSora model (shared through the model cache)."""
    return cached_model(*open_anisora(transformer_name, vae_name, dtype_name, download_if_missing))


class AniSoraHandle(ModelHandle):
    """What flows along the ANIMEVIDEO_ANISORA wire: the shared model plus this loader's placement choice."""


def _anisora_inputs() -> dict:
    vaes = vae_names()
    return {
        "transformer_name": (transformer_names(), {
            "tooltip": "The AniSora transformer: a file in models/diffusion_models (native Wan names, "
                       "fp32/bf16/fp16/fp8) or a diffusers folder in models/diffusers."}),
        "vae_name": (vaes, {
            "default": default_vae(vaes), "tooltip": "The Wan2.1 VAE from models/vae (Wan2.1_VAE.pth or "
                       f"wan_2.1_vae.safetensors). '{VAE_FROM_FOLDER}': use the vae/ inside a diffusers folder."}),
    }


AnimeVideoLoadAniSora = make_loader_node(LoaderSpec(
    node_id="AnimeVideoLoadAniSora",
    description="Loads AniSora: V2/V3/anymask (Wan2.1-I2V-14B layout, native single file + Wan2.1 VAE, or a "
                "diffusers folder) or V1 (CogVideoX-5B-I2V diffusers folder). The backbone is detected from "
                "the weights. Memory (14B): about 33 GB of weights in bf16, 17 GB in fp8_e4m3fn, plus the "
                "activations (more at 720p/81 frames); inside ComfyUI its memory management places them "
                "(--lowvram streams the weights layer by layer), so CPU RAM must hold them.",
    model_inputs=_anisora_inputs,
    dtypes=DTYPES,
    dtype_tooltip="Transformer precision. auto: an fp8 file (Kijai's fp8_e4m3fn, ComfyUI's fp8_scaled) stays fp8; "
                  "otherwise bf16 on a GPU (fp16 without bf16 support), fp32 on the CPU. fp8_e4m3fn keeps the block weights in 8 bits (about 16 GB for 14B) and upcasts each layer as "
                  "it runs. The VAE always runs in fp32.",
    return_type=ANISORA_MODEL, return_name="anisora_model",
    output_tooltip="The loaded AniSora model, for AnimeVideo AniSora Sampler.",
    category=CATEGORY,
    open=open_anisora,
    checks=lambda transformer_name, vae_name, download_if_missing: [
        lambda: resolve_vae(vae_name, resolve_transformer(transformer_name), download_if_missing, fetch=False)],
    keep_on_gpu_tooltip="Keep the model on the GPU between runs (faster re-runs, holds VRAM until ComfyUI needs "
                        "the room). Off: it waits on the CPU between runs (outside ComfyUI only the part at work, "
                        "VAE or transformer, is on the GPU).",
    handle=lambda ref, keep_on_gpu, inputs: AniSoraHandle(keep_on_gpu=keep_on_gpu, ref=ref),
))


def anisora_working_bytes(model, num_frames: int, width: int, height: int, cfg: float) -> int:
    """The transformer's activations for one step beyond the weights (latent frames 4x, 8x8 VAE, 2x2 patches),
    for core's load_models_gpu (see diffusion_working_bytes)."""
    config, dtype = getattr(model.transformer, "config", None), getattr(model, "dtype", None)
    width_ = getattr(config, "num_attention_heads", 40) * getattr(config, "attention_head_dim", 128)
    return diffusion_working_bytes((int(num_frames) - 1) // 4 + 1, int(height) // 16, int(width) // 16, width_,
                                   dtype.itemsize if isinstance(dtype, torch.dtype) else 2,
                                   2 if cfg > 1 else 1, factor=12)


class AnimeVideoAniSoraPrompt:
    DESCRIPTION = ("AniSora's prompt micro-conditions: appends 'aesthetic score: A. motion score: M.' (and "
                   "optionally 'There is no text in the video.') to your prompt, as AniSora was trained. Wire the "
                   "output into CLIP Text Encode's text input.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What happens in the clip."}),
                "aesthetic_score": ("FLOAT", {"default": 5.5, "min": 0.0, "max": 10.0, "step": 0.1, "tooltip":
                                    "AniSora's aesthetic micro-condition; 5.5 in all official examples."}),
                "motion_score": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 10.0, "step": 0.1, "tooltip":
                                 "Amount of motion; higher moves more. V3/V3.1: 2.0-4.0; V1: 0.5-1.5."}),
                "no_text": ("BOOLEAN", {"default": True, "tooltip": "Append 'There is no text in the video.' "
                                        "(AniSora V3 prompts do; keeps subtitles out)."}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    OUTPUT_TOOLTIPS = ("The prompt with AniSora's micro-conditions, for CLIP Text Encode's text input.",)
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, prompt, aesthetic_score, motion_score, no_text=True):
        return (anisora_text.micro_condition_prompt(prompt, float(aesthetic_score), float(motion_score),
                                                    bool(no_text)),)


def _generate_fn(backbone: str):
    if backbone == "wan":
        from ..pipelines.anisora import wan

        return wan.generate
    if backbone == "cogvideox":
        try:
            from ..pipelines.anisora import cogvideox
        except ImportError as e:
            raise AnimeVideoModelError(f"The AniSora V1 (CogVideoX) backbone is not available: {e}") from None
        return cogvideox.generate
    raise AnimeVideoModelError(f"Unknown AniSora backbone '{backbone}'.")


class AnimeVideoAniSoraSampler:
    DESCRIPTION = ("AniSora image-to-video with keyframes at any frame and motion masks: the guide becomes "
                   "AniSora's spatiotemporal mask + guide latent. Wan (V2/V3/anymask): flow matching, "
                   "UniPC or Euler; V3 defaults 8 steps, cfg 1, shift 5. The info output says where each "
                   "keyframe landed in latent time.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "anisora_model": (ANISORA_MODEL, {"tooltip": "From AnimeVideo Load AniSora."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt from CLIP Text Encode (CLIPLoader type wan, "
                             "umt5_xxl file; AniSora V1 / CogVideoX: a T5-XXL encoder, e.g. type mochi with t5xxl, padded or cut "
                             "to 226 tokens). Add AniSora's micro-conditions "
                             "with AnimeVideo AniSora Prompt."}),
                "guide": (GUIDE, {"tooltip": "Keyframes (AnimeVideo Keyframe Guide, frame_index 0 for "
                          "image-to-video, -1 for the last frame) and optionally a motion mask (AnimeVideo "
                          "Motion Mask Guide: only that region moves). Wan (V2/V3/anymask) masks are binary: a "
                          "keyframe strength of 0.5 or more counts as 1, a lower one is an error; AniSora's own "
                          "scripts place keyframes at multiples of 8 frames (others work and are noted in info)."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16, "tooltip": "Output width "
                          "in px, a multiple of 16. AniSora V3: 1280x720 or 832x480 (480p)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16, "tooltip": "Output height "
                           "in px, a multiple of 16."}),
                "num_frames": ("INT", {"default": 81, "min": 1, "max": 1025, "step": 4, "tooltip": "Frames, 4k+1 "
                               "(49, 81, 129 ...; other counts are snapped to the nearest and reported in info; "
                               "AniSora V1 (CogVideoX) takes 8k+1, 49 at its trained size). 16 fps: 81 frames "
                               "are 5 s."}),
                "steps": ("INT", {"default": 8, "min": 1, "max": 200, "tooltip": "Sampling steps. AniSora "
                          "V3/V3.1/anymask: 8 (distilled); V2 and base Wan: 40; V1 (CogVideoX): 50."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "Text guidance. "
                        "At 1 or below no unconditional pass runs (2x faster; right for distilled V3). Above 1 "
                        "the negative prompt is needed (V2/base Wan: 5)."}),
                "shift": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 100.0, "step": 0.1, "tooltip": "Flow-"
                          "matching time shift sigma' = shift*s/(1+(shift-1)*s). AniSora: 5; 3 suggested for "
                          "480p. (Wan only.)"}),
                "sampler": (SAMPLERS, {"default": "unipc", "tooltip": "unipc: UniPC multistep (Wan/AniSora's "
                            "solver); euler: flow-matching Euler. (Wan only; CogVideoX uses its DPM solver.)"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF, "control_after_generate": True,
                         "tooltip": "Noise seed; the same seed gives the same clip on any device."}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt from CLIP Text Encode; needed "
                             "only when cfg > 1."}),
                "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIP Vision Encode (clip_vision_h, crop "
                                       "none) of the first keyframe: Wan2.1 I2V (AniSora V2/V3) needs it."}),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How keyframes and masks of another size "
                        "meet width x height: crop (centre crop), pad (letterbox) or stretch."}),
                "vae_tiling": ("BOOLEAN", {"default": False, "tooltip": "Run the VAE in overlapping 256 px tiles: "
                               "much less memory at 720p, slightly slower, rare faint seams."}),
                "dynamic_cfg": ("BOOLEAN", {"default": True, "tooltip": "AniSora V1 (CogVideoX) only: "
                                "DynamicCFG as the official sampler: w = 1 + cfg·(1 − cos(π·x⁵))/2 with the "
                                "original's x = (steps − t)/steps, t the DDPM timestep."}),
                "dynamic_cfg_timestep_quirk": ("BOOLEAN", {"default": True, "tooltip": "AniSora V1 only: on = "
                                               "the original's x = (steps − t)/steps with t the DDPM timestep "
                                               "(what V1 was tuned with); off = the intended ramp x = i/steps."}),
                "latent_preview": ("BOOLEAN", {"default": True, "tooltip": "Show the middle frame's clean "
                                   "estimate on the node after each step (Wan backbone; a linear latent -> RGB map "
                                   "fitted once to the model's VAE), when ComfyUI's preview method is not "
                                   "'none'. Off saves that small VAE pass."}),
            },
        }

    # fps and latent come last, so saved workflows keep their links to frames (0) and info (1)
    RETURN_TYPES = ("IMAGE", "STRING", "FLOAT", "LATENT")
    RETURN_NAMES = ("frames", "info", "fps", "latent")
    OUTPUT_TOOLTIPS = ("The clip as an IMAGE batch [frames, H, W, 3] (AniSora runs at 16 fps).",
                       "What ran: sizes, steps, and where each keyframe landed in latent time.",
                       "The clip's frame rate (16: AniSora's trained rate), for Create Video's fps.",
                       "The final latents as core's LATENT (the VAE's own latent space): core's VAE Decode with "
                       "the same VAE (Load VAE) decodes them; for chaining into core nodes.")
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, anisora_model, positive, guide, width, height, num_frames, steps, cfg, shift, sampler, seed,
               negative=None, clip_vision_output=None, fit="crop", vae_tiling=False, dynamic_cfg=True,
               dynamic_cfg_timestep_quirk=True, latent_preview=True):
        if not isinstance(anisora_model, AniSoraHandle):
            raise AnimeVideoInputError("anisora_model: expected the output of AnimeVideo Load AniSora.")
        if not isinstance(guide, Guide):
            raise AnimeVideoInputError(f"guide: expected an {GUIDE} from an AnimeVideo guide node.")
        check_clip_memory(f"the AniSora clip ({int(num_frames)} frames of {int(width)}x{int(height)})",
                          clip_bytes(num_frames, height, width), clip_bytes(num_frames, height, width), MEMORY_ADVICE)
        managed = anisora_model.managed
        model = managed.pack_model
        text, notes = anisora_text.build_text(positive, negative, clip_vision_output, float(cfg))
        req = AniSoraRequest(width=int(width), height=int(height), num_frames=int(num_frames), steps=int(steps),
                             cfg=float(cfg), shift=float(shift), seed=int(seed), sampler=sampler,
                             dynamic_cfg=bool(dynamic_cfg),
                             dynamic_cfg_timestep_quirk=bool(dynamic_cfg_timestep_quirk), fit=fit,
                             vae_tiling=bool(vae_tiling))
        generate = _generate_fn(model.backbone)
        progress = bridge.Progress(int(steps) + 2, desc="AniSora")
        on_preview = ((lambda i, n, rgb: progress.set(1 + i, rgb))
                      if latent_preview and bridge.previews_enabled() else None)
        working = anisora_working_bytes(model, req.num_frames, req.width, req.height, req.cfg)
        if not isinstance(managed, bridge.PlainManaged):
            # ComfyUI places the whole model (core's load_models_gpu: partially under --lowvram or when the card
            # is too small); the pipeline moves nothing itself
            hooks = AniSoraHooks(on_step=lambda i, n: progress.set(1 + i), on_preview=on_preview)
            try:
                with ModelOnDevice(managed, anisora_model.keep_on_gpu, working, "the AniSora run", RUN_ADVICE):
                    result = generate(model, guide, text, req, hooks)
                progress.set(int(steps) + 2)
            finally:
                progress.close()
        else:
            with memory.allocation_guard("the AniSora run", working, RUN_ADVICE):
                result = self._run_parts(model, anisora_model.keep_on_gpu, generate, guide, text, req, progress,
                                         on_preview)
        info = "\n".join([result.info] + notes)
        return (result.frames, info, ANISORA_FPS, {"samples": result.latents})

    @staticmethod
    def _run_parts(model, keep_on_gpu, generate, guide, text, req, progress, on_preview):
        """Outside ComfyUI: only the part at work (VAE or transformer) on the device, the rest on the offload
        device unless keep_on_gpu."""
        device = bridge.torch_device()
        hooks = AniSoraHooks(on_step=lambda i, n: progress.set(1 + i), device=device,
                             offload_device=None if keep_on_gpu else bridge.offload_device(), on_preview=on_preview)
        try:
            if model.backbone != "wan":  # that backbone places its own parts only if it reads hooks.device
                model.to(device)
            result = generate(model, guide, text, req, hooks)
            progress.set(int(req.steps) + 2)
        finally:
            if not keep_on_gpu:
                model.to(bridge.offload_device())
                bridge.empty_cache()
            progress.close()
        return result


NODE_CLASS_MAPPINGS = {
    "AnimeVideoLoadAniSora": AnimeVideoLoadAniSora,
    "AnimeVideoAniSoraSampler": AnimeVideoAniSoraSampler,
    "AnimeVideoAniSoraPrompt": AnimeVideoAniSoraPrompt,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoLoadAniSora": "Load AniSora (AnimeVideo)",
    "AnimeVideoAniSoraSampler": "AniSora Sampler (AnimeVideo)",
    "AnimeVideoAniSoraPrompt": "AniSora Prompt (AnimeVideo)",
}

"""Load AniSora Wan2.2: AniSora V3.2 on Wan2.2-I2V-A14B, the high-noise and low-noise experts together, for the
AniSora Sampler (the same ANIMEVIDEO_ANISORA wire as Load AniSora; the sampler switches experts at the boundary).

The files: Comfy-Org's repackaged pair in models/diffusion_models (wan2.2_i2v_high_noise_14B_fp16.safetensors +
wan2.2_i2v_low_noise_14B_fp16.safetensors, or their fp8_scaled versions), or a release folder holding both
(Wan-AI / AniSora V3.2 native high_noise_model/ + low_noise_model/, or diffusers transformer/ + transformer_2/).
The work happens in ``pipelines.anisora.loader.load_wan22``.
"""
from __future__ import annotations

import os

from ..pipelines.anisora import loader as anisora_loader
from ..pipelines.checkpoint_io import FileIdentity
from ..pipelines.errors import AnimeVideoModelError
from . import comfy_bridge as bridge
from .anisora import (ANISORA_MODEL, CATEGORY, DTYPES, VAE_FROM_FOLDER, AniSoraHandle, default_vae, model_names,
                      resolve_transformer, resolve_vae, vae_names)
from .common import LoaderSpec, make_loader_node

FROM_RELEASE_FOLDER = "(from the release folder)"
EXPECTED = (
    "Expected the two experts of AniSora V3.2 / Wan2.2-I2V-A14B: Comfy-Org's "
    "wan2.2_i2v_high_noise_14B_fp16.safetensors and wan2.2_i2v_low_noise_14B_fp16.safetensors (or fp8_scaled) "
    "in models/diffusion_models, or a release folder with high_noise_model/ + low_noise_model/ (native, as "
    "IndexTeam/Index-anisora V3.2 and Wan-AI/Wan2.2-I2V-A14B publish it) or transformer/ + transformer_2/ "
    "(diffusers) in models/diffusion_models or models/diffusers.")


def expert_names() -> list[str]:
    return model_names(anisora_loader.is_anisora_wan22_folder)


def default_expert(names: list[str], tag: str) -> str | None:
    tagged = [n for n in names if tag in n.lower()]
    return (tagged or names or [None])[0]


def resolve_pair(high_noise_name: str, low_noise_name: str) -> tuple[str, str | None]:
    high = resolve_transformer(high_noise_name, "high_noise_name", EXPECTED)
    if low_noise_name in (None, "", FROM_RELEASE_FOLDER):
        if not anisora_loader.is_anisora_wan22_folder(high):
            raise AnimeVideoModelError(
                f"low_noise_name: '{FROM_RELEASE_FOLDER}' needs a release folder holding both experts as "
                f"high_noise_name; '{high_noise_name}' is not one. Pick the low-noise expert's file. {EXPECTED}")
        return high, None
    if anisora_loader.is_anisora_wan22_folder(high):
        raise AnimeVideoModelError(
            f"high_noise_name: '{high_noise_name}' is a release folder holding both experts; set low_noise_name "
            f"to '{FROM_RELEASE_FOLDER}', or pick the high-noise file.")
    low = resolve_transformer(low_noise_name, "low_noise_name", EXPECTED)
    if os.path.realpath(low) == os.path.realpath(high):
        raise AnimeVideoModelError(
            f"low_noise_name: '{low_noise_name}' is the high-noise expert too; pick the low_noise file of the pair.")
    return high, low


def open_wan22(high_noise_name, low_noise_name, vae_name, dtype="auto", download_if_missing=False):
    """(cache key, load, name, path) of the expert pair for these loader inputs (see LoaderSpec.open)."""
    high, low = resolve_pair(high_noise_name, low_noise_name)
    vae = resolve_vae(vae_name, high, download_if_missing)
    device = bridge.torch_device()
    key = ("anisora-wan22", FileIdentity.of(high), FileIdentity.of(low) if low else None,
           FileIdentity.of(vae) if vae else None, dtype, device.type)
    return (key, lambda: anisora_loader.load_wan22(high, low, vae, dtype, device).to(bridge.offload_device()),
            high_noise_name, high)


def _wan22_inputs() -> dict:
    names = expert_names()
    vaes = vae_names()
    return {
        "high_noise_name": (names, {"default": default_expert(names, "high_noise"), "tooltip":
                            "The high-noise expert (native Wan names, fp16/bf16/fp8/fp8_scaled) in "
                            "models/diffusion_models, or a release folder holding both experts."}),
        "low_noise_name": ([FROM_RELEASE_FOLDER] + names, {
            "default": default_expert(names, "low_noise") or FROM_RELEASE_FOLDER, "tooltip":
            "The low-noise expert of the same release; "
            f"'{FROM_RELEASE_FOLDER}' when high_noise_name is a folder holding both."}),
        "vae_name": (vaes, {"default": default_vae(vaes), "tooltip": "The Wan2.1 VAE (Wan2.2-I2V-A14B "
                     "uses it): Wan2.1_VAE.pth or wan_2.1_vae.safetensors. "
                     f"'{VAE_FROM_FOLDER}': the VAE inside the release folder."}),
    }


def _wan22_checks(high_noise_name, low_noise_name, vae_name, download_if_missing):
    def check():
        high, _ = resolve_pair(high_noise_name, low_noise_name)
        resolve_vae(vae_name, high, download_if_missing, fetch=False)
    return [check]


AnimeVideoLoadAniSoraWan22 = make_loader_node(LoaderSpec(
    node_id="AnimeVideoLoadAniSoraWan22",
    description="Loads AniSora V3.2 (Wan2.2-I2V-A14B): the high-noise expert (timesteps t >= 900) and the "
                "low-noise expert (the rest), for AnimeVideo AniSora Sampler, which switches between them. "
                "Released settings: 8 steps, shift 5, cfg 1 (the sampler's defaults); keyframes as AniSora V3. "
                "No CLIP-vision input is needed (Wan2.2-I2V has no CLIP-image branch). Memory: two 14B "
                "experts, about 2 x 28 GB in bf16 or 2 x 14 GB in fp8 in CPU RAM; inside ComfyUI its memory "
                "management places them (--lowvram streams the weights layer by layer).",
    model_inputs=_wan22_inputs,
    dtypes=DTYPES,
    dtype_tooltip="Expert precision. auto: an fp8 file stays fp8 (each layer upcasts as it runs); otherwise bf16 "
                  "on a GPU (fp16 without bf16 support), fp32 on the CPU. fp8_e4m3fn stores the block weights in "
                  "8 bits. The VAE always runs in fp32.",
    return_type=ANISORA_MODEL, return_name="anisora_model",
    output_tooltip="AniSora V3.2 (both Wan2.2 experts), for AnimeVideo AniSora Sampler.",
    category=CATEGORY,
    open=open_wan22,
    checks=_wan22_checks,
    keep_on_gpu_tooltip="Keep the model on the GPU between runs (both experts: holds twice the VRAM, until ComfyUI "
                        "needs the room). Off: it waits on the CPU between runs (outside ComfyUI only the expert "
                        "at work is on the GPU).",
    handle=lambda ref, keep_on_gpu, inputs: AniSoraHandle(keep_on_gpu=keep_on_gpu, ref=ref),
))


NODE_CLASS_MAPPINGS = {"AnimeVideoLoadAniSoraWan22": AnimeVideoLoadAniSoraWan22}
NODE_DISPLAY_NAME_MAPPINGS = {"AnimeVideoLoadAniSoraWan22": "Load AniSora Wan2.2 (V3.2) (AnimeVideo)"}

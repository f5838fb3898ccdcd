"""Video upscaling nodes: a loader for ``models/upscale_models`` and a chunked upscaler.

The work happens in ``pipelines.upscale``: AnimeSR runs as our own recurrent module, everything else through
spandrel, frame by frame in chunks with the output written into one preallocated tensor.
"""
from __future__ import annotations

from ..pipelines import memory
from ..pipelines.checkpoint_io import FileIdentity
from ..pipelines.errors import AnimeVideoInputError
from ..pipelines.upscale import loader as up_loader
from ..pipelines.upscale import stream as up_stream
from . import comfy_bridge as bridge
from .common import (LoaderSpec, ModelHandle, ModelOnDevice, cached_model, check_clip_memory, make_loader_node,
                     resolve_model_file, with_fetchable)

UPSCALER = "ANIMEVIDEO_UPSCALER"
FOLDER = "upscale_models"
CATEGORY = "AnimeVideo/Upscale"
DTYPES = list(up_loader.DTYPES)
MEMORY_ADVICE = ("Lower output_scale or input_rescaling, set tile_size (e.g. 256) to bound the working memory, or "
                 "upscale fewer frames at once " + memory.CHUNK_ADVICE + ".")


def upscaler_names() -> list[str]:
    return with_fetchable(bridge.list_files(FOLDER, up_loader.UPSCALER_EXTENSIONS), FOLDER)


def missing_model_message(model_name: str) -> str:
    return (f"model_name: '{model_name}' was not found in models/upscale_models ({bridge.models_dir_hint(FOLDER)}). "
            f"{up_loader.EXPECTED_UPSCALERS}")


def resolve_upscaler_path(model_name: str, download_if_missing: bool = False, fetch: bool = True) -> str | None:
    return resolve_model_file(model_name, FOLDER, "model_name", lambda: missing_model_message(model_name),
                              download_if_missing, fetch)


def open_upscaler(model_name: str, dtype: str = "auto", download_if_missing: bool = False):
    """(cache key, load, name, path) of the upscaler for these loader inputs (see LoaderSpec.open)."""
    path = resolve_upscaler_path(model_name, download_if_missing)
    device = bridge.torch_device()
    key = ("upscaler", FileIdentity.of(path), dtype, device.type)
    return key, lambda: up_loader.load_upscaler(path, dtype, device).to(bridge.offload_device()), model_name, path


def load_upscaler_cached(model_name: str, dtype_name: str, download_if_missing: bool = False):
    """The managed upscaler (shared through the model cache)."""
    return cached_model(*open_upscaler(model_name, dtype_name, download_if_missing))


class UpscalerHandle(ModelHandle):
    """What flows along the ANIMEVIDEO_UPSCALER wire: the shared model plus this loader's placement choice."""

    @property
    def upscaler(self) -> up_loader.Upscaler:
        return self.model


AnimeVideoLoadUpscaler = make_loader_node(LoaderSpec(
    node_id="AnimeVideoLoadUpscaler",
    description="Loads a video upscaler from models/upscale_models: AnimeSR (recurrent, our own module) or any "
                "single-image model spandrel detects (Real-ESRGAN anime models and others). The architecture "
                "is read from the weights, not from the file name.",
    model_inputs=lambda: {"model_name": (upscaler_names(), {
        "tooltip": "A file in models/upscale_models: AnimeSR_v2.pth or AnimeSR_v1-PaperModel.pth "
                   "(AnimeSR), realesr-animevideov3.pth or RealESRGAN_x4plus_anime_6B.pth (Real-ESRGAN), "
                   "or another single-image upscaler that spandrel loads."})},
    dtypes=DTYPES,
    dtype_tooltip="Weight precision. auto: fp16 on a GPU (bf16 or fp32 where the model lacks fp16), fp32 on the "
                  "CPU. fp16/bf16 on a CPU run in fp32.",
    return_type=UPSCALER, return_name="upscaler",
    output_tooltip="The loaded upscaler, for AnimeVideo Upscale Video.",
    category=CATEGORY,
    open=open_upscaler,
    checks=lambda model_name, download_if_missing: [
        lambda: resolve_upscaler_path(model_name, download_if_missing, fetch=False)],
    handle=lambda ref, keep_on_gpu, inputs: UpscalerHandle(keep_on_gpu=keep_on_gpu, ref=ref),
))


class AnimeVideoUpscale:
    DESCRIPTION = ("Upscales a clip frame by frame in chunks (AnimeSR carries its recurrent state across chunks), "
                   "writing into one output tensor; optional spatial tiles with blended seams, automatic tiles on "
                   "out-of-memory, Lanczos input rescaling and output resizing.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "upscaler": (UPSCALER, {"tooltip": "From AnimeVideo Load Upscaler."}),
                "frames": ("IMAGE", {"tooltip": "The clip, an IMAGE batch [frames, H, W, 3]. Any size: AnimeSR pads "
                                     "sides to a multiple of 4 and crops the result back."}),
                "chunk_size": ("INT", {"default": 8, "min": 1, "max": 4096, "tooltip": "Frames moved to the device "
                               "at once. Lower uses less memory; the result is the same for any value."}),
                "tile_size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "Process each "
                              f"frame in tiles of this many input px (seams blended); 0 = whole frames, switching to "
                              f"tiles by itself on out-of-memory. At least {up_stream.MIN_TILE} when set."}),
                "input_rescaling": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 1.0, "step": 0.05, "tooltip":
                                    "Shrink the frames (Lanczos) before upscaling. AnimeSR's input rescaling: "
                                    "0.5 often gives cleaner lines on noisy or soft sources; 1 keeps them as they are."}),
                "output_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": up_stream.MAX_OUTPUT_SCALE,
                                 "step": 0.25, "tooltip": "Output size as a multiple of the input frames, reached by "
                                 "a Lanczos resize after the model. 0 keeps the model's own result (x4 for AnimeSR "
                                 "and the Real-ESRGAN anime models, times input_rescaling)."}),
            },
            "optional": {
                "tile_overlap": ("INT", {"default": 16, "min": 0, "max": 512, "step": 4, "tooltip": "Input px "
                                 "shared by neighbouring tiles, blended across (at most half a tile)."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The upscaled clip, IMAGE [frames, H', W', 3] float32 0..1.",)
    FUNCTION = "upscale"
    CATEGORY = CATEGORY

    def upscale(self, upscaler, frames, chunk_size, tile_size, input_rescaling, output_scale, tile_overlap=16):
        if not isinstance(upscaler, UpscalerHandle):
            raise AnimeVideoInputError("upscaler: expected the output of AnimeVideo Load Upscaler.")
        opts = up_stream.StreamOptions(chunk_size=int(chunk_size), tile_size=int(tile_size),
                                       tile_overlap=int(tile_overlap), input_rescaling=float(input_rescaling),
                                       output_scale=float(output_scale), out_device="cpu")
        up_stream.check_options(opts)
        n, h, w = (int(d) for d in frames.shape[:3])
        device = bridge.torch_device()
        managed = upscaler.managed
        plan = up_stream.plan_clip(managed.pack_model, n, h, w, opts)
        opts, result, working = up_stream.fit_to_memory(managed.pack_model, plan, opts, device,
                                                        bridge.available_ram_bytes(), frames.dtype)
        if opts.tile_size and not tile_size:
            bridge.log.info("AnimeVideo Upscale: %dx%d px frames in tiles of %d px to fit the RAM", w, h,
                            opts.tile_size)
        what = f"upscaling {n} frame(s) of {w}x{h} to {plan.out_hw[1]}x{plan.out_hw[0]}"
        check_clip_memory(what, result, working, MEMORY_ADVICE)
        progress = bridge.Progress(max(1, n), desc="Upscale")
        try:
            with memory.allocation_guard(what, result + working, MEMORY_ADVICE), \
                    ModelOnDevice(managed, upscaler.keep_on_gpu, working) as model:
                out = up_stream.upscale_frames(model, frames, opts, device=device,
                                               on_frame=lambda done, total: progress.set(done),
                                               check_interrupt=bridge.check_interrupt)
        finally:
            progress.close()
        return (out,)


NODE_CLASS_MAPPINGS = {
    "AnimeVideoLoadUpscaler": AnimeVideoLoadUpscaler,
    "AnimeVideoUpscale": AnimeVideoUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoLoadUpscaler": "Load Upscaler (AnimeVideo)",
    "AnimeVideoUpscale": "Upscale Video (AnimeVideo)",
}

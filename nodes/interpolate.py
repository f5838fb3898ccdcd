"""Frame-interpolation nodes: an AnimeInterp loader and an anime-aware interpolator.

The work happens in ``pipelines.interpolate``: ``timing`` finds repeated drawings and scene cuts
and plans the output frames, ``run`` makes them pair by pair with the model.
"""
from __future__ import annotations

import math
import os

import torch

from ..pipelines import memory, storyboard
from ..pipelines.checkpoint_io import FileIdentity
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.image_ops import comfy_image_to_bchw
from ..pipelines.interpolate import loader as interp_loader
from ..pipelines.interpolate import run as interp_run
from ..pipelines.interpolate import timing
from . import comfy_bridge as bridge
from .common import (LoaderSpec, ModelHandle, ModelOnDevice, cached_model, check_clip_memory, clip_bytes,
                     input_copy_bytes, make_loader_node, resolve_model_file)

INTERPOLATOR = "ANIMEVIDEO_INTERPOLATOR"
KIND = "interpolation"
EXTENSIONS = (".ckpt", ".pth", ".pt", ".safetensors", ".sft")
DTYPES = list(interp_loader.DTYPES)
CATEGORY = "AnimeVideo/Interpolate"
MAX_MULTIPLIER = 16
MEMORY_ADVICE = ("Lower multiplier or target_fps, interpolate before upscaling (smaller frames), or interpolate "
                 "fewer frames at once " + memory.CHUNK_ADVICE + ".")


def interpolator_names() -> list[str]:
    return bridge.list_files(KIND, EXTENSIONS)


def missing_model_message(model_name: str) -> str:
    return (f"model_name: '{model_name}' was not found in models/{KIND} ({bridge.models_dir_hint(KIND)}). "
            f"{interp_loader.EXPECTED_FILE} Put it in models/{KIND}/.")


def resolve_interpolator_path(model_name: str) -> str:
    path = resolve_model_file(model_name, KIND, "model_name", lambda: missing_model_message(model_name))
    if not os.path.isfile(path):
        raise AnimeVideoModelError(missing_model_message(model_name))
    return path


def open_interpolator(model_name: str, dtype: str = "auto"):
    """(cache key, load, name, path) of the interpolator for these loader inputs (see LoaderSpec.open)."""
    path = resolve_interpolator_path(model_name)
    torch_dtype = interp_loader.resolve_dtype(dtype)
    key = ("animeinterp", FileIdentity.of(path), str(torch_dtype))
    return key, lambda: interp_loader.load_interpolator(path, torch_dtype).to(bridge.offload_device()), model_name, path


def load_interpolator_cached(model_name: str, dtype_name: str):
    """The managed interpolator (shared through the model cache)."""
    return cached_model(*open_interpolator(model_name, dtype_name))


class InterpolatorHandle(ModelHandle):
    """What flows along the ANIMEVIDEO_INTERPOLATOR wire: the shared model, its file name, placement."""

    def __init__(self, model=None, name: str = "", keep_on_gpu: bool = False, ref=None):
        super().__init__(model, keep_on_gpu, ref)
        self.name = name


AnimeVideoLoadInterpolator = make_loader_node(LoaderSpec(
    node_id="AnimeVideoLoadInterpolator",
    description="Loads AnimeInterp (CVPR 2021) from its released anime_interp_full.ckpt, or a file in the same "
                "layout, for AnimeVideo Interpolate.",
    model_inputs=lambda: {"model_name": (interpolator_names(), {
        "tooltip": "AnimeInterp weights in models/interpolation: anime_interp_full.ckpt from "
                   "github.com/lisiyao21/AnimeInterp (README links), or a file in its layout."})},
    dtypes=DTYPES,
    dtype_tooltip="Weight precision. auto: fp32 (as released). fp16/bf16 halve the memory on a GPU; flows are "
                  "always refined in fp32.",
    return_type=INTERPOLATOR, return_name="interpolator",
    output_tooltip="The loaded AnimeInterp model, for AnimeVideo Interpolate.",
    category=CATEGORY,
    open=open_interpolator,
    checks=lambda model_name: [lambda: resolve_interpolator_path(model_name)],
    keep_on_gpu_tooltip="Keep the model on the GPU between runs (faster re-runs, holds about 25 MB of VRAM until "
                        "ComfyUI needs the room). Off: it waits on the CPU.",
    download=False,
    handle=lambda ref, keep_on_gpu, inputs: InterpolatorHandle(name=os.path.basename(inputs["model_name"]),
                                                               keep_on_gpu=keep_on_gpu, ref=ref),
))


def clip_frames(frames) -> torch.Tensor:
    """IMAGE -> [N, H, W, 3] float32 (alpha dropped, grey expanded), with input-named errors."""
    x = comfy_image_to_bchw(frames, "frames")
    if x.shape[0] == 0:
        raise AnimeVideoInputError("frames: the batch is empty; give at least one frame.")
    return x.permute(0, 2, 3, 1)


def target_rate(source_fps: float, multiplier: int, target_fps: float) -> float:
    if not isinstance(source_fps, (int, float)) or not math.isfinite(source_fps) or source_fps <= 0:
        raise AnimeVideoInputError(f"source_fps: {source_fps} is not a frame rate; give the clip's real rate (> 0), "
                                   "e.g. 24, 23.976 or 12.")
    if target_fps is None or target_fps == 0:
        if int(multiplier) != multiplier or not 1 <= multiplier <= MAX_MULTIPLIER:
            raise AnimeVideoInputError(
                f"multiplier: {multiplier} is not allowed; use a whole number from 1 to {MAX_MULTIPLIER} (2, 4 or 8 "
                "are usual; 1 keeps the frame rate and only fills in repeated drawings), or set target_fps.")
        return float(source_fps) * int(multiplier)
    if not math.isfinite(target_fps) or target_fps < 0:
        raise AnimeVideoInputError(f"target_fps: {target_fps} is not allowed; give the output rate in frames per "
                                   "second, "
                                   "or 0 to use the multiplier.")
    return float(target_fps)


class AnimeVideoInterpolate:
    DESCRIPTION = ("Frame interpolation with AnimeInterp that understands anime timing: repeated frames (drawn on "
                   "twos/threes) are detected and only distinct drawings are interpolated, re-timed to the new frame "
                   "rate; scene cuts are detected and never blended across. The info output says what was found.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "interpolator": (INTERPOLATOR, {"tooltip": "From AnimeVideo Load Interpolator."}),
                "frames": ("IMAGE", {"tooltip": "The clip, as an IMAGE batch [frames, H, W, 3]. Any size; frames "
                                     "are padded to at least 128 px and a multiple of 8 for the model and cropped back."}),
                "source_fps": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0, "step": 0.001,
                                         "tooltip": "The clip's real frame rate (anime is usually 24 or 23.976)."}),
                "multiplier": ("INT", {"default": 2, "min": 1, "max": MAX_MULTIPLIER, "tooltip": "Output rate = "
                                       "source_fps x multiplier (2, 4, 8, ...). 1 keeps the rate and fills in the "
                                       "repeated frames of drawings on twos/threes. Ignored when target_fps is set."}),
                "target_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.001, "tooltip":
                                         "Any output frame rate (e.g. 30 or 60 from 24); 0 uses the multiplier. The "
                                         "clip keeps its duration."}),
                "dedup": ("BOOLEAN", {"default": True, "tooltip": "Detect repeated frames (animation on twos/threes) "
                                      "and interpolate only between distinct drawings, at their real times. Off: "
                                      "every frame is treated as a new drawing."}),
                "dedup_threshold": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                                              "A frame repeats the current drawing when no 4x4 block of its "
                                              "downscaled luma differs by more than this (0..1) on average. Raise for "
                                              "noisy or heavily compressed video; lower if small changes (mouths, "
                                              "eyes) get merged."}),
                "scene_cut_threshold": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                                  "Colour-histogram distance (0..1) between consecutive frames above "
                                                  "which a scene cut is assumed; frames are held, never blended, "
                                                  "across it. 1.0 turns detection off; lower catches cuts between "
                                                  "similar-coloured shots."}),
            },
            "optional": {
                "flow_iterations": ("INT", {"default": 12, "min": 1, "max": 32, "tooltip": "Recurrent flow "
                                            "refinement steps per pair (12 as released). Fewer is faster, coarser."}),
            },
        }

    # timeline is last, so the slots of workflows made before it existed stay where they were
    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING", "IMAGE")
    RETURN_NAMES = ("frames", "fps", "info", "timeline")
    OUTPUT_TOOLTIPS = ("The re-timed clip as an IMAGE batch [frames, H, W, 3].",
                       "The new frame rate, for core's Create Video.",
                       "What dedup and scene-cut detection found and how the frames were made (also shown on "
                       "the node after a run).",
                       "One picture of the same: source frames grouped into drawings (held frames on twos/threes "
                       "form one block), scene cuts as red bars, output frames green when new (interpolated) "
                       "and grey when copied. Connect a Preview Image.")
    FUNCTION = "interpolate"
    CATEGORY = CATEGORY

    def interpolate(self, interpolator, frames, source_fps, multiplier, target_fps=0.0, dedup=True,
                    dedup_threshold=0.02, scene_cut_threshold=0.4, flow_iterations=12):
        handle = interpolator
        if not isinstance(handle, InterpolatorHandle):
            raise AnimeVideoInputError("interpolator: connect AnimeVideo Load Interpolator here.")
        new_fps = target_rate(source_fps, multiplier, target_fps)
        for name, value in (("dedup_threshold", dedup_threshold), ("scene_cut_threshold", scene_cut_threshold)):
            if not 0.0 <= float(value) <= 1.0:
                raise AnimeVideoInputError(f"{name}: {value} is outside 0..1.")
        if not 1 <= int(flow_iterations) <= 32:
            raise AnimeVideoInputError(f"flow_iterations: {flow_iterations} is outside 1..32.")
        clip = clip_frames(frames)
        n, h, w, _ = clip.shape
        header = (f"AnimeInterp ({handle.name}), {int(flow_iterations)} flow refinement steps from zero initial flow "
                  f"(no segment-guided matching).")
        analysis = timing.analyze_clip(clip, bool(dedup), float(dedup_threshold), float(scene_cut_threshold))
        if n == 1:
            info = [header, f"Only 1 frame: nothing to interpolate between; returned unchanged at {new_fps:g} fps."]
            return with_info(clip.contiguous(), new_fps, info, analysis, [timing.OutFrame(0)], source_fps, clip)

        plan = timing.plan_retiming(analysis, float(source_fps), new_fps)
        lines = [header] + timing.describe(analysis, plan, float(source_fps), new_fps)
        model = handle.model
        size = interp_run.padded_size(h, w, model.size_multiple, model.min_size)
        if size != (h, w):
            lines.append(f"Frames padded from {w}x{h} to {size[1]}x{size[0]} for the model and cropped back.")

        needs_model = not all(f.is_copy for f in plan)
        on_cpu = bridge.torch_device().type == "cpu"
        working = input_copy_bytes(frames)
        if needs_model and on_cpu:
            working += interp_run.working_bytes(model.cfg, *size)
        check_clip_memory(f"interpolating {n} frames of {w}x{h} to {len(plan)} frames", clip_bytes(len(plan), h, w),
                          working, MEMORY_ADVICE)
        progress = bridge.Progress(len(plan), desc="AnimeInterp")

        def on_frame(done, total, frame=None):
            preview = None
            if frame is not None:
                preview = (frame.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
            progress.set(done, preview)

        try:
            if not needs_model:  # nothing to interpolate (e.g. x1 on a clip on ones): no model
                out, _ = interp_run.interpolate_clip(model, clip, plan, on_frame=on_frame)
            else:
                with ModelOnDevice(handle.managed, handle.keep_on_gpu, interp_run.working_bytes(model.cfg, *size),
                                   "interpolating", MEMORY_ADVICE):
                    out, _ = interp_run.interpolate_clip(model, clip, plan, iters=int(flow_iterations),
                                                         on_frame=on_frame, check_interrupt=bridge.check_interrupt)
        finally:
            progress.close()
        return with_info(out, new_fps, lines, analysis, plan, source_fps, clip)


def with_info(frames, new_fps, lines, analysis, plan, source_fps, clip):
    """The node's outputs, plus its info text as a ``ui`` entry the pack's js/ extension shows on the node."""
    info = "\n".join(lines)
    picture, _ = storyboard.interpolation_timeline(analysis, plan, float(source_fps), float(new_fps), clip)
    timeline = torch.from_numpy(picture).float().div(255)[None]
    return {"ui": {"text": [info]}, "result": (frames, float(new_fps), info, timeline)}


NODE_CLASS_MAPPINGS = {
    "AnimeVideoLoadInterpolator": AnimeVideoLoadInterpolator,
    "AnimeVideoInterpolate": AnimeVideoInterpolate,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoLoadInterpolator": "Load Interpolator (AnimeVideo)",
    "AnimeVideoInterpolate": "Interpolate Frames, anime-aware (AnimeVideo)",
}

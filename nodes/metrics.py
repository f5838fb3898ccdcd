"""Evaluation nodes: a generated clip against gold frames (PSNR, SSIM, LPIPS, EDMD, TC), and a folder of generated
clips against a folder of gold clips (FVD, KVD, FID: set metrics, never computed on a single pair).

The work happens in ``pipelines.metrics``; the feature networks load from models/metrics through the shared
model cache.
"""
from __future__ import annotations

import os

from ..pipelines.checkpoint_io import FileIdentity, resolve_in_folders
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.metrics import clips_io, evaluate, features, loader, temporal
from . import comfy_bridge as bridge
from .common import ModelOnDevice, cached_model, check_clip_memory, clip_bytes, resolve_model_file

FOLDER = loader.FOLDER
CATEGORY = "AnimeVideo/Metrics"
NONE = "none"
LPIPS_CHOICES = [NONE, "alex", "vgg"]
RESOLUTIONS = list(evaluate.RESOLUTIONS)
LENGTHS = list(evaluate.LENGTHS)
PROTOCOLS = list(features.VIDEO_PROTOCOLS)
DATA_ROOTS = ("output", "input")
# Working memory of one 16-frame 224x224 clip through the released I3D in fp32 on a CPU (input, the largest
# activations and the branch concatenations; an estimate from the layer sizes, rounded up)
I3D_WORKING_BYTES_PER_CLIP = 160 * 2 ** 20
# The clip node keeps both clips in float32 at the scored size plus resized copies and network inputs
CLIP_NODE_COPIES = 8


def metric_files() -> list[str]:
    return bridge.list_files(FOLDER, loader.EXTENSIONS)


def missing_message(input_name: str, name: str, what: str) -> str:
    return (f"{input_name}: '{name}' was not found in models/{FOLDER} ({bridge.models_dir_hint(FOLDER)}). "
            f"{loader.WHERE[what]}")


def resolve_metric_file(name: str, input_name: str, what: str) -> str:
    path = resolve_model_file(name, FOLDER, input_name, lambda: missing_message(input_name, name, what))
    if not os.path.isfile(path):
        raise AnimeVideoModelError(missing_message(input_name, name, what))
    return path


def _cached(tag: str, paths: list[str], load):
    key = (tag,) + tuple(FileIdentity.of(p) for p in paths)
    return cached_model(key, lambda: load().to(bridge.offload_device()), os.path.basename(paths[-1]), paths[-1])


def load_lpips_cached(kind: str):
    backbone = resolve_metric_file(loader.LPIPS_BACKBONES[kind], "lpips", "lpips")
    heads = resolve_metric_file(loader.LPIPS_HEADS[kind], "lpips", "lpips")
    return _cached("lpips", [backbone, heads], lambda: loader.load_lpips(backbone, heads))


def load_i3d_cached(name: str):
    path = resolve_metric_file(name, "i3d_model", "i3d")
    return _cached("i3d", [path], lambda: loader.load_i3d(path))


def load_inception_cached(name: str):
    path = resolve_metric_file(name, "inception_model", "inception")
    return _cached("inception", [path], lambda: loader.load_inception(path))


def resolve_clip_folder(value: str, input_name: str) -> str:
    """'output/…' or 'input/…' inside ComfyUI's output or input folder (never outside them)."""
    text = (value or "").strip().replace("\\", "/")
    root, _, rest = text.partition("/")
    roots = bridge.data_folders()
    if root not in DATA_ROOTS or not rest.strip("/"):
        raise AnimeVideoInputError(
            f"{input_name}: '{value}' must start with 'output/' or 'input/' and name a folder inside ComfyUI's "
            f"output or input folder (e.g. output/AnimeVideo/run1), holding videos or one sub-folder of frames per clip.")
    try:
        path = resolve_in_folders(rest, [roots[root]], input_name)
    except FileNotFoundError:
        raise AnimeVideoInputError(f"{input_name}: '{value}' does not exist (looked in {roots[root]}).") from None
    if not os.path.isdir(path):
        raise AnimeVideoInputError(f"{input_name}: '{value}' is a file; give the folder that holds the clips.")
    return path


def _check_choice(value, allowed, input_name):
    if value not in allowed:
        raise AnimeVideoInputError(f"{input_name}: '{value}' is not one of {', '.join(allowed)}.")


class AnimeVideoClipMetrics:
    DESCRIPTION = ("Scores a generated clip against gold frames, frame by frame: PSNR and SSIM on [0, 255], LPIPS "
                   "(AlexNet or VGG with the released heads), EDMD (LVCD's lineart alignment, when a lineart model is "
                   "chosen), TC (LVCD's temporal consistency, when an interpolator is connected for optical flow) and "
                   "AniSora's motion-mask precision (when a motion mask is connected). "
                   "Gold is resized to the generated size as the anime pipeline paper does, or both to 256x256 as "
                   "LVCD does. For FVD/FID use the set node: they are not defined on one pair of clips.")

    @classmethod
    def INPUT_TYPES(cls):
        lineart_names = [NONE] + bridge.list_files("lineart", (".pth", ".pt", ".safetensors", ".sft", ".ckpt", ".bin"))
        return {
            "required": {
                "generated": ("IMAGE", {"tooltip": "The generated clip: an IMAGE batch [frames, H, W, 3]."}),
                "gold": ("IMAGE", {"tooltip": "The gold (reference) frames: an IMAGE batch, any size; frame i is "
                                   "compared with generated frame i."}),
                "resolution": (RESOLUTIONS, {"default": "generated", "tooltip": "generated: resize gold to the "
                               "generated size (anime pipeline paper). 256: resize both to 256x256 (LVCD)."}),
                "length": (LENGTHS, {"default": "shorter", "tooltip": "shorter: score the first frames both clips "
                           "have (reported). exact: stop with an error when the frame counts differ."}),
                "skip_first_frame": ("BOOLEAN", {"default": False, "tooltip": "Leave frame 0 out (LVCD's reference "
                                     "frame, GANime's given frame): it was an input, not a result."}),
                "lpips": (LPIPS_CHOICES, {"default": "alex", "tooltip": "LPIPS backbone: alex (LVCD) or vgg (the "
                          "pipeline paper), read from models/metrics (lpips/alex.pth + alexnet-owt-7be5be79.pth, or "
                          "lpips/vgg.pth + vgg16-397923af.pth). none: skip LPIPS."}),
            },
            "optional": {
                "lineart_model": (lineart_names, {"default": NONE, "tooltip": "For EDMD: the lineart generator in "
                                  "models/lineart (sk_model.pth, as LVCD) that re-extracts lines from the generated "
                                  "frames and from gold. none: skip EDMD."}),
                "interpolator": ("ANIMEVIDEO_INTERPOLATOR", {"tooltip": "For TC: AnimeInterp from AnimeVideo Load "
                                 "Interpolator; its flow network estimates gold's optical flow. Not connected: skip "
                                 "TC."}),
                "reference_lineart": ("IMAGE", {"tooltip": "For EDMD as LVCD scores it: the input sketches (one per "
                                      "frame, either polarity) instead of lineart re-extracted from gold."}),
                "chunk_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "Frames per network call. "
                               "Lower uses less memory; the numbers do not change."}),
                "motion_mask": ("MASK", {"tooltip": "For AniSora's motion-mask precision: where the generated clip "
                                "may move (1 = may move; one mask, or one per frame). Not connected: skipped."}),
            },
        }

    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "FLOAT", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("psnr", "ssim", "lpips", "edmd", "tc", "mask_precision", "report")
    OUTPUT_TOOLTIPS = ("PSNR in dB (higher is better; inf for identical frames).", "SSIM (higher is better).",
                       "LPIPS (lower is better; nan when skipped).", "EDMD in pixels (lower is better; nan when "
                       "skipped).", "TC (1 = as consistent as gold; lower is better; nan when skipped).",
                       "Motion-mask precision: the share of the generated clip's motion inside motion_mask (higher is "
                       "better; nan when no mask is connected).",
                       "A readable report: every value with the protocol it used.")
    FUNCTION = "score"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, resolution="generated", length="shorter", lpips="alex", lineart_model=NONE):
        try:
            _check_choice(resolution, RESOLUTIONS, "resolution")
            _check_choice(length, LENGTHS, "length")
            _check_choice(lpips, LPIPS_CHOICES, "lpips")
            if lpips != NONE:
                resolve_metric_file(loader.LPIPS_BACKBONES[lpips], "lpips", "lpips")
                resolve_metric_file(loader.LPIPS_HEADS[lpips], "lpips", "lpips")
            if lineart_model not in (NONE, None):
                from .lineart import resolve_lineart_path

                resolve_lineart_path(lineart_model)
        except (AnimeVideoInputError, AnimeVideoModelError) as e:
            return str(e)
        return True

    def score(self, generated, gold, resolution="generated", length="shorter", skip_first_frame=False, lpips="alex",
              lineart_model=NONE, interpolator=None, reference_lineart=None, chunk_size=8, motion_mask=None):
        _check_choice(lpips, LPIPS_CHOICES, "lpips")
        device = bridge.torch_device()
        if hasattr(generated, "shape") and hasattr(gold, "shape") and generated.ndim == 4 and gold.ndim == 4:
            n, h, w = int(generated.shape[0]), int(generated.shape[1]), int(generated.shape[2])
            side = max(h, w, evaluate.LVCD_SIZE) if resolution == "256" else max(h, w)
            check_clip_memory(f"scoring {n} frames against gold", 0, CLIP_NODE_COPIES * clip_bytes(n, side, side) +
                              clip_bytes(int(gold.shape[0]), int(gold.shape[1]), int(gold.shape[2])),
                              "Score fewer frames at once (split the clip) or a smaller size.")
        steps = 2 + (lpips != NONE) + (lineart_model not in (NONE, None)) + (interpolator is not None) + \
            (motion_mask is not None)
        progress = bridge.Progress(steps, desc="Clip metrics")
        models = []
        try:
            lp = lineart_fn = flow_fn = None
            flow_min = 0
            if lpips != NONE:
                models.append(ModelOnDevice(load_lpips_cached(lpips), keep_on_gpu=False))
                lp = models[-1].model
            if lineart_model not in (NONE, None):
                from ..pipelines.lineart import extract as la_extract
                from .lineart import load_lineart_cached

                models.append(ModelOnDevice(load_lineart_cached(lineart_model), keep_on_gpu=False))
                generator = models[-1].model

                def lineart_fn(frames):
                    return la_extract.extract_lineart(generator, frames, chunk_size=int(chunk_size), device=device,
                                                      check_interrupt=bridge.check_interrupt)
            if interpolator is not None:
                models.append(ModelOnDevice(interpolator.managed, keep_on_gpu=interpolator.keep_on_gpu))
                model = models[-1].model
                flow_fn, flow_min = temporal.animeinterp_flow(model), model.min_size
            for m in models:
                m.__enter__()
            report = evaluate.clip_metrics(generated, gold, resolution, length, bool(skip_first_frame), lp,
                                           lineart_fn, reference_lineart, flow_fn, flow_min, int(chunk_size),
                                           on_step=lambda _name: progress.update(1),
                                           check_interrupt=bridge.check_interrupt, motion_mask=motion_mask)
        finally:
            for m in reversed(models):
                m.__exit__(None, None, None)
            progress.close()
        v = report.values()
        return (v["psnr"], v["ssim"], v["lpips"], v["edmd"], v["tc"], v["mask_precision"], report.describe())


class AnimeVideoSetMetrics:
    DESCRIPTION = ("FVD, KVD (I3D, Kinetics-400) and FID (Inception-v3) between a folder of generated clips and a "
                   "folder of gold clips: set metrics, as the papers compute them, never on a single pair. Folders "
                   "are inside ComfyUI's output or input folder and hold videos, animated images or one sub-folder "
                   "of frames per clip. Clips are read one at a time; features are extracted in batches.")

    @classmethod
    def INPUT_TYPES(cls):
        files = metric_files()
        i3d_default = loader.I3D_FILE if loader.I3D_FILE in files else NONE
        inc_default = loader.INCEPTION_FILE if loader.INCEPTION_FILE in files else NONE
        return {
            "required": {
                "generated_folder": ("STRING", {"default": "output/AnimeVideo", "tooltip": "Generated clips: "
                                     "'output/<folder>' or 'input/<folder>' inside ComfyUI's output or input folder."}),
                "gold_folder": ("STRING", {"default": "input/gold", "tooltip": "Gold clips, the same way. The sets "
                                "may differ in size; FVD needs at least 2 clips each (thousands for stable values)."}),
                "i3d_model": ([NONE] + files, {"default": i3d_default, "tooltip": "For FVD and KVD: "
                              "i3d_pretrained_400.pt in models/metrics (VideoGPT's conversion of the TF-Hub I3D). "
                              "none: skip FVD/KVD."}),
                "inception_model": ([NONE] + files, {"default": inc_default, "tooltip": "For FID: "
                                    "pt_inception-2015-12-05-6726825d.pth in models/metrics (pytorch-fid's TF FID "
                                    "Inception). none: skip FID."}),
                "protocol": (PROTOCOLS, {"default": "standard", "tooltip": "FVD/KVD clips: standard = first 16 frames "
                             "per clip (StyleGAN-V and most papers); windows = every 16-frame window (LVCD); ganime = "
                             "first frame left out, short clips padded to 9 (GANime)."}),
            },
            "optional": {
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "I3D windows per batch: memory "
                               "grows with it, the numbers do not change."}),
                "max_frames": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Read at most this many "
                               "frames of each clip (0: all)."}),
                "skip_first_frame_fid": ("BOOLEAN", {"default": False, "tooltip": "FID: leave frame 0 of each clip "
                                         "out (LVCD's and GANime's conditioning frame)."}),
            },
        }

    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("fvd", "kvd", "fid", "report")
    OUTPUT_TOOLTIPS = ("FVD (lower is better; nan when skipped).", "KVD: unbiased polynomial-kernel MMD^2 on I3D "
                       "features (lower is better).", "FID (lower is better; nan when skipped).",
                       "A readable report: values, set sizes, protocols and a warning when the sets are smaller "
                       "than the feature size.")
    FUNCTION = "score"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, i3d_model=NONE, inception_model=NONE, protocol="standard"):
        try:
            _check_choice(protocol, PROTOCOLS, "protocol")
            if i3d_model in (NONE, None) and inception_model in (NONE, None):
                raise AnimeVideoInputError("i3d_model and inception_model are both 'none': choose at least one "
                                           "network (I3D for FVD/KVD, Inception for FID).")
            if i3d_model not in (NONE, None):
                resolve_metric_file(i3d_model, "i3d_model", "i3d")
            if inception_model not in (NONE, None):
                resolve_metric_file(inception_model, "inception_model", "inception")
        except (AnimeVideoInputError, AnimeVideoModelError) as e:
            return str(e)
        return True

    def score(self, generated_folder, gold_folder, i3d_model=NONE, inception_model=NONE, protocol="standard",
              batch_size=8, max_frames=0, skip_first_frame_fid=False):
        _check_choice(protocol, PROTOCOLS, "protocol")
        if bridge.torch_device().type == "cpu" and i3d_model not in (NONE, None):
            check_clip_memory(f"FVD feature extraction in batches of {int(batch_size)} clips", 0,
                              int(batch_size) * I3D_WORKING_BYTES_PER_CLIP, "Lower batch_size (the result is the same).")
        gen_sources = clips_io.list_clips(resolve_clip_folder(generated_folder, "generated_folder"), "generated_folder")
        gold_sources = clips_io.list_clips(resolve_clip_folder(gold_folder, "gold_folder"), "gold_folder")
        i3d = load_i3d_cached(i3d_model) if i3d_model not in (NONE, None) else None
        inc = load_inception_cached(inception_model) if inception_model not in (NONE, None) else None
        if i3d is None and inc is None:
            raise AnimeVideoInputError("i3d_model and inception_model are both 'none': choose at least one network.")
        passes = (i3d is not None) + (inc is not None)
        progress = bridge.Progress(passes * (len(gen_sources) + len(gold_sources)), desc="Set metrics")
        placed = [ModelOnDevice(m, keep_on_gpu=False) for m in (i3d, inc) if m is not None]
        i3d, inc = (None if m is None else m.pack_model for m in (i3d, inc))
        try:
            for p in placed:
                p.__enter__()
            report = evaluate.set_metrics(lambda: clips_io.iter_clips(gen_sources, int(max_frames)),
                                          lambda: clips_io.iter_clips(gold_sources, int(max_frames)),
                                          i3d, inc, protocol, int(batch_size), bool(skip_first_frame_fid),
                                          (len(gen_sources), len(gold_sources)), on_clip=lambda: progress.update(1),
                                          check_interrupt=bridge.check_interrupt)
        finally:
            for p in reversed(placed):
                p.__exit__(None, None, None)
            progress.close()
        v = report.values()
        return (v["fvd"], v["kvd"], v["fid"], report.describe())


NODE_CLASS_MAPPINGS = {
    "AnimeVideoClipMetrics": AnimeVideoClipMetrics,
    "AnimeVideoSetMetrics": AnimeVideoSetMetrics,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoClipMetrics": "Clip Metrics vs Gold (AnimeVideo)",
    "AnimeVideoSetMetrics": "Set Metrics FVD/KVD/FID (AnimeVideo)",
}

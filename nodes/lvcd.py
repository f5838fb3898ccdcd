"""LVCD nodes: load (SVD + LVCD weights), long-video options, colorize. The work happens in ``pipelines.lvcd``
and ``pipelines.long_video``."""
from __future__ import annotations

from ..pipelines.checkpoint_io import FileIdentity
from ..pipelines.errors import AnimeVideoInputError
from ..pipelines.image_ops import FIT_MODES, comfy_image_to_bchw, fit_image
from ..pipelines.lineart import POLARITIES, to_hint
from ..pipelines.long_video.segments import TAIL_MODES, LongVideoOptions, parse_reference_indices, plan_segments
from ..pipelines.long_video.decode import chunk_spans
from ..pipelines.svd import decode as svd_decode
from ..pipelines.svd import loader as svd_loader
from . import comfy_bridge as bridge
from ..pipelines import memory
from .common import (LoaderSpec, ModelHandle, ModelOnDevice, cached_model, check_clip_memory, clip_bytes,
                     diffusion_working_bytes, input_copy_bytes, make_loader_node, resolve_model_file, with_fetchable)
from .svd import CKPT_EXTENSIONS, DTYPES, LONG_VIDEO, resolve_svd_path

LVCD_MODEL = "ANIMEVIDEO_LVCD"
CATEGORY = "AnimeVideo/LVCD"
LONG_VIDEO_CATEGORY = "AnimeVideo/Long video"  # for the SVD sampler as much as for LVCD
MEMORY_ADVICE = ("Colorize fewer lineart frames at once " + memory.CHUNK_ADVICE + ", or lower width/height.")
LVCD_FOLDER = "lvcd"
LVCD_EXTENSIONS = (".safetensors", ".ckpt", ".pth", ".pt", ".sft")
DEFAULT_SVD = "svd.safetensors"
DEFAULT_LVCD = "lvcd-fp16.safetensors"
EXPECTED_LVCD = (
    "Expected the LVCD weights in models/lvcd: lvcd.ckpt (from the LVCD authors' release) or "
    "lvcd-fp16.safetensors (huggingface.co/Kijai/LVCD-pruned). They overlay the 14-frame SVD "
    "(svd.safetensors, huggingface.co/stabilityai/stable-video-diffusion-img2vid) in models/checkpoints; "
    "LVCD was trained on that one (SVD-XT files have the same layout and load too, untested by the paper)."
)


def _default(names: list[str], preferred: str) -> str:
    return preferred if preferred in names or not names else names[0]


def lvcd_names() -> list[str]:
    return with_fetchable(bridge.list_files(LVCD_FOLDER, LVCD_EXTENSIONS), LVCD_FOLDER)


def resolve_lvcd_path(lvcd_name: str, download_if_missing: bool = False, fetch: bool = True) -> str | None:
    return resolve_model_file(lvcd_name, LVCD_FOLDER, "lvcd_name", lambda: (
        f"lvcd_name: '{lvcd_name}' was not found in models/lvcd ({bridge.models_dir_hint(LVCD_FOLDER)}). "
        f"{EXPECTED_LVCD}"), download_if_missing, fetch)


def open_lvcd(ckpt_name: str, lvcd_name: str, dtype: str = "auto", download_if_missing: bool = False):
    """(cache key, load, name, path) of the LVCD model for these loader inputs (see LoaderSpec.open)."""
    from ..pipelines.lvcd.loader import load_lvcd

    svd_path = resolve_svd_path(ckpt_name, download_if_missing)
    lvcd_path = resolve_lvcd_path(lvcd_name, download_if_missing)
    torch_dtype = svd_loader.resolve_dtype(dtype, bridge.torch_device())
    key = ("lvcd", FileIdentity.of(svd_path), FileIdentity.of(lvcd_path), str(torch_dtype))
    return (key, lambda: load_lvcd(svd_path, lvcd_path, torch_dtype).to(bridge.offload_device()),
            f"{ckpt_name} + {lvcd_name}", lvcd_path)


def load_lvcd_cached(ckpt_name: str, lvcd_name: str, dtype_name: str, download_if_missing: bool = False):
    """The managed LVCD model (shared through the model cache)."""
    return cached_model(*open_lvcd(ckpt_name, lvcd_name, dtype_name, download_if_missing))


class LVCDHandle(ModelHandle):
    """What flows along the ANIMEVIDEO_LVCD wire: the shared model plus this loader's placement choice."""


def _lvcd_inputs() -> dict:
    ckpts = with_fetchable(bridge.list_files("checkpoints", CKPT_EXTENSIONS), "checkpoints")
    lvcds = lvcd_names()
    return {
        "ckpt_name": (ckpts, {"default": _default(ckpts, DEFAULT_SVD), "tooltip": "The SVD checkpoint in "
                      "models/checkpoints. LVCD was trained on the 14-frame svd.safetensors "
                      "(stabilityai/stable-video-diffusion-img2vid)."}),
        "lvcd_name": (lvcds, {"default": _default(lvcds, DEFAULT_LVCD), "tooltip": "The LVCD weights in "
                      "models/lvcd: lvcd-fp16.safetensors (Kijai/LVCD-pruned) or the authors' lvcd.ckpt."}),
    }


AnimeVideoLoadLVCD = make_loader_node(LoaderSpec(
    node_id="AnimeVideoLoadLVCD",
    description="Loads LVCD (reference-based lineart video colorization): the 14-frame SVD checkpoint with the "
                "LVCD sketch ControlNet and reference-attention weights on top.",
    model_inputs=_lvcd_inputs,
    dtypes=DTYPES,
    dtype_tooltip="Weight precision. auto: fp16 on a GPU, fp32 on the CPU. The VAE stays fp32 when fp16 is chosen.",
    return_type=LVCD_MODEL, return_name="lvcd_model",
    output_tooltip="The loaded LVCD model, for AnimeVideo LVCD Colorize.",
    category=CATEGORY,
    open=open_lvcd,
    checks=lambda ckpt_name, lvcd_name, download_if_missing: [
        lambda: resolve_svd_path(ckpt_name, download_if_missing, fetch=False),
        lambda: resolve_lvcd_path(lvcd_name, download_if_missing, fetch=False)],
    requires="LVCD",
    handle=lambda ref, keep_on_gpu, inputs: LVCDHandle(keep_on_gpu=keep_on_gpu, ref=ref),
))


class AnimeVideoLongVideoOptions:
    DESCRIPTION = ("Settings for long clips sampled in overlapping segments (LVCD §4.2): overlapped blending and "
                   "prev-reference attention. For AnimeVideo LVCD Colorize and SVD Image to Video.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "segment_length": ("INT", {"default": 14, "min": 1, "max": 64, "tooltip": "Frames per sampling "
                                   "pass. LVCD: 14 (its SVD's length); SVD-XT can take 25."}),
                "overlap": ("INT", {"default": 4, "min": 0, "max": 63, "tooltip": "Frames each pass shares with the "
                            "previous one; must be below segment_length. The paper uses 4 (cost x1.4 vs 0)."}),
                "alpha": ("FLOAT", {"default": 10.0, "min": 0.0, "max": 1000.0, "step": 0.5, "tooltip": "How much "
                          "more the overlapped frames attend to their previous results (logit bias ln alpha)."}),
                "shift": ("INT", {"default": 3, "min": 0, "max": 16, "tooltip": "New frames read the self-attention "
                          "keys of the frame this many earlier (content moves forward). 0 turns the shift off."}),
                "prev_reference": ("BOOLEAN", {"default": True, "tooltip": "Prev-reference attention: feed the "
                                   "previous pass's last frames through the reference path."}),
                "overlapped_blending": ("BOOLEAN", {"default": True, "tooltip": "Replace the overlapped frames' "
                                        "denoised estimate by the previous pass's at every step (seamless)."}),
                "fresh_noise_new_frames": ("BOOLEAN", {"default": False, "tooltip": "New noise for each pass's new "
                                           "frames. Off: reuse the earlier noise as the reference code does "
                                           "(reproducible, but the noise repeats every segment_length-overlap "
                                           "frames)."}),
                "tail": (list(TAIL_MODES), {"default": "shift_back", "tooltip": "When the clip length does not fit "
                         "the segments: shift_back moves the last pass back to end on the last frame (more "
                         "overlap); pad repeats the last frame's lineart and trims. No frame is dropped."}),
            },
        }

    RETURN_TYPES = (LONG_VIDEO,)
    RETURN_NAMES = ("long_video",)
    OUTPUT_TOOLTIPS = ("Long-video settings for the LVCD and SVD samplers.",)
    FUNCTION = "build"
    CATEGORY = LONG_VIDEO_CATEGORY

    def build(self, segment_length, overlap, alpha, shift, prev_reference, overlapped_blending,
              fresh_noise_new_frames, tail):
        opts = LongVideoOptions(int(segment_length), int(overlap), float(alpha), int(shift), bool(prev_reference),
                                bool(overlapped_blending), bool(fresh_noise_new_frames), str(tail))
        return (opts.validate(),)


class AnimeVideoLVCDColorize:
    DESCRIPTION = ("Colorizes a lineart sequence of any length from one or more coloured reference images (LVCD: "
                   "sketch ControlNet + reference attention on SVD, sampled in overlapping segments). Colour frames "
                   "go through AnimeVideo Lineart first. The output holds the lineart frames only (not the "
                   "reference).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lvcd_model": (LVCD_MODEL, {"tooltip": "From AnimeVideo Load LVCD."}),
                "reference": ("IMAGE", {"tooltip": "Coloured reference image(s): the shot's key frame(s). Several "
                              "images: each segment uses the one nearest to it (see reference_frame_indices)."}),
                "lineart": ("IMAGE", {"tooltip": "The lineart frames to colorize [frames, H, W, 3], e.g. from "
                            "AnimeVideo Lineart. Any polarity (see lineart_polarity)."}),
                "width": ("INT", {"default": 576, "min": 64, "max": 2048, "step": 8, "tooltip": "Working and output "
                          "width, a multiple of 8. LVCD was trained at 576x320; other sizes are experimental."}),
                "height": ("INT", {"default": 320, "min": 64, "max": 2048, "step": 8, "tooltip": "Working and "
                           "output height, a multiple of 8. LVCD was trained at 576x320."}),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How lineart and references meet the working "
                        "size: crop (centre crop), pad (letterbox: black, i.e. no lines) or stretch."}),
                "steps": ("INT", {"default": 25, "min": 1, "max": 200, "tooltip": "Euler steps per segment (sigma "
                          "700 to 0.002). The paper uses 25."}),
                "seed": ("INT", {"default": 1234, "min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF,
                                 "control_after_generate": True, "tooltip": "Noise seed (the reference code "
                                 "uses 1234)."}),
                "color_match": ("BOOLEAN", {"default": False, "tooltip": "Match each colour channel's mean and "
                                "spread over the clip to the reference's. Off: the model's colours as decoded "
                                "(no renormalisation either way)."}),
                "lineart_polarity": (list(POLARITIES), {"default": "auto", "tooltip": "What the lineart input is: "
                                     "white_on_black (AnimeVideo Lineart's output), black_on_white (paper drawings), "
                                     "or auto (inverted when mostly light)."}),
            },
            "optional": {
                "reference_frame_indices": ("STRING", {"default": "", "tooltip": "Which lineart frame each reference "
                                            "belongs to, e.g. '0, 40' (0-based). Empty: spread evenly (one "
                                            "reference: frame 0)."}),
                "reference_lineart": ("IMAGE", {"tooltip": "The references' own lineart (one per reference). "
                                      "Unconnected: the lineart of the frame each reference belongs to."}),
                "long_video": (LONG_VIDEO, {"tooltip": "From AnimeVideo Long Video Options. Unconnected: the "
                               "paper's settings (14-frame segments, overlap 4, alpha 10, shift 3)."}),
                "latent_preview": ("BOOLEAN", {"default": True, "tooltip": "When ComfyUI's preview "
                                   "method is not 'none': show a rough preview of each segment's "
                                   "last frame on the node at every step."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The colorized frames [frames, height, width, 3], one per lineart frame.",)
    FUNCTION = "colorize"
    CATEGORY = CATEGORY

    def colorize(self, lvcd_model, reference, lineart, width, height, fit, steps, seed, color_match,
                 lineart_polarity, reference_frame_indices="", reference_lineart=None, long_video=None,
                 latent_preview=True):
        from ..pipelines.lvcd import colorize as lvcd_colorize

        handle = lvcd_model
        opts = (long_video or LongVideoOptions()).validate()
        width, height = int(width), int(height)
        if width % 8 or height % 8:
            raise AnimeVideoInputError(f"width/height: {width}x{height}; both must be multiples of 8.")
        n, in_h, in_w = (int(d) for d in lineart.shape[:3])
        # result; hints at the input size (float copy, polarity) and fitted to the working size; decoder copy
        check_clip_memory(f"colorizing {n} lineart frames at {width}x{height}", clip_bytes(n, height, width),
                          2 * clip_bytes(n, in_h, in_w) + 2 * clip_bytes(n, height, width)
                          + input_copy_bytes(lineart), MEMORY_ADVICE)
        managed = handle.managed
        model = managed.pack_model
        lines = comfy_image_to_bchw(lineart, "lineart")
        if lines.shape[0] < 1:
            raise AnimeVideoInputError("lineart: got 0 frames; at least 1 lineart frame is needed.")
        hints = to_hint(lines.permute(0, 2, 3, 1), lineart_polarity).permute(0, 3, 1, 2)
        hints = fit_image(hints, width, height, fit)
        refs = fit_image(comfy_image_to_bchw(reference, "reference"), width, height, fit)
        num_frames = hints.shape[0]
        indices = parse_reference_indices(reference_frame_indices, refs.shape[0], num_frames)
        ref_hints = None
        if reference_lineart is not None:
            rl = comfy_image_to_bchw(reference_lineart, "reference_lineart")
            if rl.shape[0] != refs.shape[0]:
                raise AnimeVideoInputError(f"reference_lineart: {rl.shape[0]} images for {refs.shape[0]} references; "
                                           "give one per reference.")
            rl = to_hint(rl.permute(0, 2, 3, 1), lineart_polarity).permute(0, 3, 1, 2)
            ref_hints = list(fit_image(rl, width, height, fit))
        segments = plan_segments(num_frames, opts.segment_length, opts.overlap, opts.tail, "lineart")
        sampling = len(segments) * int(steps)
        decode_chunks = len(chunk_spans(num_frames, 10, 1, 3))
        progress = bridge.Progress(sampling + decode_chunks, desc="LVCD colorize")
        latent_preview = latent_preview and bridge.previews_enabled()

        def on_step(i, state):
            latent = state.denoised[0, state.denoised.shape[1] - 1]
            progress.update(1, svd_decode.latent_preview_rgb(latent) if latent_preview else None)

        def on_decode_chunk(done, total):
            progress.set(sampling + done)

        options = lvcd_colorize.ColorizeOptions(long_video=opts, color_match=bool(color_match))
        callbacks = lvcd_colorize.ColorizeCallbacks(on_step=on_step, on_decode_chunk=on_decode_chunk)
        # one segment per pass, plus the reference frame, with guidance (UNet + ControlNet)
        working = diffusion_working_bytes(opts.segment_length + 1, height // 8, width // 8, 320,
                                          model.dtype.itemsize, batch=2)
        try:
            with ModelOnDevice(managed, handle.keep_on_gpu, working, "the LVCD run", MEMORY_ADVICE):
                frames = lvcd_colorize.colorize(model, [(r, i) for r, i in zip(refs, indices)], hints, options,
                                                int(steps), int(seed), callbacks, reference_hints=ref_hints)
        finally:
            progress.close()
        return (frames,)


NODE_CLASS_MAPPINGS = {
    "AnimeVideoLoadLVCD": AnimeVideoLoadLVCD,
    "AnimeVideoLongVideoOptions": AnimeVideoLongVideoOptions,
    "AnimeVideoLVCDColorize": AnimeVideoLVCDColorize,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoLoadLVCD": "Load LVCD (AnimeVideo)",
    "AnimeVideoLongVideoOptions": "Long Video Options (AnimeVideo)",
    "AnimeVideoLVCDColorize": "LVCD Colorize Lineart (AnimeVideo)",
}

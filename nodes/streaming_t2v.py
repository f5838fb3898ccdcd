"""StreamingT2V nodes: load ``streaming_t2v.ckpt`` and extend any clip (SVD's, AniSora's, a video's) to N frames.
The work happens in ``pipelines.streaming_t2v``."""
from __future__ import annotations

import os

from ..pipelines.checkpoint_io import FileIdentity
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.image_ops import comfy_image_to_bchw
from ..pipelines.svd import loader as svd_loader
from . import comfy_bridge as bridge
from .common import (LoaderSpec, ModelHandle, ModelOnDevice, check_clip_memory, clip_bytes, input_copy_bytes,
                     make_loader_node, resolve_model_file)
from .svd import DTYPES

STREAMING_T2V_MODEL = "ANIMEVIDEO_STREAMING_T2V"
CATEGORY = "AnimeVideo/StreamingT2V"
FOLDER = "streaming_t2v"
EXTENSIONS = (".ckpt", ".safetensors", ".pth", ".pt", ".sft")
DEFAULT_CKPT = "streaming_t2v.ckpt"
EXPECTED = ("Expected streaming_t2v.ckpt (huggingface.co/PAIR/StreamingT2V) in models/streaming_t2v, with the "
            "ModelScope tokenizer (vocab.json and merges.txt from huggingface.co/damo-vilab/text-to-video-ms-1.7b, "
            "folder tokenizer/) in models/streaming_t2v/tokenizer.")
MEMORY_ADVICE = "Ask for fewer target_frames, or a smaller size (256 is what the model was trained on)."


def ckpt_names() -> list[str]:
    return bridge.list_files(FOLDER, EXTENSIONS)


def resolve_ckpt(name: str) -> str:
    return resolve_model_file(name, FOLDER, "ckpt_name", lambda: (
        f"ckpt_name: '{name}' was not found in models/{FOLDER} ({bridge.models_dir_hint(FOLDER)}). {EXPECTED}"))


def open_streaming_t2v(ckpt_name: str, dtype: str = "auto"):
    """(cache key, load, name, path) of the model for these loader inputs (see LoaderSpec.open)."""
    from ..pipelines.streaming_t2v.loader import load_streaming_t2v

    path = resolve_ckpt(ckpt_name)
    torch_dtype = svd_loader.resolve_dtype(dtype, bridge.torch_device())
    key = ("streaming_t2v", FileIdentity.of(path), str(torch_dtype))
    return (key, lambda: load_streaming_t2v(path, torch_dtype, svd_loader.vae_dtype_for(torch_dtype)).to(
        bridge.offload_device()), ckpt_name, path)


class StreamingT2VHandle(ModelHandle):
    """What flows along the model wire: the shared model plus this loader's placement choice."""


def _ckpt_input() -> dict:
    names = ckpt_names()
    return {"ckpt_name": (names, {"default": DEFAULT_CKPT if DEFAULT_CKPT in names or not names else names[0],
                                  "tooltip": "streaming_t2v.ckpt in models/streaming_t2v (PAIR/StreamingT2V); "
                                  "the tokenizer/ folder beside it holds ModelScope's vocab.json + merges.txt."})}


AnimeVideoLoadStreamingT2V = make_loader_node(LoaderSpec(
    node_id="AnimeVideoLoadStreamingT2V",
    description="Loads StreamingT2V (ModelScope variant): the ModelScope T2V UNet with the CAM (short-term memory: "
                "the previous chunk's last 8 frames) and the APM (long-term memory: the first chunk's anchor "
                "frames), its text encoder, image encoder and VAE, all from the released streaming_t2v.ckpt.",
    model_inputs=_ckpt_input,
    dtypes=DTYPES,
    dtype_tooltip="Weight precision. auto: fp16 on a GPU, fp32 on the CPU. The VAE stays fp32 when fp16 is chosen.",
    return_type=STREAMING_T2V_MODEL, return_name="streaming_t2v",
    output_tooltip="The loaded StreamingT2V model, for AnimeVideo StreamingT2V Extend.",
    category=CATEGORY,
    open=open_streaming_t2v,
    checks=lambda ckpt_name: [lambda: resolve_ckpt(ckpt_name)],
    download=False,
    handle=lambda ref, keep_on_gpu, inputs: StreamingT2VHandle(keep_on_gpu=keep_on_gpu, ref=ref),
))


def tokenizer_for(model):
    from ..pipelines.streaming_t2v.loader import load_tokenizer

    folder = getattr(model, "tokenizer_dir", None)
    if not folder:
        where = os.path.join(os.path.dirname(getattr(model, "source", "") or "."), "tokenizer")
        raise AnimeVideoModelError(f"No tokenizer for StreamingT2V's text encoder: put vocab.json and merges.txt "
                                   f"into {where}. {EXPECTED}")
    return load_tokenizer(folder)


class AnimeVideoStreamingT2VExtend:
    DESCRIPTION = ("Extends a clip to any length with StreamingT2V: the clip's first 16 frames (centre-cropped to "
                   "a square) are kept whole, then each 16-frame chunk is sampled from the previous chunk's last 8 "
                   "frames (CAM) and the clip's first 8 frames (APM) and adds 8 new frames. Memory stays that of "
                   "one chunk for any length. The frame rate passes through.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "streaming_t2v": (STREAMING_T2V_MODEL, {"tooltip": "From AnimeVideo Load StreamingT2V."}),
                "clip": ("IMAGE", {"tooltip": "The initial frames (SVD's, AniSora's, a video's): the first 16 are "
                         "used (at least 8), centre-cropped to a square and resized to size."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What happens in the clip "
                           "(required: the model is text-conditioned)."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to avoid; may be "
                                    "empty (the official default)."}),
                "target_frames": ("INT", {"default": 24, "min": 8, "max": 4096, "tooltip": "Frames in the output: "
                                  "the clip's frames plus 8 per chunk, rounded up to the next such length (the "
                                  "official CLI's default is 24)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 500, "tooltip": "DDIM steps per chunk (official: "
                          "50)."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free "
                        "guidance scale (the official inference config: 7.5)."}),
                "seed": ("INT", {"default": 33, "min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF, "control_after_generate": True,
                                 "tooltip": "One seed for every chunk's noise (official: 33)."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.01, "max": 240.0, "step": 0.01, "tooltip": "The clip's "
                        "frame rate; passed through to the output (connect the previous stage's fps)."}),
            },
            "optional": {
                "size": ("INT", {"default": 256, "min": 32, "max": 1024, "step": 32, "tooltip": "Square working "
                         "size; StreamingT2V (ModelScope) was trained at 256."}),
                "shared_noise": ("BOOLEAN", {"default": False, "tooltip": "Start every chunk from the same noise. "
                                 "Off: fresh noise per chunk from the one seed, as the official code runs."}),
                "eta": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "DDIM eta "
                        "(official: 1.0)."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("frames", "fps", "info")
    OUTPUT_TOOLTIPS = ("The extended clip [frames, size, size, 3]: the given frames first, then 8 new per chunk.",
                       "The frame rate (the input's).", "What was made (frames, chunks).")
    FUNCTION = "extend"
    CATEGORY = CATEGORY

    def extend(self, streaming_t2v, clip, prompt, negative_prompt, target_frames, steps, cfg, seed, fps, size=256,
               shared_noise=False, eta=1.0):
        from ..pipelines.streaming_t2v import extend as stt

        if not isinstance(prompt, str) or not prompt.strip():
            raise AnimeVideoInputError("prompt: empty. StreamingT2V's UNet and CAM are text-conditioned (ModelScope "
                                       "T2V); describe the clip (the negative prompt may stay empty).")
        size = int(size)
        if size % 32:
            raise AnimeVideoInputError(f"size: {size}; give a multiple of 32 (256 is what the model was trained on).")
        handle = streaming_t2v
        managed = handle.managed
        model = managed.pack_model
        frames_in = comfy_image_to_bchw(clip, "clip")
        plan = stt.plan_extension(min(frames_in.shape[0], stt.CHUNK_FRAMES), int(target_frames))
        # the result, the adapted input; the working set is one chunk (16 decoded frames and their conditioning)
        check_clip_memory(f"extending to {plan.total_frames} frames at {size}x{size}",
                          clip_bytes(plan.total_frames, size, size),
                          4 * clip_bytes(stt.CHUNK_FRAMES, size, size) + input_copy_bytes(clip), MEMORY_ADVICE)
        given = frames_in.shape[0]
        chunk0 = stt.adapt_clip(frames_in, size)
        del frames_in
        progress = bridge.Progress(max(1, plan.chunks * int(steps)), desc="StreamingT2V extend")
        try:
            with ModelOnDevice(managed, handle.keep_on_gpu, what="StreamingT2V extend", advice=MEMORY_ADVICE):
                tok = tokenizer_for(model)
                pos = stt.encode_prompt(model, tok, prompt)
                neg = stt.encode_prompt(model, tok, negative_prompt or "")
                result = stt.extend_clip(model, chunk0, pos, neg, int(target_frames), steps=int(steps),
                                         cfg=float(cfg), eta=float(eta), seed=int(seed),
                                         shared_noise=bool(shared_noise), fps=float(fps),
                                         on_step=lambda k, i: progress.update(1),
                                         check_interrupt=bridge.check_interrupt)
        finally:
            progress.close()
        info = result.plan.note()
        if given > stt.CHUNK_FRAMES:  # S6: the first 16 frames are chunk 0 (e.g. 16 of SVD-XT's 25)
            info = f"clip: used its first {stt.CHUNK_FRAMES} of {given} frames as chunk 0; " + info
        return (result.frames, float(fps), info)


NODE_CLASS_MAPPINGS = {
    "AnimeVideoLoadStreamingT2V": AnimeVideoLoadStreamingT2V,
    "AnimeVideoStreamingT2VExtend": AnimeVideoStreamingT2VExtend,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoLoadStreamingT2V": "Load StreamingT2V (AnimeVideo)",
    "AnimeVideoStreamingT2VExtend": "StreamingT2V Extend Clip (AnimeVideo)",
}

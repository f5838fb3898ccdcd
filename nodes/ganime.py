"""GANime nodes: a loader, first/last-frame in-betweening, and codebook encode/decode for inspection.

The work happens in ``pipelines.ganime``.
"""
from __future__ import annotations

import functools
import os

import torch

from ..pipelines.checkpoint_io import FileIdentity
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.ganime import inference as g_inference
from ..pipelines.ganime import loader as g_loader
from ..pipelines.ganime import tokens as g_tokens
from ..pipelines.image_ops import comfy_image_to_bchw
from . import comfy_bridge as bridge
from ..pipelines import memory
from .common import (LoaderSpec, ModelHandle, ModelOnDevice, cached_model, check_clip_memory, clip_bytes,
                     make_loader_node, resolve_model_file)
from .svd import single_image

GANIME_MODEL = "ANIMEVIDEO_GANIME"
GANIME_CODES = "ANIMEVIDEO_GANIME_CODES"
FOLDER = "ganime"
EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth")
CATEGORY = "AnimeVideo/GANime"
DEFAULT_VQGAN = "ganime_kny_vqgan.safetensors"
DEFAULT_TRANSFORMER = "ganime_kny_gpt2_medium.safetensors"
MAX_FRAMES = 1025
MEMORY_ADVICE = ("Lower num_frames or variations, or set output_size to model (64x128 frames; upscale afterwards "
                 "in parts " + memory.CHUNK_ADVICE + ").")

EXPECTED = (
    "Expected a pair of GANime files in models/ganime: a VQ-GAN and a transformer in this pack's safetensors "
    "format, from scripts/ganime_train.py (train on your own anime) or converted from the original TensorFlow "
    "checkpoints with 'scripts/ganime_train.py convert-tf'."
)


def model_names() -> list[str]:
    return bridge.list_files(FOLDER, EXTENSIONS)


@functools.lru_cache(maxsize=512)
def _sniffed(path: str, size: int, mtime_ns: int) -> str | None:
    return g_loader.sniff_kind(path)


def file_kind(name: str) -> str | None:
    """'vqgan' or 'transformer': from the safetensors header (cached per file version), else from the name."""
    try:
        path = resolve_path(name, "model_name")
        st = os.stat(path)
    except (AnimeVideoInputError, AnimeVideoModelError, OSError):
        return None
    kind = _sniffed(path, st.st_size, st.st_mtime_ns)
    if kind is None and not path.lower().endswith((".safetensors", ".sft")):
        lower = os.path.basename(name).lower()
        kind = "vqgan" if "vq" in lower else "transformer" if ("gpt" in lower or "transformer" in lower) else None
    return kind


def ordered_for(kind: str, names: list[str], preferred: str) -> list[str]:
    """``names`` with the files of ``kind`` first (``preferred`` first among them), unknown files next and files of
    the other kind last, so a fresh node's default is a file of the right kind."""
    kinds = {n: file_kind(n) for n in names}
    rank = {kind: 0, None: 1}
    return sorted(names, key=lambda n: (rank.get(kinds[n], 2), n != preferred, n))


def check_kind(name: str, input_name: str, kind: str):
    """A clean validation error when ``name`` is known to be the other GANime file."""
    found = file_kind(name)
    if found is not None and found != kind:
        other = "transformer_name" if input_name == "vqgan_name" else "vqgan_name"
        what = {"vqgan": "a VQ-GAN", "transformer": "a transformer"}
        raise AnimeVideoInputError(
            f"{input_name}: '{name}' is GANime's {what[found][2:]} file, not {what[kind]}; pick {what[kind]} file "
            f"in {input_name} (e.g. {DEFAULT_VQGAN if kind == 'vqgan' else DEFAULT_TRANSFORMER}) and use "
            f"'{name}' in {other}.")


def missing_model_message(name: str, input_name: str) -> str:
    return f"{input_name}: '{name}' was not found in models/ganime ({bridge.models_dir_hint(FOLDER)}). {EXPECTED}"


def resolve_path(name: str, input_name: str) -> str:
    return resolve_model_file(name, FOLDER, input_name, lambda: missing_model_message(name, input_name))


def open_ganime(vqgan_name: str, transformer_name: str, dtype: str = "auto"):
    """(cache key, load, name, path) of the GANime pair for these loader inputs (see LoaderSpec.open)."""
    vq_path = resolve_path(vqgan_name, "vqgan_name")
    tr_path = resolve_path(transformer_name, "transformer_name")
    torch_dtype = g_loader.resolve_dtype(dtype, bridge.torch_device())
    key = ("ganime", FileIdentity.of(vq_path), FileIdentity.of(tr_path), str(torch_dtype))
    return (key, lambda: g_loader.load_ganime(vq_path, tr_path, torch_dtype).to(bridge.offload_device()),
            f"{vqgan_name} + {transformer_name}", tr_path)


def load_ganime_cached(vqgan_name: str, transformer_name: str, dtype_name: str):
    """The managed GANime pair (shared through the model cache)."""
    return cached_model(*open_ganime(vqgan_name, transformer_name, dtype_name))


class GANimeHandle(ModelHandle):
    """What flows along the ANIMEVIDEO_GANIME wire: the shared model pair plus this loader's placement choice."""


def _ganime_inputs() -> dict:
    names = model_names()
    vqgans = ordered_for("vqgan", names, DEFAULT_VQGAN)
    transformers = ordered_for("transformer", names, DEFAULT_TRANSFORMER)
    return {
        "vqgan_name": (vqgans, {
            "default": vqgans[0] if vqgans else DEFAULT_VQGAN,
            "tooltip": "The VQ-GAN file in models/ganime (e.g. ganime_kny_vqgan.safetensors): turns each "
                       "64x128 frame into 8x16 codebook codes and back. VQ-GAN files are listed first "
                       "(read from the tensors, not the name)."}),
        "transformer_name": (transformers, {
            "default": transformers[0] if transformers else DEFAULT_TRANSFORMER,
            "tooltip": "The transformer file in models/ganime (e.g. ganime_kny_gpt2_medium.safetensors), "
                       "trained with that VQ-GAN. Transformer files are listed first."}),
    }


AnimeVideoLoadGANime = make_loader_node(LoaderSpec(
    node_id="AnimeVideoLoadGANime",
    description="Loads a GANime VQ-GAN (frame tokenizer) and its GPT-2 transformer for first/last-frame "
                "in-betweening.",
    model_inputs=_ganime_inputs,
    dtypes=list(g_loader.DTYPES),
    dtype_tooltip="Transformer precision. auto: fp16 on a GPU, fp32 on the CPU. The VQ-GAN always runs in fp32 "
                  "(codebook distances).",
    return_type=GANIME_MODEL, return_name="ganime_model",
    output_tooltip="The loaded GANime pair, for GANime In-between / Encode / Decode.",
    category=CATEGORY,
    open=open_ganime,
    checks=lambda vqgan_name, transformer_name: [
        lambda: resolve_path(vqgan_name, "vqgan_name"),
        lambda: resolve_path(transformer_name, "transformer_name"),
        lambda: check_kind(vqgan_name, "vqgan_name", "vqgan"),
        lambda: check_kind(transformer_name, "transformer_name", "transformer")],
    keep_on_gpu_tooltip="Keep both models on the GPU between runs (faster re-runs, holds VRAM until ComfyUI needs "
                        "the room). Off: they wait on the CPU.",
    download=False,
    requires="GANime",
    handle=lambda ref, keep_on_gpu, inputs: GANimeHandle(keep_on_gpu=keep_on_gpu, ref=ref),
))


class AnimeVideoGANimeInbetween:
    DESCRIPTION = ("GANime in-betweening: generates the frames between a first and a last frame, one frame per "
                   "transformer pass, conditioned on the last frame, the previous frame(s) and how many frames "
                   "remain. Returns [first, in-betweens..., last] for each variation.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ganime_model": (GANIME_MODEL, {"tooltip": "From AnimeVideo Load GANime."}),
                "first": ("IMAGE", {"tooltip": "The first keyframe (one image)."}),
                "last": ("IMAGE", {"tooltip": "The last keyframe (one image, the same size as the first)."}),
                "num_frames": ("INT", {"default": 15, "min": 3, "max": MAX_FRAMES, "tooltip": "Frames in the clip, "
                               "both keyframes included. GANime was trained on 15-25; the model's remaining-frames "
                               "table sets the upper limit."}),
                "mode": (list(g_inference.MODES), {"default": "greedy", "tooltip": "greedy: the most likely code at "
                         "every position (the original's default, deterministic). sample: temperature + top-k "
                         "sampling, different for every seed."}),
                "temperature": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 10.0, "step": 0.05, "tooltip":
                                "sample mode: below 1 stays closer to the most likely codes, above 1 varies more."}),
                "top_k": ("INT", {"default": 50, "min": 0, "max": 100000, "tooltip": "sample mode: draw from the k "
                          "most likely codes (the original used 50); 0 draws from all."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF, "control_after_generate": True,
                         "tooltip": "sample mode: variation k uses seed + k, so any variation can be re-run alone; "
                         "the same seed gives the same clip on any device."}),
                "variations": ("INT", {"default": 1, "min": 1, "max": g_inference.MAX_VARIATIONS, "tooltip":
                               "sample mode: clips generated together in one batch (faster than one by one), "
                               "returned one after another. Greedy variations are all the same clip."}),
            },
            "optional": {
                "reencode_previous": ("BOOLEAN", {"default": False, "tooltip": "On: every generated frame is decoded "
                                      "and encoded again before it conditions the next one, as the original did "
                                      "(slower). Off: its predicted codes are reused (faster, deterministic)."}),
                "use_generated_last": ("BOOLEAN", {"default": False, "tooltip": "On: end on the model's own "
                                       "regenerated last frame. Off: end on your last keyframe."}),
                "aspect": (list(g_inference.ASPECT_MODES), {"default": "squash", "tooltip": "How frames meet the "
                           "model's 64x128 (2:1): squash (resize, as the thesis did: right for converted/thesis "
                           "models) or letterbox (pad in black). Undone on output."}),
                "output_size": (list(g_inference.OUTPUT_SIZES), {"default": "input", "tooltip": "input: frames at "
                                "the keyframes' size (generated frames resized back, keyframes untouched). model: "
                                "the model's 64x128 frames."}),
                "frames_before": ("INT", {"default": 0, "min": 0, "max": g_tokens.MAX_FRAMES_BEFORE, "tooltip":
                                  "Previous frames in the context (1-7, limited by the transformer's positions); "
                                  "0 uses what the transformer was trained with."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The clip(s) as an IMAGE batch [variations x num_frames, H, W, 3].",)
    FUNCTION = "inbetween"
    CATEGORY = CATEGORY

    def inbetween(self, ganime_model, first, last, num_frames, mode, temperature, top_k, seed, variations,
                  reencode_previous=False, use_generated_last=False, aspect="squash", output_size="input",
                  frames_before=0):
        handle = ganime_model
        model = handle.model
        a = single_image(first, "first")
        b = single_image(last, "last")
        req = g_inference.InbetweenRequest(
            num_frames=int(num_frames), mode=mode, temperature=float(temperature), top_k=int(top_k), seed=int(seed),
            variations=int(variations), reencode_previous=bool(reencode_previous),
            use_generated_last=bool(use_generated_last), frames_before=int(frames_before), aspect=aspect,
            output_size=output_size)
        req.validate()
        g_inference.check_keyframes(a, b)
        oh, ow = model.image_size if req.output_size == "model" else (int(a.shape[-2]), int(a.shape[-1]))
        frames_out = req.variations * req.num_frames
        check_clip_memory(f"{frames_out} in-between frames of {ow}x{oh}", clip_bytes(frames_out, oh, ow),
                          2 * clip_bytes(frames_out, oh, ow), MEMORY_ADVICE)
        steps = req.num_frames - (1 if req.use_generated_last else 2)
        progress = bridge.Progress(steps + 1, desc="GANime")
        try:
            with ModelOnDevice(handle.managed, handle.keep_on_gpu, 0, "GANime in-betweening", MEMORY_ADVICE) as model:
                result = g_inference.inbetween(model, a, b, req, on_step=lambda done, total: progress.set(done))
            progress.set(steps + 1)
        finally:
            progress.close()
        frames = result.frames.flatten(0, 1).permute(0, 2, 3, 1).contiguous().float().cpu()
        return (frames,)


class AnimeVideoGANimeEncode:
    DESCRIPTION = "Encodes images into GANime's VQ-GAN codes (8x16 per 64x128 frame), to inspect the codebook."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ganime_model": (GANIME_MODEL, {"tooltip": "From AnimeVideo Load GANime."}),
                "images": ("IMAGE", {"tooltip": "Any number of images; each is fitted to the model's frame size."}),
                "aspect": (list(g_inference.ASPECT_MODES), {"default": "squash", "tooltip": "squash (resize) or "
                           "letterbox (pad in black) to the model's 2:1 frame."}),
            },
        }

    RETURN_TYPES = (GANIME_CODES, "IMAGE")
    RETURN_NAMES = ("codes", "code_map")
    OUTPUT_TOOLTIPS = ("The codes, for GANime Decode.",
                       "The code grid as a false-colour image (one colour per code, 8 px per cell).")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, ganime_model, images, aspect):
        x = comfy_image_to_bchw(images, "images")
        with ModelOnDevice(ganime_model.managed, ganime_model.keep_on_gpu) as model:
            xm = g_inference.to_model(x, model.image_size, aspect).to(model.device)
            codes = model.vqgan.encode_to_codes(xm).cpu()
        h, w = model.vqgan.config.latent_size
        n = model.vqgan.config.num_embeddings
        return ({"codes": codes, "latent_size": (h, w), "num_embeddings": n}, code_map(codes, (h, w), n))


def code_map(codes: torch.Tensor, latent_size: tuple[int, int], num_embeddings: int, cell: int = 8) -> torch.Tensor:
    """[B, T] codes -> [B, h*cell, w*cell, 3] false colours (a fixed hash of the code index)."""
    h, w = latent_size
    c = codes.view(-1, h, w).long()
    rgb = torch.stack([(c * 97 + 31) % 256, (c * 57 + 113) % 256, (c * 23 + 191) % 256], dim=-1).float() / 255.0
    return rgb.repeat_interleave(cell, 1).repeat_interleave(cell, 2).contiguous()


class AnimeVideoGANimeDecode:
    DESCRIPTION = "Decodes GANime VQ-GAN codes back to images at the model's frame size (64x128)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ganime_model": (GANIME_MODEL, {"tooltip": "From AnimeVideo Load GANime (the VQ-GAN that made the "
                                 "codes)."}),
                "codes": (GANIME_CODES, {"tooltip": "From AnimeVideo GANime Encode."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The reconstructed frames [batch, 64, 128, 3].",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, ganime_model, codes):
        model = ganime_model.model
        cfg = model.vqgan.config
        if tuple(codes["latent_size"]) != tuple(cfg.latent_size) or codes["num_embeddings"] != cfg.num_embeddings:
            raise AnimeVideoInputError(
                f"codes: made by a VQ-GAN with a {codes['latent_size']} grid of {codes['num_embeddings']} codes; this "
                f"model has {cfg.latent_size} and {cfg.num_embeddings}. Decode with the VQ-GAN that encoded them.")
        with ModelOnDevice(ganime_model.managed, ganime_model.keep_on_gpu) as model:
            images = model.vqgan.decode_codes(codes["codes"].to(model.device))
        return (((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous(),)


NODE_CLASS_MAPPINGS = {
    "AnimeVideoLoadGANime": AnimeVideoLoadGANime,
    "AnimeVideoGANimeInbetween": AnimeVideoGANimeInbetween,
    "AnimeVideoGANimeEncode": AnimeVideoGANimeEncode,
    "AnimeVideoGANimeDecode": AnimeVideoGANimeDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnimeVideoLoadGANime": "Load GANime (AnimeVideo)",
    "AnimeVideoGANimeInbetween": "GANime In-between (AnimeVideo)",
    "AnimeVideoGANimeEncode": "GANime Encode (AnimeVideo)",
    "AnimeVideoGANimeDecode": "GANime Decode (AnimeVideo)",
}

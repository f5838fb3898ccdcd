"""Load a lineart generator file from ``models/lineart``.

The released files are raw state dicts (``torch.save(model.state_dict())``) from huggingface.co/lllyasviel/
Annotators: ``sk_model.pth`` (fine lines, what LVCD uses) and ``sk_model2.pth`` (ControlNet's "coarse" mode).
A .safetensors conversion of either loads the same way. Files are read by :func:`checkpoint_io.read_state_dict`
(safetensors, or ``torch.load(weights_only=True)``), so loading never runs code; the architecture comes from
the state dict (:func:`model.config_from_state_dict`), never from the file name.
"""
from __future__ import annotations

import os

import torch

from ..checkpoint_io import read_state_dict, strip_common_prefix
from ..errors import AnimeVideoModelError
from . import model as gen

FOLDER = "lineart"
DEFAULT_MODEL = "sk_model.pth"
LINEART_EXTENSIONS = (".pth", ".pt", ".safetensors", ".sft", ".ckpt", ".bin")
EXPECTED = (
    "Expected the informative-drawings lineart generator of ControlNet-1.1's 'lineart' annotator in models/lineart: "
    "sk_model.pth (the one LVCD uses) or sk_model2.pth (coarse lines), from huggingface.co/lllyasviel/Annotators."
)


def describe_state_dict(sd: dict) -> str:
    """A best guess at what a non-generator state dict is, for error messages."""
    keys = list(sd)
    if not keys:
        return "no tensors at all"
    if any(k.startswith("model.model.") for k in keys):
        return "a U-Net generator such as the 'lineart_anime' annotator (netG.pth), a different model"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "a Stable Diffusion / SVD checkpoint"
    if any(k.startswith("control_model.") or "controlnet" in k for k in keys):
        return "a ControlNet"
    if any(k.startswith("recurrent_cell.") for k in keys) or "conv_first.weight" in sd or "body.0.weight" in sd:
        return "an upscaler"
    if any(k.startswith(("encoder.down", "decoder.up", "first_stage_model.")) for k in keys):
        return "a VAE"
    if any(k.startswith("model0.") for k in keys):
        return "an incomplete informative-drawings generator (model0.* without the rest of the layers)"
    shown = ", ".join(f"'{k}'" for k in keys[:3])
    return f"an unknown model ({len(keys)} tensors; keys such as {shown})"


def load_state_dict_lineart(sd: dict, name: str, dtype: torch.dtype = torch.float32) -> gen.LineartGenerator:
    """Detect and build from an already read state dict; a wrong file raises :class:`AnimeVideoModelError`."""
    sd = strip_common_prefix(sd)
    if not gen.is_lineart_state_dict(sd):
        raise AnimeVideoModelError(
            f"'{name}' is not a lineart generator this node can load: it looks like {describe_state_dict(sd)}. {EXPECTED}")
    try:
        cfg = gen.config_from_state_dict(sd)
    except AnimeVideoModelError as e:
        raise AnimeVideoModelError(f"'{name}': {e}. {EXPECTED}") from None
    if cfg.input_nc != 3 or cfg.output_nc != 1:
        raise AnimeVideoModelError(
            f"'{name}' is an informative-drawings generator with {cfg.input_nc} input and {cfg.output_nc} output "
            f"channels; the lineart extractor needs RGB in and one line channel out. {EXPECTED}")
    try:
        model = gen.build_from_state_dict(sd, dtype)
    except AnimeVideoModelError as e:
        raise AnimeVideoModelError(f"'{name}': {e}. The file may be damaged or a variant. {EXPECTED}") from None
    model.source = name
    return model


def load_lineart_model(path: str, dtype: torch.dtype = torch.float32) -> gen.LineartGenerator:
    """Read ``path`` and build its generator on the CPU."""
    name = os.path.basename(path)
    return load_state_dict_lineart(read_state_dict(path), name, dtype)

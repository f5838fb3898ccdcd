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
from .. import registry
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
    """What a non-generator state dict is, for error messages (the architecture registry's words)."""
    if registry.identify(sd) is None and any(k.startswith("model0.") for k in sd):
        return "an incomplete informative-drawings generator (model0.* without the rest of the layers)"
    return registry.describe(sd)


def load_state_dict_lineart(sd: dict, name: str, dtype: torch.dtype = torch.float32) -> gen.LineartGenerator:
    """Detect and build from an already read state dict; a wrong file raises :class:`AnimeVideoModelError`."""
    sd = strip_common_prefix(sd)
    if not gen.is_lineart_state_dict(sd):
        raise AnimeVideoModelError(registry.wrong_file_message(name, describe_state_dict(sd), ("lineart",), EXPECTED))
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


def _load_entry(source, dtype: torch.dtype = torch.float32, name: str | None = None) -> gen.LineartGenerator:
    if isinstance(source, str):
        return load_lineart_model(source, dtype)
    return load_state_dict_lineart(source, name or "state dict", dtype)


ARCHITECTURES = (
    registry.Architecture("lineart", "an informative-drawings lineart generator (ControlNet's 'lineart' annotator)",
                          "lineart", registry.keys_only(gen.is_lineart_state_dict), _load_entry,
                          takes_state_dict=True),
    registry.Architecture("lineart_anime", "a U-Net generator such as the 'lineart_anime' annotator (netG.pth), a "
                          "different model", "foreign", registry.any_prefix("model.model.")),
)

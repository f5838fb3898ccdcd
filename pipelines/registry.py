"""What is this model file? One registry of architectures, in the shape spandrel uses.

An :class:`Architecture` is an id, a human name, a kind (what a loader asks for: ``"svd_vae"``,
``"animesr"``, …), ``detect(keys, shapes)`` that recognises it from tensor names and shapes only (never the file
name), and ``load(source, **options)`` that builds it inferring every size from the shapes; the network code
lives apart from both, in the package that runs it.

Entries come from the packages: each module named in :data:`ENTRY_MODULES` defines ``ARCHITECTURES`` (a
sequence of :class:`Architecture`), so a new backbone is one new folder plus one line there. The modules are
imported by name when the registry is first asked, never by this module's own imports: the packages use the
registry (their loaders ask :func:`require` for their messages), so the registry must not import them back.

- :func:`identify` ``(path, folder, state dict, shapes dict or key list) -> Architecture | None``;
- :func:`describe` ``-> str``: what the file is, in words, also for files no entry knows;
- :func:`require` ``(source, kinds) -> Architecture``: the entry, or :class:`AnimeVideoModelError` saying what the
  file IS and what was expected ("'x.safetensors' is an SVD VAE, not an AnimeSR model. Expected …");
- :func:`wrong_file_message`: that message, for loaders that found the mismatch themselves.

Entries are tried in order: the pack's own (specific) entries, then spandrel's image architectures (an optional
package: the upscalers it loads), then broad "what it looks like" entries for files no loader here takes (a
Stable Diffusion image checkpoint, a LoRA, a plain GPT-2, …), which have no ``load``.
"""
from __future__ import annotations

import importlib
import os
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch

from .checkpoint_io import (is_safetensors, meta_state_dict, read_shapes, read_state_dict, shapes_of,
                            strip_common_prefix)
from .errors import AnimeVideoModelError

Shapes = Mapping[str, tuple]

# One line per package that contributes architectures (module path under pipelines/), in detection order.
ENTRY_MODULES = (
    "streaming_t2v.loader",  # before SVD and LVCD: it holds an OpenCLIP image tower too
    "t2v.loader",  # before SVD: I2VGen-XL's folder has unet/, vae/ and image_encoder/ as SVD's does
    "lvcd.loader",
    "svd.loader",
    "backbones.wan.architectures",  # Wan2.2-I2V experts, Wan transformers, the Wan2.1 VAE
    "backbones.cogvideox.loader",
    "upscale.loader",
    "interpolate.loader",
    "lineart.loader",
    "ganime.loader",
    "metrics.loader",
)

# What a loader asks for, in words (the "not …" half of a message).
KIND_NAMES = {
    "svd": "a Stable Video Diffusion checkpoint (UNet, VAE and image encoder in one sgm file or diffusers folder)",
    "svd_unet": "an SVD UNet",
    "svd_vae": "an SVD VAE",
    "svd_image_encoder": "an SVD image encoder (OpenCLIP ViT-H)",
    "svd_controlnet": "an LVCD checkpoint (sketch ControlNet and fine-tuned attention)",
    "wan_transformer": "a Wan2.1 video transformer (AniSora V2/V3)",
    "wan22_expert": "a Wan2.2-I2V-A14B expert (AniSora V3.2, high- or low-noise)",
    "wan_vae": "a Wan2.1 VAE",
    "cogvideox": "a CogVideoX image-to-video transformer (AniSora V1)",
    "cogvideox_vae": "a CogVideoX VAE",
    "animesr": "an AnimeSR model",
    "upscaler": "an image upscaler",
    "animeinterp": "an AnimeInterp checkpoint",
    "lineart": "a lineart generator (informative drawings, ControlNet's lineart annotator)",
    "ganime_vqgan": "a GANime VQ-GAN file",
    "ganime_gpt": "a GANime transformer file",
    "i3d": "the I3D network (FVD)",
    "inception_fid": "the FID Inception-v3 network",
    "lpips_heads": "LPIPS heads",
    "lpips_backbone": "a torchvision AlexNet/VGG backbone",
    "modelscope_t2v": "a ModelScopeT2V diffusers folder (damo-vilab/text-to-video-ms-1.7b)",
    "i2vgenxl": "an I2VGen-XL diffusers folder (ali-vilab/i2vgen-xl)",
    "streaming_t2v": "a StreamingT2V checkpoint (streaming_t2v.ckpt)",
}


@dataclass(frozen=True)
class Architecture:
    """One architecture the pack can recognise (and, with ``load``, build)."""

    id: str
    name: str  # what the file is, with its article: "an SVD VAE (sgm layout)"
    kind: str  # what a loader asks for (a KIND_NAMES key, or "foreign" for files nothing here loads)
    detect: Callable[[frozenset, Shapes], bool]  # (keys, shapes) after the training wrappers are stripped
    load: Callable | None = None  # load(path or state dict, **options) -> model
    hint: str = ""  # where it belongs: "load it with AnimeVideo Load AniSora"
    detect_folder: Callable[[str], bool] | None = None  # for diffusers folders (read their config.json)
    takes_state_dict: bool = False  # load(state dict, name=file name, ...) works: a pickle is then read once

    def describe(self) -> str:
        return f"{self.name} ({self.hint})" if self.hint else self.name


def keys_only(detect_keys: Callable[[Shapes], bool]) -> Callable[[frozenset, Shapes], bool]:
    """A ``detect`` from a function of the names alone (the packages' ``is_*_state_dict`` helpers); it is given
    the {key: shape} dict, which answers ``in``, iteration and ``.keys()`` like a state dict."""
    return lambda keys, shapes: bool(detect_keys(shapes))


def any_prefix(*prefixes: str) -> Callable[[frozenset, Shapes], bool]:
    return lambda keys, shapes: any(k.startswith(prefixes) for k in keys)


def any_part(*parts: str) -> Callable[[frozenset, Shapes], bool]:
    return lambda keys, shapes: any(p in k for k in keys for p in parts)


# ---------------------------------------------------------------------------------------------
# The entries
# ---------------------------------------------------------------------------------------------

_loaded: list[Architecture] | None = None
_extra: list[Architecture] = []


def register(arch: Architecture):
    """Add an entry at run time (before the broad "looks like" entries); for packs built on this one."""
    global _loaded
    _extra.append(arch)
    _loaded = None


def own_entries() -> list[Architecture]:
    out: list[Architecture] = []
    for name in ENTRY_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        out.extend(module.ARCHITECTURES)
    return out + list(_extra)


def spandrel_entries() -> list[Architecture]:
    """spandrel's architectures, in its detection order, as entries of kind "upscaler" (none when spandrel is
    not installed). Its ``detect`` functions read keys and shapes: they run on meta tensors."""
    try:
        import spandrel
    except ImportError:
        return []
    entries = []
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        arch = support.architecture
        entries.append(Architecture(
            id=f"spandrel:{arch.id}", name=f"an image model spandrel loads ({arch.name})", kind="upscaler",
            detect=_spandrel_detect(support.detect), load=_load_with_spandrel, takes_state_dict=True))
    return entries


class ShapeTable(dict):
    """{key: shape}, with the same table as meta tensors built once on first use (spandrel's rules take a state
    dict: one meta copy serves all of them)."""

    _meta: dict | None = None

    def as_meta_state_dict(self) -> dict[str, torch.Tensor]:
        if self._meta is None:
            self._meta = meta_state_dict(self)
        return self._meta


def _spandrel_detect(detect):
    def run(keys, shapes):
        if any(len(s) == 0 and k.endswith(".weight") for k, s in shapes.items()):
            return False  # a key list without shapes: spandrel's rules read shapes
        try:
            meta = shapes.as_meta_state_dict() if isinstance(shapes, ShapeTable) else meta_state_dict(shapes)
            return bool(detect(meta))
        except (KeyError, IndexError, AttributeError, TypeError, ValueError, AssertionError, RuntimeError,
                NotImplementedError, ZeroDivisionError):
            return False  # a rule that needs tensor values, or a state dict it does not expect
    return run


def _load_with_spandrel(source, name: str | None = None):
    """spandrel's descriptor (the model sized from the shapes by spandrel); the upscale loader wraps it further."""
    import spandrel

    sd = read_state_dict(source) if isinstance(source, str) else source
    try:
        return spandrel.ModelLoader().load_from_state_dict(strip_common_prefix(sd))
    except (KeyError, RuntimeError, ValueError, AssertionError, IndexError) as e:
        raise AnimeVideoModelError(f"'{name or 'the state dict'}': spandrel recognised the keys but could not build "
                                   f"the model ({type(e).__name__}: {e}).") from None


def _no_unet_temporal(keys, shapes) -> bool:
    return not any(".time_stack." in k for k in keys)


# Files no loader here takes, recognised to say what they are (after every loadable entry).
LOOKS_LIKE = (
    Architecture("sdxl_image", "a Stable Diffusion XL image checkpoint (no temporal layers)", "foreign",
                 lambda k, s: any(x.startswith("conditioner.embedders.1.") for x in k)
                 and any(x.startswith(("model.diffusion_model.", "input_blocks.0.0.weight")) for x in k)),
    Architecture("sd_image", "a Stable Diffusion image checkpoint (no temporal layers)", "foreign",
                 lambda k, s: _no_unet_temporal(k, s) and any(
                     x.startswith("model.diffusion_model.") or x == "input_blocks.0.0.weight" for x in k)),
    Architecture("controlnet", "a ControlNet", "foreign", any_part("controlnet")),
    Architecture("lora", "a LoRA", "foreign", any_part("lora_", ".lora.")),
    Architecture("diffusers_component",
                 "a single diffusers component file (put the whole diffusers folder into models/diffusers)", "foreign",
                 lambda k, s: any(x.startswith("down_blocks.0.") for x in k) and any(x.startswith("conv_in.") for x in k)),
    Architecture("esrgan_family", "an image upscaler (ESRGAN family)", "foreign",
                 any_prefix("body.", "conv_first.", "conv_body.", "model.0.weight")),
    Architecture("gpt2", "a plain GPT-2 language model", "foreign", any_prefix("transformer.h.0.", "h.0.attn")),
    Architecture("rife", "a RIFE (IFNet) interpolation model", "foreign",
                 any_prefix("block0.", "block1.", "encode.", "block_tea.")),
    Architecture("raft", "a RAFT optical-flow checkpoint (such as rfr_sintel_latest.pth, AnimeInterp's training "
                 "initialisation, not the interpolator)", "foreign", any_prefix("fnet.", "cnet.", "update_block.")),
    Architecture("vae", "a VAE", "foreign", any_prefix("encoder.down", "first_stage_model.", "decoder.up")),
    Architecture("clip", "a CLIP model", "foreign", any_part("vision_model.", "text_model.", "visual.transformer")),
    Architecture("gan_training", "a GAN training checkpoint", "foreign", any_prefix("step_counter", "generator.")),
)


def entries() -> list[Architecture]:
    """Every entry, in detection order."""
    global _loaded
    if _loaded is None:
        _loaded = own_entries() + spandrel_entries() + list(LOOKS_LIKE)
    return _loaded


def get(arch_id: str) -> Architecture:
    for arch in entries():
        if arch.id == arch_id:
            return arch
    raise KeyError(arch_id)


# ---------------------------------------------------------------------------------------------
# Identification
# ---------------------------------------------------------------------------------------------

def shapes_from(source) -> dict[str, tuple]:
    """{key: shape} of a path (header only for safetensors), a state dict, a shapes dict or a key list (shapes
    unknown: ``()``), with the training wrappers (``module.``, ``netG.``, …) stripped."""
    if isinstance(source, str):
        shapes = read_shapes(source)
    elif isinstance(source, Mapping):
        shapes = shapes_of(source) if all(isinstance(v, (torch.Tensor, tuple, list, torch.Size))
                                          for v in source.values()) else {k: () for k in source}
    else:
        shapes = {k: () for k in source}
    return strip_common_prefix(shapes)


def identify_shapes(shapes: Shapes) -> Architecture | None:
    keys = frozenset(shapes)
    if not keys:
        return None
    shapes = shapes if isinstance(shapes, ShapeTable) else ShapeTable(shapes)
    for arch in entries():
        if arch.detect(keys, shapes):
            return arch
    return None


def identify(source) -> Architecture | None:
    """The entry for a model file or folder (path), a state dict, a {key: shape} dict or a key list; None when no
    entry recognises it."""
    if isinstance(source, str) and os.path.isdir(source):
        for arch in entries():
            if arch.detect_folder is not None and arch.detect_folder(source):
                return arch
        return None
    return identify_shapes(shapes_from(source))


def unknown_description(shapes: Shapes) -> str:
    if not shapes:
        return "no tensors at all"
    keys = list(shapes)
    shown = ", ".join(f"'{k}'" for k in keys[:3])
    return f"an unknown model ({len(keys)} tensors; keys such as {shown})"


def top_level_names(shapes: Shapes, most: int = 5) -> str:
    """"flownet.* (120), feat_ext.* (30), …": the first name components and their tensor counts."""
    heads = Counter(k.split(".")[0] for k in shapes)
    top = ", ".join(f"{h}.* ({n})" for h, n in heads.most_common(most))
    return top + (f" and {len(heads) - most} more prefixes" if len(heads) > most else "")


def describe(source) -> str:
    """What a file / state dict / folder is, in words ("an SVD VAE (sgm layout)"), also when no entry knows it."""
    if isinstance(source, str) and os.path.isdir(source):
        arch = identify(source)
        if arch is not None:
            return arch.describe()
        present = sorted(os.listdir(source))
        return f"a folder that is no model this pack knows (it holds: {', '.join(present[:8]) or 'nothing'})"
    shapes = shapes_from(source)
    arch = identify_shapes(shapes)
    return arch.describe() if arch is not None else unknown_description(shapes)


def kinds_in_words(kinds: Iterable[str]) -> str:
    words = [KIND_NAMES.get(k, k) for k in kinds]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def wrong_file_message(name: str, found: str, kinds: Sequence[str], expected: str = "", detail: str = "",
                       input_name: str = "") -> str:
    """"[input: ]'name' is FOUND, not KIND[detail]. EXPECTED" — the one shape of every wrong-file message."""
    lead = f"{input_name}: " if input_name else ""
    tail = f" {expected}" if expected else ""
    return f"{lead}'{name}' is {found}, not {kinds_in_words(kinds)}{detail}.{tail}"


def require(source, kinds: Sequence[str] | str, *, name: str | None = None, expected: str = "", detail: str = "",
            input_name: str = "", hints: Mapping[str, str] | None = None) -> Architecture:
    """The entry for ``source`` if its kind is one of ``kinds``; else :class:`AnimeVideoModelError` naming what
    the file is and what was expected (``expected``: where to get the right one; ``hints``: an extra sentence
    when the file is of a given kind or id, e.g. ``{"svd": "Give it as the SVD model."}``)."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if name is None:
        name = os.path.basename(source.rstrip("/")) if isinstance(source, str) else "the state dict"
    if isinstance(source, str) and os.path.isdir(source):
        arch = identify(source)
        found = describe(source)
    else:
        shapes = shapes_from(source)
        arch = identify_shapes(shapes)
        found = arch.describe() if arch is not None else unknown_description(shapes)
    if arch is not None and arch.kind in kinds:
        return arch
    hint = ""
    if arch is not None and hints:
        hint = hints.get(arch.id) or hints.get(arch.kind) or ""
    raise AnimeVideoModelError(wrong_file_message(name, found, kinds, " ".join(x for x in (hint, expected) if x),
                                                  detail, input_name))


def load(source, kinds: Sequence[str] | str, *, name: str | None = None, expected: str = "", **options):
    """:func:`require`, then the entry's ``load(source, **options)``. A pickled file is read once: identified from
    its tensors, which go to the entry's loader when it takes a state dict."""
    if name is None and isinstance(source, str):
        name = os.path.basename(source.rstrip("/"))
    if isinstance(source, str) and os.path.isfile(source) and not is_safetensors(source):
        sd = read_state_dict(source)
        arch = require(sd, kinds, name=name, expected=expected)
        if arch.takes_state_dict:
            return arch.load(sd, name=name, **options)
        del sd
    else:
        arch = require(source, kinds, name=name, expected=expected)
    if arch.load is None:
        raise AnimeVideoModelError(f"'{name}' is {arch.describe()}, which this pack recognises but does not load.")
    return arch.load(source, **options)

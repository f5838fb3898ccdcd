"""Loading AnimeInterp checkpoints: the released ``anime_interp_full.ckpt`` and files in its layout.

The released file is ``torch.save({'model_state_dict': DataParallel(model).state_dict(), ...})``,
so every key starts with ``module.``. We read it through ``checkpoint_io.read_state_dict`` (tensors
only, ``weights_only=True``), strip the prefix, read the widths from the tensor shapes and load
strictly: a missing or mis-shaped tensor is an error that names it. Other files (RIFE, upscalers,
SVD, ...) get an error that says what they look like instead.
"""
from __future__ import annotations

import logging
import os

import torch

from ..checkpoint_io import empty_weights, read_state_dict, strip_common_prefix
from .. import dtype_policy, registry
from ..errors import AnimeVideoInputError, AnimeVideoModelError
from .animeinterp import UPSAMPLE, AnimeInterp, AnimeInterpConfig

log = logging.getLogger("AnimeVideo")

EXPECTED_FILE = (
    "Expected AnimeInterp's released checkpoint anime_interp_full.ckpt (github.com/lisiyao21/AnimeInterp, "
    "README: Dropbox or Jianguoyun link) or a file in the same layout (keys flownet.*, feat_ext.*, synnet.*, "
    "with or without the 'module.' prefix)."
)
TOP_LEVEL = ("flownet.", "feat_ext.", "synnet.")
DTYPES = {"auto": torch.float32, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

def is_animeinterp_state_dict(sd: dict) -> bool:
    keys = strip_common_prefix(sd).keys()
    return all(any(k.startswith(p) for k in keys) for p in TOP_LEVEL) and \
        "flownet.update_block.gru.convz1.weight" in keys


def describe_keys(sd: dict) -> str:
    """A short account of what a state dict holds, for error messages: its top-level names and, in the
    architecture registry's words, what it is."""
    if not sd:
        return "no tensors at all"
    keys = strip_common_prefix(sd)
    arch = registry.identify(keys)
    guess = f" It is {arch.describe()}." if arch is not None else ""
    return f"{len(keys)} tensors with top-level names {registry.top_level_names(keys)}.{guess}"


def _shape(sd, key, dim=None):
    if key not in sd:
        raise KeyError(key)
    s = sd[key].shape
    return s if dim is None else int(s[dim])


def config_from_state_dict(sd: dict[str, torch.Tensor], iters: int = 12) -> AnimeInterpConfig:
    """Read the widths back from the tensor shapes (``sd`` without the ``module.`` prefix)."""
    p = "flownet."
    u = p + "update_block."
    hidden = _shape(sd, u + "gru.convz1.weight", 0)
    feature_dim = _shape(sd, p + "fnet.conv2.weight", 0)
    corr_planes = _shape(sd, u + "encoder.convc1.weight", 1)
    levels = 4
    side = round((corr_planes / levels) ** 0.5)
    if side * side * levels != corr_planes or side % 2 == 0:
        raise AnimeVideoModelError(f"AnimeInterp: update_block.encoder.convc1 takes {corr_planes} correlation "
                                   f"channels; expected 4 levels of (2r+1)^2 (324 for the released radius 4).")
    mask_out = _shape(sd, u + "mask.2.weight", 0)
    if mask_out != 9 * UPSAMPLE * UPSAMPLE:
        raise AnimeVideoModelError(f"AnimeInterp: the upsampling mask has {mask_out} channels; expected 576.")
    return AnimeInterpConfig(
        feat_widths=tuple(_shape(sd, f"feat_ext.conv{i}.weight", 0) for i in (1, 3, 5)),
        grid_widths=tuple(_shape(sd, f"synnet.residual_model_head{s}.1.weight", 0) for s in ("", "2", "3")),
        encoder_widths=(_shape(sd, p + "fnet.conv1.weight", 0), _shape(sd, p + "fnet.layer2.0.conv1.weight", 0),
                        _shape(sd, p + "fnet.layer3.0.conv1.weight", 0)),
        hidden_dim=hidden,
        context_dim=feature_dim - hidden,
        corr_levels=levels,
        corr_radius=(side - 1) // 2,
        motion_corr_widths=(_shape(sd, u + "encoder.convc1.weight", 0), _shape(sd, u + "encoder.convc2.weight", 0)),
        motion_flow_widths=(_shape(sd, u + "encoder.convf1.weight", 0), _shape(sd, u + "encoder.convf2.weight", 0)),
        motion_dim=_shape(sd, u + "encoder.conv.weight", 0) + 2,
        flow_head_dim=_shape(sd, u + "flow_head.conv1.weight", 0),
        mask_dim=_shape(sd, u + "mask.0.weight", 0),
        attention_dim=_shape(sd, p + "attention2.conv1.weight", 0),
        iters=iters,
    )


def model_from_state_dict(sd: dict[str, torch.Tensor], name: str = "checkpoint",
                          dtype: torch.dtype = torch.float32) -> AnimeInterp:
    sd = strip_common_prefix(sd)
    if not is_animeinterp_state_dict(sd):
        registry.require(sd, "animeinterp", name=name, expected=EXPECTED_FILE,
                         detail=f" (it holds {len(sd)} tensors with top-level names {registry.top_level_names(sd)})")
    try:
        cfg = config_from_state_dict(sd)
    except KeyError as e:
        raise AnimeVideoModelError(f"'{name}' looks like AnimeInterp but lacks the tensor {e.args[0]}; the file is "
                                   f"incomplete or from another version. {EXPECTED_FILE}") from None
    with empty_weights():
        model = AnimeInterp(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (first: {', '.join(missing[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} tensors of the wrong shape (first: {'; '.join(wrong[:3])})")
        raise AnimeVideoModelError(f"'{name}' does not match the AnimeInterp architecture: {' and '.join(parts)}. "
                                   f"{EXPECTED_FILE}")
    unexpected = [k for k in sd if k not in expected]
    if unexpected:  # tolerated (the released test script loads with strict=False), but said
        log.warning("AnimeVideo: '%s' has %d tensors AnimeInterp does not use (ignored), e.g. %s",
                    name, len(unexpected), ", ".join(unexpected[:3]))
    model.load_state_dict({k: sd[k] for k in expected}, strict=True, assign=True)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def load_interpolator(path: str, dtype: torch.dtype = torch.float32) -> AnimeInterp:
    """Read ``path`` (safetensors or a weights-only pickle) and build the AnimeInterp it holds."""
    sd = read_state_dict(path)
    return model_from_state_dict(sd, os.path.basename(path), dtype)


def resolve_dtype(name: str, device="cpu") -> torch.dtype:
    """The pack's dtype policy (pipelines/dtype_policy.py) with auto = fp32 everywhere: the flow refinement keeps
    float32 coordinates, and the released model is fp32."""
    if name not in DTYPES:
        raise AnimeVideoInputError(f"dtype: '{name}' is not one of {', '.join(DTYPES)}.")
    return dtype_policy.resolve_dtype(name, device, auto_half=False).compute


def _load_entry(source, dtype: torch.dtype = torch.float32, name: str | None = None) -> AnimeInterp:
    if isinstance(source, str):
        return load_interpolator(source, dtype)
    return model_from_state_dict(source, name or "state dict", dtype)


ARCHITECTURES = (
    registry.Architecture("animeinterp", "an AnimeInterp interpolation model", "animeinterp",
                          registry.keys_only(is_animeinterp_state_dict), _load_entry, takes_state_dict=True),
)

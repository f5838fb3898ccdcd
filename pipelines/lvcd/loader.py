"""Load LVCD: the SVD base (``svd.safetensors``, via pipelines/svd/loader.py) + the released LVCD weights.

``lvcd.ckpt`` (Lightning, ``["state_dict"]``, read with ``torch.load(weights_only=True)``) and
``lvcd-fp16.safetensors`` hold the same keys: the ControlNet (``control_model.*``) and the fine-tuned UNet
attention (``model.diffusion_model.*attn1*``), which is overlaid on the SVD UNet. Sizes come from shapes.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..checkpoint_io import empty_weights, is_safetensors, materialize, read_keys, read_state_dict, read_tensors
from .. import registry
from ..errors import AnimeVideoModelError
from ..svd import detect
from ..svd.loader import SVDModel, load_svd
from . import keymap
from ..reference_attention.attention import LVCDAttention, install_lvcd_attention
from .controlnet import SVDControlNet
from ..reference_attention.plan import FramePlan


@dataclass(eq=False)
class LVCDModel:
    svd: SVDModel
    controlnet: SVDControlNet
    unet_attention: LVCDAttention
    controlnet_attention: LVCDAttention
    dtype: torch.dtype
    svd_source: str
    lvcd_source: str

    @property
    def unet(self) -> torch.nn.Module:
        return self.svd.unet

    @property
    def device(self) -> torch.device:
        return self.svd.device

    def modules_for_memory(self):
        return self.svd.modules_for_memory() + [self.controlnet]

    def to(self, device) -> "LVCDModel":
        self.svd.to(device)
        self.controlnet.to(device)
        return self

    def set_plan(self, plan: FramePlan | None):
        self.unet_attention.set_plan(plan)
        self.controlnet_attention.set_plan(plan)

    @contextlib.contextmanager
    def use_plan(self, plan: FramePlan | None):
        with self.unet_attention.use(plan), self.controlnet_attention.use(plan):
            yield self


def _read_lvcd(path: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    name = os.path.basename(path)
    # safetensors: the names are checked from the header before any tensor is read; a pickle is read once and
    # popped as it is converted (peak memory stays near one copy of the 3 GB fp32 lvcd.ckpt)
    source = path if is_safetensors(path) else read_state_dict(path)
    _require_lvcd(read_keys(path) if isinstance(source, str) else list(source), name)
    return read_tensors(source, select=lambda k: k.startswith((keymap.CONTROL_PREFIX, keymap.UNET_PREFIX)),
                        dtype_for=lambda k: dtype)


LVCD_EXPECTED = ("The LVCD weights are lvcd.ckpt or lvcd-fp16.safetensors, with control_model.* (the sketch "
                 "ControlNet) and model.diffusion_model.*attn1* tensors.")


def _require_lvcd(keys, name: str):
    registry.require(keys, "svd_controlnet", name=name, expected=LVCD_EXPECTED, hints={
        "svd": "It looks like the SVD base model: give it as the SVD model and lvcd.ckpt as the LVCD weights."})


def detect_controlnet_config(control_shapes: dict[str, tuple[int, ...]]) -> tuple[dict, int, tuple[int, ...]]:
    """(UNet-encoder kwargs, conditioning channels, hint-encoder widths) from ``control_model.*`` shapes
    (prefix stripped)."""
    for need in ("input_blocks.0.0.weight", "label_emb.0.0.weight", "input_hint_block.0.weight"):
        if need not in control_shapes:
            raise AnimeVideoModelError(f"The LVCD ControlNet weights are incomplete: {need} is missing.")
    shapes = dict(control_shapes)
    shapes["out.2.weight"] = (4, 0, 3, 3)  # the encoder has no output conv; detect_unet_config reads one
    cfg = detect.detect_unet_config(shapes)
    hint = sorted((int(k.split(".")[1]), v) for k, v in control_shapes.items()
                  if k.startswith("input_hint_block.") and k.endswith(".weight"))
    outs = [v[0] for _, v in hint]
    widths = tuple(outs[0:-1:2])
    return cfg, hint[0][1][1], widths


def _same(a, b) -> bool:
    norm = lambda x: tuple(x) if isinstance(x, (list, tuple)) else x  # noqa: E731
    return norm(a) == norm(b)


def load_lvcd(svd_path: str, lvcd_path: str, dtype: torch.dtype) -> LVCDModel:
    svd_name, lvcd_name = os.path.basename(svd_path), os.path.basename(lvcd_path)
    sd = _read_lvcd(lvcd_path, dtype)  # first: a wrong LVCD file fails before the big SVD load
    control_shapes = {k[len(keymap.CONTROL_PREFIX):]: tuple(v.shape) for k, v in sd.items()
                      if k.startswith(keymap.CONTROL_PREFIX)}
    cfg, cond_channels, hint_widths = detect_controlnet_config(control_shapes)
    svd = load_svd(svd_path, dtype)
    unet = svd.unet
    for k in ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim",
              "projection_class_embeddings_input_dim", "down_block_types"):
        if not _same(cfg[k], unet.config[k]):
            raise AnimeVideoModelError(
                f"'{lvcd_name}' was made for an SVD UNet with {k}={cfg[k]}, but '{svd_name}' has "
                f"{k}={unet.config[k]}. LVCD needs the 14-frame SVD img2vid base (svd.safetensors) or a model "
                "of the same architecture.")

    lpb = cfg["layers_per_block"]
    try:
        control_sd, overlay = keymap.split_lvcd_state_dict(sd, lpb)
    except KeyError as e:
        raise AnimeVideoModelError(f"'{lvcd_name}' has a tensor this LVCD loader does not know: {e}.") from None
    del sd
    with empty_weights():
        controlnet = SVDControlNet(cfg, cond_channels, hint_widths)
    controlnet = materialize(controlnet, control_sd, "LVCD ControlNet")
    del control_sd

    own = dict(unet.named_parameters())
    missing = sorted(k for k in own if keymap.is_lvcd_unet_key(k) and k not in overlay)
    if missing:
        raise AnimeVideoModelError(
            f"'{lvcd_name}' has the LVCD ControlNet but not all of LVCD's fine-tuned UNet attention "
            f"(model.diffusion_model.*attn1*): {len(missing)} missing (e.g. {missing[:2]}). Use the complete "
            "lvcd.ckpt or lvcd-fp16.safetensors.")
    bad = [k for k, v in overlay.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise AnimeVideoModelError(
            f"'{lvcd_name}' has {len(bad)} UNet tensors that do not fit '{svd_name}' (e.g. {bad[:3]}).")
    with torch.no_grad():
        for k, v in overlay.items():
            own[k].copy_(v.to(own[k].dtype))
    controlnet.to(device=svd.device)
    return LVCDModel(svd=svd, controlnet=controlnet, unet_attention=install_lvcd_attention(unet),
                     controlnet_attention=install_lvcd_attention(controlnet), dtype=dtype,
                     svd_source=svd_path, lvcd_source=lvcd_path)


def is_lvcd_state_dict(keys) -> bool:
    return any(k.startswith(keymap.CONTROL_PREFIX) for k in keys)


def _load_entry(source: str, svd_path: str, dtype: torch.dtype = torch.float32) -> LVCDModel:
    return load_lvcd(svd_path, source, dtype)


ARCHITECTURES = (
    registry.Architecture("lvcd", "an LVCD ControlNet checkpoint (it needs the SVD base model as well)",
                          "svd_controlnet", registry.keys_only(is_lvcd_state_dict), _load_entry),
)

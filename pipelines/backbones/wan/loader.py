"""The Wan backbone's readers: Wan2.1 transformers (native single files or diffusers folders, fp32/fp16/bf16/fp8
weights) and the Wan2.1 VAE, with the dtype choice and fp8 storage of the block linears.

Everything is read from local files; configs come from tensor shapes, never from the Hub. The AniSora method
(``pipelines/anisora/loader.py``) builds on these.
"""
from __future__ import annotations

import contextlib
import json
import os
import types

import torch
import torch.nn.functional as F

from ...checkpoint_io import (SAFETENSORS_EXTENSIONS, explain_load_errors, own_module_tensors, owned_tensors,
                              read_state_dict)
from ...errors import AnimeVideoModelError
from . import keys as wan_keys

DTYPES = ["auto", "fp32", "fp16", "bf16", "fp8_e4m3fn"]
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------

def resolve_dtype(name: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(compute dtype, storage dtype for the big linear weights or None = same)."""
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    if name == "auto":
        if on_gpu:
            return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), None
        return torch.float32, None
    if name == "fp8_e4m3fn":
        compute = torch.bfloat16 if on_gpu else torch.float32
        return compute, torch.float8_e4m3fn
    if name in TORCH_DTYPES:
        return TORCH_DTYPES[name], None
    raise AnimeVideoModelError(f"dtype: '{name}' is not one of {', '.join(DTYPES)}.")


def _fp8_linear_forward(self, x):
    w = self.weight.to(x.dtype)
    b = None if self.bias is None else self.bias.to(x.dtype)
    return F.linear(x, w, b)


def store_linears(transformer: torch.nn.Module, storage: torch.dtype) -> int:
    """Keep the transformer blocks' Linear weights in ``storage`` (fp8); each layer upcasts on use."""
    n = 0
    for name, mod in transformer.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("blocks."):
            mod.weight.data = mod.weight.data.to(storage)
            mod.forward = types.MethodType(_fp8_linear_forward, mod)
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------

def peek(path: str) -> tuple[list[str], dict]:
    """(tensor names, safetensors metadata) without reading weights where the format allows."""
    if path.lower().endswith(SAFETENSORS_EXTENSIONS):
        from safetensors import safe_open

        with explain_load_errors(os.path.basename(path), path), safe_open(path, framework="pt") as f:
            return list(f.keys()), dict(f.metadata() or {})
    return list(read_state_dict(path).keys()), {}


def _folder_class(folder: str, sub: str) -> str | None:
    cfg = os.path.join(folder, sub, "config.json")
    if not os.path.isfile(cfg):
        return None
    try:
        with open(cfg, encoding="utf-8") as f:
            return json.load(f).get("_class_name")
    except (OSError, ValueError):
        return None


def is_wan_diffusers_folder(path: str) -> bool:
    return os.path.isdir(path) and _folder_class(path, "transformer") == "WanTransformer3DModel"


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def empty_parameters():
    """Create modules with parameters on the meta device (no memory, no init); buffers stay real."""
    original = torch.nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = torch.nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def keeps_fp32(diffusers_key: str) -> bool:
    """Parameters diffusers keeps in float32 whatever the model dtype (WanTransformer3DModel's
    ``_keep_in_fp32_modules``: rope, time embedder, modulation tables, norms), matched as diffusers does."""
    from diffusers import WanTransformer3DModel

    keep = WanTransformer3DModel._keep_in_fp32_modules or []
    return any(m in diffusers_key.split(".") for m in keep)


def transformer_dtype_for(diffusers_key: str, compute: torch.dtype, storage: torch.dtype | None) -> torch.dtype:
    if storage is not None and is_block_linear_weight(diffusers_key):
        return storage
    if keeps_fp32(diffusers_key):
        return torch.float32
    return compute


def cast_like_diffusers(transformer: torch.nn.Module, compute: torch.dtype) -> torch.nn.Module:
    """``transformer`` in ``compute`` except the parameters diffusers keeps in float32."""
    for name, p in transformer.named_parameters():
        if p.is_floating_point():
            p.data = p.data.to(torch.float32 if keeps_fp32(name) else compute)
    return transformer


def is_block_linear_weight(key: str) -> bool:
    """A Linear weight inside a transformer block, in native or diffusers names (what fp8 storage keeps 8-bit)."""
    parts = wan_keys.strip_prefix([key])[0].split(".")
    if len(parts) < 4 or parts[0] != "blocks" or parts[-1] != "weight":
        return False
    inner = ".".join(parts[2:-1])
    return inner in {f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in ("q", "k", "v", "o", "k_img", "v_img")} \
        | {f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj",
                                                           "add_v_proj")} \
        | {"ffn.0", "ffn.2", "ffn.net.0.proj", "ffn.net.2"}


def read_cast(path: str, dtype_for) -> dict[str, torch.Tensor]:
    """Read a checkpoint casting each tensor as it is read (``dtype_for(key) -> dtype``): a 65 GB fp32 file
    loaded as bf16 needs ~33 GB, not 65 + 33."""
    def cast(k, v):
        return v.to(dtype_for(k)) if v.is_floating_point() else v

    if path.lower().endswith(SAFETENSORS_EXTENSIONS):
        from safetensors import safe_open

        out = {}
        with explain_load_errors(os.path.basename(path), path), safe_open(path, framework="pt") as f:
            for k in f.keys():
                out[k] = cast(k, f.get_tensor(k))
        return owned_tensors(out)
    sd = read_state_dict(path)
    return {k: cast(k, sd.pop(k)) for k in list(sd)}


def load_wan_transformer(path: str, compute: torch.dtype, storage: torch.dtype | None = None):
    from diffusers import WanTransformer3DModel

    if os.path.isdir(path):
        sub = os.path.join(path, "transformer") if os.path.isdir(os.path.join(path, "transformer")) else path
        model = own_module_tensors(WanTransformer3DModel.from_pretrained(sub, torch_dtype=compute, local_files_only=True))
        cfg = dict(model.config)
    else:
        keys, meta = peek(path)
        names = wan_keys.diffusers_names(keys)
        sd = wan_keys.transformer_to_diffusers(
            read_cast(path, lambda k: transformer_dtype_for(names.get(k, k), compute, storage)))
        head_dim = int(meta.get(wan_keys.HEAD_DIM_METADATA, 0)) or None
        cfg = wan_keys.transformer_config(sd, head_dim)
        with empty_parameters():
            model = WanTransformer3DModel(**cfg)
        try:
            model.load_state_dict(sd, strict=True, assign=True)
        except RuntimeError as e:
            raise AnimeVideoModelError(
                f"'{os.path.basename(path)}' has Wan weights this layout does not expect: {str(e)[:600]}") from None
    if model.config.in_channels == 2 * model.config.out_channels + 4 and model.config.image_dim is None:
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}' is a Wan image-to-video transformer without the CLIP-image branch: the "
            "Wan2.2-I2V-A14B layout (AniSora V3.2, two experts), which this loader does not run yet. Use AniSora "
            "V3/V3.1/anymask (Wan2.1-I2V-14B layout).")
    if model.config.in_channels != 2 * model.config.out_channels + 4 or model.config.image_dim is None:
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}' is a Wan transformer with {model.config.in_channels} input channels "
            f"{'and no CLIP-image branch' if model.config.image_dim is None else ''}; AniSora V2/V3/anymask need "
            "the image-to-video layout (36 input channels = 16 noise + 4 mask + 16 guide, plus CLIP-image "
            "tokens). Text-to-video Wan weights cannot take keyframes.")
    if storage is not None:
        store_linears(model, storage)
    return model.eval().requires_grad_(False)


def load_wan_vae(path: str, dtype: torch.dtype = torch.float32):
    from diffusers import AutoencoderKLWan

    if os.path.isdir(path):
        sub = os.path.join(path, "vae") if os.path.isdir(os.path.join(path, "vae")) else path
        return own_module_tensors(AutoencoderKLWan.from_pretrained(sub, torch_dtype=dtype, local_files_only=True)).eval()
    sd = wan_keys.vae_to_diffusers(read_cast(path, lambda k: dtype))
    cfg = wan_keys.vae_config(sd)
    with empty_parameters():
        vae = AutoencoderKLWan(**cfg)
    try:
        vae.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}' is not a complete Wan2.1 VAE: {str(e)[:600]}") from None
    return vae.eval().requires_grad_(False)

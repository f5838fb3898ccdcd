"""The Wan backbone's readers: Wan transformers (native single files, native sharded folders with their index json
as Wan-AI publishes them, diffusers folders; fp32/fp16/bf16/fp8 weights and ComfyUI's ``fp8_scaled`` files), the
Wan2.1 VAE, the dtype choice and fp8 storage of the block linears. Wan2.1-I2V (AniSora V2/V3/anymask) and the
experts of Wan2.2-I2V-A14B (AniSora V3.2: same blocks, no CLIP-image branch) share all of it.

Everything is read from local files; configs come from tensor shapes, never from the Hub. The AniSora method
(``pipelines/anisora/loader.py``) builds on these.
"""
from __future__ import annotations

import json
import os
import re
import types

import torch
import torch.nn.functional as F

from ... import dtype_policy
from ...checkpoint_io import (SAFETENSORS_EXTENSIONS, empty_weights, explain_load_errors, materialize,
                              own_module_tensors, read_keys, read_metadata, read_tensors)
from ...errors import AnimeVideoModelError
from . import keys as wan_keys

DTYPES = ["auto", "fp32", "fp16", "bf16", "fp8_e4m3fn"]
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def resolve_dtype(name: str, device: torch.device,
                  stored: torch.dtype | None = None) -> tuple[torch.dtype, torch.dtype | None]:
    """The pack's dtype policy (pipelines/dtype_policy.py) for a Wan transformer: (compute dtype, storage dtype
    for the block linears or None = same as compute).

    ``stored`` is the file's own dtype for those weights (:func:`stored_dtype`). ``auto`` keeps an fp8 file in
    fp8 (its weights stay 8-bit in memory and each layer upcasts as it runs) and otherwise computes in bf16 on a
    GPU (fp16 without bf16 support), fp32 on the CPU; ComfyUI's --*-unet flags apply to ``auto``. A half file
    is not "kept": Wan computes in bf16 whatever half type the file holds, so only an fp8 dtype is passed on."""
    if name not in DTYPES:
        raise AnimeVideoModelError(f"dtype: '{name}' is not one of {', '.join(DTYPES)}.")
    choice = dtype_policy.resolve_dtype(name, device, file_dtype=stored if stored in FP8_DTYPES else None,
                                        supports_fp8=True, role="diffusion", half=torch.bfloat16)
    return choice.compute, (choice.storage if choice.storage != choice.compute else None)


def _fp8_linear_forward(self, x):
    w = self.weight.to(x.dtype)
    b = None if self.bias is None else self.bias.to(x.dtype)
    return F.linear(x, w, b)


def _scaled_fp8_linear_forward(self, x):
    # ComfyUI's fp8_scaled weights: the real weight is weight * scale_weight (dequantised in float32 on use)
    w = (self.weight.float() * self.scale_weight).to(x.dtype)
    b = None if self.bias is None else self.bias.to(x.dtype)
    return F.linear(x, w, b)


def store_linears(transformer: torch.nn.Module, storage: torch.dtype,
                  scales: dict[str, torch.Tensor] | None = None) -> int:
    """Keep the transformer blocks' Linear weights in ``storage`` (fp8); each layer upcasts on use. Layers named
    in ``scales`` (module name -> per-tensor scale, from an ``fp8_scaled`` file) keep the file's fp8 weight and
    multiply by their scale on use."""
    scales = scales or {}
    n = 0
    for name, mod in transformer.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("blocks."):
            if name in scales:
                mod.register_buffer("scale_weight", scales[name].float().reshape(()), persistent=False)
                mod.forward = types.MethodType(_scaled_fp8_linear_forward, mod)
            else:
                mod.weight.data = mod.weight.data.to(storage)
                mod.forward = types.MethodType(_fp8_linear_forward, mod)
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------

INDEX_SUFFIX = ".safetensors.index.json"
SHARD_NAME = re.compile(r"^(?P<stem>.+)-\d+-of-\d+\.safetensors$")
NATIVE_SINGLE_FILE = "diffusion_pytorch_model.safetensors"
SAFETENSORS_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "BF16": torch.bfloat16,
                      "F16": torch.float16, "F32": torch.float32}


def shard_index(path: str) -> str | None:
    """The ``*.safetensors.index.json`` of a sharded checkpoint: the one in folder ``path``, or the one beside
    shard file ``path`` (ComfyUI lists each shard of a folder in models/diffusion_models as a file)."""
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(INDEX_SUFFIX))
        if len(found) > 1:
            raise AnimeVideoModelError(
                f"'{os.path.basename(path.rstrip(os.sep))}' holds {len(found)} index files ({', '.join(found)}); "
                "a Wan folder has one (diffusion_pytorch_model.safetensors.index.json).")
        return os.path.join(path, found[0]) if found else None
    m = SHARD_NAME.match(os.path.basename(path))
    if m:
        index = os.path.join(os.path.dirname(path), m.group("stem") + INDEX_SUFFIX)
        return index if os.path.isfile(index) else None
    return None


def weight_files(path: str) -> list[str]:
    """The files holding the tensors of ``path``: itself for a single file, every shard the index's
    ``weight_map`` names for a sharded folder (or one of its shards), the folder's lone
    diffusion_pytorch_model.safetensors otherwise."""
    index = shard_index(path)
    name = os.path.basename(path.rstrip(os.sep))
    if index is None:
        if not os.path.isdir(path):
            return [path]
        single = os.path.join(path, NATIVE_SINGLE_FILE)
        if os.path.isfile(single):
            return [single]
        raise AnimeVideoModelError(
            f"'{name}' is a folder without Wan weights: expected {NATIVE_SINGLE_FILE}, or the shards "
            f"diffusion_pytorch_model-0000k-of-0000n.safetensors with diffusion_pytorch_model{INDEX_SUFFIX}.")
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise AnimeVideoModelError(
            f"'{os.path.basename(index)}' in '{name}' is not a readable shard index (a JSON object with a "
            f"'weight_map' of tensor name -> shard file): {e}") from None
    folder = os.path.dirname(index)
    out = []
    for shard in shards:
        if not isinstance(shard, str) or os.path.basename(shard) != shard:  # no paths out of the folder
            raise AnimeVideoModelError(f"'{os.path.basename(index)}' names '{shard}', which is not a file name.")
        full = os.path.join(folder, shard)
        if not os.path.isfile(full):
            raise AnimeVideoModelError(
                f"'{name}': the shard '{shard}' that {os.path.basename(index)} lists is missing; download every "
                f"shard ({len(shards)} files) into the same folder.")
        out.append(full)
    return out


def _peek_file(path: str) -> tuple[list[str], dict]:
    return read_keys(path), read_metadata(path)


def peek(path: str) -> tuple[list[str], dict]:
    """(tensor names, safetensors metadata) without reading weights where the format allows; a sharded
    checkpoint's names are those of all its shards (which must be the names its index lists)."""
    files = weight_files(path)
    if len(files) == 1:
        return _peek_file(files[0])
    index = shard_index(path)
    with open(index, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    keys, meta = [], {}
    for file in files:
        k, m = _peek_file(file)
        listed = {key for key, shard in weight_map.items() if shard == os.path.basename(file)}
        if listed != set(k):
            missing, extra = sorted(listed - set(k)), sorted(set(k) - listed)
            raise AnimeVideoModelError(
                f"'{os.path.basename(path.rstrip(os.sep))}': the shard '{os.path.basename(file)}' does not hold "
                f"what {os.path.basename(index)} lists for it ({len(missing)} listed tensors missing, e.g. "
                f"{missing[:2]}; {len(extra)} unlisted, e.g. {extra[:2]}); it is from another download.")
        keys += k
        meta = meta or m
    return keys, meta


def stored_dtype(path: str) -> torch.dtype | None:
    """The dtype the file stores the block linears in (read from the safetensors header, no weights read), or
    None where the format does not say without reading (.pth)."""
    from safetensors import safe_open

    if is_wan_diffusers_folder(path) or (os.path.isdir(path) and _folder_class(path, "") == DIFFUSERS_CLASS):
        return None  # diffusers folders load through from_pretrained(torch_dtype=compute)
    for f in weight_files(path):
        if not f.lower().endswith(SAFETENSORS_EXTENSIONS):
            return None
        with explain_load_errors(os.path.basename(f), f), safe_open(f, framework="pt") as h:
            for k in h.keys():
                if is_block_linear_weight(k):
                    return SAFETENSORS_DTYPES.get(h.get_slice(k).get_dtype())
    return None


def is_native_wan_folder(path: str) -> bool:
    """A folder as Wan-AI (and AniSora) publish a transformer: config.json beside native-named weights, one
    file or shards with their index."""
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        return False
    cls = _folder_class(path, "")
    if cls == DIFFUSERS_CLASS:
        return False
    if cls == NATIVE_CLASS:  # native Wan's WanModel: its own weights say the rest (a broken shard set too)
        return True
    try:
        keys, _ = peek(path)
    except AnimeVideoModelError:
        return False
    return wan_keys.is_native_wan_transformer(keys)


# ComfyUI's fp8_scaled formats (comfy/utils.py convert_old_quants, comfy/ops.py): per quantised Linear an fp8
# ``weight`` and a float32 per-tensor ``scale_weight`` (old, with a ``scaled_fp8`` marker tensor) or
# ``weight_scale`` (new, with a ``comfy_quant`` JSON tensor per layer or ``_quantization_metadata``); the real
# weight is weight * scale. Input scales only serve fp8 matmuls and are not needed to dequantise.
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
QUANT_ONLY_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
SCALED_FP8_MARKER = "scaled_fp8"
SCALED_FORMATS = ("float8_e4m3fn", "float8_e5m2")


def quantisation_keys(keys) -> tuple[dict[str, str], list[str]]:
    """({layer prefix: its weight-scale key}, other quantisation-only keys to drop) of an fp8_scaled file."""
    scales, drop = {}, []
    for k in keys:
        if k.endswith(SCALE_SUFFIXES):
            scales[k.rsplit(".", 1)[0]] = k
        elif k.endswith(QUANT_ONLY_SUFFIXES) or k.split(".")[-1] == SCALED_FP8_MARKER:
            drop.append(k)
    return scales, drop


def check_quant_formats(path: str, meta: dict, comfy_quant: dict[str, torch.Tensor]):
    """Refuse ComfyUI quantisations other than per-tensor fp8 (nvfp4, ...) by name instead of a key dump."""
    formats = set()
    if "_quantization_metadata" in meta:
        try:
            formats |= {v.get("format") for v in json.loads(meta["_quantization_metadata"])["layers"].values()}
        except (ValueError, KeyError, AttributeError):
            raise AnimeVideoModelError(f"'{os.path.basename(path)}': unreadable _quantization_metadata.") from None
    for t in comfy_quant.values():
        try:
            formats.add(json.loads(bytes(t.to(torch.uint8).tolist()).decode("utf-8")).get("format"))
        except (ValueError, AttributeError):
            formats.add(None)
    bad = sorted(str(f) for f in formats - set(SCALED_FORMATS))
    if bad:
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}' is a ComfyUI quantised file in {', '.join(bad)}; this loader reads "
            f"per-tensor fp8 ({', '.join(SCALED_FORMATS)}, ComfyUI's fp8_scaled) and fp8/bf16/fp16/fp32 files. "
            "Use core's Load Diffusion Model with AniSora Wan Conditioning for this file.")


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
    """Read a checkpoint (one file or every shard of a sharded one) casting each tensor as it is read
    (``dtype_for(key) -> dtype``, None = keep the stored dtype): a 65 GB fp32 file loaded as bf16 needs ~33 GB,
    not 65 + 33."""
    out = {}
    for file in weight_files(path):
        out.update(read_tensors(file, dtype_for=dtype_for))
    return out


# What a Wan transformer is, from its config (read from the weights' shapes)
WAN21_I2V = "Wan2.1-I2V"  # AniSora V2/V3/V3.1/anymask: 36 input channels and the CLIP-image branch
WAN22_I2V = "Wan2.2-I2V-A14B"  # AniSora V3.2's two experts: 36 input channels, no CLIP-image branch
WAN22_TI2V = "Wan2.2-TI2V-5B"  # 48-channel Wan2.2 VAE latents
WAN_T2V = "Wan text-to-video"
DIFFUSERS_CLASS = "WanTransformer3DModel"
NATIVE_CLASS = "WanModel"  # the _class_name in the config.json of Wan-AI's native folders


def wan_layout(config) -> str:
    if config.out_channels == 48:
        return WAN22_TI2V
    if config.in_channels != 2 * config.out_channels + 4:
        return WAN_T2V
    return WAN21_I2V if config.image_dim is not None else WAN22_I2V


def check_layout(name: str, config, want: str):
    got = wan_layout(config)
    if got == want:
        return
    if got == WAN22_I2V:
        raise AnimeVideoModelError(
            f"'{name}' is a Wan image-to-video transformer without the CLIP-image branch: one expert of the "
            "Wan2.2-I2V-A14B layout (AniSora V3.2, high- and low-noise experts). Load both experts with Load "
            "AniSora Wan2.2 (AnimeVideo); Load AniSora takes AniSora V3/V3.1/anymask (Wan2.1-I2V-14B layout).")
    if got == WAN21_I2V:
        raise AnimeVideoModelError(
            f"'{name}' is a Wan2.1-I2V transformer (AniSora V2/V3/V3.1/anymask: it has the CLIP-image branch), "
            f"not an expert of {WAN22_I2V} (AniSora V3.2: high_noise / low_noise files, no CLIP-image branch). "
            "Load it with Load AniSora (AnimeVideo).")
    if got == WAN22_TI2V:
        raise AnimeVideoModelError(
            f"'{name}' is a {WAN22_TI2V} transformer (48-channel Wan2.2 VAE latents); AniSora runs on "
            f"{WAN21_I2V} (V2/V3/anymask) and {WAN22_I2V} (V3.2), with the 16-channel Wan2.1 VAE.")
    raise AnimeVideoModelError(
        f"'{name}' is a Wan transformer with {config.in_channels} input channels"
        f"{' and no CLIP-image branch' if config.image_dim is None else ''}; AniSora V2/V3/anymask need "
        "the image-to-video layout (36 input channels = 16 noise + 4 mask + 16 guide, plus CLIP-image "
        "tokens). Text-to-video Wan weights cannot take keyframes.")


def read_native_transformer(path: str, compute: torch.dtype, storage: torch.dtype | None):
    """(diffusers-named state dict, {module name: fp8 scale} for the block linears kept scaled, metadata) of a
    native Wan file or sharded folder; ComfyUI ``fp8_scaled`` layers are dequantised here unless they stay fp8."""
    stored_keys, meta = peek(path)
    name = os.path.basename(path.rstrip(os.sep))
    plain = dict(zip(stored_keys, wan_keys.strip_prefix(stored_keys)))  # ComfyUI's model.diffusion_model. off
    keys = list(plain.values())
    scale_keys, drop = quantisation_keys(keys)
    special = set(drop) | set(scale_keys.values())
    weights = [k for k in keys if k not in special]
    if not wan_keys.is_wan_transformer(weights):
        raise AnimeVideoModelError(f"'{name}' is not a Wan transformer (no 'head.modulation'/'patch_embedding').")
    names = wan_keys.diffusers_names(weights)
    scaled_weights = {layer + ".weight" for layer in scale_keys}

    def dtype_for(stored_key):
        k = plain[stored_key]
        if k in scaled_weights or k in special:
            return None  # fp8 weights and their scales are read as stored, dequantised below
        return transformer_dtype_for(names.get(k, k), compute, storage)

    raw = wan_keys.strip_prefix(read_cast(path, dtype_for))
    check_quant_formats(name, meta, {k: raw[k] for k in drop if k.endswith(".comfy_quant")})
    for k in drop:
        raw.pop(k, None)
    kept_scales = {}
    for layer, skey in scale_keys.items():
        scale = raw.pop(skey).float()
        wkey = layer + ".weight"
        if wkey not in raw:
            raise AnimeVideoModelError(f"'{name}': '{skey}' scales a weight the file does not have ('{wkey}').")
        dname = names.get(wkey, wkey)
        if storage is not None and is_block_linear_weight(dname) and raw[wkey].dtype in FP8_DTYPES:
            kept_scales[dname[:-len(".weight")]] = scale  # stays fp8; multiplied by its scale on use
        else:
            raw[wkey] = (raw[wkey].float() * scale).to(transformer_dtype_for(dname, compute, None))
    return wan_keys.transformer_to_diffusers(raw), kept_scales, meta


def load_wan_transformer(path: str, compute: torch.dtype, storage: torch.dtype | None = None,
                         layout: str = WAN21_I2V):
    """A Wan transformer of ``layout`` from a native file, a native (sharded) folder or a diffusers folder
    (its transformer/ or the folder itself)."""
    from diffusers import WanTransformer3DModel

    name = os.path.basename(path.rstrip(os.sep))
    scales = {}
    if os.path.isdir(path) and not is_native_wan_folder(path):
        sub = os.path.join(path, "transformer") if os.path.isdir(os.path.join(path, "transformer")) else path
        model = own_module_tensors(WanTransformer3DModel.from_pretrained(sub, torch_dtype=compute, local_files_only=True))
        cfg = dict(model.config)
    else:
        sd, scales, meta = read_native_transformer(path, compute, storage)
        head_dim = int(meta.get(wan_keys.HEAD_DIM_METADATA, 0)) or None
        cfg = wan_keys.transformer_config(sd, head_dim)
        with empty_weights(keep_buffers=True):  # the rotary tables are buffers computed at construction
            model = WanTransformer3DModel(**cfg)
        materialize(model, sd, f"Wan transformer '{name}'")
    check_layout(name, model.config, layout)
    if storage is not None or scales:
        store_linears(model, storage, scales)
    return model.eval().requires_grad_(False)


NATIVE_VAE_FILES = ("Wan2.1_VAE.pth", "Wan2.1_VAE.safetensors", "wan_2.1_vae.safetensors")


def native_vae_file(folder: str) -> str | None:
    """The Wan2.1 VAE file a native Wan folder ships beside its weights (Wan-AI and AniSora put Wan2.1_VAE.pth
    at the top of the release), when the folder has no diffusers vae/."""
    if os.path.isdir(os.path.join(folder, "vae")):
        return None
    for f in NATIVE_VAE_FILES:
        if os.path.isfile(os.path.join(folder, f)):
            return os.path.join(folder, f)
    return None


def load_wan_vae(path: str, dtype: torch.dtype = torch.float32):
    from diffusers import AutoencoderKLWan

    if os.path.isdir(path):
        native = native_vae_file(path)
        if native is not None:
            return load_wan_vae(native, dtype)
        sub = os.path.join(path, "vae") if os.path.isdir(os.path.join(path, "vae")) else path
        return own_module_tensors(AutoencoderKLWan.from_pretrained(sub, torch_dtype=dtype, local_files_only=True)).eval()
    sd = wan_keys.vae_to_diffusers(read_cast(path, lambda k: dtype))
    cfg = wan_keys.vae_config(sd)
    with empty_weights(keep_buffers=True):
        vae = AutoencoderKLWan(**cfg)
    return materialize(vae, sd, f"Wan2.1 VAE '{os.path.basename(path)}'")


# ---------------------------------------------------------------------------------------------
# Wan2.2-I2V-A14B: two experts and the boundary between them
# ---------------------------------------------------------------------------------------------

# Wan2.2-I2V-A14B's switch (native Wan2.2 wan/configs/wan_i2v_A14B.py ``boundary = 0.900``, diffusers'
# Wan-AI/Wan2.2-I2V-A14B-Diffusers model_index.json ``boundary_ratio`` 0.9; AniSora V3.2 keeps it): timesteps
# t >= 0.9 * 1000 are the high-noise expert's.
WAN22_I2V_BOUNDARY = 0.9
NATIVE_EXPERT_FOLDERS = ("high_noise_model", "low_noise_model")  # Wan-AI / AniSora V3.2 release layout
DIFFUSERS_EXPERT_FOLDERS = ("transformer", "transformer_2")


def expert_folders(path: str) -> tuple[str, str] | None:
    """(high-noise, low-noise) transformer folders of a Wan2.2 release folder: native ``high_noise_model/`` +
    ``low_noise_model/`` or diffusers ``transformer/`` + ``transformer_2/``; None for anything else."""
    if not os.path.isdir(path):
        return None
    for high, low in (NATIVE_EXPERT_FOLDERS, DIFFUSERS_EXPERT_FOLDERS):
        h, lo = os.path.join(path, high), os.path.join(path, low)
        if os.path.isfile(os.path.join(h, "config.json")) and os.path.isfile(os.path.join(lo, "config.json")):
            return h, lo
    return None


def boundary_ratio(path: str) -> float:
    """The expert switch of a Wan2.2 release folder (diffusers' model_index.json ``boundary_ratio``), else
    Wan2.2-I2V-A14B's 0.9."""
    index = os.path.join(path, "model_index.json") if os.path.isdir(path) else None
    if index and os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                value = json.load(f).get("boundary_ratio")
        except (OSError, ValueError, AttributeError):
            value = None
        if value is not None:
            value = float(value)
            if not 0.0 < value < 1.0:
                raise AnimeVideoModelError(
                    f"'{os.path.basename(path.rstrip(os.sep))}/model_index.json': boundary_ratio {value} is not "
                    "between 0 and 1 (Wan2.2-I2V-A14B: 0.9).")
            return value
    return WAN22_I2V_BOUNDARY


def check_expert_pair(high, low, high_name: str, low_name: str):
    """Both experts are Wan2.2-I2V-A14B transformers of the same size (a high/low pair of one release)."""
    keys = ("num_attention_heads", "attention_head_dim", "num_layers", "ffn_dim", "in_channels", "out_channels",
            "text_dim", "patch_size")
    a = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in ((k, high.config[k]) for k in keys)}
    b = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in ((k, low.config[k]) for k in keys)}
    if a != b:
        diff = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in keys if a[k] != b[k])
        raise AnimeVideoModelError(
            f"low_noise_name: '{low_name}' and high_noise_name '{high_name}' are experts of different sizes "
            f"({diff}); pick the high_noise and low_noise files of one Wan2.2-I2V-A14B / AniSora V3.2 release.")

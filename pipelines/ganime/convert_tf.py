"""Best-effort converter from the original GANime TensorFlow checkpoints to our safetensors files.

The original weights are Keras ``save_weights`` object-based checkpoints (``checkpoint.index`` +
``checkpoint.data-*``). Their variable names follow the attribute names of the original layers:

- VQ-GAN: ``encoder/conv_in``, ``encoder/downsampling_list/<i>/...`` (one flat list: ResBlocks
  ``norm1 conv1 norm2 conv2 [nin_shortcut]``, attention blocks ``norm q k v proj_out``, downsample
  ``conv``), ``encoder/mid/{block_1,attn_1,block_2}``, ``encoder/norm_out``, ``encoder/conv_out``;
  ``quant_conv`` (Keras name ``pre_quant_conv``), ``quantize/embeddings`` (128 x 50257),
  ``post_quant_conv``; the decoder the same with ``upsampling_list``;
- transformer: Hugging Face's TF GPT-2 (``wte/weight``, ``wpe``, ``h/<i>/ln_1``, ``attn/c_attn``,
  ``attn/c_proj``, ``ln_2``, ``mlp/c_fc``, ``mlp/c_proj``, ``ln_f``) plus ``wte_remaining_frames/weight``.

Layout rules: Conv2D kernels (kh, kw, in, out) -> (out, in, kh, kw); GroupNorm / LayerNorm
gamma, beta -> weight, bias; the codebook is transposed; GPT-2's Conv1D weights are (in, out) in both
frameworks (no transpose), its biases (1, out) are flattened; the remaining-frames table keeps its
first ``remaining_rows`` rows (B3). Optimizer slots, the discriminator, the VGG and metric trackers
are skipped.

The name/shape mapping (``plan_conversion``, ``convert_arrays``) is plain Python and tested on a
synthetic dict named this way. No real TF checkpoint was available to check it: the exact strings
in a real file may differ, and the converter then stops with the list of names it could not place.
TensorFlow is imported only inside ``read_tf_checkpoint`` (``pip install tensorflow-cpu``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import AnimeVideoModelError

SKIP_PARTS = ("OPTIMIZER_SLOT", "optimizer", "save_counter", "discriminator", "perceptual", "vgg", "_tracker",
              "keras_api", "scheduled_lrs", "gradient_accumulation", "_loss", "learning_rate")
RES_PARTS = {"norm1", "conv1", "norm2", "conv2", "nin_shortcut", "conv_shortcut"}
ATTN_PARTS = {"norm", "q", "k", "v", "proj_out"}


@dataclass(frozen=True)
class Entry:
    tf_name: str
    target: str  # "vqgan" or "transformer"
    torch_name: str
    op: str  # "conv", "transpose", "copy", "flatten", "rows"


def clean_name(name: str) -> str | None:
    """Strip checkpoint decorations; None for variables that are not model weights."""
    n = name.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")
    n = re.sub(r":\d+$", "", n)
    if any(part in n for part in SKIP_PARTS):
        return None
    return n


def _param(var: str) -> tuple[str, str]:
    """(torch suffix, op) for a TF variable of a conv or norm layer."""
    if var == "kernel":
        return "weight", "conv"
    if var == "bias":
        return "bias", "copy"
    if var == "gamma":
        return "weight", "copy"
    if var == "beta":
        return "bias", "copy"
    raise KeyError(var)


_LIST_RX = re.compile(r"(?:^|/)(encoder|decoder)/(downsampling_list|upsampling_list)/(\d+)/([^/]+)/([^/]+)$")
_FIXED_RX = re.compile(r"(?:^|/)(encoder|decoder)/(conv_in|norm_out|conv_out)/([^/]+)$")
_MID_RX = re.compile(r"(?:^|/)(encoder|decoder)/mid/(block_1|block_2|attn_1)/([^/]+)/([^/]+)$")
_QCONV_RX = re.compile(r"(?:^|/)(quant_conv|pre_quant_conv|post_quant_conv)/([^/]+)$")
_CODEBOOK_RX = re.compile(r"(?:^|/)(?:quantize/)?(?:embeddings_vqvae|embeddings)$")
_GPT_BLOCK_RX = re.compile(r"(?:^|/)h(?:/|_\._)(\d+)/(ln_1|ln_2|attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj)/([^/]+)$")
_GPT_LN_F_RX = re.compile(r"(?:^|/)ln_f/([^/]+)$")


def _vq_list_plan(kind: str, items: dict[int, dict[str, dict[str, str]]]):
    """Place the flat ``downsampling_list`` / ``upsampling_list`` items into our levels."""
    order = sorted(items)
    if kind == "encoder":
        level, step, prefix = 0, 1, "encoder.down"
    else:
        n_up = sum(1 for i in order if _item_kind(items[i]) == "resample")
        level, step, prefix = n_up, -1, "decoder.up"
    block = -1
    out = []
    for i in order:
        kind_i = _item_kind(items[i])
        if kind_i == "res":
            block += 1
            base = f"{prefix}.{level}.blocks.{block}"
        elif kind_i == "attn":
            if block < 0:
                raise AnimeVideoModelError(f"{kind} list item {i}: an attention block before any ResBlock.")
            base = f"{prefix}.{level}.attns.{block}"
        else:
            base = f"{prefix}.{level}.resample"
        for sub, vars_ in items[i].items():
            for var, tf_name in vars_.items():
                suffix, op = _param(var)
                name = f"{base}.conv.{suffix}" if kind_i == "resample" else f"{base}.{sub}.{suffix}"
                out.append(Entry(tf_name, "vqgan", name, op))
        if kind_i == "resample":
            level += step
            block = -1
    return out


def _item_kind(subs: dict) -> str:
    keys = set(subs)
    if keys & {"conv1", "conv2"}:
        return "res"
    if keys & {"q", "k", "v", "proj_out"}:
        return "attn"
    if keys == {"conv"}:
        return "resample"
    raise AnimeVideoModelError(f"cannot tell what layer holds {sorted(keys)}")


def _place(raw: str, n: str, entries: list, lists: dict) -> bool:
    m = _LIST_RX.search(n)
    if m:
        lists[m.group(1)].setdefault(int(m.group(3)), {}).setdefault(m.group(4), {})[m.group(5)] = raw
        return True
    m = _FIXED_RX.search(n)
    if m:
        suffix, op = _param(m.group(3))
        entries.append(Entry(raw, "vqgan", f"{m.group(1)}.{m.group(2)}.{suffix}", op))
        return True
    m = _MID_RX.search(n)
    if m:
        suffix, op = _param(m.group(4))
        entries.append(Entry(raw, "vqgan", f"{m.group(1)}.mid.{m.group(2)}.{m.group(3)}.{suffix}", op))
        return True
    m = _QCONV_RX.search(n)
    if m:
        layer = "post_quant_conv" if m.group(1) == "post_quant_conv" else "quant_conv"
        suffix, op = _param(m.group(2))
        entries.append(Entry(raw, "vqgan", f"{layer}.{suffix}", op))
        return True
    if _CODEBOOK_RX.search(n) and "wpe" not in n:
        entries.append(Entry(raw, "vqgan", "quantize.embedding.weight", "transpose"))
        return True
    if re.search(r"(?:^|/)wte_remaining_frames/weight$", n):
        entries.append(Entry(raw, "transformer", "remaining_frames.weight", "rows"))
        return True
    if re.search(r"(?:^|/)wte/weight$", n):
        entries.append(Entry(raw, "transformer", "gpt2.transformer.wte.weight", "copy"))
        return True
    if re.search(r"(?:^|/)wpe(?:/embeddings)?$", n):
        entries.append(Entry(raw, "transformer", "gpt2.transformer.wpe.weight", "copy"))
        return True
    m = _GPT_BLOCK_RX.search(n)
    if m:
        layer, var = m.group(2).replace("/", "."), m.group(3)
        if layer.startswith("ln"):
            suffix, op = _param(var)
        else:  # Conv1D: weight (in, out) as in torch, bias (1, out)
            suffix, op = ("weight", "copy") if var == "weight" else ("bias", "flatten")
        entries.append(Entry(raw, "transformer", f"gpt2.transformer.h.{m.group(1)}.{layer}.{suffix}", op))
        return True
    m = _GPT_LN_F_RX.search(n)
    if m:
        suffix, op = _param(m.group(1))
        entries.append(Entry(raw, "transformer", f"gpt2.transformer.ln_f.{suffix}", op))
        return True
    return False


def plan_conversion(names: list[str]) -> tuple[list[Entry], list[str]]:
    """Map TF variable names to our tensor names. Returns (entries, names it could not place)."""
    entries, unplaced = [], []
    lists: dict[str, dict[int, dict[str, dict[str, str]]]] = {"encoder": {}, "decoder": {}}
    for raw in names:
        n = clean_name(raw)
        if n is None:
            continue
        try:
            placed = _place(raw, n, entries, lists)
        except KeyError:
            placed = False
        if not placed:
            unplaced.append(raw)
    for kind in ("encoder", "decoder"):
        if lists[kind]:
            entries.extend(_vq_list_plan(kind, lists[kind]))
    seen: dict[tuple[str, str], str] = {}
    for e in entries:
        key = (e.target, e.torch_name)
        if key in seen:
            raise AnimeVideoModelError(f"two TF variables map to {e.torch_name}: {seen[key]} and {e.tf_name}")
        seen[key] = e.tf_name
    return entries, unplaced


def apply_op(array: np.ndarray, op: str, remaining_rows: int = 1024) -> np.ndarray:
    if op == "conv":
        if array.ndim != 4:
            raise AnimeVideoModelError(f"expected a 4-D conv kernel, got shape {array.shape}")
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    if op == "transpose":
        return np.ascontiguousarray(array.T)
    if op == "flatten":
        return np.ascontiguousarray(array.reshape(-1))
    if op == "rows":
        return np.ascontiguousarray(array[:remaining_rows])
    return np.ascontiguousarray(array)


def convert_arrays(arrays: dict[str, np.ndarray], remaining_rows: int = 1024, strict: bool = True
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """TF variables (name -> array) -> (VQ-GAN state dict, transformer state dict), our names and layouts."""
    entries, unplaced = plan_conversion(list(arrays))
    if strict and unplaced:
        shown = ", ".join(unplaced[:12]) + (f" and {len(unplaced) - 12} more" if len(unplaced) > 12 else "")
        raise AnimeVideoModelError(f"the converter could not place {len(unplaced)} TF variables: {shown}. "
                                   "The checkpoint names differ from the layout this converter knows.")
    vq, tr = {}, {}
    for e in entries:
        t = torch.from_numpy(apply_op(np.asarray(arrays[e.tf_name]), e.op, remaining_rows).astype(np.float32))
        (vq if e.target == "vqgan" else tr)[e.torch_name] = t
    return vq, tr


def read_tf_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Every variable of a TF checkpoint (prefix path, e.g. ``.../checkpoint``) as numpy arrays."""
    try:
        import tensorflow as tf  # optional: only the converter needs it
    except ImportError:
        raise AnimeVideoModelError("Converting the original GANime checkpoints needs TensorFlow: "
                                   "pip install tensorflow-cpu (only for this one-off conversion).") from None
    reader = tf.train.load_checkpoint(path)
    names = reader.get_variable_to_shape_map()
    return {n: reader.get_tensor(n) for n in names if clean_name(n) is not None}


def convert_checkpoint(path: str, out_vqgan: str | None, out_transformer: str | None, *, n_head: int | None = None,
                       frames_before: int = 5, remaining_rows: int = 1024, image_size=(64, 128),
                       attention: str = "faithful", norm_groups: int = 32) -> list[str]:
    """Convert one TF checkpoint (a VQ-GAN one, or a transformer one that also holds its VQ-GAN)."""
    from . import loader
    from .transformer import GANimeTransformer
    from .vqgan import VQGAN

    vq_sd, tr_sd = convert_arrays(read_tf_checkpoint(path), remaining_rows)
    written = []
    if out_vqgan and vq_sd:
        cfg = loader.vqgan_config_from_state_dict(vq_sd, {"image_size": list(image_size), "attention": attention,
                                                          "norm_groups": norm_groups})
        vq = VQGAN(cfg)
        vq.load_state_dict(vq_sd, strict=True)
        written.append(loader.save_vqgan(vq, out_vqgan, source=f"converted from TF checkpoint {path}"))
    if out_transformer and tr_sd:
        tokens = (image_size[0] // 8) * (image_size[1] // 8)
        if vq_sd:
            tokens = loader.vqgan_config_from_state_dict(vq_sd, {"image_size": list(image_size),
                                                                 "norm_groups": norm_groups}).tokens_per_frame
        meta = {"frames_before": frames_before, "tokens_per_frame": tokens}
        if n_head:
            meta["n_head"] = n_head
        cfg = loader.transformer_config_from_state_dict(tr_sd, meta)
        model = GANimeTransformer(cfg)
        model.load_exported(tr_sd)
        written.append(loader.save_transformer(model, out_transformer, source=f"converted from TF checkpoint {path}"))
    if not written:
        raise AnimeVideoModelError(f"'{path}' held no GANime VQ-GAN or transformer weights the converter knows.")
    return written

"""GANime weights: our safetensors format, with the architecture read from the tensors.

Two files, both in ``models/ganime``:

- the VQ-GAN: keys ``encoder.*``, ``quant_conv.*``, ``quantize.embedding.weight``,
  ``post_quant_conv.*``, ``decoder.*``;
- the transformer: Hugging Face GPT-2 keys under ``gpt2.`` (LM head tied to ``wte``, not stored)
  and ``remaining_frames.weight``.

The sizes (channels, levels, blocks, attention levels, codebook, GPT-2 layers/width/positions, the
remaining-frames table) come from the tensor names and shapes, never from the file name. What the
shapes cannot tell (GroupNorm groups, attention scaling, nominal resolution, frame size, GPT-2 heads,
the M the transformer was trained with) is stored in the safetensors metadata under ``config``;
files without it get the thesis values. Other files are refused with a message saying what they look
like.
"""
from __future__ import annotations

import json
import logging
import os
import re

import torch

from ..checkpoint_io import SAFETENSORS_EXTENSIONS, damaged_error_types, read_metadata, read_state_dict
from .. import dtype_policy, registry
from ..errors import AnimeVideoInputError, AnimeVideoModelError
from .transformer import GANimeTransformer, TransformerConfig
from .vqgan import VQGAN, VQGANConfig

log = logging.getLogger("AnimeVideo")

FORMAT_VQGAN = "animevideo-ganime-vqgan"
FORMAT_TRANSFORMER = "animevideo-ganime-transformer"
FORMAT_VERSION = "1"
DTYPES = ("auto", "fp32", "fp16", "bf16")

HOW_TO_GET = (
    "GANime files are made by scripts/ganime_train.py (train on your own anime) or converted from the "
    "original TensorFlow checkpoints with scripts/ganime_train.py convert-tf; the original weights are not "
    "published anywhere this pack can download from."
)
VQGAN_KEYS = ("encoder.conv_in.weight", "quant_conv.weight", "quantize.embedding.weight", "post_quant_conv.weight",
              "decoder.conv_out.weight")
OTHER_HINTS = {
    "gpt2": "A GANime transformer also has the remaining-frames embedding (remaining_frames.weight) and its keys "
            "under gpt2.",
    "vae": "GANime's VQ-GAN has its own layout (encoder.*, quant_conv.*, quantize.embedding.weight, decoder.*).",
}
TRANSFORMER_KEYS = ("gpt2.transformer.wte.weight", "gpt2.transformer.wpe.weight", "remaining_frames.weight",
                    "gpt2.transformer.h.0.attn.c_attn.weight")

# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def meta_config(meta: dict) -> dict:
    try:
        cfg = json.loads(meta.get("config", "{}"))
        return cfg if isinstance(cfg, dict) else {}
    except ValueError:
        return {}


def describe_keys(sd: dict) -> str:
    """What a state dict is (the architecture registry's words) and its top-level names, for error messages."""
    if not sd:
        return "no tensors at all"
    return f"{registry.describe(sd)}, {len(sd)} tensors with top-level names {registry.top_level_names(sd)}"


def sniff_kind(path: str) -> str | None:
    """'vqgan' or 'transformer' from a safetensors file's header (tensor names only, no tensor is read); None for
    other files, other formats and unreadable files."""
    if not path.lower().endswith(SAFETENSORS_EXTENSIONS):
        return None
    try:
        arch = registry.identify(path)
    except (OSError, AnimeVideoModelError, *damaged_error_types()):  # unreadable or damaged: loading it says which
        return None
    return {"ganime_gpt": "transformer", "ganime_vqgan": "vqgan"}.get(arch.kind) if arch is not None else None


def is_vqgan_state_dict(sd: dict) -> bool:
    return all(k in sd for k in VQGAN_KEYS)


def is_transformer_state_dict(sd: dict) -> bool:
    return all(k in sd for k in TRANSFORMER_KEYS)


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def vqgan_config_from_state_dict(sd: dict, meta_cfg: dict | None = None) -> VQGANConfig:
    meta_cfg = dict(meta_cfg or {})
    ch = int(sd["encoder.conv_in.weight"].shape[0])
    n_levels = _count(sd, r"encoder\.down\.(\d+)\.")
    if n_levels == 0:
        raise KeyError("encoder.down.0.blocks.0.conv1.weight")
    mult, attn_levels = [], []
    for i in range(n_levels):
        out = int(sd[f"encoder.down.{i}.blocks.0.conv1.weight"].shape[0])
        if out % ch:
            raise AnimeVideoModelError(f"encoder level {i} has {out} channels, not a multiple of {ch}.")
        mult.append(out // ch)
        attn_levels.append(f"encoder.down.{i}.attns.0.q.weight" in sd)
    n_blocks = _count(sd, r"encoder\.down\.0\.blocks\.(\d+)\.")
    n_embed, embed_dim = (int(s) for s in sd["quantize.embedding.weight"].shape)
    z_channels = int(sd["encoder.conv_out.weight"].shape[0])
    resolution = int(meta_cfg.get("resolution", 0))
    attn_res = tuple(int(r) for r in meta_cfg.get("attention_resolution", ()))
    derived = (resolution > 0 and tuple((resolution >> i) in attn_res for i in range(n_levels)) == tuple(attn_levels))
    if not derived:  # no metadata (or it disagrees with the tensors): put the attention at nominal 16
        first = attn_levels.index(True) if any(attn_levels) else n_levels - 1
        resolution = 16 << first
        attn_res = tuple(resolution >> i for i, a in enumerate(attn_levels) if a)
    groups = int(meta_cfg.get("norm_groups", 32))
    return VQGANConfig(
        channels=ch, channels_multiplier=tuple(mult), num_res_blocks=n_blocks, attention_resolution=attn_res,
        resolution=resolution, z_channels=z_channels, embedding_dim=embed_dim, num_embeddings=n_embed,
        beta=float(meta_cfg.get("beta", 0.25)), dropout=0.0,
        image_size=tuple(meta_cfg.get("image_size", (64, 128))), norm_groups=groups,
        attention=str(meta_cfg.get("attention", "scaled")),
    )


def transformer_config_from_state_dict(sd: dict, meta_cfg: dict | None = None) -> TransformerConfig:
    meta_cfg = dict(meta_cfg or {})
    vocab, n_embd = (int(s) for s in sd["gpt2.transformer.wte.weight"].shape)
    n_positions = int(sd["gpt2.transformer.wpe.weight"].shape[0])
    n_layer = _count(sd, r"gpt2\.transformer\.h\.(\d+)\.")
    n_inner = int(sd["gpt2.transformer.h.0.mlp.c_fc.weight"].shape[1])
    n_head = int(meta_cfg.get("n_head", max(1, n_embd // 64)))  # every GPT-2 size has 64-wide heads
    if n_embd % n_head:
        raise AnimeVideoModelError(f"the transformer is {n_embd} wide, which does not split into {n_head} heads.")
    rem_rows, rem_dim = (int(s) for s in sd["remaining_frames.weight"].shape)
    if rem_dim != n_embd:
        raise AnimeVideoModelError(f"remaining_frames.weight is {rem_dim} wide but GPT-2 is {n_embd} wide.")
    return TransformerConfig(
        vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        n_inner=None if n_inner == 4 * n_embd else n_inner,
        activation_function=str(meta_cfg.get("activation_function", "gelu_new")),
        layer_norm_epsilon=float(meta_cfg.get("layer_norm_epsilon", 1e-5)),
        scale_attn_by_inverse_layer_idx=bool(meta_cfg.get("scale_attn_by_inverse_layer_idx", False)),
        remaining_frames_size=rem_rows, tokens_per_frame=int(meta_cfg.get("tokens_per_frame", 128)),
        frames_before=int(meta_cfg.get("frames_before", 1)),
    )


def _read(path: str) -> tuple[dict, dict]:
    if not os.path.isfile(path):
        raise AnimeVideoModelError(f"'{path}' does not exist. {HOW_TO_GET}")
    sd = read_state_dict(path)
    return sd, meta_config(read_metadata(path))


def vqgan_from_state_dict(sd: dict, meta_cfg: dict | None = None, name: str = "checkpoint",
                          input_name: str = "") -> VQGAN:
    if not is_vqgan_state_dict(sd):
        registry.require(sd, "ganime_vqgan", name=name, input_name=input_name, expected=HOW_TO_GET,
                         hints={"ganime_gpt": "Choose it as transformer_name instead.", **OTHER_HINTS})
    try:
        cfg = vqgan_config_from_state_dict(sd, meta_cfg)
        model = VQGAN(cfg)
        model.load_state_dict(sd, strict=True)
    except KeyError as e:
        raise AnimeVideoModelError(f"'{name}' looks like a GANime VQ-GAN but lacks the tensor {e.args[0]}; the file "
                                   f"is incomplete or from another version. {HOW_TO_GET}") from None
    except (RuntimeError, ValueError) as e:
        raise AnimeVideoModelError(f"'{name}' looks like a GANime VQ-GAN but its tensors do not fit together: "
                                   f"{str(e).splitlines()[0][:400]}") from None
    return model.eval().requires_grad_(False)


def transformer_from_state_dict(sd: dict, meta_cfg: dict | None = None, name: str = "checkpoint",
                                input_name: str = "") -> GANimeTransformer:
    if not is_transformer_state_dict(sd):
        registry.require(sd, "ganime_gpt", name=name, input_name=input_name, expected=HOW_TO_GET,
                         hints={"ganime_vqgan": "Choose it as vqgan_name instead.", **OTHER_HINTS})
    try:
        cfg = transformer_config_from_state_dict(sd, meta_cfg)
        model = GANimeTransformer(cfg)
        model.load_exported(sd)
    except KeyError as e:
        raise AnimeVideoModelError(f"'{name}' looks like a GANime transformer but its tensors do not match GPT-2's "
                                   f"layout ({e.args[0]}). {HOW_TO_GET}") from None
    except (RuntimeError, ValueError) as e:
        raise AnimeVideoModelError(f"'{name}' looks like a GANime transformer but its tensors do not fit together: "
                                   f"{str(e).splitlines()[0][:400]}") from None
    return model.eval().requires_grad_(False)


def load_vqgan(path: str, input_name: str = "") -> VQGAN:
    sd, cfg = _read(path)
    return vqgan_from_state_dict(sd, cfg, os.path.basename(path), input_name)


def load_transformer(path: str, input_name: str = "") -> GANimeTransformer:
    sd, cfg = _read(path)
    return transformer_from_state_dict(sd, cfg, os.path.basename(path), input_name)


def _load_vqgan_entry(source, name: str | None = None) -> VQGAN:
    if isinstance(source, str):
        return load_vqgan(source)
    return vqgan_from_state_dict(source, None, name or "state dict")


def _load_transformer_entry(source, name: str | None = None) -> GANimeTransformer:
    if isinstance(source, str):
        return load_transformer(source)
    return transformer_from_state_dict(source, None, name or "state dict")


ARCHITECTURES = (
    registry.Architecture("ganime_vqgan", "a GANime VQ-GAN file", "ganime_vqgan",
                          registry.keys_only(is_vqgan_state_dict), _load_vqgan_entry),
    registry.Architecture("ganime_gpt", "a GANime transformer file (GPT-2 with the remaining-frames embedding)",
                          "ganime_gpt", registry.keys_only(is_transformer_state_dict), _load_transformer_entry),
)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _save(tensors: dict, path: str, meta: dict):
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
              metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)
    return path


def save_vqgan(model: VQGAN, path: str, **extra_meta) -> str:
    meta = {"format": FORMAT_VQGAN, "format_version": FORMAT_VERSION, "config": json.dumps(model.config.to_dict()),
            **extra_meta}
    return _save(model.state_dict(), path, meta)


def save_transformer(model: GANimeTransformer, path: str, **extra_meta) -> str:
    meta = {"format": FORMAT_TRANSFORMER, "format_version": FORMAT_VERSION,
            "config": json.dumps(model.config.to_dict()), **extra_meta}
    return _save(model.export_state_dict(), path, meta)


# ---------------------------------------------------------------------------------------------
# The pair
# ---------------------------------------------------------------------------------------------

def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The pack's dtype policy (pipelines/dtype_policy.py) for the transformer: auto = fp16 on a GPU, fp32 on the
    CPU (the VQ-GAN stays fp32 whatever is chosen)."""
    if name not in DTYPES:
        raise AnimeVideoInputError(f"dtype: '{name}' is not one of {', '.join(DTYPES)}.")
    return dtype_policy.resolve_dtype(name, device).compute


class GANimeModel:
    """The VQ-GAN and the transformer that go together. The VQ-GAN stays fp32 (code distances)."""

    def __init__(self, vqgan: VQGAN, transformer: GANimeTransformer, names: tuple[str, str] = ("", "")):
        check_pair(vqgan, transformer, names)
        self.vqgan, self.transformer, self.names = vqgan, transformer, names

    @property
    def device(self) -> torch.device:
        return self.vqgan.device

    def to(self, device):
        self.vqgan.to(device)
        self.transformer.to(device)
        return self

    def modules_for_memory(self):
        return [self.vqgan, self.transformer]

    @property
    def tokens_per_frame(self) -> int:
        return self.vqgan.config.tokens_per_frame

    @property
    def image_size(self) -> tuple[int, int]:
        return self.vqgan.config.image_size


def check_pair(vqgan: VQGAN, transformer: GANimeTransformer, names=("VQ-GAN", "transformer")):
    v, t = vqgan.config, transformer.config
    if v.num_embeddings != t.vocab_size:
        raise AnimeVideoModelError(
            f"The VQ-GAN '{names[0]}' has {v.num_embeddings} codes but the transformer '{names[1]}' predicts "
            f"{t.vocab_size}; they were not trained together. Pick the pair from the same training run.")
    if v.tokens_per_frame != t.tokens_per_frame:
        raise AnimeVideoModelError(
            f"The VQ-GAN '{names[0]}' makes {v.tokens_per_frame} codes per frame but the transformer '{names[1]}' "
            f"was trained on {t.tokens_per_frame}; they were not trained together.")
    if 2 * t.tokens_per_frame > t.n_positions:
        raise AnimeVideoModelError(
            f"The transformer '{names[1]}' has {t.n_positions} positions, too few for a last frame plus one "
            f"previous frame of {t.tokens_per_frame} codes each.")


def load_ganime(vqgan_path: str, transformer_path: str, dtype: torch.dtype = torch.float32) -> GANimeModel:
    vqgan = load_vqgan(vqgan_path, "vqgan_name")
    transformer = load_transformer(transformer_path, "transformer_name").to(dtype)
    return GANimeModel(vqgan, transformer, (os.path.basename(vqgan_path), os.path.basename(transformer_path)))

"""Key mapping between Stability's sgm single-file SVD checkpoints and diffusers/transformers modules.

The rules are parametric in the number of levels, ``layers_per_block`` and which levels carry
attention, so the same code maps the real 1.5 B-parameter checkpoint and a tiny test copy. They are
checked against the full real key tables in ``shared/manifests`` by the tests.
"""
from __future__ import annotations

import re

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."

# sgm ResBlock sub-module names -> diffusers ResnetBlock2D / TemporalResnetBlock names.
_UNET_RES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_UNET_RES_INV = {v: k for k, v in _UNET_RES.items()}
_VAE_TIME_RES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "out_layers.0": "norm2", "out_layers.3": "conv2"}
_VAE_TIME_RES_INV = {v: k for k, v in _VAE_TIME_RES.items()}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_VAE_ATTN_INV = {v: k for k, v in _VAE_ATTN.items()}


def _sub(name: str, table: dict[str, str]) -> str | None:
    for src, dst in table.items():
        if name == src or name.startswith(src + "."):
            return dst + name[len(src):]
    return None


# ---------------------------------------------------------------------------------------------
# UNet
# ---------------------------------------------------------------------------------------------

def _unet_resnet(rest: str) -> str:
    if rest.startswith("time_stack."):
        return "temporal_res_block." + _sub(rest[len("time_stack."):], _UNET_RES)
    if rest.startswith("time_mixer."):
        return rest
    mapped = _sub(rest, _UNET_RES)
    if mapped is None:
        raise KeyError(rest)
    return "spatial_res_block." + mapped


def _unet_resnet_inv(rest: str) -> str:
    if rest.startswith("temporal_res_block."):
        return "time_stack." + _sub(rest[len("temporal_res_block."):], _UNET_RES_INV)
    if rest.startswith("time_mixer."):
        return rest
    return _sub(rest[len("spatial_res_block."):], _UNET_RES_INV)


def _unet_attn(rest: str) -> str:
    m = re.match(r"time_stack\.(\d+)\.(.*)", rest)
    if m:
        return f"temporal_transformer_blocks.{m[1]}.{m[2]}"
    m = re.match(r"time_pos_embed\.([02])\.(.*)", rest)
    if m:
        return f"time_pos_embed.linear_{1 if m[1] == '0' else 2}.{m[2]}"
    return rest


def _unet_attn_inv(rest: str) -> str:
    m = re.match(r"temporal_transformer_blocks\.(\d+)\.(.*)", rest)
    if m:
        return f"time_stack.{m[1]}.{m[2]}"
    m = re.match(r"time_pos_embed\.linear_([12])\.(.*)", rest)
    if m:
        return f"time_pos_embed.{0 if m[1] == '1' else 2}.{m[2]}"
    return rest


_UNET_TOP = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
_UNET_TOP_INV = {v: k for k, v in _UNET_TOP.items()}


def unet_key_to_diffusers(key: str, layers_per_block: int) -> str:
    """One sgm VideoUNet key (without ``model.diffusion_model.``) -> its diffusers name."""
    top = _sub(key, _UNET_TOP)
    if top is not None:
        return top
    slots = layers_per_block + 1
    m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.*)", key)
    if m:
        i, s, rest = int(m[1]), int(m[2]), m[3]
        level, j = (i - 1) // slots, (i - 1) % slots
        if j == layers_per_block:  # the level's downsampler
            return f"down_blocks.{level}.downsamplers.0.conv." + rest[len("op."):]
        if s == 0:
            return f"down_blocks.{level}.resnets.{j}." + _unet_resnet(rest)
        return f"down_blocks.{level}.attentions.{j}." + _unet_attn(rest)
    m = re.match(r"middle_block\.(\d)\.(.*)", key)
    if m:
        s, rest = int(m[1]), m[2]
        if s == 1:
            return "mid_block.attentions.0." + _unet_attn(rest)
        return f"mid_block.resnets.{s // 2}." + _unet_resnet(rest)
    m = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.*)", key)
    if m:
        i, s, rest = int(m[1]), int(m[2]), m[3]
        level, j = i // slots, i % slots
        if s == 0:
            return f"up_blocks.{level}.resnets.{j}." + _unet_resnet(rest)
        if rest.startswith("conv."):  # the upsampler is the last sub-module of the level's last slot
            return f"up_blocks.{level}.upsamplers.0." + rest
        return f"up_blocks.{level}.attentions.{j}." + _unet_attn(rest)
    raise KeyError(f"unknown SVD UNet key: {key}")


def unet_key_to_sgm(key: str, layers_per_block: int, up_levels_with_attention: set[int]) -> str:
    """Inverse of :func:`unet_key_to_diffusers` (used to write sgm test files)."""
    top = _sub(key, _UNET_TOP_INV)
    if top is not None:
        return top
    slots = layers_per_block + 1
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{1 + level * slots + layers_per_block}.0.op." + rest[len("conv."):]
        i = 1 + level * slots + j
        if kind == "resnets":
            return f"input_blocks.{i}.0." + _unet_resnet_inv(rest)
        return f"input_blocks.{i}.1." + _unet_attn_inv(rest)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        if m[1] == "attentions":
            return "middle_block.1." + _unet_attn_inv(m[3])
        return f"middle_block.{2 * int(m[2])}." + _unet_resnet_inv(m[3])
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            sub = 2 if level in up_levels_with_attention else 1
            return f"output_blocks.{level * slots + layers_per_block}.{sub}." + rest
        i = level * slots + j
        if kind == "resnets":
            return f"output_blocks.{i}.0." + _unet_resnet_inv(rest)
        return f"output_blocks.{i}.1." + _unet_attn_inv(rest)
    raise KeyError(f"unknown diffusers SVD UNet key: {key}")


# ---------------------------------------------------------------------------------------------
# VAE (encoder is a plain SD encoder; decoder is the temporal one)
# ---------------------------------------------------------------------------------------------

def _vae_resnet(rest: str, temporal: bool) -> str:
    if not temporal:
        return rest.replace("nin_shortcut", "conv_shortcut")
    if rest.startswith("time_stack."):
        return "temporal_res_block." + _sub(rest[len("time_stack."):], _VAE_TIME_RES)
    if rest.startswith("mix_factor"):
        return "time_mixer." + rest
    return "spatial_res_block." + rest.replace("nin_shortcut", "conv_shortcut")


def _vae_resnet_inv(rest: str, temporal: bool) -> str:
    if not temporal:
        return rest.replace("conv_shortcut", "nin_shortcut")
    if rest.startswith("temporal_res_block."):
        return "time_stack." + _sub(rest[len("temporal_res_block."):], _VAE_TIME_RES_INV)
    if rest.startswith("time_mixer."):
        return rest[len("time_mixer."):]
    return rest[len("spatial_res_block."):].replace("conv_shortcut", "nin_shortcut")


def vae_key_to_diffusers(key: str, num_levels: int) -> str:
    """One sgm VAE key (without ``first_stage_model.``) -> its AutoencoderKLTemporalDecoder name."""
    part, rest = key.split(".", 1)
    temporal = part == "decoder"
    if part not in ("encoder", "decoder"):
        raise KeyError(f"unknown SVD VAE key: {key}")
    m = re.match(r"(down|up)\.(\d+)\.block\.(\d+)\.(.*)", rest)
    if m:
        level = int(m[2]) if m[1] == "down" else num_levels - 1 - int(m[2])
        blocks = "down_blocks" if m[1] == "down" else "up_blocks"
        return f"{part}.{blocks}.{level}.resnets.{m[3]}." + _vae_resnet(m[4], temporal)
    m = re.match(r"down\.(\d+)\.downsample\.(.*)", rest)
    if m:
        return f"{part}.down_blocks.{m[1]}.downsamplers.0.{m[2]}"
    m = re.match(r"up\.(\d+)\.upsample\.(.*)", rest)
    if m:
        return f"{part}.up_blocks.{num_levels - 1 - int(m[1])}.upsamplers.0.{m[2]}"
    m = re.match(r"mid\.block_([12])\.(.*)", rest)
    if m:
        return f"{part}.mid_block.resnets.{int(m[1]) - 1}." + _vae_resnet(m[2], temporal)
    m = re.match(r"mid\.attn_1\.(\w+)\.(.*)", rest)
    if m:
        return f"{part}.mid_block.attentions.0.{_VAE_ATTN[m[1]]}.{m[2]}"
    if rest.startswith("norm_out."):
        return f"{part}.conv_norm_out." + rest[len("norm_out."):]
    if rest.startswith("conv_out.time_mix_conv."):
        return "decoder.time_conv_out." + rest[len("conv_out.time_mix_conv."):]
    if re.match(r"(conv_in|conv_out)\.(weight|bias)$", rest):
        return key
    raise KeyError(f"unknown SVD VAE key: {key}")


def vae_key_to_sgm(key: str, num_levels: int) -> str:
    part, rest = key.split(".", 1)
    temporal = part == "decoder"
    m = re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest)
    if m:
        level = int(m[2]) if m[1] == "down" else num_levels - 1 - int(m[2])
        return f"{part}.{m[1]}.{level}.block.{m[3]}." + _vae_resnet_inv(m[4], temporal)
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.(.*)", rest)
    if m:
        return f"{part}.down.{m[1]}.downsample.{m[2]}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", rest)
    if m:
        return f"{part}.up.{num_levels - 1 - int(m[1])}.upsample.{m[2]}"
    m = re.match(r"mid_block\.resnets\.(\d)\.(.*)", rest)
    if m:
        return f"{part}.mid.block_{int(m[1]) + 1}." + _vae_resnet_inv(m[2], temporal)
    m = re.match(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", rest)
    if m:
        return f"{part}.mid.attn_1.{_VAE_ATTN_INV[m[1]]}.{m[2]}"
    if rest.startswith("conv_norm_out."):
        return f"{part}.norm_out." + rest[len("conv_norm_out."):]
    if key.startswith("decoder.time_conv_out."):
        return "decoder.conv_out.time_mix_conv." + key[len("decoder.time_conv_out."):]
    if re.match(r"(conv_in|conv_out)\.(weight|bias)$", rest):
        return key
    raise KeyError(f"unknown diffusers SVD VAE key: {key}")


def vae_state_dict_to_diffusers(sd: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        name = vae_key_to_diffusers(k, num_levels)
        if ".mid_block.attentions.0.to_" in name and name.endswith(".weight") and v.ndim == 4:
            v = v[:, :, 0, 0]  # sgm stores the attention projections as 1x1 convs
        out[name] = v
    if "quant_conv.weight" not in out:
        # sgm's AutoencodingEngine has no quant_conv; diffusers always applies one, so make it identity.
        c = out["encoder.conv_out.weight"].shape[0]
        ref = out["encoder.conv_out.weight"]
        out["quant_conv.weight"] = torch.eye(c, dtype=ref.dtype).reshape(c, c, 1, 1)
        out["quant_conv.bias"] = torch.zeros(c, dtype=ref.dtype)
    return out


def vae_state_dict_to_sgm(sd: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("quant_conv."):
            continue
        name = vae_key_to_sgm(k, num_levels)
        if ".mid.attn_1." in name and name.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]
        out[name] = v
    return out


# ---------------------------------------------------------------------------------------------
# Image encoder: OpenCLIP ViT visual tower <-> transformers CLIPVisionModelWithProjection
# ---------------------------------------------------------------------------------------------

_CLIP_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_CLIP_LAYER = {
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_CLIP_LAYER_INV = {v: k for k, v in _CLIP_LAYER.items()}


def clip_state_dict_to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP visual keys (without the sgm prefix) -> CLIPVisionModelWithProjection keys."""
    out = {}
    for k, v in sd.items():
        if k in _CLIP_TOP:
            out[_CLIP_TOP[k]] = v
            continue
        if k == "proj":
            out["visual_projection.weight"] = v.t().contiguous()
            continue
        m = re.match(r"transformer\.resblocks\.(\d+)\.(.*)", k)
        if not m:
            raise KeyError(f"unknown OpenCLIP visual key: {k}")
        layer, rest = m[1], m[2]
        base = f"vision_model.encoder.layers.{layer}."
        if rest.startswith("attn.in_proj_"):
            kind = rest[len("attn.in_proj_"):]  # weight | bias
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"{base}self_attn.{name}.{kind}"] = part.contiguous()
            continue
        mapped = _sub(rest, _CLIP_LAYER)
        if mapped is None:
            raise KeyError(f"unknown OpenCLIP visual key: {k}")
        out[base + mapped] = v
    return out


def clip_state_dict_to_openclip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    inv_top = {v: k for k, v in _CLIP_TOP.items()}
    out, qkv = {}, {}
    for k, v in sd.items():
        if k in inv_top:
            out[inv_top[k]] = v
        elif k == "visual_projection.weight":
            out["proj"] = v.t().contiguous()
        elif k.endswith("position_ids"):
            continue
        else:
            m = re.match(r"vision_model\.encoder\.layers\.(\d+)\.(.*)", k)
            layer, rest = m[1], m[2]
            mq = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if mq:
                qkv.setdefault((layer, mq[2]), {})[mq[1]] = v
                continue
            out[f"transformer.resblocks.{layer}." + _sub(rest, _CLIP_LAYER_INV)] = v
    for (layer, kind), parts in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out

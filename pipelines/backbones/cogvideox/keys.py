"""Key maps between AniSora's released SAT CogVideoX files and diffusers' ``CogVideoXTransformer3DModel`` /
``AutoencoderKLCogVideoX`` names (both directions; the inverse maps write tiny SAT files for tests)."""
from __future__ import annotations

import torch

from ...errors import AnimeVideoModelError
from .detect import SAT_PREFIX


_SAT_BLOCK_RENAMES = (  # inside transformer.layers.{i}.
    ("input_layernorm.", "norm1.norm."),
    ("post_attention_layernorm.", "norm2.norm."),
    ("attention.dense.", "attn1.to_out.0."),
    ("mlp.dense_h_to_4h.", "ff.net.0.proj."),
    ("mlp.dense_4h_to_h.", "ff.net.2."),
)
_SAT_TOP_RENAMES = (
    ("transformer.final_layernorm.", "norm_final."),
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("ofs_embed.0.", "ofs_embedding.linear_1."),
    ("ofs_embed.2.", "ofs_embedding.linear_2."),
    ("mixins.pos_embed.pos_embedding", "patch_embed.pos_embedding"),
    ("mixins.patch_embed.", "patch_embed."),
    ("mixins.final_layer.norm_final.", "norm_out.norm."),
    ("mixins.final_layer.linear.", "proj_out."),
    ("mixins.final_layer.adaLN_modulation.1.", "norm_out.linear."),
)
_SAT_DROPPED = ("freqs_sin", "freqs_cos", "embed_tokens", "position_embeddings", "mixins.pos_embed.freqs")


def sat_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a SAT CogVideoX transformer state dict to diffusers ``CogVideoXTransformer3DModel`` names:
    ``query_key_value`` split into q/k/v (dim 0), the 12-way ``adaLN_modulations`` split into norm1 (chunks
    0-2, 6-8) and norm2 (3-5, 9-11), the per-layer q/k layernorm lists and the mixins renamed."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    if any(k.startswith(SAT_PREFIX) for k in sd):  # a whole SAT model: keep the diffusion transformer only
        sd = {k: v for k, v in sd.items() if k.startswith(SAT_PREFIX)}
    for key, v in sd.items():
        k = key[len(SAT_PREFIX):] if key.startswith(SAT_PREFIX) else key
        if any(d in k for d in _SAT_DROPPED):
            continue
        if k.startswith("transformer.layers."):
            _, _, i, rest = k.split(".", 3)
            base = f"transformer_blocks.{i}."
            if rest.startswith("attention.query_key_value."):
                q, kk, vv = v.chunk(3, dim=0)
                wb = rest.rsplit(".", 1)[1]
                for which, part in (("to_q", q), ("to_k", kk), ("to_v", vv)):
                    out[base + f"attn1.{which}.{wb}"] = part
                continue
            for a, b in _SAT_BLOCK_RENAMES:
                if rest.startswith(a):
                    out[base + b + rest[len(a):]] = v
                    break
            else:
                unknown.append(key)
            continue
        if k.startswith("mixins.adaln_layer."):
            parts = k.split(".")
            if parts[2] == "adaLN_modulations":  # mixins.adaln_layer.adaLN_modulations.{i}.1.{weight|bias}
                i, wb = parts[3], parts[5]
                c = v.chunk(12, dim=0)
                out[f"transformer_blocks.{i}.norm1.linear.{wb}"] = torch.cat(c[0:3] + c[6:9])
                out[f"transformer_blocks.{i}.norm2.linear.{wb}"] = torch.cat(c[3:6] + c[9:12])
                continue
            if parts[2] in ("query_layernorm_list", "key_layernorm_list"):
                i, wb = parts[3], parts[4]
                which = "norm_q" if parts[2].startswith("query") else "norm_k"
                out[f"transformer_blocks.{i}.attn1.{which}.{wb}"] = v
                continue
            unknown.append(key)
            continue
        for a, b in _SAT_TOP_RENAMES:
            if k.startswith(a):
                out[b + k[len(a):]] = v
                break
        else:
            unknown.append(key)
    if unknown:
        raise AnimeVideoModelError(
            f"The SAT CogVideoX file has {len(unknown)} keys this loader does not know (e.g. {unknown[:3]}); "
            "use the diffusers copy of AniSora V1 (e.g. Disty0/Index-anisora-5B-diffusers) instead.")
    return out


def diffusers_to_sat(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`sat_to_diffusers` (with the ``model.diffusion_model.`` prefix); for tests and tiny
    SAT files."""
    out: dict[str, torch.Tensor] = {}
    blocks: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.startswith("transformer_blocks."):
            _, i, rest = k.split(".", 2)
            blocks.setdefault(i, {})[rest] = v
            continue
        for b, a in _SAT_TOP_RENAMES:  # (sat, diffusers)
            if k.startswith(a):
                out[b + k[len(a):]] = v
                break
        else:
            raise KeyError(k)
    for i, b in blocks.items():
        layer = f"transformer.layers.{i}."
        for wb in ("weight", "bias"):
            if f"attn1.to_q.{wb}" in b:
                out[layer + f"attention.query_key_value.{wb}"] = torch.cat(
                    [b.pop(f"attn1.to_q.{wb}"), b.pop(f"attn1.to_k.{wb}"), b.pop(f"attn1.to_v.{wb}")])
            n1, n2 = b.pop(f"norm1.linear.{wb}").chunk(6), b.pop(f"norm2.linear.{wb}").chunk(6)
            out[f"mixins.adaln_layer.adaLN_modulations.{i}.1.{wb}"] = torch.cat(n1[0:3] + n2[0:3] + n1[3:6] + n2[3:6])
            for which, lst in (("norm_q", "query_layernorm_list"), ("norm_k", "key_layernorm_list")):
                if f"attn1.{which}.{wb}" in b:
                    out[f"mixins.adaln_layer.{lst}.{i}.{wb}"] = b.pop(f"attn1.{which}.{wb}")
        for rest, v in b.items():
            for a, d in _SAT_BLOCK_RENAMES:
                if rest.startswith(d):
                    out[layer + a + rest[len(d):]] = v
                    break
            else:
                raise KeyError(rest)
    return {SAT_PREFIX + k: v for k, v in out.items()}


_SAT_VAE_RENAMES = (  # applied in order, as plain substring replacements
    ("block.", "resnets."),
    ("down.", "down_blocks."),
    ("downsample", "downsamplers.0"),
    ("upsample", "upsamplers.0"),
    ("nin_shortcut", "conv_shortcut"),
    ("encoder.mid.block_1", "encoder.mid_block.resnets.0"),
    ("encoder.mid.block_2", "encoder.mid_block.resnets.1"),
    ("decoder.mid.block_1", "decoder.mid_block.resnets.0"),
    ("decoder.mid.block_2", "decoder.mid_block.resnets.1"),
)


def sat_vae_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAT CogVideoX VAE (``3d-vae.pt``) names -> ``AutoencoderKLCogVideoX`` names: resnet / sampler / shortcut
    renames, and SAT's decoder ``up.{i}`` counted from the bottom, i.e. ``up_blocks.{levels-1-i}``."""
    ups = [int(k.split(".")[2]) for k in sd if k.startswith("decoder.up.")]
    levels = 1 + max(ups) if ups else 4
    out = {}
    for key, v in sd.items():
        if key.startswith("loss"):
            continue
        k = key
        for a, b in _SAT_VAE_RENAMES:
            k = k.replace(a, b)
        if k.startswith("decoder.up."):
            parts = k.split(".")
            parts[1], parts[2] = "up_blocks", str(levels - 1 - int(parts[2]))
            k = ".".join(parts)
        out[k] = v
    return out


def diffusers_vae_to_sat(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`sat_vae_to_diffusers` (for tests and tiny SAT files)."""
    ups = [int(k.split(".")[2]) for k in sd if k.startswith("decoder.up_blocks.")]
    levels = 1 + max(ups)
    out = {}
    for key, v in sd.items():
        k = key
        if k.startswith("decoder.up_blocks."):
            parts = k.split(".")
            parts[1], parts[2] = "up", str(levels - 1 - int(parts[2]))
            k = ".".join(parts)
        for a, b in reversed(_SAT_VAE_RENAMES):
            k = k.replace(b, a)
        out[k] = v
    return out

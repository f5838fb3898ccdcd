"""The sgm -> diffusers rule tables against the full real key tables of the released SVD checkpoint.

These need ``shared/manifests`` (beside the checkout); they skip when it is absent. Shapes are checked
against meta-device copies of the real-size diffusers/transformers modules, so an inverse-of-itself
bug in the rules cannot hide.
"""
import os
import re

import pytest
import torch

from pack_paths import MANIFESTS

from animevideo.pipelines.svd import detect, keymap

pytestmark = pytest.mark.skipif(not os.path.isdir(MANIFESTS), reason="shared/manifests not present")


def _rows(name):
    with open(os.path.join(MANIFESTS, name)) as f:
        return [line.rstrip("\n").split("\t") for line in f if not line.startswith("#") and line.strip()]


def _shape(text):
    return tuple(int(x) for x in re.findall(r"\d+", text))


def test_unet_rules_reproduce_all_1428_real_keys():
    rows = _rows("svd_unet_sgm_to_diffusers.tsv")
    assert len(rows) == 1428
    for sgm, _, diffusers, _ in rows:
        assert keymap.unet_key_to_diffusers(sgm, layers_per_block=2) == diffusers, sgm
    ups = {int(m[1]) for r in rows if (m := re.match(r"up_blocks\.(\d+)\.attentions", r[2]))}
    for sgm, _, diffusers, _ in rows:
        assert keymap.unet_key_to_sgm(diffusers, 2, ups) == sgm


def test_unet_mapping_matches_real_size_diffusers_model_shapes():
    from diffusers import UNetSpatioTemporalConditionModel

    rows = _rows("svd_unet_sgm_to_diffusers.tsv")
    shapes = {sgm: _shape(shape) for sgm, shape, _, _ in rows}
    cfg = detect.detect_unet_config(shapes)
    with torch.device("meta"):
        real = UNetSpatioTemporalConditionModel()
        ours = UNetSpatioTemporalConditionModel(**cfg)
    real_sd = {k: tuple(v.shape) for k, v in real.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == real_sd
    mapped = {keymap.unet_key_to_diffusers(k, cfg["layers_per_block"]): s for k, s in shapes.items()}
    assert mapped == real_sd
    assert cfg["num_attention_heads"] == (5, 10, 20, 20)
    assert cfg["block_out_channels"] == (320, 640, 1280, 1280)
    assert cfg["cross_attention_dim"] == 1024 and cfg["addition_time_embed_dim"] == 256


def test_vae_rules_reproduce_all_372_real_keys_and_shapes():
    from diffusers import AutoencoderKLTemporalDecoder

    rows = [r for r in _rows("svd_vae_sgm_to_diffusers.tsv") if not r[0].startswith("(")]
    assert len(rows) == 372
    shapes = {sgm: _shape(shape) for sgm, shape, _, _ in rows}
    cfg = detect.detect_vae_config(shapes)
    assert cfg["block_out_channels"] == (128, 256, 512, 512) and cfg["layers_per_block"] == 2
    for sgm, _, diffusers, _ in rows:
        assert keymap.vae_key_to_diffusers(sgm, 4) == diffusers
        assert keymap.vae_key_to_sgm(diffusers, 4) == sgm
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    mapped = keymap.vae_state_dict_to_diffusers(meta, 4)
    with torch.device("meta"):
        real = AutoencoderKLTemporalDecoder(**cfg)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in real.state_dict().items()}


def test_identity_quant_conv_for_sgm_vae():
    sd = {"encoder.conv_out.weight": torch.zeros(8, 4, 3, 3), "encoder.conv_out.bias": torch.zeros(8)}
    out = keymap.vae_state_dict_to_diffusers(sd, 4)
    assert torch.equal(out["quant_conv.weight"][:, :, 0, 0], torch.eye(8))
    assert torch.equal(out["quant_conv.bias"], torch.zeros(8))


def test_image_encoder_mapping_matches_real_vit_h_shapes():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    rows = _rows("svd_image_encoder_sgm_keys.tsv")
    assert len(rows) == 392
    shapes = {k[len(keymap.CLIP_PREFIX):]: _shape(s) for k, s in rows}
    cfg = detect.detect_clip_config(shapes)
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (1280, 32, 16)
    assert (cfg["patch_size"], cfg["image_size"], cfg["projection_dim"], cfg["intermediate_size"]) == (14, 224, 1024, 5120)
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    mapped = keymap.clip_state_dict_to_transformers(meta)
    assert len(mapped) == 520
    with torch.device("meta"):
        real = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    real_sd = {k: tuple(v.shape) for k, v in real.state_dict().items() if not k.endswith("position_ids")}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == real_sd


def test_clip_qkv_split_and_projection_transpose_round_trip():
    sd = {
        "transformer.resblocks.0.attn.in_proj_weight": torch.arange(3 * 4 * 4, dtype=torch.float32).view(12, 4),
        "transformer.resblocks.0.attn.in_proj_bias": torch.arange(12, dtype=torch.float32),
        "proj": torch.arange(8, dtype=torch.float32).view(4, 2),
    }
    hf = keymap.clip_state_dict_to_transformers(sd)
    assert torch.equal(hf["vision_model.encoder.layers.0.self_attn.k_proj.weight"], sd["transformer.resblocks.0.attn.in_proj_weight"][4:8])
    assert torch.equal(hf["vision_model.encoder.layers.0.self_attn.v_proj.bias"], torch.arange(8, 12, dtype=torch.float32))
    assert torch.equal(hf["visual_projection.weight"], sd["proj"].t())
    back = keymap.clip_state_dict_to_openclip(hf)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)

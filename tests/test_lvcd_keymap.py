"""The LVCD key mapping against the full released key table (831 tensors) and real-size modules on the meta device."""
import os

import pytest
import torch

from animevideo.pipelines.lvcd import keymap
from animevideo.pipelines.lvcd.controlnet import SVDControlNet
from animevideo.pipelines.lvcd.loader import detect_controlnet_config
from animevideo.pipelines.svd import keymap as svd_keymap
from pack_paths import MANIFESTS

TABLE = os.path.join(MANIFESTS, "lvcd_ckpt_keys.tsv")


def _rows():
    rows = []
    with open(TABLE) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape, proposed = line.rstrip("\n").split("\t")[:3]
            rows.append((key, tuple(int(x) for x in shape.strip("[]").split(",") if x.strip()), proposed))
    return rows


@pytest.fixture(scope="module")
def real_modules():
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()
        net = SVDControlNet(dict(unet.config))
    return ({k: tuple(v.shape) for k, v in unet.state_dict().items()},
            {k: tuple(v.shape) for k, v in net.state_dict().items()})


@pytest.mark.skipif(not os.path.exists(TABLE), reason="shared manifests not present")
def test_every_released_key_maps_to_the_right_name_and_shape(real_modules):
    unet_shapes, control_shapes = real_modules
    rows = _rows()
    assert len(rows) == 831
    control = [r for r in rows if r[0].startswith(keymap.CONTROL_PREFIX)]
    unet = [r for r in rows if r[0].startswith(keymap.UNET_PREFIX)]
    assert len(control) == 671 and len(unet) == 160
    sd = {k: torch.empty(0) for k, _, _ in rows}
    mapped_control, mapped_unet = keymap.split_lvcd_state_dict(sd, layers_per_block=2)
    assert len(mapped_control) == 671 and len(mapped_unet) == 160
    for key, shape, proposed in control:
        name = keymap.control_key_to_diffusers(key[len(keymap.CONTROL_PREFIX):], 2)
        assert name == proposed[len("controlnet."):], key
        assert control_shapes[name] == shape, key
        assert keymap.control_key_to_sgm(name, 2) == key[len(keymap.CONTROL_PREFIX):]
    for key, shape, proposed in unet:
        name = svd_keymap.unet_key_to_diffusers(key[len(keymap.UNET_PREFIX):], 2)
        assert name == proposed[len("unet."):], key
        assert unet_shapes[name] == shape, key
        assert keymap.is_lvcd_unet_key(name)
    # the ControlNet is covered exactly: every module tensor comes from the file
    assert set(mapped_control) == set(control_shapes)
    # and the UNet overlay is exactly LVCD's trainable set
    assert set(mapped_unet) == {k for k in unet_shapes if keymap.is_lvcd_unet_key(k)}


@pytest.mark.skipif(not os.path.exists(TABLE), reason="shared manifests not present")
def test_real_size_config_is_detected_from_the_table(real_modules):
    shapes = {k[len(keymap.CONTROL_PREFIX):]: s for k, s, _ in _rows() if k.startswith(keymap.CONTROL_PREFIX)}
    cfg, cond, widths = detect_controlnet_config(shapes)
    assert cond == 3 and widths == (16, 32, 96, 256)
    assert cfg["block_out_channels"] == (320, 640, 1280, 1280) and cfg["layers_per_block"] == 2
    assert cfg["num_attention_heads"] == (5, 10, 20, 20) and cfg["cross_attention_dim"] == 1024
    assert cfg["in_channels"] == 8 and cfg["projection_class_embeddings_input_dim"] == 768
    with torch.device("meta"):
        net = SVDControlNet(cfg, cond, widths)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == real_modules[1]


def test_unknown_keys_are_refused():
    for bad in ("output_blocks.0.0.in_layers.0.weight", "out.2.weight", "input_hint_block.1.weight",
                "input_hint_block.16.weight", "zero_convs.0.1.weight"):
        with pytest.raises(KeyError):
            keymap.control_key_to_diffusers(bad, 2)


def test_hint_levels_follow_the_conv_count():
    keys = [f"control_model.input_hint_block.{i}.weight" for i in range(0, 16, 2)]
    assert keymap.hint_levels_of(keys) == 4
    assert keymap.hint_levels_of(keys[:6]) == 3
    assert keymap.control_key_to_diffusers("input_hint_block.10.weight", 2, hint_levels=3) == \
        "controlnet_cond_embedding.conv_out.weight"

"""The streaming_t2v.ckpt key map: the pack's modules at full size against the released key list (built from the
official classes, tests/data/reference_fixtures/streaming_t2v), and the tiny file through the real loader."""
import gzip
import os

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoModelError
from animevideo.pipelines.streaming_t2v import keys, loader, tiny
from animevideo.pipelines.streaming_t2v.model import CAMEncoder, ImgEmbContextResampler, build_base_unet
from animevideo.pipelines.svd.keymap import clip_state_dict_to_openclip

HERE = os.path.dirname(os.path.abspath(__file__))
RELEASED = os.path.join(HERE, "data", "reference_fixtures", "streaming_t2v", "released_keys.tsv.gz")


def released_shapes() -> dict:
    out = {}
    with gzip.open(RELEASED, "rt") as f:
        for line in f:
            k, s = line.rstrip("\n").split("\t")
            out[k] = tuple(int(x) for x in s.split(",") if x)
    return out


@pytest.fixture(scope="module")
def released():
    return released_shapes()


def test_architecture_read_from_the_released_shapes(released):
    unet = keys.detect_unet_config(keys.sub_shapes(released, keys.BASE_PREFIX))
    assert unet["block_out_channels"] == (320, 640, 1280, 1280) and unet["layers_per_block"] == 2
    assert unet["cross_attention_dim"] == 1024 and unet["attention_head_dim"] == 64
    assert unet["down_block_types"] == ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    assert unet["up_block_types"] == ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    assert keys.detect_cam_config(keys.sub_shapes(released, keys.CAM_PREFIX)) == {
        "conditioning_channels": (32, 96, 256, 512)}
    assert keys.detect_resampler_config(keys.sub_shapes(released, keys.RESAMPLER_PREFIX)) == dict(
        image_dim=1024, inner_dim=1280, context_dim=1024)
    text = keys.detect_text_config(keys.sub_shapes(released, keys.TEXT_PREFIX))
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (1024, 23, 16)
    clip = keys.detect_image_encoder_config(keys.sub_shapes(released, keys.IMAGE_ENCODER_PREFIX))
    assert (clip["hidden_size"], clip["num_hidden_layers"], clip["projection_dim"]) == (1280, 32, 1024)


def test_full_size_modules_have_exactly_the_released_keys(released):
    """Build every part at full size on the meta device and map its keys to the release's: no key missing,
    none extra, every shape equal (the image encoder through the open_clip rules, the text encoder through the
    transformers-version rule)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    sub = lambda p: keys.sub_shapes(released, p)  # noqa: E731
    unet_cfg = keys.detect_unet_config(sub(keys.BASE_PREFIX))
    with torch.device("meta"):
        parts = {
            keys.BASE_PREFIX: build_base_unet(unet_cfg).state_dict(),
            keys.CAM_PREFIX: CAMEncoder(unet_cfg, **keys.detect_cam_config(sub(keys.CAM_PREFIX))).state_dict(),
            keys.RESAMPLER_PREFIX: ImgEmbContextResampler(
                **keys.detect_resampler_config(sub(keys.RESAMPLER_PREFIX))).state_dict(),
            keys.VAE_PREFIX: AutoencoderKL(**keys.detect_vae_config(sub(keys.VAE_PREFIX))).state_dict(),
        }
        text = CLIPTextModel(CLIPTextConfig(**keys.detect_text_config(sub(keys.TEXT_PREFIX)))).state_dict()
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
            **keys.detect_image_encoder_config(sub(keys.IMAGE_ENCODER_PREFIX)))).state_dict()
    mine = {}
    for prefix, sd in parts.items():
        mine.update({prefix + k: tuple(v.shape) for k, v in sd.items()})
    mine.update({keys.TEXT_PREFIX + k: tuple(v.shape) for k, v in keys.text_keys_released(text, text).items()})
    visual = clip_state_dict_to_openclip({k: v for k, v in clip.items() if not k.endswith("position_ids")})
    mine.update({keys.IMAGE_ENCODER_PREFIX + k: tuple(v.shape) for k, v in visual.items()})
    want = {k: v for k, v in released.items() if not (k.startswith(keys.IMAGE_ENCODER_LEFTOVERS)
                                                      and not k.startswith(keys.IMAGE_ENCODER_PREFIX))}
    assert sorted(set(want) - set(mine)) == [] and sorted(set(mine) - set(want)) == []
    assert {k: v for k, v in mine.items() if want[k] != v} == {}
    assert len(want) > 3000


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return tiny.write_tiny_streaming_t2v(str(tmp_path_factory.mktemp("stt2v")))


def test_tiny_checkpoint_has_the_released_layout(tiny_ckpt, released):
    """Fewer levels and layers, the same names: every tiny key, block and layer numbers aside, is a released key
    and every released name pattern is in the tiny file."""
    import re

    pattern = lambda k: re.sub(r"\.\d+\.", ".#.", re.sub(r"\.\d+\.", ".#.", k))  # noqa: E731
    sd = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    tiny_names, released_names = {pattern(k) for k in sd}, {pattern(k) for k in released}
    assert tiny_names <= released_names, sorted(tiny_names - released_names)[:5]
    # the tiny UNet keeps one width through its down path, so its down resnets need no shortcut conv
    assert {k for k in released_names - tiny_names if "down_blocks.#.resnets.#.conv_shortcut" not in k} == set()


def test_loader_reads_every_tensor_to_its_module(tiny_ckpt):
    sd = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    model = loader.load_streaming_t2v(tiny_ckpt)
    for prefix, mod in ((keys.BASE_PREFIX, model.base_model), (keys.CAM_PREFIX, model.unet),
                        (keys.RESAMPLER_PREFIX, model.resampler), (keys.VAE_PREFIX, model.vae)):
        for k, v in mod.state_dict().items():
            assert torch.equal(v, sd[prefix + k].float()), prefix + k
    text = keys.text_keys_released(model.text_encoder.state_dict(), model.text_encoder.state_dict())
    for k, v in text.items():
        if not k.endswith("position_ids"):
            assert torch.equal(v, sd[keys.TEXT_PREFIX + k].float()), k
    visual = clip_state_dict_to_openclip(model.image_encoder.state_dict())
    for k, v in visual.items():
        assert torch.equal(v, sd[keys.IMAGE_ENCODER_PREFIX + k].float()), k
    # every mechanism arrives non-zero (the tiny file randomises the zero-initialised parts)
    assert model.base_model.cross_attention_merger_mid_block.temporal_transformer.proj_out.weight.abs().sum() > 0
    assert model.unet.controlnet_cond_embedding.conv_out.weight.abs().sum() > 0
    assert model.tokenizer_dir and os.path.isfile(os.path.join(model.tokenizer_dir, "vocab.json"))


def test_extra_training_tensors_are_ignored_with_a_warning(tiny_ckpt, caplog):
    sd = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    sd["ema_decay"] = torch.tensor(0.999)
    model = loader.load_streaming_t2v("x.ckpt", sd=sd)
    assert model.base_model is not None and "ema_decay" in caplog.text


def test_other_checkpoints_are_refused_with_what_they_are(tmp_path, tiny_ckpt):
    sd = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    no_cam = {k: v for k, v in sd.items() if not k.startswith(keys.CAM_PREFIX)}
    with pytest.raises(AnimeVideoModelError, match="not a StreamingT2V checkpoint"):
        loader.load_streaming_t2v("x.ckpt", sd=no_cam)
    no_vae = {k: v for k, v in sd.items() if not k.startswith(keys.VAE_PREFIX)}
    with pytest.raises(AnimeVideoModelError, match="incomplete StreamingT2V checkpoint: nothing under vae"):
        loader.load_streaming_t2v("x.ckpt", sd=no_vae)

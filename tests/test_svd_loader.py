"""SVD loaders read the real on-disk layouts; bad files get errors that say what was found."""
import os

import pytest
import torch
from safetensors.torch import save_file

from animevideo.pipelines.checkpoint_io import read_state_dict
from animevideo.pipelines.errors import AnimeVideoModelError
from animevideo.pipelines.svd import loader, tiny


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    sa = {k: v for k, v in sa.items() if not k.endswith("position_ids")}
    sb = {k: v for k, v in sb.items() if not k.endswith("position_ids")}
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def sgm_file(tiny_svd, tmp_path_factory):
    path = tmp_path_factory.mktemp("sgm") / "svd_xt.safetensors"
    tiny.write_sgm_file(str(path), *tiny_svd)
    return str(path)


@pytest.fixture(scope="module")
def diffusers_dir(tiny_svd, tmp_path_factory):
    path = tmp_path_factory.mktemp("df") / "stable-video-diffusion-img2vid-xt"
    tiny.write_diffusers_folder(str(path), *tiny_svd)
    return str(path)


def test_sgm_single_file_loads_every_tensor_exactly(tiny_svd, sgm_file):
    model = loader.load_svd(sgm_file, torch.float32)
    assert model.layout == "sgm"
    for ref, got in zip(tiny_svd, (model.unet, model.vae, model.image_encoder)):
        _assert_same_weights(ref, got)
    assert model.unet.config.num_attention_heads == (1, 2)  # the 64-wide head rule
    assert model.image_encoder.config.num_attention_heads == 1  # the 80-wide ViT-H head rule


def test_sgm_file_really_is_in_sgm_layout(sgm_file):
    keys = set(read_state_dict(sgm_file))
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight" in keys
    assert "first_stage_model.decoder.conv_out.time_mix_conv.weight" in keys
    assert "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert not any("quant_conv" in k and k.startswith("first_stage_model.quant") for k in keys)


def test_diffusers_folder_loads_every_tensor_exactly(tiny_svd, diffusers_dir):
    model = loader.load_svd(diffusers_dir, torch.float32)
    assert model.layout == "diffusers"
    for ref, got in zip(tiny_svd, (model.unet, model.vae, model.image_encoder)):
        _assert_same_weights(ref, got)


def test_pickled_ckpt_is_read_with_weights_only(tiny_svd, tmp_path):
    sd = tiny.to_sgm_state_dict(*tiny_svd)
    path = tmp_path / "svd_finetune.ckpt"
    torch.save({"state_dict": sd, "global_step": 2000}, path)
    model = loader.load_svd(str(path), torch.float32)
    _assert_same_weights(tiny_svd[0], model.unet)


def test_fp16_load_keeps_vae_in_fp32(sgm_file):
    model = loader.load_svd(sgm_file, torch.float16)
    assert next(model.unet.parameters()).dtype == torch.float16
    assert model.vae_dtype == torch.float32
    assert next(model.image_encoder.parameters()).dtype == torch.float16


@pytest.mark.parametrize("keys, detected", [
    ({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
      "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}, "Stable Diffusion image checkpoint"),
    ({"control_model.input_blocks.0.0.weight": (320, 8, 3, 3)}, "LVCD ControlNet"),
    ({"patch_embedding.weight": (16, 16, 1, 2, 2), "blocks.0.self_attn.q.weight": (16, 16)}, "Wan/AniSora"),
    ({"conv_first.weight": (64, 3, 3, 3), "body.0.rdb1.conv1.weight": (32, 64, 3, 3)}, "upscaler"),
])
def test_non_svd_checkpoint_is_refused_naming_what_was_detected(tmp_path, keys, detected):
    path = tmp_path / "not_svd.safetensors"
    save_file({k: torch.zeros(s) for k, s in keys.items()}, str(path))
    with pytest.raises(AnimeVideoModelError) as e:
        loader.load_svd(str(path), torch.float32)
    assert "not a Stable Video Diffusion checkpoint" in str(e.value)
    assert detected in str(e.value)


def test_truncated_file_gives_a_clear_error(sgm_file, tmp_path):
    data = open(sgm_file, "rb").read()
    cut = tmp_path / "svd_xt.safetensors"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(AnimeVideoModelError) as e:
        loader.load_svd(str(cut), torch.float32)
    assert "damaged or incomplete" in str(e.value)


def test_truncated_pickle_gives_a_clear_error(tiny_svd, tmp_path):
    path = tmp_path / "svd.ckpt"
    torch.save({"state_dict": tiny.to_sgm_state_dict(*tiny_svd)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AnimeVideoModelError) as e:
        loader.load_svd(str(path), torch.float32)
    assert "damaged or incomplete" in str(e.value)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(AnimeVideoModelError) as e:
        read_state_dict(str(path))
    assert "refused" in str(e.value)


def test_diffusers_folder_missing_parts_is_named(tmp_path):
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(AnimeVideoModelError) as e:
        loader.load_diffusers_folder(str(tmp_path / "half"), torch.float32)
    assert "unet/, vae/ and image_encoder/" in str(e.value)


def test_svd_ckpt_without_image_encoder_is_refused(tiny_svd, tmp_path):
    sd = {k: v for k, v in tiny.to_sgm_state_dict(*tiny_svd).items() if not k.startswith("conditioner.")}
    path = tmp_path / "svd_unet_vae_only.safetensors"
    save_file(sd, str(path))
    with pytest.raises(AnimeVideoModelError) as e:
        loader.load_svd(str(path), torch.float32)
    assert "no image encoder" in str(e.value)


def test_vae_without_svds_two_middle_blocks_is_refused_clearly(sgm_file, tmp_path):
    # sgm's VideoDecoder always has decoder.mid.block_1 and block_2 (the attention sits between them); a file
    # without the second one is not SVD's VAE and must say so instead of failing on unexpected keys.
    sd = read_state_dict(sgm_file)
    cut = {k: v for k, v in sd.items() if not k.startswith("first_stage_model.decoder.mid.block_2.")}
    path = tmp_path / "one_mid_block.safetensors"
    save_file({k: v.contiguous() for k, v in cut.items()}, str(path))
    with pytest.raises(AnimeVideoModelError, match="two in the middle"):
        loader.load_svd(str(path), torch.float32)


def test_tiny_decoder_middle_attention_is_live(sgm_file):
    # With a valid sgm layout the mid-block attention runs: changing its weights changes the decode.
    model = loader.load_svd(sgm_file, torch.float32)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.vae.decode(z, num_frames=2).sample
        attn = model.vae.decoder.mid_block.attentions[0]
        attn.to_out[0].weight.add_(0.5)
        after = model.vae.decode(z, num_frames=2).sample
    assert (after - before).abs().max() > 1e-3

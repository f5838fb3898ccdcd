"""load_lvcd reads tiny random-weight files in the released layouts (lvcd.ckpt, lvcd-fp16.safetensors) through the
same code as the real ones, and refuses wrong files with a message naming what was found."""
import os
import sys

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoModelError
from animevideo.pipelines.lvcd import keymap, tiny
from animevideo.pipelines.lvcd.loader import LVCDModel, load_lvcd
from animevideo.pipelines.svd import tiny as svd_tiny
from pack_paths import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_lvcd():
    return tiny.build_tiny_lvcd(0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_lvcd):
    unet, vae, clip, controlnet, overlay = tiny_lvcd
    d = tmp_path_factory.mktemp("lvcd")
    svd = str(d / "svd.safetensors")
    svd_tiny.write_sgm_file(svd, unet, vae, clip)
    st = str(d / "lvcd-fp16.safetensors")
    tiny.write_tiny_lvcd_safetensors(st, unet, controlnet, overlay)
    ckpt = str(d / "lvcd.ckpt")
    tiny.write_tiny_lvcd_ckpt(ckpt, unet, controlnet, overlay)
    return dict(dir=d, svd=svd, safetensors=st, ckpt=ckpt)


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_loads_controlnet_and_overlay(files, tiny_lvcd, fmt):
    unet, _, _, controlnet, overlay = tiny_lvcd
    model = load_lvcd(files["svd"], files[fmt], torch.float32)
    assert isinstance(model, LVCDModel)
    cast = (lambda t: t.half().float()) if fmt == "safetensors" else (lambda t: t)  # noqa: E731
    got = model.controlnet.state_dict()
    want = controlnet.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], cast(want[k])), k
    base = unet.state_dict()
    loaded = model.unet.state_dict()
    assert len(overlay) == 5 * 2 * 6  # spatial + temporal attn1 (q, k, v, out.w, out.b) in 6 transformers
    for k, v in base.items():
        expected = cast(overlay[k]) if k in overlay else v
        assert torch.equal(loaded[k], expected), k
    assert model.controlnet.config["conditioning_embedding_out_channels"] == tiny.TINY_HINT_CHANNELS
    assert model.unet_attention.num_spatial_layers == 6 and model.controlnet_attention.num_spatial_layers == 3
    assert model.controlnet in model.modules_for_memory() and model.unet in model.modules_for_memory()
    assert model.to("cpu").device.type == "cpu" and model.controlnet.device.type == "cpu"
    assert model.lvcd_source == files[fmt] and model.svd_source == files["svd"]
    assert not any(p.requires_grad for p in model.controlnet.parameters())


def test_fp16_load(files):
    model = load_lvcd(files["svd"], files["safetensors"], torch.float16)
    assert model.controlnet.dtype == torch.float16 and next(model.unet.parameters()).dtype == torch.float16


def test_released_layout_of_the_tiny_file(files, tiny_lvcd):
    from safetensors import safe_open

    with safe_open(files["safetensors"], framework="pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_tensor(k).dtype for k in keys}
    assert dtypes == {torch.float16}
    control = [k for k in keys if k.startswith("control_model.")]
    unet = [k for k in keys if k.startswith("model.diffusion_model.")]
    assert len(control) + len(unet) == len(keys) and len(unet) == 60
    assert all(".attn1." in k for k in unet)
    assert {f"control_model.input_hint_block.{i}.weight" for i in range(0, 16, 2)} <= set(keys)
    assert "control_model.middle_block_out.0.weight" in keys and "control_model.zero_convs.5.0.bias" in keys
    obj = torch.load(files["ckpt"], weights_only=True)
    assert set(obj["state_dict"]) == set(keys)


def test_wrong_files_are_named(files, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(AnimeVideoModelError, match="is a Stable Video Diffusion checkpoint, not an LVCD checkpoint.*give it as the SVD model"):
        load_lvcd(files["svd"], files["svd"], torch.float32)
    rnd = str(tmp_path / "random.safetensors")
    save_file({"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(1)}, rnd)
    with pytest.raises(AnimeVideoModelError, match="is an unknown model .2 tensors.*not an LVCD checkpoint"):
        load_lvcd(files["svd"], rnd, torch.float32)
    with pytest.raises(AnimeVideoModelError, match="LVCD ControlNet checkpoint"):
        load_lvcd(files["safetensors"], files["safetensors"], torch.float32)
    broken = tmp_path / "lvcd.ckpt"
    broken.write_bytes(open(files["ckpt"], "rb").read()[:1000])
    with pytest.raises(AnimeVideoModelError, match="damaged or incomplete"):
        load_lvcd(files["svd"], str(broken), torch.float32)


def test_lvcd_for_another_base_is_refused(files, tmp_path):
    unet, vae, clip, controlnet, _ = tiny.build_tiny_lvcd(1)
    other_unet, _, _ = svd_tiny.build_tiny_svd(0, unet_overrides=dict(block_out_channels=(64, 192),
                                                                       num_attention_heads=(1, 3)))
    path = str(tmp_path / "other.safetensors")
    from animevideo.pipelines.lvcd.controlnet import SVDControlNet

    tiny.write_tiny_lvcd_safetensors(path, other_unet, SVDControlNet.from_unet(other_unet, 3, tiny.TINY_HINT_CHANNELS))
    with pytest.raises(AnimeVideoModelError, match="block_out_channels"):
        load_lvcd(files["svd"], path, torch.float32)


def test_unknown_tensor_is_refused(files, tiny_lvcd, tmp_path):
    unet, _, _, controlnet, overlay = tiny_lvcd
    sd = tiny.lvcd_state_dict(unet, controlnet, overlay)
    sd["control_model.output_blocks.0.0.in_layers.0.weight"] = torch.zeros(4)
    path = str(tmp_path / "extra.ckpt")
    torch.save({"state_dict": sd}, path)
    with pytest.raises(AnimeVideoModelError, match="does not know"):
        load_lvcd(files["svd"], path, torch.float32)


def test_tiny_writer_and_make_tiny_models_entry(tmp_path):
    written = tiny.write_tiny_lvcd(str(tmp_path), seed=0)
    assert written == list(tiny.TINY_FILES)
    model = load_lvcd(str(tmp_path / "checkpoints" / "svd.safetensors"),
                      str(tmp_path / "lvcd" / "lvcd-fp16.safetensors"), torch.float32)
    assert model.unet_attention.num_spatial_layers == 6
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_tiny_models
    finally:
        sys.path.pop(0)
    make_tiny_models.import_pack()
    entries = [(rels, w) for rels, w in make_tiny_models.writers() if w is tiny.write_tiny_lvcd]
    assert entries and entries[0][0] == list(tiny.TINY_FILES)
    assert keymap.CONTROL_PREFIX == "control_model."


def test_diffusers_folder_base(files, tiny_lvcd, tmp_path):
    unet, vae, clip, controlnet, overlay = tiny_lvcd
    folder = str(tmp_path / "svd-diffusers")
    svd_tiny.write_diffusers_folder(folder, unet, vae, clip)
    model = load_lvcd(folder, files["ckpt"], torch.float32)
    assert model.svd.layout == "diffusers"
    loaded = model.unet.state_dict()
    for k, v in unet.state_dict().items():
        assert torch.equal(loaded[k], overlay.get(k, v)), k


def test_missing_unet_attention_is_refused(files, tiny_lvcd, tmp_path):
    unet, _, _, controlnet, overlay = tiny_lvcd
    sd = {k: v for k, v in tiny.lvcd_state_dict(unet, controlnet, overlay).items()
          if not (k.startswith("model.diffusion_model.") and ".time_stack." in k)}
    path = str(tmp_path / "partial.ckpt")
    torch.save({"state_dict": sd}, path)
    with pytest.raises(AnimeVideoModelError, match="30 missing"):
        load_lvcd(files["svd"], path, torch.float32)

"""The architecture registry: every shipped tiny model and every real key table is identified as the right entry
from its tensor names and shapes (never its file name), the entries build what they identify, and a wrong file
gets the registry's message naming what it is."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from pack_paths import MANIFESTS

from animevideo.pipelines import registry
from animevideo.pipelines.errors import AnimeVideoModelError

# Every file and folder scripts/make_tiny_models.py writes, and the entry it must be identified as. A new tiny
# model without a line here fails test_every_tiny_model_is_identified.
TINY_EXPECTED = {
    "checkpoints/svd_xt.safetensors": "svd",
    "checkpoints/svd.safetensors": "svd",
    "diffusers/stable-video-diffusion-img2vid-xt": "svd",
    "lvcd/lvcd-fp16.safetensors": "lvcd",
    "diffusion_models/anisora_v3_i2v_14b.safetensors": "wan_transformer",
    "diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors": "wan22_i2v_expert",
    "diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors": "wan22_i2v_expert",
    "vae/wan_2.1_vae.safetensors": "wan_vae",
    "diffusers/Index-anisora-5B-diffusers": "cogvideox",
    "upscale_models/AnimeSR_v2.pth": "animesr",
    "upscale_models/realesr-animevideov3.pth": "spandrel:Compact",
    "upscale_models/RealESRGAN_x4plus_anime_6B.pth": "spandrel:ESRGAN",
    "interpolation/anime_interp_full.ckpt": "animeinterp",
    "lineart/sk_model.pth": "lineart",
    "ganime/ganime_kny_vqgan.safetensors": "ganime_vqgan",
    "ganime/ganime_kny_gpt2_medium.safetensors": "ganime_gpt",
    "metrics/i3d_pretrained_400.pt": "i3d",
    "metrics/pt_inception-2015-12-05-6726825d.pth": "inception_fid",
    "metrics/alexnet-owt-7be5be79.pth": "lpips_backbone",
    "metrics/vgg16-397923af.pth": "lpips_backbone",
    "metrics/lpips/alex.pth": "lpips_heads",
    "metrics/lpips/vgg.pth": "lpips_heads",
    "diffusers/text-to-video-ms-1.7b": "modelscope_t2v",
    "diffusers/i2vgen-xl": "i2vgenxl",
    "streaming_t2v/streaming_t2v.ckpt": "streaming_t2v",
    "streaming_t2v/tokenizer": None,  # ModelScope's tokenizer files beside the checkpoint: no weights, no entry
}


def _written(models_dir):
    with open(os.path.join(models_dir, ".animevideo-tiny-models.json")) as f:
        return json.load(f)["written"]


def test_every_tiny_model_is_identified(tiny_models_dir):
    written = _written(tiny_models_dir)
    assert sorted(written) == sorted(TINY_EXPECTED), "a tiny model without its expected registry entry (or gone)"
    for rel in written:
        arch = registry.identify(os.path.join(tiny_models_dir, rel))
        assert (arch and arch.id) == TINY_EXPECTED[rel], (rel, arch)


def test_identification_never_reads_the_file_name(tiny_models_dir, tmp_path):
    """AnimeSR's weights under SVD's name and SVD's under AnimeSR's are still what they are."""
    swapped = {"svd_xt.safetensors": "upscale_models/AnimeSR_v2.pth",
               "AnimeSR_v2.pth": "checkpoints/svd_xt.safetensors"}
    for fake_name, real in swapped.items():
        # keep the real extension's format: the name lies, the content does not
        dst = tmp_path / (os.path.splitext(fake_name)[0] + os.path.splitext(real)[1])
        shutil.copy(os.path.join(tiny_models_dir, real), dst)
        assert registry.identify(str(dst)).id == TINY_EXPECTED[real]


def test_state_dicts_and_key_lists_are_identified_like_files(tiny_models_dir):
    from animevideo.pipelines.checkpoint_io import read_state_dict

    sd = read_state_dict(os.path.join(tiny_models_dir, "interpolation", "anime_interp_full.ckpt"))
    assert all(k.startswith("module.") for k in sd)  # the released DataParallel layout: the wrapper is stripped
    assert registry.identify(sd).id == "animeinterp"
    assert registry.identify(list(sd)).id == "animeinterp"
    assert registry.identify({k: tuple(v.shape) for k, v in sd.items()}).id == "animeinterp"
    assert registry.identify({}) is None


# ---------------------------------------------------------------------------------------------
# The parts of SVD, the SAT CogVideoX files and diffusers-named Wan VAEs, from the tiny models
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def svd_parts(one_thread):
    from animevideo.pipelines.svd import keymap, tiny

    unet, vae, clip = tiny.build_tiny_svd(0)
    sgm = tiny.to_sgm_state_dict(unet, vae, clip)
    parts = {}
    for part, prefix in (("svd_unet", keymap.UNET_PREFIX), ("svd_vae", keymap.VAE_PREFIX),
                         ("svd_image_encoder", keymap.CLIP_PREFIX)):
        parts[part] = {k: v for k, v in sgm.items() if k.startswith(prefix)}
    return (unet, vae, clip), sgm, parts


def test_svd_parts_alone_are_identified_with_and_without_their_prefix(svd_parts):
    _, sgm, parts = svd_parts
    assert registry.identify(sgm).id == "svd"
    from animevideo.pipelines.svd import keymap

    prefixes = {"svd_unet": keymap.UNET_PREFIX, "svd_vae": keymap.VAE_PREFIX, "svd_image_encoder": keymap.CLIP_PREFIX}
    for arch_id, sd in parts.items():
        assert registry.identify(sd).id == arch_id
        bare = {k[len(prefixes[arch_id]):]: v for k, v in sd.items()}
        assert registry.identify(bare).id == arch_id, arch_id


def test_svd_part_entries_build_the_part_from_its_shapes(svd_parts):
    """Each part's ``load`` infers the architecture from the shapes and holds exactly the weights of the part."""
    (unet, vae, clip), _, parts = svd_parts
    for arch_id, reference in (("svd_unet", unet), ("svd_vae", vae), ("svd_image_encoder", clip)):
        built = registry.get(arch_id).load(parts[arch_id], dtype=torch.float32)
        want, got = reference.state_dict(), built.state_dict()
        assert set(got) == set(want), arch_id
        for k in want:
            assert torch.equal(got[k], want[k]), (arch_id, k)


def test_sat_cogvideox_files_and_diffusers_wan_vae_are_identified(tmp_path):
    from animevideo.pipelines.backbones.cogvideox import keys as cv_keys
    from animevideo.pipelines.backbones.cogvideox import tiny as cv_tiny
    from animevideo.pipelines.backbones.wan import tiny as wan_tiny

    transformer, vae = cv_tiny.build_tiny_cogvideox(0)
    tsd, vsd = transformer.state_dict(), vae.state_dict()
    assert registry.identify(tsd).id == "cogvideox"
    assert registry.identify(cv_keys.diffusers_to_sat(tsd)).id == "cogvideox"
    assert registry.identify(vsd).id == "cogvideox_vae"
    assert registry.identify(cv_keys.diffusers_vae_to_sat(vsd)).id == "cogvideox_vae"
    assert registry.identify(wan_tiny.build_tiny_vae(0).state_dict()).id == "wan_vae"
    assert registry.identify(wan_tiny.build_tiny_transformer(0).state_dict()).id == "wan_transformer"
    folder = tmp_path / "wan"
    wan_tiny.write_diffusers_folder(str(folder), wan_tiny.build_tiny_transformer(0), wan_tiny.build_tiny_vae(0))
    assert registry.identify(str(folder)).id == "wan_transformer"


def test_wan22_experts_are_told_from_wan21_i2v(tiny_models_dir, tmp_path):
    """A Wan2.2-I2V-A14B expert (36 input channels, no CLIP-image branch) is named as one, in every layout the
    loaders read, and Load AniSora's Wan2.1 kind refuses it naming Load AniSora Wan2.2."""
    from animevideo.pipelines.backbones.wan import keys as wan_keys
    from animevideo.pipelines.backbones.wan import tiny as wan_tiny
    from animevideo.pipelines.backbones.wan import tiny22

    high, low = tiny22.build_tiny_experts(0)
    native = wan_keys.transformer_to_native(high.state_dict())
    for sd in (high.state_dict(), native, {"model.diffusion_model." + k: v for k, v in native.items()}):
        assert registry.identify(sd).id == "wan22_i2v_expert"
    assert registry.identify(wan_tiny.build_tiny_transformer(0).state_dict()).id == "wan_transformer"
    release = tmp_path / "Wan2.2-I2V-A14B"
    tiny22.write_native_release(str(release), high, low, wan_tiny.build_tiny_vae(0))
    assert registry.identify(str(release)).id == "wan22_i2v_expert"
    expert = os.path.join(tiny_models_dir, tiny22.HIGH_NOISE_FILE)
    assert registry.describe(expert).startswith("a Wan2.2-I2V-A14B transformer expert")
    with pytest.raises(AnimeVideoModelError) as e:
        registry.require(expert, "wan_transformer")
    assert "Wan2.2-I2V-A14B transformer expert" in str(e.value) and "Load AniSora Wan2.2" in str(e.value)
    loaded = registry.load(expert, "wan22_expert")
    assert loaded.config.image_dim is None and loaded.config.in_channels == 36


# ---------------------------------------------------------------------------------------------
# The real key tables (shared/manifests): real sizes, as shape dicts (meta tensors where a rule reads values)
# ---------------------------------------------------------------------------------------------

def _table(name, key_col=0, shape_col=1, prefix=""):
    path = os.path.join(MANIFESTS, name)
    if not os.path.exists(path):
        pytest.skip("shared/manifests not present")
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            out[prefix + cols[key_col]] = tuple(json.loads(cols[shape_col]))
    return out


def test_real_key_tables_are_identified():
    unet = _table("svd_unet_sgm_to_diffusers.tsv")
    vae = _table("svd_vae_sgm_to_diffusers.tsv")
    clip = _table("svd_image_encoder_sgm_keys.tsv")
    lvcd = _table("lvcd_ckpt_keys.tsv")
    assert len(unet) == 1428 and len(vae) == 372 and len(clip) == 392 and len(lvcd) > 800
    bundle = {**{"model.diffusion_model." + k: s for k, s in unet.items()},
              **{"first_stage_model." + k: s for k, s in vae.items()}, **clip}
    cases = {
        "svd": bundle,
        "svd_unet": unet,
        "svd_vae": vae,
        "svd_image_encoder": clip,
        "lvcd": lvcd,
    }
    for arch_id, shapes in cases.items():
        assert registry.identify(shapes).id == arch_id, arch_id
    # the same tables as state dicts of meta tensors (how spandrel's rules are run), and key lists alone
    from animevideo.pipelines.checkpoint_io import meta_state_dict

    for arch_id, shapes in cases.items():
        assert registry.identify(meta_state_dict(shapes)).id == arch_id, arch_id
        assert registry.identify(list(shapes)).id == arch_id, arch_id


def test_real_svd_bundle_entry_sizes_every_part_from_the_table():
    """What ``load`` would build at real size, on the meta device: every diffusers tensor of the real UNet table
    is there with the table's shape."""
    from diffusers import UNetSpatioTemporalConditionModel

    from animevideo.pipelines.checkpoint_io import empty_weights
    from animevideo.pipelines.svd import detect

    table = _table("svd_unet_sgm_to_diffusers.tsv", key_col=2, shape_col=3)
    cfg = detect.detect_unet_config(_table("svd_unet_sgm_to_diffusers.tsv"))
    with empty_weights():
        unet = UNetSpatioTemporalConditionModel(**cfg)
    assert {k: tuple(v.shape) for k, v in unet.state_dict().items()} == table


# ---------------------------------------------------------------------------------------------
# Wrong files: the registry's message names what the file is and what was expected
# ---------------------------------------------------------------------------------------------

def _wrong_cases(models_dir, tmp_path, svd_parts):
    from animevideo.pipelines.anisora import cogvideox
    from animevideo.pipelines.ganime import loader as ganime_loader
    from animevideo.pipelines.interpolate import loader as interp_loader
    from animevideo.pipelines.lineart import loader as lineart_loader
    from animevideo.pipelines.lvcd.loader import load_lvcd
    from animevideo.pipelines.metrics import loader as metrics_loader
    from animevideo.pipelines.svd import loader as svd_loader
    from animevideo.pipelines.upscale import loader as upscale_loader

    vae_file = str(tmp_path / "x.safetensors")
    save_file({k: v.contiguous() for k, v in svd_parts[2]["svd_vae"].items()}, vae_file)
    m = lambda rel: os.path.join(models_dir, rel)  # noqa: E731
    svd = m("checkpoints/svd_xt.safetensors")
    return [
        # (what is loaded, the file, what it is, what was expected)
        (lambda: upscale_loader.load_upscaler(vae_file), "'x.safetensors' is an SVD VAE", "not an AnimeSR model"),
        (lambda: interp_loader.load_interpolator(m("upscale_models/AnimeSR_v2.pth")), "is an AnimeSR model",
         "not an AnimeInterp checkpoint"),
        (lambda: svd_loader.load_svd(m("lineart/sk_model.pth"), torch.float32),
         "'sk_model.pth' is an informative-drawings lineart generator", "not a Stable Video Diffusion checkpoint"),
        (lambda: load_lvcd(svd, m("vae/wan_2.1_vae.safetensors"), torch.float32), "is a Wan2.1 VAE",
         "not an LVCD checkpoint"),
        (lambda: lineart_loader.load_lineart_model(m("ganime/ganime_kny_vqgan.safetensors")),
         "is a GANime VQ-GAN file", "not a lineart generator"),
        (lambda: ganime_loader.load_transformer(m("metrics/i3d_pretrained_400.pt")), "is an I3D network (FVD)",
         "not a GANime transformer file"),
        (lambda: metrics_loader.load_inception(m("interpolation/anime_interp_full.ckpt")),
         "is an AnimeInterp interpolation model", "not the FID Inception-v3 network"),
        (lambda: upscale_loader.load_upscaler(m("diffusion_models/anisora_v3_i2v_14b.safetensors")),
         "is a Wan/AniSora video transformer (load it with AnimeVideo Load AniSora)", "not an AnimeSR model"),
        (lambda: svd_loader.load_svd(m("diffusers/Index-anisora-5B-diffusers"), torch.float32),
         "'Index-anisora-5B-diffusers' is a CogVideoX video transformer", "not a Stable Video Diffusion checkpoint"),
        (lambda: cogvideox.load_cogvideox(m("upscale_models/AnimeSR_v2.pth"), None, torch.float32),
         "is an AnimeSR model", "not a CogVideoX image-to-video transformer"),
        (lambda: cogvideox.load_cogvideox(m("diffusers/Index-anisora-5B-diffusers"), vae_file, torch.float32),
         "is an SVD VAE", "not a CogVideoX VAE"),
    ]


def test_wrong_files_get_the_registrys_message(tiny_models_dir, tmp_path, svd_parts):
    for load, found, wanted in _wrong_cases(tiny_models_dir, tmp_path, svd_parts):
        with pytest.raises(AnimeVideoModelError) as e:
            load()
        msg = str(e.value)
        assert found in msg and wanted in msg and msg.index(found) < msg.index(wanted), msg


def test_require_returns_the_entry_or_names_both_sides(tiny_models_dir):
    path = os.path.join(tiny_models_dir, "upscale_models", "AnimeSR_v2.pth")
    assert registry.require(path, ("animesr", "upscaler")).id == "animesr"
    with pytest.raises(AnimeVideoModelError) as e:
        registry.require(path, "svd_vae", expected="Put SVD's VAE here.", hints={"animesr": "Try Load Upscaler."},
                         input_name="vae_name")
    assert str(e.value) == ("vae_name: 'AnimeSR_v2.pth' is an AnimeSR model (recurrent video upscaler), not an SVD "
                            "VAE. Try Load Upscaler. Put SVD's VAE here.")
    with pytest.raises(AnimeVideoModelError, match=r"'w' is an unknown model \(1 tensors; keys such as 'head.w'\)"):
        registry.require({"head.w": (2, 2)}, "lineart", name="w")


def test_entries_load_what_they_identify(tiny_models_dir, monkeypatch):
    from animevideo.pipelines.interpolate import loader as interp_loader
    from animevideo.pipelines.metrics import loader as metrics_loader

    m = lambda rel: os.path.join(tiny_models_dir, rel)  # noqa: E731
    up = registry.load(m("upscale_models/AnimeSR_v2.pth"), "animesr")
    assert up.arch_name == "AnimeSR" and up.scale == 4
    desc = registry.load(m("upscale_models/realesr-animevideov3.pth"), "upscaler")
    assert desc.architecture.id == "Compact"
    want_interp = interp_loader.load_interpolator(m("interpolation/anime_interp_full.ckpt")).state_dict()
    want_i3d = metrics_loader.load_i3d(m("metrics/i3d_pretrained_400.pt")).state_dict()
    # a pickle is read once, by the registry: the loaders get its tensors, not the path
    monkeypatch.setattr(interp_loader, "read_state_dict", lambda *a, **k: pytest.fail("read twice"))
    monkeypatch.setattr(metrics_loader, "read_state_dict", lambda *a, **k: pytest.fail("read twice"))
    for got, want in ((registry.load(m("interpolation/anime_interp_full.ckpt"), "animeinterp").state_dict(),
                       want_interp),
                      (registry.load(m("metrics/i3d_pretrained_400.pt"), "i3d").state_dict(), want_i3d)):
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(AnimeVideoModelError, match="recognises but does not load"):
        registry.load(m("metrics/lpips/alex.pth"), "lpips_heads")


def test_every_entry_module_contributes_well_formed_entries():
    ids = [a.id for a in registry.entries()]
    assert len(ids) == len(set(ids)), "entry ids are unique"
    for arch in registry.entries():
        assert arch.kind in registry.KIND_NAMES or arch.kind == "foreign", arch
        assert arch.name.split(" ", 1)[0] in ("a", "an", "the", "LPIPS"), arch.name  # reads "'x' is <name>"
        assert (arch.load is None) == (arch.kind == "foreign") or arch.id == "lpips_heads", arch

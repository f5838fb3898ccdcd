"""The pack against the ORIGINAL codes' own outputs (tests/data/reference_fixtures/<method>/).

Each fixture was written by scripts/reference_fixtures/make_<method>.py from the original repository at the commit
its SOURCE.json names: tiny random weights built in the original's own classes and saved in its on-disk format,
fixed inputs, and the original's outputs (float64 runs, or float32 where the original pins float32: the Wan
transformer, AnimeInterp's flow, the lineart detector). Here the weights go through the pack's own loaders (the
entry points the nodes use) and the pack's outputs are compared with the stored ones. The originals are not
needed: only the fixtures. Weight files of megabytes (AnimeInterp's released widths, the lineart generator's fixed
widths, SVD, LVCD) are stored as their seeded recipes (``*.recipe.json``): tests/reference_weights.py rebuilds
them, checks their sha256 and writes them in the original's on-disk format into a temporary folder first.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

import reference_weights
from pack_paths import ROOT

FIXTURES = os.path.join(ROOT, "tests", "data", "reference_fixtures")


def source(method: str) -> dict:
    """The fixture's SOURCE.json: the original's repository and commit, the command and settings that made it."""
    with open(os.path.join(FIXTURES, method, "SOURCE.json")) as f:
        info = json.load(f)
    assert len(info["original_commit"]) == 40 and info["original_repository"].startswith("https://github.com/")
    return info


def fixture(method: str) -> str:
    source(method)  # every fixture says where it came from
    return os.path.join(FIXTURES, method)


@pytest.fixture(scope="session")
def release_files(tmp_path_factory):
    """``release_files(method, recipe)``: the path of the weight file rebuilt from the fixture's seeded recipe in
    the original's release format (its tensors' sha256 checked first), written once per session."""
    root = tmp_path_factory.mktemp("reference_weights")

    def rebuild(method: str, recipe_name: str) -> str:
        recipe = os.path.join(fixture(method), recipe_name)
        path = os.path.join(root, method, reference_weights.load_recipe(recipe)["file"])
        if not os.path.exists(path):
            assert reference_weights.write_release_file(recipe, os.path.dirname(path)) == path
        return path

    return rebuild


def test_fixtures_stay_small_for_a_cloned_node_pack():
    """Users clone the pack with its tests: no fixture file over 2 MB, all of them under 8 MB (bigger weight files
    go in as seeded recipes, see tests/reference_weights.py)."""
    sizes = {os.path.relpath(os.path.join(d, n), FIXTURES): os.path.getsize(os.path.join(d, n))
             for d, _, names in os.walk(FIXTURES) for n in names}
    assert len(sizes) > 20
    big = {k: v for k, v in sizes.items() if v > 2 * 1024 * 1024}
    assert not big, f"fixture files over 2 MB: {big}"
    assert sum(sizes.values()) <= 8 * 1024 * 1024, f"fixtures total {sum(sizes.values())} bytes"


def test_weight_recipe_sha256_catches_a_changed_recipe(tmp_path):
    """A recipe whose tensors no longer match its sha256 (one scale changed) is refused before anything loads."""
    recipe = reference_weights.load_recipe(os.path.join(fixture("lineart"), "sk_model_tiny_fp16.recipe.json"))
    recipe["groups"][0]["entries"][-1][2][1] *= 1.001
    changed = tmp_path / "changed.recipe.json"
    reference_weights.write_recipe(recipe, str(changed))
    with pytest.raises(AssertionError, match="sha256"):
        reference_weights.write_release_file(str(changed), str(tmp_path))
    assert not (tmp_path / recipe["file"]).exists()


def cases(path: str, name: str = "cases.safetensors") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(path, name))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return float((a.double() - b.double()).abs().max())


# ---------------------------------------------------------------------------------------------
# LVCD (luckyhzt/LVCD): ControlNet residuals into the SVD UNet, reference attention in three frame layouts
# ---------------------------------------------------------------------------------------------

# float32 tolerance: the pack runs the tiny network in float32 (about 25 layers deep, outputs up to ~2.6), the
# original's outputs are float64; the measured gap is 2-3e-6. A wrong residual, index or bias moves the output
# by 1e-2 or more (the frame layouts differ from each other by that much).
LVCD_TOL = 2e-5


@pytest.fixture(scope="module")
def lvcd(one_thread, release_files):
    from animevideo.pipelines.lvcd import loader

    path = fixture("lvcd")
    # the base is the svd fixture's file (sgm VideoUNet weights), as LVCD overlays the released svd.safetensors
    model = loader.load_lvcd(release_files("svd", "svd-fp16.recipe.json"),
                             release_files("lvcd", "lvcd-fp16.recipe.json"), torch.float32)
    return model, cases(path)


def lvcd_plan(case: str):
    from animevideo.pipelines.reference_attention import plan

    return {"train": plan.normal_plan(1, 14),  # no hooks: K/V = [own ; frame 0], 1 reference-path frame
            "normal": plan.normal_plan(5, 14),  # model_hack 'normal', overlap 4: the first segment
            "prevref": plan.prevref_plan(4, 14)}[case]  # model_hack 'prevref': shift 3, prev-ref + ln 10 bias


@pytest.mark.parametrize("case", ["train", "normal", "prevref"])
def test_lvcd_denoiser_equals_original_network(lvcd, case):
    from animevideo.pipelines.lvcd.denoiser import LVCDDenoiser

    model, c = lvcd
    hints = c[f"{case}.hint_u8"].float() / 255
    denoiser = LVCDDenoiser(model, hints, lvcd_plan(case))
    with torch.no_grad():
        out = denoiser(c[f"{case}.x_in"][None], c["c_noise"], c["context"], c["time_ids"], c[f"{case}.concat"][None],
                       0)[0]
    ref = c[f"{case}.out"]
    assert ref.abs().max() > 1.0  # a real output, not a constant
    diff = max_diff(out, ref)
    assert diff <= LVCD_TOL, f"LVCD {case}: max |pack - original| = {diff:.3g}"


# ---------------------------------------------------------------------------------------------
# AniSora V3 / Wan2.1-I2V (bilibili/Index-anisora anisoraV3/wan): transformer, VAE, UniPC sampling with CFG
# ---------------------------------------------------------------------------------------------

# The original transformer is float32 by design (it asserts float32 modulation), so both sides are float32
# runs: outputs up to ~4, measured gaps up to 5e-6; 1e-4 leaves room for a different summation order while a wrong
# mask channel, RoPE axis, text padding or CLIP projection moves outputs by 1e-2 or more.
WAN_TOL = 1e-4
# The VAE reference ran in float64; the pack's VAE runs in float32 (measured 2-4e-6).
WAN_VAE_TOL = 1e-4


@pytest.fixture(scope="module")
def wan(one_thread):
    from animevideo.pipelines.anisora import loader

    path = fixture("wan")
    model = loader.load_wan(os.path.join(path, "anisora_tiny.safetensors"), os.path.join(path, "Wan2.1_VAE_tiny.pth"),
                            "fp32")
    return model, cases(path)


def test_wan_transformer_forward_equals_original(wan):
    from animevideo.pipelines.anisora.text import MAX_TEXT_TOKENS, pad_prompt_embeds

    model, c = wan
    x = torch.cat([c["noise"], c["y"]])[None]
    with torch.no_grad():
        out = model.transformer(hidden_states=x, timestep=c["t"],
                                encoder_hidden_states=pad_prompt_embeds(c["context"][None], MAX_TEXT_TOKENS),
                                encoder_hidden_states_image=c["clip"], return_dict=False)[0][0]
    diff = max_diff(out, c["forward.out"])
    assert diff <= WAN_TOL, f"Wan transformer: max |pack - original| = {diff:.3g}"


def test_wan_vae_encode_decode_equal_original(wan):
    from animevideo.pipelines.anisora import packing

    model, c = wan
    encoded = packing.encode_guide(model.vae, c["video"][None])[0]
    diff = max_diff(encoded, c["vae.encoded"])
    assert diff <= WAN_VAE_TOL, f"Wan VAE encode: max |pack - original| = {diff:.3g}"
    decoded = packing.decode_latents(model.vae, c["latent"][None])  # [F, H, W, 3] in 0..1
    ref = (c["vae.decoded"].permute(1, 2, 3, 0) / 2 + 0.5)
    assert ((ref > 0.001) & (ref < 0.999)).float().mean() > 0.5  # mostly not clamped: the values are compared
    diff = max_diff(decoded, ref)
    assert diff <= WAN_VAE_TOL, f"Wan VAE decode: max |pack - original| = {diff:.3g}"


def test_wan_unipc_sampling_with_cfg_equals_original_loop(wan):
    from animevideo.pipelines.anisora import wan as wan_pipeline
    from animevideo.pipelines.anisora.model import AniSoraHooks, AniSoraRequest, TextConditioning

    model, c = wan
    settings = source("wan")
    text = TextConditioning(c["context"][None], c["context_null"][None], c["clip"])
    request = AniSoraRequest(steps=settings["steps"], cfg=settings["cfg"], shift=settings["shift"], sampler="unipc")
    out = wan_pipeline.sample_latents(model, c["y"][None], text, request, AniSoraHooks(), noise=c["noise"][None])[0]
    diff = max_diff(out, c["sample.out"])
    assert diff <= WAN_TOL, f"Wan UniPC sampling: max |pack - original| = {diff:.3g}"


# ---------------------------------------------------------------------------------------------
# AnimeInterp (lisiyao21/AnimeInterp): RFR flow (correlation, 12 refinements, ErrorAttention), splatting, GridNet
# ---------------------------------------------------------------------------------------------

# Both sides float32 (the original casts its flow features to float32): flows up to ~13 px agree to ~1e-5 and the
# frame to ~4e-6 (measured); a correlation scaled by 1/d instead of 1/sqrt(d), a wrong splat normalisation or
# a swapped flow channel moves them by far more than 1e-3.
INTERP_FLOW_TOL = 1e-3  # px, for flows up to ~13 px
INTERP_FRAME_TOL = 1e-4  # 0..1 frame


def test_animeinterp_equals_original(one_thread, release_files):
    from animevideo.pipelines.interpolate import loader

    path = fixture("animeinterp")
    c = cases(path)
    model = loader.load_interpolator(release_files("animeinterp", "anime_interp_full_fp16.recipe.json"),
                                     torch.float32)
    with torch.no_grad():
        outs = model(c["I1"], c["I2"], c["F12i"], c["F21i"], float(c["t"]))
    for name, out in zip(("It", "F12", "F21", "F12in", "F21in"), outs):
        tol = INTERP_FRAME_TOL if name == "It" else INTERP_FLOW_TOL
        diff = max_diff(out, c[name])
        assert diff <= tol, f"AnimeInterp {name}: max |pack - original| = {diff:.3g}"
    assert c["F12"].abs().max() > 1.0 and c["It"].std() > 0.01  # real flows and a real frame


# ---------------------------------------------------------------------------------------------
# AnimeSR (TencentARC/AnimeSR) and Real-ESRGAN's anime models (xinntao/Real-ESRGAN, BasicSR)
# ---------------------------------------------------------------------------------------------

# The pack runs float32 on 0..1 images (the references ran in float64): the measured gap is ~1e-7; 1e-5 stays far
# below a wrong frame order, a lost recurrent state or a wrong pixel-(un)shuffle, which move pixels by 1e-3 or more.
UPSCALE_TOL = 1e-5


def _upscale(path, frames_bchw, **options):
    from animevideo.pipelines.upscale import loader, stream

    upscaler = loader.load_upscaler(path, "fp32")
    frames = frames_bchw.permute(0, 2, 3, 1).contiguous()  # IMAGE [N, H, W, 3]
    return stream.upscale_frames(upscaler, frames, stream.StreamOptions(**options)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("chunk_size", [8, 3])  # the clip in one chunk, and the recurrent state across chunks
def test_animesr_clip_equals_original(one_thread, chunk_size):
    path = fixture("animesr")
    c = cases(path)
    out = _upscale(os.path.join(path, "AnimeSR_tiny.pth"), c["frames"], chunk_size=chunk_size)
    ref = c["out"]
    assert 0.0 < float(ref.min()) and float(ref.max()) < 1.0  # nothing the pack's 0..1 clamp would change
    diff = max_diff(out, ref)
    assert diff <= UPSCALE_TOL, f"AnimeSR (chunks of {chunk_size}): max |pack - original| = {diff:.3g}"


@pytest.mark.parametrize("name,key", [("realesr-animevideov3_tiny.pth", "compact.out"),
                                      ("RealESRGAN_x4plus_anime_6B_tiny.pth", "rrdb.out")])
def test_realesrgan_equals_original(one_thread, name, key):
    path = fixture("realesrgan")
    c = cases(path)
    out = _upscale(os.path.join(path, name), c["image"])
    ref = c[key]
    assert 0.0 < float(ref.min()) and float(ref.max()) < 1.0 and float(ref.std()) > 0.01
    diff = max_diff(out, ref)
    assert diff <= UPSCALE_TOL, f"{name}: max |pack - original| = {diff:.3g}"


# ---------------------------------------------------------------------------------------------
# Lineart (the ControlNet-1.1 annotator LVCD vendors: informative-drawings Generator + LineartDetector)
# ---------------------------------------------------------------------------------------------

LINE_MAP_TOL = 1e-5  # float32 generator vs the float64 reference on a 0..1 map (measured ~1e-6)


def test_lineart_generator_and_detector_equal_original(one_thread, release_files):
    from animevideo.pipelines.lineart import extract, loader

    path = fixture("lineart")
    c = cases(path)
    model = loader.load_lineart_model(release_files("lineart", "sk_model_tiny_fp16.recipe.json"))
    images = c["images_u8"].float() / 255.0  # IMAGE [N, H, W, 3]
    line = extract.line_map(model, images.permute(0, 3, 1, 2))[:, 0]
    diff = max_diff(line, c["line_map"])
    assert diff <= LINE_MAP_TOL, f"lineart generator: max |pack - original| = {diff:.3g}"
    # The node's exact path: the annotator's uint8 steps, then LVCD's hint = 1 - line / 255.
    hints = extract.extract_lineart(model, images, exact=True)
    assert torch.equal(hints[..., 0], hints[..., 2])
    steps = ((1.0 - hints[..., 0]) * 255.0).round() - c["detector_u8"].float()
    # float32 on both sides: a value a hair from an integer may floor the other way (one step, rarely)
    assert steps.abs().max() <= 1 and (steps != 0).float().mean() < 0.005, \
        f"lineart detector: {int((steps != 0).sum())} of {steps.numel()} uint8 values differ"


# ---------------------------------------------------------------------------------------------
# SVD (Stability-AI/generative-models, sgm): VideoUNet, the first-stage encoder and the temporal decoder
# ---------------------------------------------------------------------------------------------

SVD_UNET_TOL = 2e-5  # float32 UNet (outputs up to ~2.6) vs the float64 original, measured ~2e-6; the diffusers
# GroupNorm eps (1e-6 instead of sgm's 1e-5) alone moves it by ~1e-4
SVD_VAE_TOL = 2e-5  # float32 VAE on [-1,1] images / 0..1 frames, measured 4e-7 (decode) to 2e-6 (encode)


@pytest.fixture(scope="module")
def svd(one_thread, release_files):
    from animevideo.pipelines.svd import loader

    path = fixture("svd")
    return loader.load_svd(release_files("svd", "svd-fp16.recipe.json"), torch.float32), cases(path)


def test_svd_unet_equals_sgm_video_unet(svd):
    from animevideo.pipelines.svd.controlled_unet import svd_unet_forward

    model, c = svd
    with torch.no_grad():
        out = svd_unet_forward(model.unet, c["x_in"][None], c["c_noise"], c["context"], c["time_ids"])[0]
    diff = max_diff(out, c["unet.out"])
    assert diff <= SVD_UNET_TOL, f"SVD UNet: max |pack - sgm| = {diff:.3g}"


def test_svd_vae_encode_and_temporal_decode_equal_sgm(svd):
    from animevideo.pipelines.svd import conditioning, decode

    model, c = svd
    with torch.no_grad():
        mean = conditioning.encode_concat_latent(model.vae, c["image"] / 2 + 0.5, torch.zeros_like(c["image"]), 0.0)
    diff = max_diff(mean, c["vae.mean"])
    assert diff <= SVD_VAE_TOL, f"SVD VAE encode: max |pack - sgm| = {diff:.3g}"
    frames = decode.decode_latents(model.vae, c["latents"], 1.0, decode_chunk_size=len(c["latents"]))
    ref = (c["vae.decoded"].permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1)
    diff = max_diff(frames, ref)
    assert diff <= SVD_VAE_TOL, f"SVD temporal decode: max |pack - sgm| = {diff:.3g}"

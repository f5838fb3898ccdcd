"""AniSora V3.2 / Wan2.2-I2V-A14B on our own path: two experts switched at the boundary, PARITY with diffusers'
WanImageToVideoPipeline (transformer_2 + boundary_ratio) on tiny experts in the released layouts."""
from types import SimpleNamespace

import pytest
import torch

from animevideo.pipelines.anisora import loader, packing, wan
from animevideo.pipelines.anisora import text as anisora_text
from animevideo.pipelines.anisora.flow_sampler import make_scheduler
from animevideo.pipelines.anisora.model import AniSoraHooks, AniSoraModel, AniSoraRequest, TextConditioning
from animevideo.pipelines.backbones.wan import loader as wan_loader, tiny, tiny22
from animevideo.pipelines.errors import AnimeVideoModelError
from animevideo.pipelines.guides import Guide

H, W, F = 32, 48, 9


@pytest.fixture(scope="module")
def setup(one_thread):
    high, low = tiny22.build_tiny_experts(0)
    vae = tiny.build_tiny_vae(0)
    g = torch.Generator().manual_seed(3)
    img = torch.rand(H, W, 3, generator=g)
    pos = torch.randn(1, 7, tiny.TINY_TEXT_DIM, generator=g)
    neg = torch.randn(1, 5, tiny.TINY_TEXT_DIM, generator=g)
    model = AniSoraModel("wan", high, vae, torch.float32, "tiny22", transformer_2=low,
                         boundary_ratio=tiny22.BOUNDARY_RATIO)
    return SimpleNamespace(model=model, high=high, low=low, vae=vae, img=img, text=TextConditioning(pos, neg))


def diffusers_run(s, sampler, cfg, cfg_2, steps, noise, output_type="latent", boundary=tiny22.BOUNDARY_RATIO):
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=s.vae,
                                   scheduler=make_scheduler(sampler, 5.0), transformer=s.high,
                                   transformer_2=s.low, boundary_ratio=boundary)
    pipe.set_progress_bar_config(disable=True)
    pad = anisora_text.pad_prompt_embeds
    return pipe(image=s.img.permute(2, 0, 1)[None], prompt_embeds=pad(s.text.positive),
                negative_prompt_embeds=pad(s.text.negative) if cfg > 1 else None, height=H, width=W,
                num_frames=F, num_inference_steps=steps, guidance_scale=cfg, guidance_scale_2=cfg_2,
                latents=noise.clone(), output_type=output_type, return_dict=False)[0]


def ours(s, model, sampler, cfg, cfg_2, steps, seed=7):
    req = AniSoraRequest(width=W, height=H, num_frames=F, steps=steps, cfg=cfg, cfg_low_noise=cfg_2, shift=5.0,
                         seed=seed, sampler=sampler)
    cond = packing.build_wan_condition(Guide().with_keyframe(s.img, 0), F, H, W)
    condition = wan.encode_condition(model, cond, AniSoraHooks())
    noise = wan.initial_noise((1, 16, condition.shape[2], H // 8, W // 8), seed)
    return wan.sample_latents(model, condition, s.text, req, AniSoraHooks(), noise), noise


def count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
@pytest.mark.parametrize("cfg,cfg_2", [(1.0, 1.0), (4.0, 3.0)])
def test_expert_switch_parity_with_diffusers_pipeline(setup, sampler, cfg, cfg_2):
    """4 steps at shift 5 put the boundary (t = 900) mid-run: unipc 999/937 | 833/625, euler 1000/909 | 714/5."""
    s = setup
    high_calls, h1 = count_calls(s.high)
    low_calls, h2 = count_calls(s.low)
    try:
        got, noise = ours(s, s.model, sampler, cfg, cfg_2, 4)
    finally:
        h1.remove()
        h2.remove()
    passes = 2 if cfg > 1 else 1
    assert len(high_calls) == 2 * passes and len(low_calls) == 2 * (2 if cfg_2 > 1 else 1)
    ref = diffusers_run(s, sampler, cfg, cfg_2, 4, noise)
    assert got.shape == ref.shape == (1, 16, 3, H // 8, W // 8)
    assert (got - noise).abs().max() > 0.1
    diff = (got - ref).abs().max().item()
    print(f"wan2.2 parity {sampler} cfg {cfg}/{cfg_2}: max abs diff {diff:.3g}")
    assert diff <= 1e-4, diff


def test_both_experts_matter(setup):
    """Swapping the experts, or running one for every step, changes the result far beyond the parity bound."""
    s = setup
    base, _ = ours(s, s.model, "unipc", 1.0, None, 4)
    swapped = AniSoraModel("wan", s.low, s.vae, torch.float32, "x", transformer_2=s.high, boundary_ratio=0.9)
    only_high = AniSoraModel("wan", s.high, s.vae, torch.float32, "x")
    for other in (swapped, only_high):
        assert (ours(s, other, "unipc", 1.0, None, 4)[0] - base).abs().max() > 1e-2


def test_generate_video_equals_pipeline_and_says_which_expert_ran(setup):
    s = setup
    req = AniSoraRequest(width=W, height=H, num_frames=F, steps=4, cfg=1.0, shift=5.0, seed=11, sampler="unipc")
    text = TextConditioning(s.text.positive, None, torch.zeros(1, 257, tiny.TINY_IMAGE_DIM))  # ignored
    out = wan.generate(s.model, Guide().with_keyframe(s.img, 0), text, req)
    noise = wan.initial_noise((1, 16, 3, H // 8, W // 8), 11)
    ref = diffusers_run(s, "unipc", 1.0, None, 4, noise, "pt")
    assert (out.frames - ref[0].permute(0, 2, 3, 1)).abs().max() <= 1e-4
    assert "Wan2.2-I2V-A14B" in out.info
    assert "experts: high-noise steps 1-2, low-noise steps 3-4 (boundary 0.9: t >= 900 is high-noise)" in out.info
    assert "clip_vision_output: not used" in out.info


def test_v32_release_settings_split_three_high_five_low():
    """AniSora V3.2's 8 steps at shift 5: the high-noise expert runs 999/972/937, the low-noise one the rest
    (the split core's two KSamplerAdvanced passes use in the shipped workflow: steps 0-3, then 3-8)."""
    sched = make_scheduler("unipc", 5.0)
    sched.set_timesteps(8)
    assert [int(t) for t in sched.timesteps if t >= 900] == [999, 972, 937]


def test_experts_take_turns_on_the_device(setup):
    """With an offload device, only the expert at work is on the device ('meta' stands in for the offload)."""
    s = setup
    high, low = tiny22.build_tiny_experts(1)
    model = AniSoraModel("wan", high, s.vae, torch.float32, "x", transformer_2=low, boundary_ratio=0.9)
    switch = wan.ExpertSwitch(model, AniSoraHooks(device=torch.device("cpu"), offload_device=torch.device("meta")))
    assert switch.use(torch.tensor(999)) is high and low.patch_embedding.weight.device.type == "cpu"
    assert switch.use(torch.tensor(899)) is low and high.patch_embedding.weight.device.type == "meta"
    switch.close()
    assert low.patch_embedding.weight.device.type == "meta"


# ---------------------------------------------------------------------------------------------
# Loading the released layouts
# ---------------------------------------------------------------------------------------------

def assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa)


def test_comfy_org_single_files_load_as_a_pair(tmp_path, setup):
    tiny22.write_tiny_wan22(str(tmp_path), 0)
    tiny.write_native_vae(str(tmp_path / tiny.VAE_FILE), setup.vae)
    m = loader.load_wan22(str(tmp_path / tiny22.HIGH_NOISE_FILE), str(tmp_path / tiny22.LOW_NOISE_FILE),
                          str(tmp_path / tiny.VAE_FILE), "auto")
    high, low = tiny22.build_tiny_experts(0)
    for built, loaded in ((high, m.transformer), (low, m.transformer_2)):
        ref = {k: v.half().float() for k, v in built.state_dict().items()}  # the files are fp16
        assert all(torch.equal(loaded.state_dict()[k], ref[k]) for k in ref)
    assert m.boundary_ratio == 0.9 and m.dtype == torch.float32 and m.transformer.config.image_dim is None


def test_native_release_folder_with_shards(tmp_path, setup):
    folder = str(tmp_path / "Index-anisora-V3.2")
    tiny22.write_native_release(folder, setup.high, setup.low, setup.vae, num_shards=3)
    assert loader.is_anisora_wan22_folder(folder) and not loader.is_anisora_folder(folder)
    m = loader.load_wan22(folder, None, None, "fp32")
    assert_same(setup.high, m.transformer)
    assert_same(setup.low, m.transformer_2)
    assert_same(setup.vae, m.vae)
    assert m.boundary_ratio == 0.9


def test_diffusers_release_folder_reads_boundary_ratio(tmp_path, setup):
    folder = str(tmp_path / "Wan2.2-I2V-A14B-Diffusers")
    tiny22.write_diffusers_release(folder, setup.high, setup.low, setup.vae, boundary_ratio=0.875)
    assert loader.is_anisora_wan22_folder(folder)
    m = loader.load_wan22(folder, None, None, "fp32")
    assert_same(setup.high, m.transformer)
    assert_same(setup.low, m.transformer_2)
    assert m.boundary_ratio == 0.875


def test_wrong_files_as_experts_are_refused(tmp_path, setup):
    from diffusers import WanTransformer3DModel

    wan21 = str(tmp_path / "anisora_v3.safetensors")
    tiny.write_native_transformer(wan21, tiny.build_tiny_transformer(0))
    low = str(tmp_path / "low.safetensors")
    tiny.write_native_transformer(low, setup.low)
    vae = str(tmp_path / "vae.safetensors")
    tiny.write_native_vae(vae, setup.vae)
    with pytest.raises(AnimeVideoModelError, match="Wan2.1-I2V transformer.*Load AniSora"):
        loader.load_wan22(wan21, low, vae, "fp32")
    bigger = str(tmp_path / "bigger.safetensors")
    tiny.write_native_transformer(bigger, WanTransformer3DModel(**dict(tiny22.TINY_EXPERT_CONFIG, num_layers=3)))
    with pytest.raises(AnimeVideoModelError, match="different sizes.*num_layers 3 vs 2"):
        loader.load_wan22(bigger, low, vae, "fp32")
    with pytest.raises(AnimeVideoModelError, match="Load AniSora Wan2.2"):
        loader.load_anisora(low, vae, "fp32")
    with pytest.raises(AnimeVideoModelError, match="vae_name"):
        loader.load_wan22(low, low, None, "fp32")
    with pytest.raises(AnimeVideoModelError, match="does not hold both experts"):
        loader.load_wan22(str(tmp_path), None, vae, "fp32")


def test_bad_boundary_ratio_is_refused(tmp_path, setup):
    folder = str(tmp_path / "release")
    tiny22.write_diffusers_release(folder, setup.high, setup.low, setup.vae, boundary_ratio=1.5)
    with pytest.raises(AnimeVideoModelError, match="boundary_ratio 1.5"):
        wan_loader.boundary_ratio(folder)

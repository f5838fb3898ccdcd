"""AniSora Wan sampling: flow-shift schedule in float64, and PARITY with diffusers' WanImageToVideoPipeline."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from animevideo.pipelines.anisora import flow_sampler, packing, text as anisora_text, wan
from animevideo.pipelines.backbones.wan import tiny
from animevideo.pipelines.anisora.model import AniSoraHooks, AniSoraModel, AniSoraRequest, TextConditioning
from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.guides import Guide

H, W, F = 32, 48, 9


@pytest.fixture(scope="module")
def setup(one_thread):
    tr, vae = tiny.build_tiny_transformer(0), tiny.build_tiny_vae(0)
    g = torch.Generator().manual_seed(3)
    img = torch.rand(H, W, 3, generator=g)
    pos = torch.randn(1, 7, tiny.TINY_TEXT_DIM, generator=g)
    neg = torch.randn(1, 5, tiny.TINY_TEXT_DIM, generator=g)
    ie = torch.randn(1, 257, tiny.TINY_IMAGE_DIM, generator=g)
    return SimpleNamespace(model=AniSoraModel("wan", tr, vae, torch.float32, "tiny"), tr=tr, vae=vae, img=img,
                           text=TextConditioning(pos, neg, ie))


class _Processor:  # stands in for the CLIP image processor: the embeddings are given
    def __call__(self, images, return_tensors):
        return SimpleNamespace(to=lambda device: {"pixel_values": torch.zeros(1)})


class _ImageEncoder(torch.nn.Module):
    """Returns fixed CLIP hidden states, so the pipeline's image tokens equal the ones we pass in.
    (diffusers refuses `image` together with `image_embeds`, and it needs `image` for the latents.)"""

    def __init__(self, embeds):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.embeds = embeds

    @property
    def device(self):
        return self.anchor.device

    def forward(self, pixel_values, output_hidden_states):
        return SimpleNamespace(hidden_states=[None, self.embeds, None])


def diffusers_run(s, sampler, cfg, steps, noise, output_type, last_image=None):
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=s.vae,
                                   scheduler=flow_sampler.make_scheduler(sampler, 5.0), transformer=s.tr,
                                   image_encoder=_ImageEncoder(s.text.image_embeds), image_processor=_Processor())
    pipe.set_progress_bar_config(disable=True)
    pad = anisora_text.pad_prompt_embeds
    return pipe(image=s.img.permute(2, 0, 1)[None], prompt_embeds=pad(s.text.positive),
                negative_prompt_embeds=pad(s.text.negative) if cfg > 1 else None, height=H, width=W,
                num_frames=F, num_inference_steps=steps, guidance_scale=cfg, latents=noise.clone(),
                output_type=output_type, return_dict=False,
                last_image=None if last_image is None else last_image.permute(2, 0, 1)[None])[0]


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_first_frame_parity_with_diffusers_pipeline(setup, sampler, cfg):
    s = setup
    req = AniSoraRequest(width=W, height=H, num_frames=F, steps=4, cfg=cfg, shift=5.0, seed=7, sampler=sampler)
    cond = packing.build_wan_condition(Guide().with_keyframe(s.img, 0), F, H, W)
    condition = wan.encode_condition(s.model, cond, AniSoraHooks())
    noise = wan.initial_noise((1, 16, condition.shape[2], H // 8, W // 8), req.seed)
    ours = wan.sample_latents(s.model, condition, s.text, req, AniSoraHooks(), noise)
    ref = diffusers_run(s, sampler, cfg, 4, noise, "latent")
    assert ours.shape == ref.shape == (1, 16, 3, H // 8, W // 8)
    assert (ours - noise).abs().max() > 0.1  # sampling really moved the latents
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_first_and_last_keyframe_parity_with_diffusers_last_image(setup, sampler):
    """diffusers' first-last-frame path (last_image) is our two-keyframe guide at frames 0 and -1."""
    s = setup
    last = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(9))
    req = AniSoraRequest(width=W, height=H, num_frames=F, steps=3, cfg=1.0, shift=5.0, seed=5, sampler=sampler)
    cond = packing.build_wan_condition(Guide().with_keyframe(s.img, 0).with_keyframe(last, -1), F, H, W)
    condition = wan.encode_condition(s.model, cond, AniSoraHooks())
    noise = wan.initial_noise((1, 16, condition.shape[2], H // 8, W // 8), req.seed)
    ours = wan.sample_latents(s.model, condition, s.text, req, AniSoraHooks(), noise)
    ref = diffusers_run(s, sampler, 1.0, 3, noise, "latent", last_image=last)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


def test_generate_frames_equal_pipeline_video(setup):
    s = setup
    req = AniSoraRequest(width=W, height=H, num_frames=F, steps=3, cfg=1.0, shift=5.0, seed=11, sampler="unipc")
    steps_seen = []
    out = wan.generate(s.model, Guide().with_keyframe(s.img, 0), s.text, req,
                       AniSoraHooks(on_step=lambda i, n: steps_seen.append((i, n))))
    noise = wan.initial_noise((1, 16, 3, H // 8, W // 8), 11)
    ref = diffusers_run(s, "unipc", 1.0, 3, noise, "pt")  # [1, F, 3, H, W] in 0..1
    assert out.frames.shape == (F, H, W, 3) and out.frames.dtype == torch.float32
    assert torch.allclose(out.frames, ref[0].permute(0, 2, 3, 1), atol=1e-4, rtol=0)
    assert steps_seen == [(1, 3), (2, 3), (3, 3)]
    assert "latent slot 0" in out.info and "9 frames -> 3 latent frames" in out.info


@pytest.mark.parametrize("steps,shift", [(8, 5.0), (40, 3.0), (1, 1.0)])
def test_unipc_sigmas_follow_native_wan_grid_and_shift(steps, shift):
    """AniSora's own (native Wan) FlowUniPCMultistepScheduler: unshifted flow times (1 - 1/1000)(1 - k/N),
    shifted, integer timesteps = trunc(1000 sigma), final sigma 0 (written out here in float64)."""
    sched = flow_sampler.make_scheduler("unipc", shift)
    sched.set_timesteps(steps)
    s = np.array([(1.0 - 1.0 / 1000) * (1.0 - k / steps) for k in range(steps)], dtype=np.float64)
    want = shift * s / (1 + (shift - 1) * s)
    got = sched.sigmas.double().numpy()
    assert np.allclose(got[:-1], want, atol=1e-6, rtol=0) and got[-1] == 0.0
    assert sched.timesteps.tolist() == [int(v) for v in (want.astype(np.float32) * 1000)]
    assert len(sched.timesteps) == steps


def test_unipc_timesteps_are_anisoras_not_diffusers_default_grid():
    """At AniSora V3's 8 steps / shift 5 the transformer sees the native timesteps; diffusers' default UniPC
    flow grid (1 - k(1 - 1/1000)/N) would give 893/750/625/418 where AniSora's code gives 892/749/624/416."""
    from diffusers import UniPCMultistepScheduler

    ours = flow_sampler.make_scheduler("unipc", 5.0)
    ours.set_timesteps(8)
    assert ours.timesteps.tolist() == [999, 972, 937, 892, 833, 749, 624, 416]
    plain = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    plain.set_timesteps(8)
    assert plain.timesteps.tolist() == [999, 972, 937, 893, 833, 750, 625, 418]


def test_euler_sigmas_follow_the_shift_formula():
    shift, steps = 5.0, 8
    sched = flow_sampler.make_scheduler("euler", shift)
    sched.set_timesteps(steps)
    smin = flow_sampler.shift_sigma(1.0 / 1000, shift)  # the shifted training schedule's end
    t = np.linspace(1.0, smin, steps, dtype=np.float64)
    assert np.allclose(sched.sigmas[:-1].double().numpy(), flow_sampler.shift_sigma(t, shift), atol=1e-6)


def test_cfg_one_skips_the_unconditional_pass():
    calls = []

    def velocity(x, t, positive):
        calls.append(positive)
        return torch.zeros_like(x)

    x = torch.randn(1, 2, 1, 2, 2)
    flow_sampler.sample(velocity, x, flow_sampler.make_scheduler("euler", 5.0), 3, 1.0)
    assert calls == [True] * 3
    calls.clear()
    flow_sampler.sample(velocity, x, flow_sampler.make_scheduler("euler", 5.0), 3, 2.5)
    assert calls == [True, False] * 3
    assert torch.equal(flow_sampler.cfg_combine(torch.ones(1), torch.zeros(1), 2.5), torch.full((1,), 2.5))


def test_interrupt_stops_between_steps(setup):
    class Stop(Exception):
        pass

    def on_step(i, n):
        if i == 2:
            raise Stop()

    req = AniSoraRequest(width=W, height=H, num_frames=5, steps=6, seed=0)
    with pytest.raises(Stop):
        wan.generate(setup.model, Guide().with_keyframe(setup.img, 0), setup.text, req, AniSoraHooks(on_step=on_step))


def test_text_errors(setup):
    s = setup
    g = Guide().with_keyframe(s.img, 0)
    req = AniSoraRequest(width=W, height=H, num_frames=5, steps=1, cfg=3.0)
    with pytest.raises(AnimeVideoInputError, match="negative"):
        wan.generate(s.model, g, TextConditioning(s.text.positive, None, s.text.image_embeds), req)
    req1 = AniSoraRequest(width=W, height=H, num_frames=5, steps=1)
    with pytest.raises(AnimeVideoInputError, match="clip_vision_output"):
        wan.generate(s.model, g, TextConditioning(s.text.positive), req1)
    with pytest.raises(AnimeVideoInputError, match="16-dimensional.*takes 4096"):
        wan.generate(s.model, g, TextConditioning(torch.zeros(1, 3, 16), None, s.text.image_embeds), req1)
    with pytest.raises(AnimeVideoInputError, match="sampler"):
        wan.generate(s.model, g, s.text, AniSoraRequest(width=W, height=H, num_frames=5, steps=1, sampler="ddim"))


def test_keyframes_and_mask_run_and_hold_known_latents(setup):
    s = setup
    g = Guide().with_keyframe(s.img, 0).with_keyframe(torch.rand(H, W, 3), -1)
    req = AniSoraRequest(width=W, height=H, num_frames=F, steps=2, seed=1)
    out = wan.generate(s.model, g, s.text, req)
    assert out.frames.shape == (F, H, W, 3) and torch.isfinite(out.frames).all()
    assert "keyframe at frame 8 (asked -1) -> latent slot 2 (mask channel 3 of 4)" in out.info


def test_offload_moves_parts_back():
    # "meta" stands in for the offload device: a module sent there afterwards shows the placement logic
    m = torch.nn.Linear(2, 2)
    seen = []
    with wan.on_device(m, AniSoraHooks(device=torch.device("cpu"), offload_device=torch.device("cpu"))):
        seen.append(m.weight.device.type)
    assert m.weight.device.type == "cpu"
    with wan.on_device(m, AniSoraHooks(device=torch.device("cpu"), offload_device=torch.device("meta"))):
        seen.append(m.weight.device.type)
    assert seen == ["cpu", "cpu"] and m.weight.device.type == "meta"
    m2 = torch.nn.Linear(2, 2)
    with wan.on_device(m2, AniSoraHooks()):  # no devices given: nothing moves
        pass
    assert m2.weight.device.type == "cpu"


def test_tiled_vae_decode_matches_whole_frames(setup):
    vae = tiny.build_tiny_vae(0)
    lat = torch.randn(1, 16, 2, 36, 36, generator=torch.Generator().manual_seed(0))  # 288 px > one 256 px tile
    whole = packing.decode_latents(vae, lat)
    wan.set_tiling(vae, True)
    assert vae.use_tiling
    tiled = packing.decode_latents(vae, lat)
    wan.set_tiling(vae, False)
    assert not vae.use_tiling and tiled.shape == whole.shape == (5, 288, 288, 3)
    assert (tiled - whole).abs().max() < 0.02 and (tiled - whole).abs().mean() < 1e-3


def test_bf16_parity_with_diffusers_pipeline(setup):
    """bf16 weights cast as diffusers' from_pretrained(torch_dtype=bf16) leaves them (norms etc. in fp32)."""
    from animevideo.pipelines.anisora import loader

    tr = loader.cast_like_diffusers(tiny.build_tiny_transformer(0), torch.bfloat16)
    s = SimpleNamespace(model=AniSoraModel("wan", tr, setup.vae, torch.bfloat16, "tiny-bf16"), tr=tr,
                        vae=setup.vae, img=setup.img, text=setup.text)
    req = AniSoraRequest(width=W, height=H, num_frames=F, steps=3, cfg=1.0, shift=5.0, seed=7)
    cond = packing.build_wan_condition(Guide().with_keyframe(s.img, 0), F, H, W)
    condition = wan.encode_condition(s.model, cond, AniSoraHooks())
    noise = wan.initial_noise((1, 16, condition.shape[2], H // 8, W // 8), req.seed)
    ours = wan.sample_latents(s.model, condition, s.text, req, AniSoraHooks(), noise)
    ref = diffusers_run(s, "unipc", 1.0, 3, noise, "latent")
    assert torch.allclose(ours, ref.float(), atol=1e-4, rtol=0), (ours - ref.float()).abs().max()

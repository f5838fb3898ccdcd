"""AniSora Wan Conditioning (the core-ComfyUI route) without ComfyUI: the node's concat inputs, run through a
replica of core's ``WAN21.concat_cond`` arithmetic (comfy/model_base.py, ComfyUI 0.8.0), give our own path's
``wan.encode_condition`` bit for bit when the same VAE encodes. tests/integration/test_core_route.py repeats
this with core's own concat_cond, VAE and sampler."""
from types import SimpleNamespace

import pytest
import torch

from animevideo.nodes.anisora_core import AnimeVideoAniSoraWanConditioning
from animevideo.pipelines.anisora import core_route, packing, wan
from animevideo.pipelines.backbones.wan import tiny
from animevideo.pipelines.anisora.model import AniSoraHooks, AniSoraModel
from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.guides import Guide

H, W, F = 32, 48, 17


@pytest.fixture(scope="module")
def setup(one_thread):
    vae = tiny.build_tiny_vae(0)
    g = torch.Generator().manual_seed(5)
    imgs = [torch.rand(H, W, 3, generator=g) for _ in range(3)]
    return SimpleNamespace(model=AniSoraModel("wan", None, vae, torch.float32, "tiny"), vae=vae, imgs=imgs)


class CoreLikeVAE:
    """Core's VAE.encode contract: IMAGE [F, H, W, 3] in 0..1 -> raw latent [1, 16, T, h, w]; core's Wan VAE maps
    pixels with ``p * 2 - 1`` first. The weights are the tiny diffusers VAE our own path uses."""

    def __init__(self, vae):
        self.vae, self.calls = vae, 0

    def encode(self, pixels):
        self.calls += 1
        video = (pixels * 2 - 1).permute(3, 0, 1, 2)[None]
        with torch.no_grad():
            return self.vae.encode(video).latent_dist.mode()


def core_concat_cond(noise, concat_latent_image, concat_mask, mean, std):
    """comfy/model_base.py WAN21.concat_cond for a 4-channel mask at the latent's size (the resize is the identity
    there): process_latent_in on the image, 1 - mask, cat(mask, image)."""
    image = (concat_latent_image - mean) * 1.0 / std
    mask = 1.0 - concat_mask
    image = image.expand(noise.shape[0], -1, -1, -1, -1)
    mask = mask.expand(noise.shape[0], -1, -1, -1, -1)
    return torch.cat((mask, image), dim=1)


def guides(imgs):
    spatial = torch.zeros(H, W)
    spatial[8:24, 12:36] = 1.0
    temporal = torch.zeros(F, H, W)
    for f in range(F):
        temporal[f, :, 2 * f: 2 * f + 12] = 1.0
    return {
        "first": Guide().with_keyframe(imgs[0], 0),
        "first_last": Guide().with_keyframe(imgs[0], 0).with_keyframe(imgs[1], -1),
        "first_middle_last": Guide().with_keyframe(imgs[0], 0).with_keyframe(imgs[2], 8).with_keyframe(imgs[1], -1),
        "last_only": Guide().with_keyframe(imgs[1], -1),
        "anymask_spatial": Guide().with_keyframe(imgs[0], 0).with_motion_mask(spatial),
        "anymask_temporal": Guide().with_keyframe(imgs[0], 0).with_motion_mask(temporal),
    }


def conditioning(seed, tokens=4):
    return [[torch.randn(1, tokens, 8, generator=torch.Generator().manual_seed(seed)), {"pooled_output": None}]]


@pytest.mark.parametrize("case", ["first", "first_last", "first_middle_last", "last_only", "anymask_spatial",
                                  "anymask_temporal"])
def test_core_y_equals_our_own_path_bit_for_bit(setup, case):
    guide = guides(setup.imgs)[case]
    vae = CoreLikeVAE(setup.vae)
    pos, neg, latent, info = AnimeVideoAniSoraWanConditioning().condition(
        conditioning(1), conditioning(2), vae, W, H, F, 2, guide)
    assert vae.calls == 1  # one VAE pass over the whole guide video
    values = pos[0][1]
    assert latent["samples"].shape == (2, 16, 5, H // 8, W // 8) and not latent["samples"].any()
    mean, std = packing.latents_mean_std(setup.vae, "cpu", torch.float32)
    y_core = core_concat_cond(latent["samples"], values["concat_latent_image"], values["concat_mask"], mean, std)

    cond = packing.build_wan_condition(guide, F, H, W)
    y_ours = wan.encode_condition(setup.model, cond, AniSoraHooks())  # what our own sampler feeds the model
    assert torch.equal(y_core[:1], y_ours) and torch.equal(y_core[1:], y_ours)
    assert torch.equal(neg[0][1]["concat_mask"], values["concat_mask"])
    assert neg[0][1]["concat_latent_image"] is values["concat_latent_image"]
    assert "latent slot" in info


def test_mask_is_handed_over_in_cores_convention(setup):
    """Core stores 1 = generate and inverts it; a mask handed over as ours (1 = given) would flip every frame."""
    guide = guides(setup.imgs)["first_last"]
    core = core_route.build_core_condition(guide, F, H, W, CoreLikeVAE(setup.vae).encode)
    cond = packing.build_wan_condition(guide, F, H, W)
    assert torch.equal(core.concat_mask, 1.0 - cond.mask)
    assert core.concat_mask[0, :, 0].sum() == 0 and core.concat_mask[0, 3, -1].sum() == 0  # frames 0 and 16 given
    assert core.concat_mask[0, :, 1:4].min() == 1  # the frames between are generated


def test_guide_pixels_round_trip_exactly():
    """Core maps IMAGE pixels back with p * 2 - 1: that must give our guide video's values exactly."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 3, 5, 8, 8, generator=g)
    pixels[0, 0, 2, 0, :6] = torch.tensor([0.0, 1.0, 1e-8, 0.5 + 2 ** -24, 0.25 - 2 ** -26, 0.75 - 2 ** -25])
    known = (torch.rand(1, 1, 5, 8, 8, generator=g) > 0.5).float()
    video = (pixels * 2.0 - 1.0) * known  # as build_wan_condition makes it (zero where unknown)
    assert torch.equal(packing.guide_pixels(video) * 2 - 1, video[0].permute(1, 2, 3, 0))


def test_options_are_kept_and_clip_vision_is_set(setup):
    pos = [[torch.zeros(1, 2, 8), {"pooled_output": None, "area": (1, 2, 3, 4)}]]
    clip = SimpleNamespace(penultimate_hidden_states=torch.zeros(1, 257, 4))
    out, _, _, _ = AnimeVideoAniSoraWanConditioning().condition(
        pos, conditioning(2), CoreLikeVAE(setup.vae), W, H, 5, 1, guides(setup.imgs)["first"], clip)
    assert out[0][1]["area"] == (1, 2, 3, 4) and out[0][1]["clip_vision_output"] is clip
    assert "concat_mask" not in pos[0][1]  # the input conditioning is not changed


def test_no_guide_generates_every_frame(setup):
    pos, _, latent, info = AnimeVideoAniSoraWanConditioning().condition(
        conditioning(1), conditioning(2), CoreLikeVAE(setup.vae), W, H, 7, 1)  # 7 -> 9 frames
    assert latent["samples"].shape == (1, 16, 3, H // 8, W // 8)
    assert pos[0][1]["concat_mask"].min() == 1  # nothing given
    assert "using 9" in info and "no guide" in info


def test_errors_name_the_input(setup):
    node = AnimeVideoAniSoraWanConditioning()
    g = guides(setup.imgs)["first"]
    with pytest.raises(AnimeVideoInputError, match="vae: .*Wan2.1 VAE"):
        node.condition(conditioning(1), conditioning(2), SimpleNamespace(encode=lambda p: torch.zeros(1, 4, 1, 4, 6)),
                       W, H, F, 1, g)
    with pytest.raises(AnimeVideoInputError, match="width"):
        node.condition(conditioning(1), conditioning(2), CoreLikeVAE(setup.vae), 40, H, F, 1, g)
    with pytest.raises(AnimeVideoInputError, match="guide"):
        node.condition(conditioning(1), conditioning(2), CoreLikeVAE(setup.vae), W, H, F, 1, "not a guide")
    with pytest.raises(AnimeVideoInputError, match="positive/negative"):
        node.condition("text", conditioning(2), CoreLikeVAE(setup.vae), W, H, F, 1, g)
    with pytest.raises(AnimeVideoInputError, match="strength"):
        node.condition(conditioning(1), conditioning(2), CoreLikeVAE(setup.vae), W, H, F, 1,
                       Guide().with_keyframe(setup.imgs[0], 0, 0.2))

"""SVD Guide Model Patch without ComfyUI: a stand-in with core's ModelPatcher / VAE contracts (clone,
set_model_sampler_post_cfg_function, model.process_latent_in; VAE.encode of IMAGE pixels). The real core model,
conditioning node and samplers: tests/integration/test_svd_model_patch.py."""
import copy
from types import SimpleNamespace

import pytest
import torch

from animevideo.nodes.svd_core import AnimeVideoSVDGuideModelPatch
from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.guides import Guide
from animevideo.pipelines.svd import guided
from animevideo.pipelines.svd.conditioning import encode_concat_latent

H, W, F = 32, 32, 5


@pytest.fixture(scope="module")
def model(tiny_svd_model, one_thread):
    return tiny_svd_model


class Patcher:
    """core's ModelPatcher: clone() copies model_options; the post-cfg list grows on the clone only."""

    def __init__(self, scale):
        self.model = SimpleNamespace(process_latent_in=lambda x: x * scale)
        self.model_options = {}

    def clone(self):
        c = copy.copy(self)
        c.model_options = copy.deepcopy(self.model_options)
        return c

    def set_model_sampler_post_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.model_options.setdefault("sampler_post_cfg_function", []).append(fn)


class CoreVAE:
    latent_channels = 4

    def __init__(self, ours):
        self.ours = ours

    def spacial_compression_encode(self):
        return self.ours.spatial_factor

    def encode(self, pixels):
        x = pixels.movedim(-1, 1).contiguous()
        with torch.no_grad():
            return torch.cat([encode_concat_latent(self.ours.vae, im[None], torch.zeros_like(im[None]), 0.0)
                              for im in x]).float()


def test_patch_replaces_the_denoised_estimate_like_our_own_hook(model):
    g = torch.Generator().manual_seed(0)
    first, last = torch.rand(1, H, W, 3, generator=g), torch.rand(1, H, W, 3, generator=g)
    mask = torch.zeros(H, W)
    mask[8:20, 4:16] = 1.0
    guide = Guide().with_keyframe(first, 0).with_keyframe(last, -1).with_motion_mask(mask)
    original = Patcher(model.vae_scaling_factor)
    patched, info = AnimeVideoSVDGuideModelPatch().patch(original, CoreVAE(model), guide, W, H, F, first)
    assert "sampler_post_cfg_function" not in original.model_options
    (fn,) = patched.model_options["sampler_post_cfg_function"]

    plan = guided.plan_svd_guide(model, guide, first[0].permute(2, 0, 1)[None], F, "crop")
    denoised = torch.randn(F, 4, H // 8, W // 8, generator=g)
    out = fn({"denoised": denoised, "input": denoised, "sigma": torch.ones(1)})
    want = plan.hook()(SimpleNamespace(denoised=denoised[None]))[0]
    assert torch.equal(out, want)
    held = plan.held()[:, 0]
    assert 0 < held.float().mean() < 1
    assert torch.equal(out.permute(0, 2, 3, 1)[held], plan.latents.permute(0, 2, 3, 1)[held])
    assert torch.equal(out.permute(0, 2, 3, 1)[~held], denoised.permute(0, 2, 3, 1)[~held])
    assert "dilated by 1 latent px" in info


def test_errors_name_the_input(model):
    img = torch.rand(1, H, W, 3)
    node = AnimeVideoSVDGuideModelPatch()
    patcher, vae = Patcher(0.18215), CoreVAE(model)
    with pytest.raises(AnimeVideoInputError, match="init_image"):
        node.patch(patcher, vae, Guide().with_motion_mask(torch.ones(H, W) * 0.0 + 1.0), W, H, F)
    with pytest.raises(AnimeVideoInputError, match="guide"):
        node.patch(patcher, vae, "no guide", W, H, F)
    with pytest.raises(AnimeVideoInputError, match="width/height"):
        node.patch(patcher, vae, Guide().with_keyframe(img, 0), 36, H, F)
    with pytest.raises(AnimeVideoInputError, match="model"):
        node.patch(object(), vae, Guide().with_keyframe(img, 0), W, H, F)
    patched, _ = node.patch(patcher, vae, Guide().with_keyframe(img, 0), W, H, F)
    (fn,) = patched.model_options["sampler_post_cfg_function"]
    with pytest.raises(AnimeVideoInputError, match="video_frames"):
        fn({"denoised": torch.zeros(F + 1, 4, H // 8, W // 8)})

"""IMAGE and MASK inputs in float16 (ComfyUI's fp16 intermediates) are accepted by every node that takes them:
each runs on a tiny model with half-precision inputs and gives the same result as with float32 inputs."""
from __future__ import annotations

import pytest
import torch

from animevideo.nodes import NODE_CLASS_MAPPINGS

pytestmark = pytest.mark.usefixtures("one_thread")


def image(n, h, w, seed=0, c=3):
    # values exact in fp16, so the fp16 and fp32 runs see the same picture
    x = torch.rand(n, h, w, c, generator=torch.Generator().manual_seed(seed))
    return x.half().float()


def both(fn, *images):
    """fn on float32 inputs and on the same inputs in float16."""
    return fn(*images), fn(*(i.half() for i in images))


def close(a, b):
    if isinstance(a, dict) and "result" in a:  # nodes that also send ui text: {"ui": …, "result": (…)}
        return a.get("ui") == b.get("ui") and close(a["result"], b["result"])
    if isinstance(a, (tuple, list)):
        return all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5)
    return True


def load(node, *args):
    cls = NODE_CLASS_MAPPINGS[node]
    return getattr(cls(), cls.FUNCTION)(*args)[0]


def run(node, *args, **kwargs):
    cls = NODE_CLASS_MAPPINGS[node]
    return getattr(cls(), cls.FUNCTION)(*args, **kwargs)


@pytest.fixture
def env(models_env, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_DEVICE", "cpu")
    return models_env


def test_guides(env):
    kf32, kf16 = both(lambda x: run("AnimeVideoKeyframe", x, 0, 1.0)[0], image(1, 16, 16))
    assert torch.equal(kf32.keyframes[0].image.float(), kf16.keyframes[0].image.float())
    mask = (torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    m32, m16 = run("AnimeVideoMotionMask", mask)[0], run("AnimeVideoMotionMask", mask.half())[0]
    assert torch.equal(m32.motion_mask, m16.motion_mask) and m16.motion_mask.dtype == torch.float32
    b32, b16 = both(lambda x: run("AnimeVideoKeyframesFromBatch", x, 1, 1.0)[0], image(2, 16, 16))
    assert all(torch.equal(a.image.float(), b.image.float()) for a, b in zip(b32.keyframes, b16.keyframes))


def test_svd_guide_model_patch(env, tiny_svd_model):
    """core's ModelPatcher / VAE contracts stood in (tests/test_svd_model_patch.py has the full check)."""
    from types import SimpleNamespace

    from animevideo.pipelines.svd.conditioning import encode_concat_latent

    class Patcher:
        model = SimpleNamespace(process_latent_in=lambda x: x * tiny_svd_model.vae_scaling_factor)
        model_options = {}

        def clone(self):
            c = Patcher()
            c.model_options = {}
            return c

        def set_model_sampler_post_cfg_function(self, fn, disable_cfg1_optimization=False):
            self.model_options.setdefault("sampler_post_cfg_function", []).append(fn)

    class VAE:
        latent_channels = 4

        def spacial_compression_encode(self):
            return tiny_svd_model.spatial_factor

        def encode(self, pixels):
            x = pixels.movedim(-1, 1).float().contiguous()
            return torch.cat([encode_concat_latent(tiny_svd_model.vae, im[None], torch.zeros_like(im[None]), 0.0)
                              for im in x]).float()

    mask = (torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    (guide,) = run("AnimeVideoMotionMask", mask)
    d = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(2))

    def step(init):
        patched, info = run("AnimeVideoSVDGuideModelPatch", Patcher(), VAE(), guide, 32, 32, 3, init)
        return patched.model_options["sampler_post_cfg_function"][0]({"denoised": d}), info

    (a, ia), (b, ib) = both(step, image(1, 32, 32))
    assert ia == ib and torch.allclose(a, b, atol=1e-5)


def test_svd_sampler_with_a_keyframe(env):
    svd = load("AnimeVideoLoadSVD", "svd_xt.safetensors", "auto")
    small = dict(width=64, height=64, fit="crop", num_frames=3, fps=8.0, motion_bucket_id=127,
                 augmentation_level=0.0, steps=1, min_cfg=1.0, max_cfg=1.0, seed=1, decode_chunk_size=2)

    def sample(img, last):
        guide = run("AnimeVideoKeyframe", last, -1, 1.0)[0]
        return run("AnimeVideoSVDSampler", svd, img, guide=guide, **small)

    assert close(*both(sample, image(1, 64, 64), image(1, 64, 64, seed=2)))


def test_i2vgenxl_sampler(env):
    model = load("AnimeVideoLoadI2VGenXL", "i2vgen-xl", "auto")
    small = dict(width=32, height=32, num_frames=2, fps=8, steps=1, guidance_scale=2.0, scheduler="as released",
                 eta=0.0, seed=1, decode_chunk_size=2)
    assert close(*both(lambda x: run("AnimeVideoI2VGenXL", model, x, "a", "", **small), image(1, 40, 48)))


def test_lineart_both_modes(env):
    assert close(*both(lambda x: run("AnimeVideoLineart", x, "sk_model.pth", "already lineart"), image(2, 24, 24)))
    assert close(*both(lambda x: run("AnimeVideoLineart", x, "sk_model.pth", "extract"), image(2, 24, 24)))


def test_lvcd_colorize(env):
    spec = NODE_CLASS_MAPPINGS["AnimeVideoLoadLVCD"].INPUT_TYPES()["required"]
    lvcd = load("AnimeVideoLoadLVCD", spec["ckpt_name"][1]["default"], spec["lvcd_name"][1]["default"], "auto")

    def colorize(ref, lines, ref_lines):
        return run("AnimeVideoLVCDColorize", lvcd, ref, lines, 64, 64, "crop", 1, 0, False, "auto",
                   reference_lineart=ref_lines)

    assert close(*both(colorize, image(1, 64, 64), image(2, 64, 64, seed=1), image(1, 64, 64, seed=2)))


def test_interpolate(env):
    interp = load("AnimeVideoLoadInterpolator", "anime_interp_full.ckpt", "auto")
    assert close(*both(lambda x: run("AnimeVideoInterpolate", interp, x, 12.0, 2, flow_iterations=1),
                       image(2, 32, 32)))


@pytest.mark.parametrize("model", ["realesr-animevideov3.pth", "AnimeSR_v2.pth"])
def test_upscale(env, model):
    up = load("AnimeVideoLoadUpscaler", model, "auto")
    assert close(*both(lambda x: run("AnimeVideoUpscale", up, x, 2, 0, 1.0, 0.0), image(3, 12, 12)))


def test_ganime(env):
    spec = NODE_CLASS_MAPPINGS["AnimeVideoLoadGANime"].INPUT_TYPES()["required"]
    model = load("AnimeVideoLoadGANime", spec["vqgan_name"][1].get("default", "ganime_kny_vqgan.safetensors"),
                 spec["transformer_name"][1].get("default", "ganime_kny_gpt2_medium.safetensors"), "auto")
    assert close(*both(lambda a, b: run("AnimeVideoGANimeInbetween", model, a, b, 3, "greedy", 1.0, 50, 0, 1),
                       image(1, 32, 64), image(1, 32, 64, seed=1)))
    assert close(*both(lambda x: run("AnimeVideoGANimeEncode", model, x, "squash"), image(2, 32, 64)))


def test_guide_storyboard(env):
    guide = run("AnimeVideoKeyframe", image(1, 32, 32), 0, 1.0)[0]
    assert close(*both(lambda x: run("AnimeVideoGuidePreview", guide, 3, 32, 32, "crop", frames=x), image(3, 32, 32)))


def test_clip_metrics(env):
    mask = (torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.5).float()

    def score(gen, gold, ref_lines, m):
        return run("AnimeVideoClipMetrics", gen, gold, "generated", "shorter", False, "alex", "sk_model.pth",
                   reference_lineart=ref_lines, motion_mask=m)

    a = score(image(3, 32, 32), image(3, 32, 32, seed=1), image(3, 32, 32, seed=2), mask)
    b = score(image(3, 32, 32).half(), image(3, 32, 32, seed=1).half(), image(3, 32, 32, seed=2).half(), mask.half())
    assert a[:-1] == pytest.approx(b[:-1], rel=1e-6, nan_ok=True) and a[-1] == b[-1]


def test_every_node_taking_an_image_or_mask_is_covered():
    covered = {"AnimeVideoKeyframe", "AnimeVideoGuidePreview", "AnimeVideoMotionMask", "AnimeVideoSVDSampler",
               "AnimeVideoLineart", "AnimeVideoLVCDColorize", "AnimeVideoInterpolate", "AnimeVideoUpscale", "AnimeVideoGANimeInbetween",
               "AnimeVideoGANimeEncode", "AnimeVideoClipMetrics", "AnimeVideoKeyframesFromBatch",
               "AnimeVideoSVDGuideModelPatch", "AnimeVideoI2VGenXL",
               "AnimeVideoStreamingT2VExtend"}  # tests/test_streaming_t2v_nodes.py
    taking = set()
    for node, cls in NODE_CLASS_MAPPINGS.items():
        types_ = cls.INPUT_TYPES()
        if any(spec[0] in ("IMAGE", "MASK") for section in ("required", "optional")
               for spec in types_.get(section, {}).values()):
            taking.add(node)
    assert taking == covered

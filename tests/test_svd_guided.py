"""Training-free guides on SVD (pipelines/svd/guided.py) on the tiny random-weight SVD, and the
motion-mask precision metric (pipelines/metrics/motion_mask.py, our reconstruction of AniSora's)."""
import importlib
import math

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.guides import Guide
from animevideo.pipelines.metrics import motion_mask as mmp
from animevideo.pipelines.svd import decode, guided, pipeline, sampler

svd_nodes = importlib.import_module("animevideo.nodes.svd")
guide_nodes = importlib.import_module("animevideo.nodes.guides")

H = W = 64
FRAMES = 6


@pytest.fixture(scope="module")
def model(tiny_svd_model, one_thread):
    return tiny_svd_model


@pytest.fixture(scope="module")
def pictures():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, H, W, generator=gen), torch.rand(1, 3, H, W, generator=gen)


def left_half_mask():
    m = torch.zeros(H, W)
    m[:, :W // 2] = 1  # the left half may move
    return m


def request(chunk=FRAMES, **kw):
    return pipeline.SVDRequest(**{**dict(num_frames=FRAMES, steps=6, decode_chunk_size=chunk, max_cfg=2.5, seed=3),
                                  **kw})


def run(model, image, req, plan=None, extra_hooks=()):
    hooks = list(extra_hooks) + ([plan.hook()] if plan is not None else [])
    return pipeline.image_to_video(model, image, req, pipeline.SVDRunHooks(denoised_hooks=hooks))


class LastDenoised:
    """A hook placed after the guide's: records the denoised estimate the last Euler step uses."""

    def __init__(self):
        self.value = None
        self.steps = 0

    def __call__(self, state):
        self.value = state.denoised.clone()
        self.steps += 1
        return state.denoised


def roundtrip(model, images):
    lat = guided.encode_latents(model.vae, images, model.vae_scaling_factor)
    return lat, decode.decode_latents(model.vae, lat, model.vae_scaling_factor, 1)


# ---------------------------------------------------------------------------------------------
# Motion mask: the static region ends exactly on the guide
# ---------------------------------------------------------------------------------------------

def test_static_region_outside_the_dilated_mask_equals_the_guide_latent(model, pictures):
    a, _ = pictures
    plan = guided.plan_svd_guide(model, Guide().with_motion_mask(left_half_mask()), a, FRAMES, "crop")
    # latent 8x8: columns 0..3 may move, dilated to 0..4; columns 5..7 are held on every frame
    held = plan.held()[:, 0]
    assert held.shape == (FRAMES, 8, 8)
    assert torch.all(held[:, :, 5:]) and not torch.any(held[:, :, :5])
    guide_latent = guided.encode_latents(model.vae, a, model.vae_scaling_factor)[0]
    assert torch.equal(plan.latents[:, :, :, 5:], guide_latent[None, :, :, 5:].expand(FRAMES, -1, -1, -1))

    last = LastDenoised()
    result = pipeline.image_to_video(model, a, request(),
                                     pipeline.SVDRunHooks(denoised_hooks=[plan.hook(), last]))
    mask = plan.held()[None].expand_as(result.latents)
    target = plan.latents[None].expand_as(result.latents)
    assert last.steps == 6
    # the estimate the last step lands on is the guide, bit for bit ...
    assert torch.equal(last.value[mask], target[mask])
    # ... and the final Euler step x + (x - D)/s * (0 - s) reproduces it up to float rounding
    torch.testing.assert_close(result.latents[mask], target[mask], rtol=0, atol=1e-6)
    # the moving region really moved away from the guide
    free = ~mask
    assert (result.latents[free] - target[free]).abs().mean() > 0.05
    assert result.frames.shape == (FRAMES, H, W, 3)


class EveryDenoised:
    """A hook that records the denoised estimate it sees at every step (placed before/after the guide's)."""

    def __init__(self):
        self.values = []

    def __call__(self, state):
        self.values.append(state.denoised.clone())
        return state.denoised


def test_held_latents_ride_the_guide_trajectory_at_every_step(model, pictures):
    """The guide acts at EVERY step, not just at the end: after each step the held latents sit exactly on the
    guide's noisy trajectory x_i = g + (s_i / s_0) (x_init - g) (float64 closed form of the Euler steps with
    D' = g, x_init = noise * sqrt(s_0^2 + 1)), and each step's estimate is the guide bit for bit. A guide
    applied only at the last step ends on the same final latents but is off this trajectory by the whole
    difference between the model's estimate and the guide at every earlier step."""
    a, b = pictures
    g = Guide().with_keyframe(b[0].permute(1, 2, 0), -1).with_motion_mask(left_half_mask())
    plan = guided.plan_svd_guide(model, g, a, FRAMES, "crop")
    req = request()
    _, noise = pipeline.draw_noise(model, a, FRAMES, req.seed)
    xs = []
    after = EveryDenoised()
    pipeline.image_to_video(model, a, req, pipeline.SVDRunHooks(denoised_hooks=[plan.hook(), after],
                                                                 on_step=lambda st: xs.append(st.x.clone())))
    sig = sampler.karras_sigmas(req.steps).double()
    held = plan.held()[None].expand(1, FRAMES, 4, 8, 8)
    target = plan.latents[None].double()
    x_init = noise.double() * (sig[0] ** 2 + 1) ** 0.5
    assert len(xs) == len(after.values) == req.steps
    for i, (x, d) in enumerate(zip(xs, after.values)):
        assert torch.equal(d[held], plan.latents[None].expand_as(d)[held]), i
        expected = target + (sig[i + 1] / sig[0]) * (x_init - target)
        err = (x.double() - expected)[held].abs().max()
        assert err < 1e-3 * max(1.0, float(sig[i + 1])), (i, float(err))
    # the unheld latents were free to move: far off that trajectory at the middle step
    free = ~held
    mid = req.steps // 2
    expected = target + (sig[mid + 1] / sig[0]) * (x_init - target)
    assert (xs[mid].double() - expected)[free].abs().mean() > 0.05


def test_keyframe_strength_blends_the_estimate_at_every_step(model, pictures):
    a, b = pictures
    plan = guided.plan_svd_guide(model, Guide().with_keyframe(b[0].permute(1, 2, 0), 2, strength=0.25), a, FRAMES)
    before, after = EveryDenoised(), EveryDenoised()
    run(model, a, request(), plan=None, extra_hooks=[before, plan.hook(), after])
    assert len(before.values) == len(after.values) == 6
    for i, (d0, d1) in enumerate(zip(before.values, after.values)):
        torch.testing.assert_close(d1[0, 2], 0.75 * d0[0, 2] + 0.25 * plan.latents[2], rtol=1e-6, atol=1e-6)
        assert (d1[0, 2] - d0[0, 2]).abs().max() > 1e-3, i  # the blend really moved it, at this step too
        assert torch.equal(d1[0, [0, 1, 3, 4, 5]], d0[0, [0, 1, 3, 4, 5]])


def test_motion_mask_precision_on_the_outputs_beats_the_unguided_clip(model, pictures):
    a, _ = pictures
    mask = left_half_mask()
    plan = guided.plan_svd_guide(model, Guide().with_motion_mask(mask), a, FRAMES, "crop")
    guided_clip = run(model, a, request(), plan).frames
    plain_clip = run(model, a, request()).frames
    got = mmp.motion_mask_precision(guided_clip, mask)
    base = mmp.motion_mask_precision(plain_clip, mask)
    # measured: 0.64 guided vs 0.51 unguided (the tiny random decoder's mid-block attention spreads
    # changes over the whole frame; with trained weights the leak is local)
    assert got.precision > base.precision + 0.1, (got.describe(), base.describe())
    assert got.energy_share > base.energy_share + 0.1
    d = mmp.frame_difference(guided_clip)
    assert d[:, :, 40:].mean() < 0.5 * d[:, :, :32].mean()  # the held columns change far less
    assert got.mask_fraction == pytest.approx(0.5)


def test_motion_mask_without_keyframes_holds_the_conditioning_image_and_keyframes_take_over(model, pictures):
    a, b = pictures
    g = Guide().with_motion_mask(left_half_mask())
    lat_a = guided.encode_latents(model.vae, a, model.vae_scaling_factor)[0]
    lat_b = guided.encode_latents(model.vae, b, model.vae_scaling_factor)[0]
    plan = guided.plan_svd_guide(model, g, a, FRAMES, "crop")
    assert "conditioning image" in plan.info and "static region from" in plan.info
    assert torch.equal(plan.latents[3, :, :, 6], lat_a[:, :, 6])
    # keyframe b at frame 4: frames 3..5 take their still part from b, frames 0..2 from a (frame 2 is a
    # tie: the earlier keyframe wins)
    g2 = Guide().with_keyframe(a[0].permute(1, 2, 0), 0).with_keyframe(b[0].permute(1, 2, 0), 4, 0.5) \
        .with_motion_mask(left_half_mask())
    plan2 = guided.plan_svd_guide(model, g2, a, FRAMES, "crop")
    assert torch.equal(plan2.latents[1, :, :, 6], lat_a[:, :, 6])
    assert torch.equal(plan2.latents[3, :, :, 6], lat_b[:, :, 6])
    assert torch.all(plan2.weight[0] == 1) and torch.all(plan2.weight[4] == 0.5)
    assert torch.all(plan2.weight[3, :, :, 5:] == 0.5) and torch.all(plan2.weight[3, :, :, :5] == 0)
    assert torch.equal(plan2.latents[2, :, :, 6], lat_a[:, :, 6])
    assert "frames 0-2 <- keyframe at frame 0" in plan2.info and "frames 3-5 <- keyframe at frame 4" in plan2.info


# ---------------------------------------------------------------------------------------------
# Keyframes: first and last frames follow the guide pictures
# ---------------------------------------------------------------------------------------------

def test_first_and_last_keyframes_match_within_the_vae_round_trip(model, pictures):
    a, b = pictures
    g = Guide().with_keyframe(a[0].permute(1, 2, 0), 0).with_keyframe(b[0].permute(1, 2, 0), -1)
    plan = guided.plan_svd_guide(model, g, a, FRAMES, "crop")
    lat, rt = roundtrip(model, torch.cat([a, b]))
    pics = torch.cat([a, b]).permute(0, 2, 3, 1)
    rt_error = (rt - pics).abs().mean(dim=(1, 2, 3))

    # frames decoded one at a time: each output keyframe is exactly decode(encode(picture))
    out = run(model, a, request(chunk=1), plan)
    torch.testing.assert_close(out.latents[0, [0, -1]], lat, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.frames[[0, -1]], rt, rtol=0, atol=1e-5)
    err = (out.frames[[0, -1]] - pics).abs().mean(dim=(1, 2, 3))
    assert torch.all(err <= rt_error + 1e-5)
    plain = run(model, a, request(chunk=1))
    assert (plain.frames[[0, -1]] - rt).abs().max() > 0.05  # unguided, they do not match

    # the usual chunked decode: the temporal decoder mixes neighbours, still closer than unguided
    out6 = run(model, a, request(), plan)
    plain6 = run(model, a, request())
    torch.testing.assert_close(out6.latents[0, [0, -1]], lat, rtol=0, atol=1e-6)
    assert (out6.frames[[0, -1]] - rt).abs().mean() < (plain6.frames[[0, -1]] - rt).abs().mean()


def test_keyframe_strength_blends_the_denoised_estimate(model, pictures):
    a, b = pictures
    plan = guided.plan_svd_guide(model, Guide().with_keyframe(b[0].permute(1, 2, 0), 2, strength=0.25), a, FRAMES)
    before, after = LastDenoised(), LastDenoised()
    run(model, a, request(), plan=None, extra_hooks=[before, plan.hook(), after])
    torch.testing.assert_close(after.value[0, 2], 0.75 * before.value[0, 2] + 0.25 * plan.latents[2])
    torch.testing.assert_close(after.value[0, [0, 1, 3, 4, 5]], before.value[0, [0, 1, 3, 4, 5]], rtol=0, atol=0)
    assert "no keyframe at frame 0" in plan.info and "strength 0.25" in plan.info


def test_hook_on_a_subset_of_frames_for_segmented_samplers(model, pictures):
    a, b = pictures
    plan = guided.plan_svd_guide(model, Guide().with_keyframe(b[0].permute(1, 2, 0), -1), a, FRAMES)
    hook = plan.hook(frames=[-1, 4, 5])  # a reference position, then clip frames 4 and 5

    class S:
        denoised = torch.zeros(1, 3, 4, 8, 8)

    out = hook(S)
    assert torch.all(out[0, :2] == 0) and torch.equal(out[0, 2], plan.latents[5])
    with pytest.raises(AnimeVideoInputError, match="planned for"):
        plan.hook()(S)


def test_guide_plan_errors(model, pictures):
    a, _ = pictures
    with pytest.raises(AnimeVideoInputError, match="frame_index"):
        guided.plan_svd_guide(model, Guide().with_keyframe(a[0].permute(1, 2, 0), FRAMES), a, FRAMES)
    faint = Guide().with_motion_mask(torch.full((1, H, W), 0.3))
    with pytest.raises(AnimeVideoInputError, match="reaches 0.5"):
        guided.plan_svd_guide(model, faint, a, FRAMES)
    assert guided.plan_svd_guide(model, None, a, FRAMES) is None
    assert guided.plan_svd_guide(model, Guide(), a, FRAMES) is None


# ---------------------------------------------------------------------------------------------
# The metric on synthetic clips (hand-computed)
# ---------------------------------------------------------------------------------------------

def square_clip(x_positions, size=32, side=4):
    frames = torch.zeros(len(x_positions), size, size, 3)
    for t, x in enumerate(x_positions):
        frames[t, 10:10 + side, x:x + side] = 1.0
    return frames


def test_precision_is_one_inside_zero_outside_and_pooled():
    mask = torch.zeros(32, 32)
    mask[:, :16] = 1
    inside = mmp.motion_mask_precision(square_clip([0, 4, 8]), mask)
    assert inside.precision == 1.0 and inside.per_pair == (1.0, 1.0) and inside.energy_share == 1.0
    outside = mmp.motion_mask_precision(square_clip([20, 24, 28]), mask)
    assert outside.precision == 0.0
    # square crossing: pair 0 (x 8 -> 12) fully inside, pair 1 (12 -> 16): cols 12..15 in, 16..19 out
    mixed = mmp.motion_mask_precision(square_clip([8, 12, 16]), mask)
    assert mixed.per_pair == (1.0, 0.5) and mixed.precision == pytest.approx(24 / 32)
    still = mmp.motion_mask_precision(square_clip([5, 5, 5]), mask)
    assert math.isnan(still.precision) and still.moving_fraction == 0.0
    # a mask of another size is resized; a mask video uses the union of the pair's masks
    small = torch.zeros(8, 8)
    small[:, :4] = 1
    assert mmp.motion_mask_precision(square_clip([0, 4, 8]), small).precision == 1.0
    video_mask = torch.zeros(3, 32, 32)
    video_mask[2, :, :] = 1
    assert mmp.motion_mask_precision(square_clip([20, 24, 28]), video_mask).per_pair == (0.0, 1.0)
    with pytest.raises(AnimeVideoInputError, match="one mask per frame"):
        mmp.motion_mask_precision(square_clip([0, 4, 8]), torch.ones(2, 32, 32))
    with pytest.raises(AnimeVideoInputError, match="at least 2 frames"):
        mmp.motion_mask_precision(square_clip([0]), mask)


def test_flow_variant_rescales_to_a_256_short_side():
    flow = torch.zeros(1, 128, 64, 2)
    flow[0, :, :32, 0] = 0.6  # 0.6 px at 64 short side = 2.4 px at 256: counts as motion
    flow[0, :, 32:, 0] = 0.2  # 0.8 px at 256: below the 1-px threshold
    mag = mmp.flow_magnitude(flow)
    assert mag[0, 0, 0].item() == pytest.approx(2.4) and mag[0, 0, 40].item() == pytest.approx(0.8)
    mask = torch.zeros(128, 64)
    mask[:, :32] = 1
    got = mmp.motion_mask_precision(torch.zeros(2, 128, 64, 3), mask, mmp.FLOW_THRESHOLD_PX, flow=flow)
    assert got.precision == 1.0 and got.method == "flow"
    torch.testing.assert_close(mmp.flow_magnitude(flow.permute(0, 3, 1, 2)), mag)


# ---------------------------------------------------------------------------------------------
# The sampler node with a guide
# ---------------------------------------------------------------------------------------------

SMALL = dict(width=64, height=64, fit="crop", num_frames=3, fps=8.0, motion_bucket_id=127,
             augmentation_level=0.02, steps=2, min_cfg=1.0, max_cfg=2.5, seed=1, decode_chunk_size=3)


@pytest.fixture
def svd_handle(models_env):
    return svd_nodes.AnimeVideoLoadSVD().load("svd_xt.safetensors", "auto")[0]


def test_sampler_node_takes_a_guide_and_reports_where_it_landed(svd_handle):
    first, last = torch.rand(1, 64, 64, 3), torch.rand(1, 64, 64, 3)
    (g,) = guide_nodes.AnimeVideoKeyframe().add(first, 0, 1.0)
    (g,) = guide_nodes.AnimeVideoKeyframe().add(last, -1, 1.0, guide=g)
    frames, latent, fps, info = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, first, **SMALL, guide=g)
    assert frames.shape == (3, 64, 64, 3) and fps == 8.0
    assert "frame_index 0 -> frame 0" in info and "frame_index -1 -> frame 2 (frame_index -1 counts from the end)" in info
    model = svd_handle.model
    lat = guided.encode_latents(model.vae, torch.cat([first, last]).permute(0, 3, 1, 2), model.vae_scaling_factor)
    torch.testing.assert_close(latent["samples"][[0, 2]], lat / model.vae_scaling_factor, rtol=0, atol=1e-5)
    assert svd_nodes.AnimeVideoSVDSampler.RETURN_NAMES[-1] == "info"

    _, _, _, plain_info = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, first, **SMALL)
    assert "no guide" in plain_info
    _, _, _, other = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, torch.rand(1, 64, 64, 3), **SMALL, guide=g)
    assert "differs from the frame-0 keyframe" in other


def test_sampler_node_motion_mask_from_a_larger_mask_and_bad_index(svd_handle):
    picture = torch.rand(1, 96, 128, 3)
    mask = torch.zeros(1, 96, 128)
    mask[:, :, :40] = 1  # after the centre crop to 96x96 (cols 16..111), cols 0..23 of 96 -> 0..15 of 64
    (g,) = guide_nodes.AnimeVideoMotionMask().add(mask)
    frames, latent, _, info = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, picture, **SMALL, guide=g)
    assert "fitted from 128x96 (crop)" in info
    model = svd_handle.model
    from animevideo.pipelines.image_ops import fit_image

    fitted = fit_image(picture.permute(0, 3, 1, 2), 64, 64, "crop")
    still = guided.encode_latents(model.vae, fitted, model.vae_scaling_factor)[0] / model.vae_scaling_factor
    # latent cols 0..1 may move (pixel cols 0..15), dilated to 0..2; cols 3..7 held on every frame
    torch.testing.assert_close(latent["samples"][:, :, :, 3:], still[None, :, :, 3:].expand(3, -1, -1, -1),
                               rtol=0, atol=1e-5)
    assert (latent["samples"][1:, :, :, :2] - still[None, :, :, :2]).abs().mean() > 0.01

    (bad,) = guide_nodes.AnimeVideoKeyframe().add(picture, 3, 1.0)
    with pytest.raises(AnimeVideoInputError, match="frame_index: 3 is outside the clip of 3 frames"):
        svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, picture, **SMALL, guide=bad)


def load_image_like_comfyui(path):
    """What core's LoadImage gives for a PNG: IMAGE = RGB, MASK = 1 - alpha (the mask editor's paint)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        rgb = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)[None]
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0 if "A" in im.getbands() else None
    mask = torch.from_numpy(1.0 - alpha)[None] if alpha is not None else torch.zeros(1, *rgb.shape[1:3])
    return rgb, mask


def test_shipped_masked_example_drives_localized_animation(svd_handle):
    import os

    from pack_paths import ROOT

    image, mask = load_image_like_comfyui(os.path.join(ROOT, "example_inputs", "animevideo_example_masked.png"))
    assert image.shape == (1, 576, 1024, 3) and mask.shape == (1, 576, 1024)
    assert 0.1 < float(mask.mean()) < 0.3 and float(mask[0, 400, 330]) == 1.0 and float(mask[0, 50, 900]) == 0.0
    (g,) = guide_nodes.AnimeVideoMotionMask().add(mask)
    settings = {**SMALL, "width": 128, "height": 72, "num_frames": 4, "steps": 3, "decode_chunk_size": 4}
    frames, latent, _, info = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, image, **settings, guide=g)
    plain, _, _, _ = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, image, **settings)
    assert frames.shape == (4, 72, 128, 3) and "fitted from 1024x576 (crop)" in info
    fitted_mask = Guide().with_motion_mask(mask).mask_video(1, 72, 128, "crop")
    got = mmp.motion_mask_precision(frames, fitted_mask)
    base = mmp.motion_mask_precision(plain, fitted_mask)
    assert got.precision > base.precision, (got.describe(), base.describe())
    # the still part's latents are the picture's on every frame
    plan_still = guided.latent_motion_mask(fitted_mask, 8)[0] == 0
    first = latent["samples"][0][:, plan_still]
    assert all(torch.allclose(latent["samples"][f][:, plan_still], first, atol=1e-5) for f in range(4))

"""AniSora V1 (CogVideoX-5B-I2V layout): loading, guide layout, DynamicCFG, and parity with diffusers'
``CogVideoXImageToVideoPipeline`` on tiny random weights.

Parity scope: diffusers' pipeline can only put one image at latent slot 0 (zeros elsewhere). For that case our
path must equal it (same weights, prompt embeddings and generator: the generator draws the image-latent sample,
the initial noise and the DPM SDE noise in the same order). Other guide positions have no diffusers
counterpart; they are checked against hand-computed layouts (slot (i-1)//4+1, a 1-frame encode each).
"""
import math
import os

import pytest
import torch

from animevideo.pipelines.anisora import cogvideox as cv
from animevideo.pipelines.backbones.cogvideox import detect as cv_detect
from animevideo.pipelines.backbones.cogvideox import keys as cv_keys
from animevideo.pipelines.backbones.cogvideox import loader as cv_loader
from animevideo.pipelines.backbones.cogvideox import tiny
from animevideo.pipelines.anisora.model import AniSoraHooks, AniSoraRequest, TextConditioning
from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.guides import Guide

SIZE = 64  # the tiny model's trained size (8x8 latents)
FRAMES = 9  # its trained frame count (3 latent frames)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, one_thread):
    d = tmp_path_factory.mktemp("cogv")
    assert tiny.write_tiny_cogvideox(str(d), 0) == list(tiny.TINY_FILES)
    return os.path.join(str(d), tiny.FOLDER)


@pytest.fixture(scope="module")
def model(folder):
    return cv.load_cogvideox(folder, None, torch.float32)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(SIZE, SIZE, 3, generator=g)
    pos = torch.randn(1, 226, tiny.TINY_TRANSFORMER["text_embed_dim"], generator=g)
    neg = torch.randn(1, 226, tiny.TINY_TRANSFORMER["text_embed_dim"], generator=g)
    return img, pos, neg


def _request(**kw):
    base = dict(width=SIZE, height=SIZE, num_frames=FRAMES, steps=4, cfg=6.0, seed=3, sampler="dpm",
                dynamic_cfg=True, dynamic_cfg_timestep_quirk=True)
    base.update(kw)
    return AniSoraRequest(**base)


def _diffusers(model, img, pos, neg, scheduler, **kw):
    from diffusers import CogVideoXImageToVideoPipeline

    pipe = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=model.vae,
                                         transformer=model.transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    args = dict(image=img.permute(2, 0, 1)[None], prompt_embeds=pos, height=SIZE, width=SIZE, num_frames=FRAMES,
                num_inference_steps=4, generator=torch.Generator().manual_seed(3), output_type="pt")
    if neg is not None:
        args["negative_prompt_embeds"] = neg
    args.update(kw)
    return pipe(**args).frames[0].permute(0, 2, 3, 1)  # [F,H,W,3]


# ---------------------------------------------------------------------------------------------
# parity with diffusers
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["dpm-dynamic-quirk", "dpm-constant-cfg", "ddim-dynamic-quirk", "dpm-no-cfg"])
def test_first_frame_equals_diffusers_image_to_video_pipeline(model, inputs, case):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    img, pos, neg = inputs
    sched_cfg = {k: v for k, v in model.extras["scheduler_config"].items() if not k.startswith("_")}
    ddim = case.startswith("ddim")
    scheduler = (CogVideoXDDIMScheduler if ddim else CogVideoXDPMScheduler).from_config(sched_cfg)
    dynamic = "dynamic" in case
    cfg = 1.0 if case == "dpm-no-cfg" else 6.0
    ref = _diffusers(model, img, pos, None if cfg <= 1 else neg, scheduler, guidance_scale=cfg, use_dynamic_cfg=dynamic)
    res = cv.generate(model, Guide().with_keyframe(img, 0),
                      TextConditioning(pos, None if cfg <= 1 else neg),
                      _request(cfg=cfg, dynamic_cfg=dynamic, sampler="ddim" if ddim else "dpm"))
    assert res.frames.shape == (FRAMES, SIZE, SIZE, 3) and res.frames.dtype == torch.float32
    assert ref.std() > 0.05  # a real video, not a constant
    assert (res.frames - ref).abs().max() <= 1e-4
    assert "latent slot 0" in res.info


def test_cfg_changes_the_result_and_quirk_option_matters(model, inputs):
    img, pos, neg = inputs
    guide = Guide().with_keyframe(img, 0)
    a = cv.generate(model, guide, TextConditioning(pos, neg), _request(dynamic_cfg_timestep_quirk=True)).frames
    b = cv.generate(model, guide, TextConditioning(pos, neg), _request(dynamic_cfg_timestep_quirk=False)).frames
    c = cv.generate(model, guide, TextConditioning(pos, neg), _request(dynamic_cfg_timestep_quirk=False)).frames
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(b, c)  # deterministic for a seed


# ---------------------------------------------------------------------------------------------
# DynamicCFG
# ---------------------------------------------------------------------------------------------

def test_dynamic_cfg_formula_both_modes():
    N, s = 50, 6.0
    trailing = [round(1000 - i * 1000 / N) - 1 for i in range(N)]  # 999, 979, ... 19
    for i, t in enumerate(trailing):
        x_quirk = (N - t) / N
        want = 1 + s * (1 - math.cos(math.pi * x_quirk ** 5)) / 2
        assert cv.dynamic_cfg_scale(s, i, t, N, quirk=True) == pytest.approx(want, abs=1e-12)
        assert 1.0 <= cv.dynamic_cfg_scale(s, i, t, N, quirk=True) <= 1 + s
    ramp = [cv.dynamic_cfg_scale(s, i, trailing[i], N, quirk=False) for i in range(N)]
    assert ramp[0] == 1.0 and all(b >= a for a, b in zip(ramp, ramp[1:])) and ramp[-1] > 6.0
    assert ramp[25] == pytest.approx(1 + s * (1 - math.cos(math.pi * 0.5 ** 5)) / 2)


# ---------------------------------------------------------------------------------------------
# guide layout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_frames, positions, slots", [
    (9, [0], [0]),
    (9, [0, -1], [0, 2]),
    (9, [5], [2]),
    (17, [0, 8, 16], [0, 2, 4]),
    (49, [0, 24, 48], [0, 6, 12]),  # V1's three-image layout: 0, 1 + (13-3)//2, 12
    (17, [1, 2, 4], [1]),  # one slot: the last frame wins
])
def test_guide_latents_layout(model, num_frames, positions, slots):
    H = W = 16
    gen = torch.Generator().manual_seed(0)
    imgs = [torch.rand(H, W, 3, generator=gen) for _ in positions]
    guide = Guide()
    for im, p in zip(imgs, positions):
        guide = guide.with_keyframe(im, p, strength=0.5 if p == positions[-1] and len(positions) > 1 else 1.0)
    lat, lines = cv.build_guide_latents(model, guide, num_frames, H, W, torch.Generator().manual_seed(7))
    T = (num_frames - 1) // 4 + 1
    assert lat.shape == (1, T, 16, 2, 2)
    # hand-computed: one 1-frame encode per kept keyframe, in frame order, sampled with the same generator
    resolved = sorted(((p + num_frames if p < 0 else p), im, p) for im, p in zip(imgs, positions))
    kept = {}
    for i, im, p in resolved:
        kept[0 if i == 0 else (i - 1) // 4 + 1] = (i, im, p)
    assert sorted(kept) == slots
    g = torch.Generator().manual_seed(7)
    want = torch.zeros_like(lat)
    for k in sorted(kept):
        i, im, p = kept[k]
        x = (im.permute(2, 0, 1)[None, :, None] * 2 - 1)
        strength = 0.5 if p == positions[-1] and len(positions) > 1 else 1.0
        want[:, k] = model.vae.encode(x).latent_dist.sample(g)[:, :, 0] * 0.7 * strength
    assert torch.allclose(lat, want, atol=1e-6)
    for k in range(T):
        if k not in slots:
            assert lat[:, k].abs().max() == 0
    for k in slots:
        assert any(f"latent slot {k}" in line for line in lines)
    if len(positions) > len(slots):
        assert any("dropped" in line for line in lines)


def test_keyframe_outside_the_clip_is_a_clear_error(model, inputs):
    img, pos, neg = inputs
    guide = Guide().with_keyframe(img, 9)
    with pytest.raises(AnimeVideoInputError, match="frame_index.*9.*0..8"):
        cv.generate(model, guide, TextConditioning(pos, neg), _request(num_frames=9))
    with pytest.raises(AnimeVideoInputError, match="frame_index"):
        cv.build_guide_latents(model, Guide().with_keyframe(img, -10), 9, 16, 16)


def test_num_frames_and_size_snapping():
    assert cv.snap_num_frames(49) == (49, None) and cv.snap_num_frames(9) == (9, None)
    assert cv.snap_num_frames(1) == (1, None)
    assert cv.snap_num_frames(48)[0] == 49 and "snapped to 49" in cv.snap_num_frames(48)[1]
    assert cv.snap_num_frames(45)[0] == 49  # a tie goes up
    assert cv.snap_num_frames(44)[0] == 41
    assert cv.snap_num_frames(5)[0] == 9  # 5 frames = 2 latent frames: the VAE would decode 8
    assert cv.snap_num_frames(3)[0] == 1
    with pytest.raises(AnimeVideoInputError, match="num_frames"):
        cv.snap_num_frames(0)
    assert cv.snap_size(720, "height") == (720, None)
    assert cv.snap_size(730, "width")[0] == 736
    assert [cv.latent_slot(i) for i in range(10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]


def test_snapped_frame_count_reported(model, inputs):
    img, pos, _ = inputs
    res = cv.generate(model, Guide().with_keyframe(img, 0), TextConditioning(pos), _request(num_frames=8, cfg=1.0, steps=2))
    assert res.frames.shape[0] == 9 and "snapped to 9" in res.info


# ---------------------------------------------------------------------------------------------
# motion mask (latent-blend fallback)
# ---------------------------------------------------------------------------------------------

def test_motion_mask_holds_the_static_region_to_the_keyframe_latent(model, inputs):
    img, pos, neg = inputs
    mask = torch.zeros(SIZE, SIZE)
    mask[:, 32:] = 1.0  # the right half may move
    guide = Guide().with_keyframe(img, 0).with_motion_mask(mask)
    z, w, line = cv.build_static_blend(model, guide, FRAMES, SIZE, SIZE)
    assert z.shape == (1, 3, 16, 8, 8) and w.shape == (1, 3, 1, 8, 8)
    # static = left half (latent columns 0-3), eroded by one latent pixel at the mask edge: columns 0-2
    assert torch.equal(w[0, :, 0, :, :3], torch.ones(3, 8, 3)) and w[..., 3:].abs().max() == 0
    assert "latent-blend" in line
    captured = {}
    orig = model.vae.decode

    def spy(latents, *a, **k):
        captured["z"] = latents
        return orig(latents, *a, **k)

    model.vae.decode = spy
    try:
        res = cv.generate(model, guide, TextConditioning(pos, neg), _request(steps=3))
    finally:
        del model.vae.decode
    final = captured["z"].permute(0, 2, 1, 3, 4) * 0.7  # [1,T,16,h,w] scaled latents
    assert torch.allclose(final[..., :3], z[..., :3], atol=1e-5)  # static region: the clean keyframe latent
    assert (final[..., 4:] - z[..., 4:]).abs().max() > 1e-2  # the moving region is generated
    assert "motion mask" in res.info


def test_motion_mask_without_keyframe_is_an_error(model):
    guide = Guide().with_motion_mask(torch.ones(16, 16))
    with pytest.raises(AnimeVideoInputError, match="keyframe"):
        cv.build_static_blend(model, guide, 9, 16, 16)


# ---------------------------------------------------------------------------------------------
# text, hooks, positions
# ---------------------------------------------------------------------------------------------

def test_text_padding_truncation_and_errors(model, inputs):
    img, pos, _ = inputs
    short, note = cv.fit_text(torch.ones(1, 5, 16), "positive", 16)
    assert short.shape == (1, 226, 16) and short[:, 5:].abs().max() == 0 and "padded" in note
    long, note = cv.fit_text(torch.ones(1, 300, 16), "positive", 16)
    assert long.shape == (1, 226, 16) and "truncated" in note
    with pytest.raises(AnimeVideoInputError, match="positive.*4096|T5"):
        cv.fit_text(torch.ones(1, 77, 768), "positive", 4096)
    with pytest.raises(AnimeVideoInputError, match="negative"):
        cv.generate(model, Guide().with_keyframe(img, 0), TextConditioning(pos, None), _request(cfg=6.0))


def test_progress_hook_and_interrupt(model, inputs):
    img, pos, neg = inputs
    seen = []
    cv.generate(model, Guide().with_keyframe(img, 0), TextConditioning(pos, neg), _request(steps=3),
                AniSoraHooks(on_step=lambda i, n: seen.append((i, n))))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    class Stop(Exception):
        pass

    def stop(i, n):
        raise Stop()

    with pytest.raises(Stop):
        cv.generate(model, Guide().with_keyframe(img, 0), TextConditioning(pos, neg), _request(steps=3), AniSoraHooks(stop))
    assert model.transformer.patch_embed.pos_embedding.shape[1] == 226 + 48  # restored


def test_other_frame_counts_use_the_first_rows_of_the_learned_table(model, inputs):
    img, pos, _ = inputs
    table = model.transformer.patch_embed.pos_embedding.clone()
    res = cv.generate(model, Guide().with_keyframe(img, 0), TextConditioning(pos), _request(num_frames=1, cfg=1.0, steps=2))
    assert res.frames.shape == (1, SIZE, SIZE, 3)
    assert torch.equal(model.transformer.patch_embed.pos_embedding, table)
    small = cv.generate(model, Guide().with_keyframe(img, 0), TextConditioning(pos),
                        _request(width=32, height=32, cfg=1.0, steps=2))
    assert small.frames.shape == (FRAMES, 32, 32, 3) and "trained at 64x64" in small.info
    with pytest.raises(AnimeVideoInputError, match="learned positions"):
        cv.generate(model, Guide(), TextConditioning(pos), _request(num_frames=17, cfg=1.0, steps=1))


def test_no_keyframe_is_text_to_video(model, inputs):
    _, pos, _ = inputs
    res = cv.generate(model, Guide(), TextConditioning(pos), _request(cfg=1.0, steps=2, sampler="unipc"))
    assert res.frames.shape == (FRAMES, SIZE, SIZE, 3) and "no keyframe" in res.info
    assert "CogVideoXDPMScheduler" in res.info  # Wan's sampler names fall back to V1's own sampler


# ---------------------------------------------------------------------------------------------
# loading and detection
# ---------------------------------------------------------------------------------------------

def test_detection(folder, model):
    assert cv_detect.is_cogvideox_folder(folder) and cv_detect.is_cogvideox_folder(os.path.join(folder, "transformer"))
    assert not cv_detect.is_cogvideox_folder(os.path.join(folder, "vae")) and not cv_detect.is_cogvideox_folder("/nonexistent")
    keys = list(model.transformer.state_dict())
    assert cv_detect.is_cogvideox_state_dict(keys) and cv_detect.cogvideox_layout(keys) == "diffusers"
    sat = cv_keys.diffusers_to_sat(model.transformer.state_dict())
    assert cv_detect.is_cogvideox_state_dict(sat) and cv_detect.cogvideox_layout(sat) == "sat"
    wan = ["patch_embedding.weight", "blocks.0.self_attn.q.weight", "head.modulation", "img_emb.proj.0.weight"]
    assert not cv_detect.is_cogvideox_state_dict(wan)
    assert model.backbone == "cogvideox" and model.extras["vae_scaling_factor"] == 0.7


def _sd_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_single_files_diffusers_and_sat_layouts(folder, model, tmp_path):
    from diffusers import AutoencoderKLCogVideoX
    from safetensors.torch import save_file

    tr = {k: v.contiguous() for k, v in model.transformer.state_dict().items()}
    save_file(tr, str(tmp_path / "anisora_v1.safetensors"))
    import argparse

    sat = {**cv_keys.diffusers_to_sat(tr), "first_stage_model.encoder.conv_in.weight": torch.zeros(1)}
    torch.save({"module": sat, "args": argparse.Namespace(mode="inference"), "global_steps": 1},
               str(tmp_path / "mp_rank_00_model_states.pt"))  # DeepSpeed's layout
    assert cv_detect.is_cogvideox_file(str(tmp_path / "mp_rank_00_model_states.pt"))
    assert cv_detect.is_cogvideox_file(str(tmp_path / "anisora_v1.safetensors"))
    # the single-file VAE path assumes the real 32 norm groups, so give it a 32-group VAE (no forward needed)
    vae32 = AutoencoderKLCogVideoX(block_out_channels=(32, 32, 32, 32), layers_per_block=1, scaling_factor=0.7)
    save_file({k: v.contiguous() for k, v in vae32.state_dict().items()}, str(tmp_path / "vae.safetensors"))
    for name, layout in (("anisora_v1.safetensors", "diffusers-file"), ("mp_rank_00_model_states.pt", "sat-file")):
        m = cv.load_cogvideox(str(tmp_path / name), str(tmp_path / "vae.safetensors"), torch.float32)
        assert m.extras["layout"] == layout and m.backbone == "cogvideox"
        assert _sd_equal(m.transformer, model.transformer)
        for k, v in tiny.TINY_TRANSFORMER.items():
            assert m.transformer.config[k] == v, k
        assert _sd_equal(m.vae, vae32) and m.vae.config.scaling_factor == 0.7
    sat_vae = cv_keys.diffusers_vae_to_sat(vae32.state_dict())
    assert cv_detect.is_sat_vae_state_dict(sat_vae) and "decoder.up.3.block.0.conv1.conv.weight" in sat_vae
    assert "encoder.down.0.downsample.conv.weight" in sat_vae and "encoder.mid.block_1.conv1.conv.weight" in sat_vae
    torch.save({"state_dict": {**sat_vae, "loss.logvar": torch.zeros(1)}}, str(tmp_path / "3d-vae.pt"))
    m = cv.load_cogvideox(str(tmp_path / "anisora_v1.safetensors"), str(tmp_path / "3d-vae.pt"), torch.float32)
    assert _sd_equal(m.vae, vae32)
    m = cv.load_cogvideox(str(tmp_path / "anisora_v1.safetensors"), os.path.join(folder, "vae"), torch.float32)
    assert _sd_equal(m.vae, model.vae)
    with pytest.raises(AnimeVideoModelError, match="vae"):
        cv.load_cogvideox(str(tmp_path / "anisora_v1.safetensors"), None, torch.float32)


def test_sat_rules_split_qkv_and_adaln_as_diffusers_script_does():
    d, te = 4, 2
    qkv = torch.arange(3 * d * d, dtype=torch.float32).view(3 * d, d)
    ada = torch.arange(12 * d * te, dtype=torch.float32).view(12 * d, te)
    sat = {
        "model.diffusion_model.transformer.layers.0.attention.query_key_value.weight": qkv,
        "model.diffusion_model.mixins.adaln_layer.adaLN_modulations.0.1.weight": ada,
        "model.diffusion_model.mixins.adaln_layer.query_layernorm_list.0.weight": torch.ones(2),
        "model.diffusion_model.mixins.adaln_layer.key_layernorm_list.0.bias": torch.zeros(2),
        "model.diffusion_model.transformer.layers.0.post_attention_layernorm.weight": torch.ones(d),
        "model.diffusion_model.mixins.pos_embed.pos_embedding": torch.zeros(1, 3, d),
        "model.diffusion_model.mixins.final_layer.adaLN_modulation.1.weight": torch.ones(2 * d, te),
        "model.diffusion_model.mixins.pos_embed.freqs_cos": torch.zeros(1),
    }
    out = cv_keys.sat_to_diffusers(sat)
    assert torch.equal(out["transformer_blocks.0.attn1.to_q.weight"], qkv[:d])
    assert torch.equal(out["transformer_blocks.0.attn1.to_k.weight"], qkv[d:2 * d])
    assert torch.equal(out["transformer_blocks.0.attn1.to_v.weight"], qkv[2 * d:])
    rows = ada.view(12, d, te)
    assert torch.equal(out["transformer_blocks.0.norm1.linear.weight"], torch.cat([rows[j] for j in (0, 1, 2, 6, 7, 8)]))
    assert torch.equal(out["transformer_blocks.0.norm2.linear.weight"], torch.cat([rows[j] for j in (3, 4, 5, 9, 10, 11)]))
    assert "transformer_blocks.0.attn1.norm_q.weight" in out and "transformer_blocks.0.attn1.norm_k.bias" in out
    assert "transformer_blocks.0.norm2.norm.weight" in out and "patch_embed.pos_embedding" in out
    assert "norm_out.linear.weight" in out and not any("freqs" in k for k in out)
    with pytest.raises(AnimeVideoModelError, match="does not know"):
        cv_keys.sat_to_diffusers({"model.diffusion_model.mixins.something_new.weight": torch.zeros(1)})


def test_config_from_shapes_recovers_the_real_5b_i2v_architecture():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    real = dict(num_attention_heads=48, attention_head_dim=64, in_channels=32, num_layers=42, time_embed_dim=512,
                text_embed_dim=4096, use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True,
                sample_height=60, sample_width=90, sample_frames=49)
    with torch.device("meta"):
        tr = CogVideoXTransformer3DModel(**real)
        vae = AutoencoderKLCogVideoX()
    cfg = cv_loader.transformer_config_from_shapes({k: tuple(v.shape) for k, v in tr.state_dict().items()})
    for k, v in real.items():
        assert cfg[k] == v, k
    vcfg = cv_loader.vae_config_from_shapes({k: tuple(v.shape) for k, v in vae.state_dict().items()})
    assert vcfg["block_out_channels"] == (128, 256, 256, 512) and vcfg["layers_per_block"] == 3
    assert vcfg["latent_channels"] == 16 and vcfg["scaling_factor"] == 0.7
    with torch.device("meta"):
        t2v = CogVideoXTransformer3DModel(num_layers=1, in_channels=16)
    with pytest.raises(AnimeVideoModelError, match="32"):
        cv_loader.transformer_config_from_shapes({k: tuple(v.shape) for k, v in t2v.state_dict().items()})


def test_not_a_cogvideox_file_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, str(tmp_path / "wan.safetensors"))
    with pytest.raises(AnimeVideoModelError, match="not a CogVideoX"):
        cv.load_cogvideox(str(tmp_path / "wan.safetensors"), None, torch.float32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnimeVideoModelError, match="not a diffusers CogVideoX folder"):
        cv.load_cogvideox(str(tmp_path / "empty"), None, torch.float32)


def test_pickles_with_other_python_objects_are_refused(tmp_path):
    import datetime

    torch.save({"module": {"x": torch.zeros(1)}, "when": datetime.date(2025, 1, 1)}, str(tmp_path / "bad.pt"))
    with pytest.raises(AnimeVideoModelError, match="Python objects"):
        cv.load_cogvideox(str(tmp_path / "bad.pt"), None, torch.float32)


def test_text_to_video_folder_is_refused_before_loading(tmp_path):
    import json

    (tmp_path / "t2v" / "transformer").mkdir(parents=True)
    cfg = {"_class_name": "CogVideoXTransformer3DModel", "in_channels": 16, "num_layers": 42}
    (tmp_path / "t2v" / "transformer" / "config.json").write_text(json.dumps(cfg))
    assert cv_detect.is_cogvideox_folder(str(tmp_path / "t2v"))
    with pytest.raises(AnimeVideoModelError, match="32 input"):
        cv.load_cogvideox(str(tmp_path / "t2v"), None, torch.float32)


def test_fit_mode_tiling_and_devices(model, inputs):
    from animevideo.pipelines.guides import fit_frame

    _, pos, _ = inputs
    wide = torch.rand(16, 40, 3, generator=torch.Generator().manual_seed(5))
    guide = Guide().with_keyframe(wide, 0)
    for fit in (None, "crop"):
        lat, _ = cv.build_guide_latents(model, guide, 9, 16, 16, torch.Generator().manual_seed(2), fit)
        x = fit_frame(wide, 16, 16, fit).permute(2, 0, 1)[None, :, None] * 2 - 1
        want = model.vae.encode(x).latent_dist.sample(torch.Generator().manual_seed(2))[:, :, 0] * 0.7
        assert torch.allclose(lat[:, 0], want, atol=1e-6)
    req = _request(cfg=1.0, steps=1, fit="crop", vae_tiling=True)
    hooks = AniSoraHooks(device=torch.device("cpu"), offload_device=torch.device("cpu"))
    res = cv.generate(model, guide, TextConditioning(pos), req, hooks)
    assert res.frames.shape == (FRAMES, SIZE, SIZE, 3) and model.vae.use_tiling
    cv.set_vae_tiling(model.vae, False)
    assert not model.vae.use_tiling


def test_motion_mask_resets_the_static_region_after_every_step(model, inputs):
    """The V1 latent blend acts after EVERY step: the latents the transformer sees at step i >= 1 hold, in the
    static region, the keyframe latent noised to the previous step's timestep,
    sqrt(a) z + sqrt(1 - a) eps (a = alphas_cumprod[t_{i-1} - 1000/steps], eps drawn from seed + 1), written out
    here from the scheduler's table. A blend made only at the end would leave the intermediate inputs free."""
    img, pos, neg = inputs
    mask = torch.zeros(SIZE, SIZE)
    mask[:, 32:] = 1.0
    guide = Guide().with_keyframe(img, 0).with_motion_mask(mask)
    z, w, _ = cv.build_static_blend(model, guide, FRAMES, SIZE, SIZE)
    steps = 4
    req = _request(steps=steps)
    seen = []
    hook = model.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append((kw["hidden_states"][:1, :, :16].clone(), kw["timestep"][0].item())),
        with_kwargs=True)
    try:
        cv.generate(model, guide, TextConditioning(pos, neg), req)
    finally:
        hook.remove()
    assert len(seen) == steps
    scheduler, _ = cv.make_scheduler(model, req.sampler)
    alphas = scheduler.alphas_cumprod.double()
    eps = torch.randn(z.shape, generator=torch.Generator("cpu").manual_seed(req.seed + 1)).double()
    static = (w == 1).expand_as(z)
    assert static.any() and not static.all()
    for i in range(1, steps):
        prev = int(seen[i - 1][1]) - scheduler.config.num_train_timesteps // steps
        a = alphas[prev]
        want = a.sqrt() * z.double() + (1 - a).sqrt() * eps
        x = seen[i][0].double()
        assert (x - want)[static].abs().max() < 1e-5, i
        assert (x - want)[~static].abs().max() > 1e-2, i  # the moving region is the sampler's own

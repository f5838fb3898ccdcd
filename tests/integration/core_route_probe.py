"""Run inside ComfyUI's Python (COMFYUI_PYTHON): core's own Wan MODEL and VAE, loaded by core from the tiny
files, against our own path. Prints one JSON object. Used by test_core_route.py; also runnable by hand:

    $COMFYUI_PYTHON tests/integration/core_route_probe.py COMFYUI_DIR PACK_ROOT MODELS_DIR SCRATCH_DIR

* ``y``: for each guide case, the ``y`` core's ``WAN21.concat_cond`` builds from the conditioning of
  AnimeVideoAniSoraWanConditioning, and our own path's packing (``cat(Φ4 mask, normalised guide latent)``) of
  the same guide with the same encoder (core's VAE), compared bit for bit.
* ``vae``: core's WanVAE vs diffusers' AutoencoderKLWan (our own path) on the same tiny weights and guide video.
* ``sampling``: the same noise, condition and prompt through core's sampler (euler on our sigma grid, and
  KSampler's uni_pc_bh2 / simple after ModelSamplingSD3 shift 5) and through our own sampler (euler, unipc).
"""
import json
import os
import sys

from probes import boot_comfy_with_pack  # this folder is the script's sys.path[0]

def main(comfy_dir, pack_root, models_dir, scratch):
    boot_comfy_with_pack(comfy_dir, pack_root, scratch)
    import torch
    import comfy.sample
    import comfy.samplers
    import comfy.sd
    import comfy.utils

    from AnimeVideo.nodes.anisora_core import AnimeVideoAniSoraWanConditioning
    from AnimeVideo.pipelines.anisora import core_route, flow_sampler, loader, packing, wan
    from AnimeVideo.pipelines.anisora.model import AniSoraHooks, AniSoraRequest, TextConditioning
    from AnimeVideo.pipelines.anisora.text import MAX_TEXT_TOKENS, pad_prompt_embeds
    from AnimeVideo.pipelines.guides import Guide

    tpath = os.path.join(models_dir, "diffusion_models", "anisora_v3_i2v_14b.safetensors")
    vpath = os.path.join(models_dir, "vae", "wan_2.1_vae.safetensors")
    core_model = comfy.sd.load_diffusion_model(tpath)
    core_vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vpath))
    ours = loader.load_anisora(tpath, vpath, "auto", "cpu")
    mean, std = packing.latents_mean_std(ours.vae, "cpu", torch.float32)

    H, W, F = 64, 96, 17
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(H, W, 3, generator=g) for _ in range(3)]
    spatial = torch.zeros(H, W)
    spatial[16:48, 24:72] = 1.0
    temporal = torch.zeros(F, H, W)
    for f in range(F):
        temporal[f, :, 4 * f: 4 * f + 24] = 1.0
    cases = {
        "first": Guide().with_keyframe(imgs[0], 0),
        "first_last": Guide().with_keyframe(imgs[0], 0).with_keyframe(imgs[1], -1),
        "first_middle_last": Guide().with_keyframe(imgs[0], 0).with_keyframe(imgs[2], 8).with_keyframe(imgs[1], -1),
        "last_only": Guide().with_keyframe(imgs[1], -1),
        "off_grid_middle": Guide().with_keyframe(imgs[0], 0).with_keyframe(imgs[2], 6),
        "anymask_spatial": Guide().with_keyframe(imgs[0], 0).with_motion_mask(spatial),
        "anymask_temporal": Guide().with_keyframe(imgs[0], 0).with_motion_mask(temporal),
    }
    torch.manual_seed(1)
    pos = [[torch.randn(1, 7, 4096, generator=g), {"pooled_output": None}]]
    neg = [[torch.randn(1, 5, 4096, generator=g), {"pooled_output": None}]]
    node = AnimeVideoAniSoraWanConditioning()
    out = {"y": {}}
    dev = torch.device("cpu")
    for name, guide in cases.items():
        p, n, latent, info = node.condition(pos, neg, core_vae, W, H, F, 2, guide)
        noise = torch.randn(latent["samples"].shape, generator=g)
        y_core = core_model.model.concat_cond(noise=noise, device=dev, **p[0][1])
        y_neg = core_model.model.concat_cond(noise=noise, device=dev, **n[0][1])
        cond = packing.build_wan_condition(guide, F, H, W)
        raw = core_vae.encode(packing.guide_pixels(cond.video))
        y_ours = core_route.own_path_y(cond, raw, mean, std).expand(2, -1, -1, -1, -1)
        out["y"][name] = {"shape": list(y_core.shape), "equal": bool(torch.equal(y_core, y_ours)),
                          "equal_negative": bool(torch.equal(y_neg, y_ours)),
                          "max_abs": float((y_core - y_ours).abs().max().detach()),
                          "mask_equal": bool(torch.equal(y_core[:, :4], y_ours[:, :4])),
                          "given_mask_share": float(cond.mask.mean())}

    # core's VAE vs our own path's (diffusers) VAE: same weights, same guide video.
    cond = packing.build_wan_condition(cases["first_last"], F, H, W)
    ours_lat = packing.encode_guide(ours.vae, cond.video)
    core_lat = packing.normalize_latent(core_vae.encode(packing.guide_pixels(cond.video)).float(), mean, std)
    out["vae"] = {"max_abs": float((ours_lat - core_lat).abs().max()), "scale": float(ours_lat.abs().max())}

    # End to end: one condition (core's y), one noise, one prompt (padded to 512 rows as core's UMT5 gives).
    guide = cases["first_last"]
    image_tokens = torch.randn(1, 257, 1280, generator=g)

    class ClipOut:
        penultimate_hidden_states = image_tokens

    pos512 = [[pad_prompt_embeds(pos[0][0], MAX_TEXT_TOKENS), {"pooled_output": None}]]
    neg512 = [[pad_prompt_embeds(neg[0][0], MAX_TEXT_TOKENS), {"pooled_output": None}]]
    p, n, latent, info = node.condition(pos512, neg512, core_vae, W, H, F, 1, guide, ClipOut())
    y = core_model.model.concat_cond(noise=latent["samples"], device=dev, **p[0][1])
    noise = wan.initial_noise(latent["samples"].shape, 7)
    text = TextConditioning(pos512[0][0], neg512[0][0], image_tokens)
    from AnimeVideo.nodes.comfy_bridge import IN_COMFYUI  # noqa: F401  (the pack saw ComfyUI)
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    shifted = ModelSamplingSD3().patch(core_model, 5.0)[0]
    out["sampling"] = {}
    for steps, cfg in ((4, 1.0), (4, 3.0)):
        req = AniSoraRequest(width=W, height=H, num_frames=F, steps=steps, cfg=cfg, shift=5.0, seed=7,
                             sampler="euler")
        own_euler = wan.sample_latents(ours, y, text, req, AniSoraHooks(), noise=noise.clone())
        sched = flow_sampler.make_scheduler("euler", 5.0)
        sched.set_timesteps(steps)
        sigmas = sched.sigmas.float()
        core_euler = comfy.sample.sample_custom(shifted, noise.clone(), cfg, comfy.samplers.sampler_object("euler"),
                                                sigmas, p, n, latent["samples"].clone(), disable_pbar=True)
        # our UniPC (native Wan grid) vs KSampler uni_pc_bh2 / simple after ModelSamplingSD3 shift 5
        req_unipc = AniSoraRequest(width=W, height=H, num_frames=F, steps=steps, cfg=cfg, shift=5.0, seed=7)
        own_unipc = wan.sample_latents(ours, y, text, req_unipc, AniSoraHooks(), noise=noise.clone())
        core_unipc = comfy.sample.sample(shifted, noise.clone(), steps, cfg, "uni_pc_bh2", "simple", p, n,
                                         latent["samples"].clone(), disable_pbar=True)
        # core hands latents out in the VAE's raw space (process_latent_out); ours stay normalised
        core_euler = packing.normalize_latent(core_euler.float(), mean, std)
        core_unipc = packing.normalize_latent(core_unipc.float(), mean, std)
        core_sigmas = comfy.samplers.calculate_sigmas(shifted.get_model_object("model_sampling"), "simple", steps)
        key = f"steps{steps}_cfg{cfg:g}"
        out["sampling"][key] = {
            "euler_same_sigmas_max_abs": float((own_euler - core_euler.float()).abs().max()),
            "unipc_vs_ksampler_max_abs": float((own_unipc - core_unipc.float()).abs().max()),
            "latent_scale": float(own_euler.abs().max()),
            "moved": float((own_euler - noise).abs().max()),
            "our_sigmas": [round(float(s), 6) for s in sigmas],
            "our_unipc_timesteps": [round(float(t), 3) for t in _unipc_timesteps(flow_sampler, steps)],
            "core_simple_sigmas": [round(float(s), 6) for s in core_sigmas],
        }
    print(json.dumps(out))


def _unipc_timesteps(flow_sampler, steps):
    s = flow_sampler.make_scheduler("unipc", 5.0)
    s.set_timesteps(steps)
    return s.timesteps


if __name__ == "__main__":
    main(*sys.argv[1:5])

"""Run inside ComfyUI's Python (COMFYUI_PYTHON): AniSora V3.2 / Wan2.2-I2V-A14B on core's own models, loaded by
core from the tiny high/low-noise files, against our own two-expert path. Prints one JSON object. Used by
test_wan22_core_route.py; also runnable by hand:

    $COMFYUI_PYTHON tests/integration/wan22_core_probe.py COMFYUI_DIR PACK_ROOT MODELS_DIR SCRATCH_DIR

* ``detected``: what core made of each expert file (core reads Wan2.2-I2V-A14B as "Wan2.1 without img_emb": its
  t2v class with in_dim 36, ``image_to_video`` off).
* ``y``: the ``y`` core's ``WAN21.concat_cond`` builds on that class from AnimeVideoAniSoraWanConditioning vs our
  own path's packing, bit for bit.
* ``sampling``: core's two passes as KSamplerAdvanced runs them (high-noise expert on the first sigmas with the
  leftover noise returned, low-noise expert on the rest without new noise), on our euler sigmas, against our own
  sampler's expert switch on the same noise, condition and prompt.
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
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    from AnimeVideo.nodes.anisora_core import AnimeVideoAniSoraWanConditioning
    from AnimeVideo.pipelines.anisora import core_route, flow_sampler, loader, packing, wan
    from AnimeVideo.pipelines.anisora.model import AniSoraHooks, AniSoraRequest, TextConditioning
    from AnimeVideo.pipelines.anisora.text import MAX_TEXT_TOKENS, pad_prompt_embeds
    from AnimeVideo.pipelines.backbones.wan import tiny22
    from AnimeVideo.pipelines.guides import Guide

    high_path, low_path = (os.path.join(models_dir, f) for f in tiny22.TINY_FILES)
    vpath = os.path.join(models_dir, "vae", "wan_2.1_vae.safetensors")
    # float32 on both sides (the files are fp16; core would otherwise pick its own compute dtype)
    core_high, core_low = (comfy.sd.load_diffusion_model(p, model_options={"dtype": torch.float32})
                           for p in (high_path, low_path))
    core_vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vpath))
    ours = loader.load_wan22(high_path, low_path, vpath, "fp32", "cpu")
    mean, std = packing.latents_mean_std(ours.vae, "cpu", torch.float32)
    out = {"detected": {}, "y": {}, "sampling": {}}
    for name, m in (("high", core_high), ("low", core_low)):
        out["detected"][name] = {"model_config": type(m.model.model_config).__name__,
                                 "image_to_video": bool(m.model.image_to_video),
                                 "in_dim": int(m.model.diffusion_model.patch_embedding.weight.shape[1])}

    H, W, F = 64, 96, 17
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(H, W, 3, generator=g) for _ in range(3)]
    spatial = torch.zeros(H, W)
    spatial[16:48, 24:72] = 1.0
    cases = {
        "first": Guide().with_keyframe(imgs[0], 0),
        "first_middle_last": Guide().with_keyframe(imgs[0], 0).with_keyframe(imgs[2], 8).with_keyframe(imgs[1], -1),
        "anymask_spatial": Guide().with_keyframe(imgs[0], 0).with_motion_mask(spatial),
    }
    pos = [[pad_prompt_embeds(torch.randn(1, 7, 4096, generator=g), MAX_TEXT_TOKENS), {"pooled_output": None}]]
    neg = [[pad_prompt_embeds(torch.randn(1, 5, 4096, generator=g), MAX_TEXT_TOKENS), {"pooled_output": None}]]
    node = AnimeVideoAniSoraWanConditioning()
    dev = torch.device("cpu")
    for name, guide in cases.items():
        p, n, latent, info = node.condition(pos, neg, core_vae, W, H, F, 1, guide)
        noise = torch.randn(latent["samples"].shape, generator=g)
        y_core = core_low.model.concat_cond(noise=noise, device=dev, **p[0][1])
        cond = packing.build_wan_condition(guide, F, H, W)
        y_ours = core_route.own_path_y(cond, core_vae.encode(packing.guide_pixels(cond.video)), mean, std)
        out["y"][name] = {"shape": list(y_core.shape), "equal": bool(torch.equal(y_core, y_ours)),
                          "max_abs": float((y_core - y_ours).abs().max())}

    guide = cases["first_middle_last"]
    p, n, latent, info = node.condition(pos, neg, core_vae, W, H, F, 1, guide)
    y = core_low.model.concat_cond(noise=latent["samples"], device=dev, **p[0][1])
    text = TextConditioning(pos[0][0], neg[0][0])
    high_shifted = ModelSamplingSD3().patch(core_high, 5.0)[0]
    low_shifted = ModelSamplingSD3().patch(core_low, 5.0)[0]
    euler = comfy.samplers.sampler_object("euler")
    for steps, cfg in ((4, 1.0), (4, 3.0)):
        noise = wan.initial_noise(latent["samples"].shape, 7)
        req = AniSoraRequest(width=W, height=H, num_frames=F, steps=steps, cfg=cfg, shift=5.0, seed=7,
                             sampler="euler")
        own = wan.sample_latents(ours, y, text, req, AniSoraHooks(), noise=noise.clone())
        sched = flow_sampler.make_scheduler("euler", 5.0)
        sched.set_timesteps(steps)
        sigmas = sched.sigmas.float()
        split = int((sched.timesteps >= ours.boundary_ratio * 1000).sum())  # high-noise steps
        # KSamplerAdvanced high: add noise, steps 0..split, return with leftover noise
        x = comfy.sample.sample_custom(high_shifted, noise.clone(), cfg, euler, sigmas[:split + 1], p, n,
                                       latent["samples"].clone(), disable_pbar=True)
        # KSamplerAdvanced low: no new noise (zeros), steps split..end
        x = comfy.sample.sample_custom(low_shifted, torch.zeros_like(noise), cfg, euler, sigmas[split:], p, n, x,
                                       disable_pbar=True)
        core = packing.normalize_latent(x.float(), mean, std)  # core hands out the VAE's raw latent
        out["sampling"][f"steps{steps}_cfg{cfg:g}"] = {
            "split": split, "max_abs": float((own - core).abs().max()), "latent_scale": float(own.abs().max()),
            "moved": float((own - noise).abs().max())}
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])

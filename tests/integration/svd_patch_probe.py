"""Run inside ComfyUI's Python (COMFYUI_PYTHON): AnimeVideoSVDGuideModelPatch on core's own SVD model, core's
SVD_img2vid_Conditioning node and core's samplers. Prints one JSON object. Used by test_svd_model_patch_in_comfyui.py:

    $COMFYUI_PYTHON tests/integration/svd_patch_probe.py COMFYUI_DIR PACK_ROOT MODELS_DIR SCRATCH_DIR

Core recognises an SVD checkpoint only at the released sizes (comfy/supported_models.py SVD_img2vid matches
model_channels 320, context_dim 1024 ...; its video VAE is built at 128 base channels), so the tiny
checkpoints/svd_xt.safetensors does not load through Image Only Checkpoint Loader. The probe builds core's
``model_base.SVD_img2vid`` from that file with the sizes core's own ``detect_unet_config`` reads from the weights
(the one step the loader would do differently; and the time-id embedding at the tiny UNet's width), wraps it in
core's ModelPatcher, and hands core's nodes a VAE with core's ``encode`` contract backed by the tiny VAE (our
loader).
"""
import json
import os
import sys

from probes import boot_comfy_with_pack  # this folder is the script's sys.path[0]

def main(comfy_dir, pack_root, models_dir, scratch):
    boot_comfy_with_pack(comfy_dir, pack_root, scratch)
    import torch
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.sample
    import comfy.supported_models
    import comfy.utils
    from comfy_extras.nodes_video_model import SVD_img2vid_Conditioning

    from AnimeVideo.nodes.svd_core import AnimeVideoSVDGuideModelPatch
    from AnimeVideo.pipelines.guides import Guide
    from AnimeVideo.pipelines.svd import guided, loader
    from AnimeVideo.pipelines.svd.conditioning import encode_concat_latent

    path = os.path.join(models_dir, "checkpoints", "svd_xt.safetensors")
    sd = comfy.utils.load_torch_file(path)
    prefix = "model.diffusion_model."
    unet_config = comfy.model_detection.detect_unet_config(sd, prefix)
    CONTEXT_DIM = unet_config["context_dim"]
    config = comfy.supported_models.SVD_img2vid(unet_config)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model(sd, prefix)
    base.load_model_weights(sd, prefix)
    # core embeds SVD's 3 time ids at 256 channels each (the released adm width 768); the tiny UNet takes
    # adm_in_channels / 3 per id
    from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep
    base.embedder = Timestep(unet_config["adm_in_channels"] // 3)
    cpu = torch.device("cpu")
    model = comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)
    ours = loader.load_svd(path, torch.float32)

    class TinyVAE:  # core's VAE.encode contract: IMAGE [N, H, W, 3] 0..1 -> raw latent [N, 4, h, w]
        latent_channels = 4

        def spacial_compression_encode(self):
            return ours.spatial_factor

        def encode(self, pixels):
            x = pixels.movedim(-1, 1).contiguous()
            with torch.no_grad():
                return torch.cat([encode_concat_latent(ours.vae, im[None], torch.zeros_like(im[None]), 0.0)
                                  for im in x]).float()

    class ClipVision:
        def encode_image(self, image):
            return type("Out", (), {"image_embeds": torch.ones(1, CONTEXT_DIM) * 0.1})()

    vae = TinyVAE()
    H, W, F = 64, 64, 6
    g = torch.Generator().manual_seed(0)
    first, last = torch.rand(1, H, W, 3, generator=g), torch.rand(1, H, W, 3, generator=g)
    mask = torch.zeros(H, W)
    mask[16:40, 8:32] = 1.0
    guide = Guide().with_keyframe(first, 0).with_keyframe(last, -1).with_motion_mask(mask)
    pos, neg, latent = SVD_img2vid_Conditioning().encode(ClipVision(), first, vae, W, H, F, 127, 6, 0.0)
    patched, info = AnimeVideoSVDGuideModelPatch().patch(model, vae, guide, W, H, F, first, "crop")

    image = first[0].permute(2, 0, 1)[None]
    plan = guided.plan_svd_guide(ours, guide, image, F, "crop")  # our own path's plan (our VAE, our scaling)
    held = plan.held()[:, 0]
    out = {"info": info, "held_share": float(held.float().mean()), "runs": {}}
    for sampler, scheduler, cfg in (("euler", "karras", 2.5), ("dpmpp_2m", "normal", 1.0), ("heun", "exponential", 3.0)):
        noise = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(3))
        calls = []
        base_options = patched.model_options["sampler_post_cfg_function"][-1]

        def counting(args, fn=base_options):
            calls.append(float(args["sigma"].flatten()[0]))
            return fn(args)

        probe_model = patched.clone()
        probe_model.model_options["sampler_post_cfg_function"] = [counting]
        samples = comfy.sample.sample(probe_model, noise, 4, cfg, sampler, scheduler, pos, neg,
                                      latent["samples"].clone(), disable_pbar=True)
        final = base.process_latent_in(samples.float())  # core hands out process_latent_out(x): back to model space
        unguided = comfy.sample.sample(model, noise, 4, cfg, sampler, scheduler, pos, neg,
                                       latent["samples"].clone(), disable_pbar=True)
        diff = (final - plan.latents).abs().amax(1)  # [F, h, w]
        out["runs"][f"{sampler}_{scheduler}"] = {
            "held_max_abs": float(diff[held].max()), "guide_scale": float(plan.latents.abs().max()),
            "free_max_abs": float(diff[~held].max()),
            "unguided_held_max_abs": float((base.process_latent_in(unguided.float()) - plan.latents).abs().amax(1)[held].max()),
            "hook_calls": len(calls), "first_sigma": calls[0] if calls else None}
    # the patch must not touch the model it was given
    out["original_untouched"] = "sampler_post_cfg_function" not in model.model_options
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])

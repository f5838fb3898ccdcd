"""Run inside ComfyUI's Python (COMFYUI_PYTHON): the tiny AniSora Wan file through core's Load Diffusion Model
(UNETLoader) with weight_dtype "default" and "fp8_e4m3fn" (the shipped core workflows' setting), our conditioning,
and core's KSampler sampling path on the same noise. Prints one JSON object. Used by
test_core_workflows_many_servers.py:

    $COMFYUI_PYTHON tests/integration/core_fp8_probe.py COMFYUI_DIR PACK_ROOT MODELS_DIR SCRATCH_DIR
"""
import json
import os
import sys

from probes import boot_comfy_with_pack  # this folder is the script's sys.path[0]


def main(comfy_dir, pack_root, models_dir, scratch):
    boot_comfy_with_pack(comfy_dir, pack_root, scratch)
    import torch
    import comfy.sample
    import comfy.sd
    import comfy.utils
    import folder_paths
    import nodes
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    from AnimeVideo.nodes.anisora_core import AnimeVideoAniSoraWanConditioning
    from AnimeVideo.pipelines.guides import Guide

    folder_paths.add_model_folder_path("diffusion_models", os.path.join(models_dir, "diffusion_models"), True)
    name = "anisora_v3_i2v_14b.safetensors"
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(os.path.join(models_dir, "vae", "wan_2.1_vae.safetensors")))
    H, W, F = 64, 64, 9
    g = torch.Generator().manual_seed(0)
    guide = Guide().with_keyframe(torch.rand(H, W, 3, generator=g), 0).with_keyframe(torch.rand(H, W, 3, generator=g), -1)
    text = [[torch.randn(1, 512, 4096, generator=g), {"pooled_output": None}]]
    pos, neg, latent, _ = AnimeVideoAniSoraWanConditioning().condition(text, text, vae, W, H, F, 1, guide)
    noise = torch.randn(latent["samples"].shape, generator=g)
    out = {}
    for weight_dtype in ("default", "fp8_e4m3fn"):
        model = nodes.UNETLoader().load_unet(name, weight_dtype)[0]
        weight = model.model.diffusion_model.blocks[0].self_attn.q.weight
        y = model.model.concat_cond(noise=noise, device=torch.device("cpu"), **pos[0][1])
        shifted = ModelSamplingSD3().patch(model, 5.0)[0]
        samples = comfy.sample.sample(shifted, noise.clone(), 2, 1.0, "uni_pc", "simple", pos, neg,
                                      latent["samples"].clone(), disable_pbar=True, seed=0)
        out[weight_dtype] = {"weight_dtype": str(weight.dtype), "y": y, "samples": samples.float()}
    a, b = out["default"], out["fp8_e4m3fn"]
    print(json.dumps({
        "weight_dtypes": {k: v["weight_dtype"] for k, v in out.items()},
        "y_equal": bool(torch.equal(a["y"], b["y"])),
        "finite": bool(torch.isfinite(a["samples"]).all() and torch.isfinite(b["samples"]).all()),
        "moved": float((a["samples"] - noise).abs().max()),
        "fp8_vs_default_max_abs": float((a["samples"] - b["samples"]).abs().max()),
        "scale": float(a["samples"].abs().max()),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:5])

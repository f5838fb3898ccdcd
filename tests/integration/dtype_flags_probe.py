"""Run inside ComfyUI's Python (COMFYUI_PYTHON): ComfyUI booted with ``--fp16-unet --bf16-vae`` (parsed by core's
own argument parser); the pack's Load SVD with dtype auto, and the Wan dtype choice, follow the flag; an explicit
dtype does not. Prints one JSON object on its last line. Used by test_dtype_flags_in_comfyui.py:
    $COMFYUI_PYTHON tests/integration/dtype_flags_probe.py COMFYUI_DIR PACK_ROOT MODELS_DIR SCRATCH_DIR
"""
import json
import os
import sys

from probes import boot_comfy_with_pack  # this folder is the script's sys.path[0]


def main(comfy_dir, pack_root, models_dir, scratch):
    boot_comfy_with_pack(comfy_dir, pack_root, scratch, extra_args=("--fp16-unet", "--bf16-vae"))
    import torch
    import folder_paths
    from comfy.cli_args import args

    from AnimeVideo.nodes import svd
    from AnimeVideo.pipelines import dtype_policy
    from AnimeVideo.pipelines.backbones.wan import loader as wan_loader

    torch.set_num_threads(2)
    folder_paths.add_model_folder_path("checkpoints", os.path.join(models_dir, "checkpoints"))
    # the Load SVD node's own opening (cache key and load), as its load() calls it
    (_, _, auto_dtype), load_auto, _, _ = svd.open_svd("svd_xt.safetensors", "auto")
    (_, _, fp32_dtype), _, _, _ = svd.open_svd("svd_xt.safetensors", "fp32")
    loaded = load_auto()

    cpu = torch.device("cpu")
    print(json.dumps({
        "flags": {"fp16_unet": args.fp16_unet, "bf16_vae": args.bf16_vae},
        "svd_auto": auto_dtype,
        "svd_auto_unet": str(next(loaded.unet.parameters()).dtype),
        "svd_fp32": fp32_dtype,
        "wan_auto": [str(d) for d in wan_loader.resolve_dtype("auto", cpu)],
        "vae_auto": str(dtype_policy.resolve_dtype("auto", cpu, role="vae").compute),
        "other_auto": str(dtype_policy.resolve_dtype("auto", cpu, role="other").compute),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:5])

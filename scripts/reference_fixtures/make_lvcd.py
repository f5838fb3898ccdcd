#!/usr/bin/env python3
"""Reference fixture from the ORIGINAL LVCD code (luckyhzt/LVCD): its ``models.csvd.ControlledVideoUNet`` (on the
SVD base, see below) and a tiny random ``ControlNet`` (with its ReferenceAttention, TemporalAttention_Masked and
Conv3d_Masked swaps), the LVCD weights saved as ``lvcd-fp16.safetensors``, and the original network's outputs (``VideoDiffusionEngine.apply_model``, its ControlNet residuals into the UNet) in
float64 for three frame layouts:

- ``train``: no hooks, T = 15 (1 reference-path frame + 14): the training layout (K/V = [own ; frame 0]);
- ``normal``: ``inference/model_hack.Reference`` hooks in 'normal' mode, T = 19 (first segment, overlap 4);
- ``prevref``: the same hooks in 'prevref' mode at a step below ``prev_steps``, with the ln(10) logit bias on
  the overlapped frames (later segments).

    python scripts/reference_fixtures/make_lvcd.py /path/to/LVCD [OUT_DIR] [--commit SHA] [--svd-base FILE]

The SVD base is the SVD fixture's ``svd-fp16.safetensors`` (written by make_svd.py from Stability's sgm code with
the same UNet configuration; run that first), loaded strictly into LVCD's ``ControlledVideoUNet``, so the two
fixtures share one base file (rebuilt from the svd fixture's ``svd-fp16.recipe.json`` by default). Files:
``lvcd-fp16.recipe.json`` (the seeded recipe of ``lvcd-fp16.safetensors``: ``control_model.*`` + the UNet's
fine-tuned ``attn1`` tensors, which differ from the base's so the overlay is exercised; tests/reference_weights.py
rebuilds the file bit for bit, checked here against the modules), ``cases.safetensors``
(inputs in float32 / uint8, the original's outputs in float64). Weights are rounded to fp16 before the float64
run, so both sides use the same values.
"""
from __future__ import annotations

import os
import sys
import tempfile
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402

REPO = "luckyhzt/LVCD"
# The original's heavy imports that these code paths never call (training, the conditioner's encoders).
PLACEHOLDERS = ["pytorch_lightning", "kornia", "open_clip", "omegaconf", "xformers", "fairscale",
                "natsort", "wandb", "matplotlib", "imageio", "cv2"]
OVERLAP = 4
VIDEO_FRAMES = 14  # the original hard-codes 14 video-path frames per pass
LATENT_HW = (4, 6)
FPS_ID, MOTION, COND_AUG = 6.0, 160.0, 0.02
SIGMA = 3.0

# The release's settings with tiny widths: 64-wide heads as released, 2 levels, attention at the first level.
NET = dict(adm_in_channels=48, num_classes="sequential", use_checkpoint=False, in_channels=8, model_channels=64,
           attention_resolutions=[1], num_res_blocks=1, channel_mult=[1, 1], num_head_channels=64,
           use_linear_in_transformer=True, transformer_depth=1, context_dim=32, spatial_transformer_attn_type="softmax",
           extra_ff_mix_layer=True, use_spatial_context=True, merge_strategy="learned_with_images",
           video_kernel_size=[3, 1, 1], temporal_attn_type="models.layers.TemporalAttention_Masked",
           spatial_self_attn_type="models.layers.ReferenceAttention", conv3d_type="models.layers.Conv3d_Masked")


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "lvcd", svd_base=True)
    commit = fc.original_commit(args.original_path, args.commit)
    fc.import_original(args.original_path, PLACEHOLDERS)
    sys.path.insert(0, os.path.join(os.path.abspath(args.original_path), "inference"))
    import models.csvd as csvd  # the original
    from model_hack import Hacked_model  # the original's inference hooks
    from sgm.modules.encoders.modules import ConcatTimestepEmbedderND  # the original's vector conditioning

    fc.import_pack()
    from safetensors.torch import load_file, save_file

    from animevideo.pipelines.svd import keymap as svd_keymap

    rw = fc.reference_weights()
    torch.manual_seed(0)
    unet = csvd.ControlledVideoUNet(out_channels=4, **NET)
    with tempfile.TemporaryDirectory() as tmp:
        base_path = (rw.write_release_file(args.svd_base, tmp) if args.svd_base.endswith(".json")
                     else args.svd_base)
        base = load_file(base_path)
    base_unet_sd = {k[len(svd_keymap.UNET_PREFIX):]: v.float() for k, v in base.items()
                    if k.startswith(svd_keymap.UNET_PREFIX)}
    unet.load_state_dict(base_unet_sd)  # strict: the sgm VideoUNet and LVCD's subclass share every name
    control_entries = []
    control = fc.randomize_(csvd.ControlNet(hint_channels=3, **NET), 2, record=control_entries)
    fc.round_to_(control, torch.float16)
    # LVCD's fine-tuned attn1 (spatial and temporal) differ from the SVD base: the loader must overlay them.
    gen = torch.Generator().manual_seed(3)
    lvcd_attn = {k: (torch.randn(v.shape, generator=gen) * 0.05).half().float()
                 for k, v in base_unet_sd.items() if ".attn1." in k}
    unet.load_state_dict({**base_unet_sd, **lvcd_attn})

    lvcd_file = {"control_model." + k: v for k, v in control.state_dict().items()}
    lvcd_file.update({"model.diffusion_model." + k: v for k, v in lvcd_attn.items()})

    recipe = rw.make_recipe("lvcd-fp16.safetensors", "safetensors", "float16", [
        {"seed": 2, "draw_dtype": "float64", "param_dtype": "float32", "prefix": "control_model.",
         "entries": control_entries},
        {"seed": 3, "draw_dtype": "float32", "param_dtype": "float32", "prefix": "model.diffusion_model.",
         "entries": [[k, list(v.shape), ["normal", 0.05, 0.0, 1.0]] for k, v in lvcd_attn.items()]}])
    rw.assert_reproduces(recipe, {k: v.detach().half() for k, v in lvcd_file.items()})
    os.makedirs(args.out_dir, exist_ok=True)
    rw.write_recipe(recipe, os.path.join(args.out_dir, "lvcd-fp16.recipe.json"))

    # The original engine's forward, on a container with the attributes apply_model and the hooks read.
    engine = torch.nn.Module()
    engine.control_model = control
    engine.model = torch.nn.Module()
    engine.model.diffusion_model = unet
    engine.control_scales = [1.0] * 13
    engine.global_average_pooling = False
    engine.apply_model = types.MethodType(csvd.VideoDiffusionEngine.apply_model, engine)
    fc.sgm_in_float64_(engine).eval()
    vector_embedder = ConcatTimestepEmbedderND(16)
    # float64 throughout: the original builds some tensors (timestep embeddings, masks) in the default dtype
    torch.set_default_dtype(torch.float64)
    # model_hack builds its ln(alpha) logit bias in float32. torch's CPU scaled_dot_product_attention gives wrong
    # results for a float64 query with a float32 mask once there are 8 or more query tokens (checked on
    # torch 2.14.1), so in this float64 run the mask is passed in the query's dtype, as a float32 run has it.
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def sdpa_mask_in_query_dtype(q, k, v, attn_mask=None, *a, **kw):
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)
        return sdpa(q, k, v, attn_mask, *a, **kw)

    torch.nn.functional.scaled_dot_product_attention = sdpa_mask_in_query_dtype

    gen = torch.Generator().manual_seed(4)
    h, w = LATENT_HW
    context = torch.randn(1, 1, NET["context_dim"], generator=gen, dtype=torch.float32)
    time_ids = torch.tensor([[FPS_ID, MOTION, COND_AUG]], dtype=torch.float32)
    c_noise = torch.tensor(0.25 * torch.log(torch.tensor(SIGMA, dtype=torch.float64)).item()).float()
    cases = {"context": context, "time_ids": time_ids.float(), "c_noise": c_noise.float().reshape(1)}
    amplify = [[1.0] * (OVERLAP + 1) + [1.0] * OVERLAP + [1.0] * (VIDEO_FRAMES - OVERLAP),  # self half
               [1.0] * (OVERLAP + 1) + [10.0] * OVERLAP + [1.0] * (VIDEO_FRAMES - OVERLAP)]  # reference half

    for case, frames in (("train", 1 + VIDEO_FRAMES), ("normal", 1 + OVERLAP + VIDEO_FRAMES),
                         ("prevref", 1 + OVERLAP + VIDEO_FRAMES)):
        x_in = torch.randn(frames, 4, h, w, generator=gen, dtype=torch.float32)
        concat = torch.randn(frames, 4, h, w, generator=gen, dtype=torch.float32)
        hint_u8 = torch.randint(0, 256, (frames, 3, 8 * h, 8 * w), generator=gen, dtype=torch.uint8)
        hint = hint_u8.float() / 255  # lineart arrives as 8-bit images
        with torch.no_grad():
            vector = vector_embedder(time_ids.double()).double().repeat(frames, 1)
            cond = {"crossattn": context.double().repeat(frames, 1, 1), "vector": vector,
                    "concat": concat.double(), "control_hint": hint.double()}
            extra = dict(num_video_frames=frames, image_only_indicator=torch.zeros(1, frames, dtype=torch.float64))
            t = c_noise.double().repeat(frames)
            if case == "train":
                out = engine.apply_model(x_in.double(), t, cond, **extra)
            else:
                hacked = Hacked_model(engine, overlap=OVERLAP, nframes=frames, refattn_hook=True, prev_steps=25,
                                      refattn_amplify=amplify)
                hacked.operator.mode = case
                out = hacked(engine, 0, x_in.double(), t, cond, **extra)
        cases.update({f"{case}.x_in": x_in, f"{case}.concat": concat, f"{case}.hint_u8": hint_u8,
                      f"{case}.out": out})
        print(f"{case}: T={frames}, output |max| {out.abs().max():.4f}")
    torch.set_default_dtype(torch.float32)
    save_file({k: v.contiguous() for k, v in cases.items()}, os.path.join(args.out_dir, "cases.safetensors"))

    fc.write_source(
        args.out_dir, REPO, commit, fc.file_sizes(args.out_dir),
        "Original ControlledVideoUNet + ControlNet (models/csvd.py) with tiny widths, random fp16-rounded weights, "
        "run in float64 through VideoDiffusionEngine.apply_model; 'normal'/'prevref' through "
        "inference/model_hack.Hacked_model with refattn_amplify ln(10) on the overlapped frames. "
        "The SVD base is the svd fixture's svd-fp16.safetensors (sgm VideoUNet weights, same configuration). Both "
        "weight files are stored as seeded recipes (*.recipe.json, rebuilt by tests/reference_weights.py).",
        {"config": {k: v for k, v in NET.items()}, "overlap": OVERLAP, "latent_hw": list(LATENT_HW),
         "sigma": SIGMA, "svd_base": os.path.relpath(os.path.abspath(args.svd_base), fc.REPO_ROOT),
         "svd_base_tensors_sha256": rw.tensors_sha256(base)})


if __name__ == "__main__":
    main()

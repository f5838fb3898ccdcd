#!/usr/bin/env python3
"""Reference fixture from Stability's ORIGINAL SVD code (Stability-AI/generative-models, ``sgm``): a tiny
``VideoUNet`` (``sgm/modules/diffusionmodules/video_model.py``) and the SVD first stage (``Encoder`` +
temporal ``VideoDecoder``, ``configs/inference/svd.yaml``'s layout) with random weights, saved as an sgm single
file (``model.diffusion_model.*``, ``first_stage_model.{encoder,decoder}.*``; ``conditioner.embedders.0.*`` =
the pack's tiny CLIP, since open_clip is not needed here and the image encoder is not compared), plus the
original's outputs in float64: the UNet on fixed inputs (with ``ConcatTimestepEmbedderND`` for fps / motion /
augmentation), the encoder's posterior mean and the temporal decode of a latent clip.

    python scripts/reference_fixtures/make_svd.py /path/to/generative-models [OUT_DIR] [--commit SHA]

Weights are rounded to fp16 (as ``svd-fp16`` copies are). The file itself is not stored: ``svd-fp16.recipe.json``
holds the seeds and the ordered (key, shape, rule) list that drew it, and tests/reference_weights.py rebuilds it
bit for bit (checked here against the modules, and by sha256 in the tests) in the release's single-file layout.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402

REPO = "Stability-AI/generative-models"
PLACEHOLDERS = ["pytorch_lightning", "kornia", "open_clip", "omegaconf", "xformers", "fairscale", "natsort", "wandb",
                "matplotlib", "imageio", "cv2"]
NET = dict(adm_in_channels=48, num_classes="sequential", use_checkpoint=False, in_channels=8, out_channels=4,
           model_channels=64, attention_resolutions=[1], num_res_blocks=1, channel_mult=[1, 1], num_head_channels=64,
           use_linear_in_transformer=True, transformer_depth=1, context_dim=32, spatial_transformer_attn_type="softmax",
           extra_ff_mix_layer=True, use_spatial_context=True, merge_strategy="learned_with_images",
           video_kernel_size=[3, 1, 1])
AE = dict(attn_type="vanilla", double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=32,
          ch_mult=[1, 1, 1, 1], num_res_blocks=2, attn_resolutions=[], dropout=0.0)  # release: ch 128, [1,2,4,4]
FRAMES, LATENT_HW = 4, (4, 6)
FPS_ID, MOTION, COND_AUG, SIGMA = 6.0, 127.0, 0.02, 5.0


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "svd")
    commit = fc.original_commit(args.original_path, args.commit)
    fc.import_original(args.original_path, PLACEHOLDERS)
    from sgm.modules.autoencoding.temporal_ae import VideoDecoder  # the originals
    from sgm.modules.diffusionmodules.model import Encoder
    from sgm.modules.diffusionmodules.video_model import VideoUNet
    from sgm.modules.encoders.modules import ConcatTimestepEmbedderND

    fc.import_pack()
    from safetensors.torch import save_file

    from animevideo.pipelines.svd import keymap as svd_keymap
    from animevideo.pipelines.svd import tiny as svd_tiny

    rw = fc.reference_weights()
    torch.manual_seed(0)
    records = {"unet": [], "encoder": [], "decoder": []}
    unet = fc.randomize_(VideoUNet(**NET), 1, record=records["unet"])
    encoder = fc.randomize_(Encoder(**AE), 2, record=records["encoder"])
    decoder = fc.randomize_(VideoDecoder(video_kernel_size=[3, 1, 1], **AE), 3, record=records["decoder"])
    for m in (unet, encoder, decoder):
        fc.round_to_(m, torch.float16)
    sd = {svd_keymap.UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    sd.update({svd_keymap.VAE_PREFIX + "encoder." + k: v for k, v in encoder.state_dict().items()})
    sd.update({svd_keymap.VAE_PREFIX + "decoder." + k: v for k, v in decoder.state_dict().items()})
    # The image encoder (not compared) in open_clip's layout, shapes from the pack's tiny CLIP, seeded values:
    # N(0, 0.1), LayerNorm weights around 1.
    _, _, clip = svd_tiny.build_tiny_svd(0)
    clip_entries = [[k, list(v.shape), ["normal", 0.1, 1.0 if k.split(".")[-2:-1] and k.split(".")[-2].startswith("ln_") and
                                        k.endswith(".weight") else 0.0, 1.0]]
                    for k, v in svd_keymap.clip_state_dict_to_openclip(clip.state_dict()).items()]
    groups = [{"seed": seed, "draw_dtype": "float64", "param_dtype": "float32", "prefix": prefix,
               "entries": records[name]}
              for name, seed, prefix in (("unet", 1, svd_keymap.UNET_PREFIX),
                                         ("encoder", 2, svd_keymap.VAE_PREFIX + "encoder."),
                                         ("decoder", 3, svd_keymap.VAE_PREFIX + "decoder."))]
    groups.append({"seed": 5, "draw_dtype": "float32", "param_dtype": "float32", "prefix": svd_keymap.CLIP_PREFIX,
                   "entries": clip_entries})
    recipe = rw.make_recipe("svd-fp16.safetensors", "safetensors", "float16", groups)
    clip_sd = {k: v for k, v in rw.state_dict_from_recipe(recipe).items() if k.startswith(svd_keymap.CLIP_PREFIX)}
    rw.assert_reproduces(recipe, {**{k: v.detach().half() for k, v in sd.items()}, **clip_sd})
    os.makedirs(args.out_dir, exist_ok=True)
    rw.write_recipe(recipe, os.path.join(args.out_dir, "svd-fp16.recipe.json"))

    for net in (unet, encoder, decoder):
        fc.sgm_in_float64_(net).eval()

    gen = torch.Generator().manual_seed(4)
    h, w = LATENT_HW
    c = {"x_in": torch.randn(FRAMES, 8, h, w, generator=gen),
         "context": torch.randn(1, 1, NET["context_dim"], generator=gen),
         "time_ids": torch.tensor([[FPS_ID, MOTION, COND_AUG]]),
         "c_noise": torch.tensor([0.25 * torch.log(torch.tensor(SIGMA, dtype=torch.float64)).item()]).float(),
         "image": torch.rand(1, 3, 8 * h, 8 * w, generator=gen) * 2 - 1,
         "latents": torch.randn(FRAMES, 4, h, w, generator=gen)}
    torch.set_default_dtype(torch.float64)
    with torch.no_grad():
        y = ConcatTimestepEmbedderND(16)(c["time_ids"].double()).double().repeat(FRAMES, 1)
        c["unet.out"] = unet(c["x_in"].double(), c["c_noise"].double().repeat(FRAMES),
                             context=c["context"].double().repeat(FRAMES, 1, 1), y=y, num_video_frames=FRAMES,
                             image_only_indicator=torch.zeros(1, FRAMES))
        c["vae.mean"] = encoder(c["image"].double())[:, :4]  # the posterior's mean (DiagonalGaussian mode)
        c["vae.decoded"] = decoder(c["latents"].double(), timesteps=FRAMES)
    torch.set_default_dtype(torch.float32)
    for k in ("unet.out", "vae.mean", "vae.decoded"):
        print(f"{k}: {tuple(c[k].shape)} |max| {c[k].abs().max():.4f}")
    save_file({k: v.contiguous() for k, v in c.items()}, os.path.join(args.out_dir, "cases.safetensors"))
    fc.write_source(
        args.out_dir, REPO, commit, fc.file_sizes(args.out_dir),
        "sgm VideoUNet, Encoder and VideoDecoder (svd.yaml's first stage) with tiny widths, random fp16-rounded "
        "weights, outputs in float64 (GroupNorm32 kept in float64). svd-fp16.safetensors is stored as its seeded "
        "recipe (svd-fp16.recipe.json, rebuilt by tests/reference_weights.py). The CLIP tensors (not compared) "
        "have the pack's tiny CLIP's shapes in open_clip's layout and seeded values.",
        {"unet_config": NET, "ae_config": AE, "frames": FRAMES, "sigma": SIGMA})


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference fixture from the ORIGINAL StreamingT2V code (Picsart-AI-Research/StreamingT2V, branch
``StreamingModelscope``): the released checkpoint's key list at full size, built on the meta device from the
official module classes, and (``cases.safetensors``) the original modules' outputs on tiny random weights.

    python scripts/reference_fixtures/make_streaming_t2v.py /scratch/StreamingT2V [OUT_DIR] [--commit SHA]

``released_keys.tsv.gz``: every key of ``VideoLDM.state_dict()`` that ``model_init.py`` loads strictly, with its
shape: ``base_model.*`` (controlnet/unet_3d_condition.py, merging_mode attention_cross_attention, image tokens on),
``unet.*`` (controlnet/controlnet.py ``ControlNetModel.from_unet`` with config.yaml's arguments), ``resampler.*``
(image_embedder.py ``ImgEmbContextResampler``) from the original classes; ``image_encoder.model.*`` (open_clip
ViT-H-14 minus its text transformer), ``text_encoder.*`` and ``vae.*`` (the damo-vilab/text-to-video-ms-1.7b
components, transformers 4.x ``CLIPTextModel`` and diffusers ``AutoencoderKL`` naming) written from those
classes' layouts (open_clip is not needed: the visual tower's names are the pack's SVD manifest's).

The original is written for diffusers 0.27: a few module paths moved since are aliased (``ALIASES``); its
training-only imports are placeholders. The xformers processor (the one the release ran, which holds the APM
token mixing) is run with PyTorch's SDPA in place of ``xformers.ops.memory_efficient_attention``.
"""
from __future__ import annotations

import gzip
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402

REPO = "Picsart-AI-Research/StreamingT2V"
PLACEHOLDERS = ["kornia", "open_clip", "pytorch_lightning"]
ALIASES = {
    "diffusers.models.transformer_temporal": "diffusers.models.transformers.transformer_temporal",
    "diffusers.models.transformer_2d": "diffusers.models.transformers.transformer_2d",
    "diffusers.models.unet_3d_blocks": "diffusers.models.unets.unet_3d_blocks",
    "diffusers.models.unet_3d_condition": "diffusers.models.unets.unet_3d_condition",
}
# damo-vilab/text-to-video-ms-1.7b unet/config.json
MODELSCOPE_UNET = dict(sample_size=32, in_channels=4, out_channels=4,
                       down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                       up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
                       block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
                       attention_head_dim=64, norm_num_groups=32)
# its text_encoder/config.json (OpenCLIP ViT-H text tower, 23 of 24 layers) and vae/config.json (SD's)
MODELSCOPE_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                       num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)
MODELSCOPE_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                      down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
# config.yaml's ControlNetModel.from_unet arguments
CAM_ARGS = dict(conditioning_embedding_out_channels=[32, 96, 256, 512], downsample_controlnet_cond=True,
                num_frames=8, num_frame_conditioning=8, frame_expansion="none", zero_conv_mode="Identity",
                merging_mode="addition", condition_encoder="", use_image_embedding=False)


def unet_params():
    class FrozenOpenCLIPImageEmbedder:  # the name is all the UNet reads from it
        pass

    return types.SimpleNamespace(use_of=False, concat=False, use_image_tokens_main=True, use_image_tokens_ctrl=False,
                                 image_encoder=FrozenOpenCLIPImageEmbedder())


def import_streaming_t2v(path: str):
    import importlib

    for old, new in ALIASES.items():
        sys.modules.setdefault(old, importlib.import_module(new))
    fc.import_original(path, PLACEHOLDERS)
    prefix = "t2v_enhanced.model.diffusers_conditional.models.controlnet."
    return types.SimpleNamespace(**{n: importlib.import_module(prefix + n) for n in
                                    ("unet_3d_condition", "controlnet", "image_embedder", "processor")})


def build_original(orig, unet_cfg: dict, **cam_overrides):
    base = orig.unet_3d_condition.UNet3DConditionModel(**unet_cfg, merging_mode="attention_cross_attention",
                                                        use_image_embedding=True, unet_params=unet_params())
    cam = orig.controlnet.ControlNetModel.from_unet(base, **{**CAM_ARGS, **cam_overrides}, unet_params=unet_params(),
                                                    load_weights_from_unet=False)
    return base, cam, orig.image_embedder.ImgEmbContextResampler()


def released_keys(orig) -> dict[str, tuple]:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    fc.import_pack()
    out = {}
    with torch.device("meta"):
        base, cam, resampler = build_original(orig, MODELSCOPE_UNET)
        text = CLIPTextModel(CLIPTextConfig(**MODELSCOPE_TEXT))
        vae = AutoencoderKL(**MODELSCOPE_VAE)
    for prefix, mod in (("base_model.", base), ("unet.", cam), ("resampler.", resampler)):
        out.update({prefix + k: tuple(v.shape) for k, v in mod.state_dict().items()})
    text_sd = {k: tuple(v.shape) for k, v in text.state_dict().items()}
    if not any(k.startswith("text_model.") for k in text_sd):  # transformers 5 dropped the release's prefix
        text_sd = {"text_model." + k: v for k, v in text_sd.items()}
    out.update({"text_encoder." + k: v for k, v in text_sd.items()})
    out.update({"vae." + k: tuple(v.shape) for k, v in vae.state_dict().items()})
    manifest = os.path.join(fc.REPO_ROOT, "..", "shared", "manifests", "svd_image_encoder_sgm_keys.tsv")
    visual = read_tsv(manifest, strip="conditioner.embedders.0.open_clip.model.visual.")
    out.update({"image_encoder.model.visual." + k: v for k, v in visual.items()})
    out.update({"image_encoder.model." + k: v for k, v in {
        "token_embedding.weight": (49408, 1024), "positional_embedding": (77, 1024), "ln_final.weight": (1024,),
        "ln_final.bias": (1024,), "text_projection": (1024, 1024), "logit_scale": ()}.items()})
    return out


def read_tsv(path: str, strip: str = "") -> dict[str, tuple]:
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[0].startswith(strip) or parts[0] == "key":
                continue
            shape = tuple(int(s) for s in parts[1].strip("[]() ").replace(" ", "").split(",") if s)
            out[parts[0][len(strip):]] = shape
    return out


def write_keys(keys: dict, path: str):
    with gzip.open(path, "wt") as f:
        for k in sorted(keys):
            f.write(f"{k}\t{','.join(str(s) for s in keys[k])}\n")


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "streaming_t2v")
    commit = fc.original_commit(args.original_path, args.commit)
    orig = import_streaming_t2v(args.original_path)
    os.makedirs(args.out_dir, exist_ok=True)
    keys = released_keys(orig)
    write_keys(keys, os.path.join(args.out_dir, "released_keys.tsv.gz"))
    files = {"released_keys.tsv.gz": os.path.getsize(os.path.join(args.out_dir, "released_keys.tsv.gz"))}
    fc.write_source(args.out_dir, REPO, commit, files,
                    "released_keys.tsv.gz: the key list of the released streaming_t2v.ckpt at full size (branch "
                    "StreamingModelscope), built on the meta device from the original classes as config.yaml "
                    "configures them; text encoder / VAE / image encoder from their classes' layouts (see the "
                    "generator's docstring).", extra={"branch": "StreamingModelscope", "num_keys": len(keys)})


if __name__ == "__main__":
    main()

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
    text = "".join(f"{k}\t{','.join(str(s) for s in keys[k])}\n" for k in sorted(keys))
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(text.encode())  # no timestamp or name inside: the same keys give the same bytes


# Tiny widths with the release's rules. The cross-attention width stays 1024: the original hard-codes it in the APM
# (attention_processor.py: LayerNorm(1024), 93 -> 77 tokens; image_embedder.py: 1024 -> 1280 -> 16 x 1024).
TINY_UNET = dict(sample_size=4, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), block_out_channels=(64, 64), layers_per_block=2,
                 cross_attention_dim=1024, attention_head_dim=16, norm_num_groups=32)
TINY_COND_CHANNELS = [8, 16, 16, 32]
LATENT_HW = 4
TIMESTEP = 421


def sdpa_xformers():
    """``xformers.ops.memory_efficient_attention`` on [B*heads, L, d] tensors, in plain PyTorch."""
    def memory_efficient_attention(query, key, value, attn_bias=None, op=None, scale=None):
        logits = query @ key.transpose(-1, -2) * (query.shape[-1] ** -0.5 if scale is None else scale)
        if attn_bias is not None:
            logits = logits + attn_bias
        return logits.softmax(dim=-1) @ value

    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    xf = types.ModuleType("xformers")
    xf.ops = ops
    return xf


def parity_cases(orig, rw, out_dir: str) -> dict:
    """Tiny random original modules (weights as a seeded recipe) and their outputs in float64."""
    from t2v_enhanced.model.pl_module_params_controlnet import AttentionMaskParams

    torch.manual_seed(0)
    base, cam, resampler = build_original(orig, TINY_UNET, conditioning_embedding_out_channels=TINY_COND_CHANNELS)
    groups = []
    for seed, (prefix, mod) in enumerate((("base_model.", base), ("unet.", cam), ("resampler.", resampler)), 1):
        entries = []
        fc.randomize_(mod, seed, std=0.05, record=entries)  # mergers, alpha and zero convs included
        groups.append({"seed": seed, "prefix": prefix, "draw_dtype": "float64", "param_dtype": "float32",
                       "entries": entries})
    for mod in (base, cam, resampler):
        fc.round_to_(mod, torch.float16)
    recipe = rw.make_recipe("streaming_t2v_tiny_fp16.safetensors", "safetensors", "float16", groups)
    rw.assert_reproduces(recipe, {p + k: v.half() for p, m in (("base_model.", base), ("unet.", cam),
                                                               ("resampler.", resampler))
                                  for k, v in m.state_dict().items()})
    rw.write_recipe(recipe, os.path.join(out_dir, "streaming_t2v_tiny_fp16.recipe.json"))

    # the release ran the xformers processor (which holds the APM mixing); its attention in plain PyTorch
    orig.processor.xformers = sdpa_xformers()
    for mod in (base, cam):
        orig.processor.set_use_memory_efficient_attention_xformers(
            mod, num_frame_conditioning=8, num_frames=16, attention_mask_params=AttentionMaskParams())
    base, cam, resampler = base.double().eval(), cam.double().eval(), resampler.double().eval()
    c = parity_inputs()
    with torch.no_grad():
        down, mid = cam(c["latents"], TIMESTEP, encoder_hidden_states=c["context"], controlnet_cond=c["cam_frames"],
                        return_dict=False)
        c["cam_mid"] = mid.contiguous()
        c["cam_down_1"] = down[1].contiguous()
        c["noise_pred"] = base(c["latents"], TIMESTEP, encoder_hidden_states=c["context"],
                               down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        c["noise_pred_without_cam"] = base(c["latents"], TIMESTEP, encoder_hidden_states=c["context"]).sample
        c["image_tokens"] = resampler(c["image_embeds"].reshape(-1, 1024), batch_size=1)
    # the inputs are rebuilt from INPUT_SEED by the test (tests/test_streaming_t2v_parity.py); a slice of each
    # is kept to check that they came out the same
    for name in ("latents", "context", "cam_frames", "image_embeds"):
        c[name + "_head"] = c.pop(name).reshape(-1)[:16]
    return {k: v.contiguous() for k, v in c.items()}


INPUT_SEED = 7


def parity_inputs() -> dict:
    """float64 inputs from one seeded generator, in this order (the test draws them the same way)."""
    gen = torch.Generator().manual_seed(INPUT_SEED)
    return {
        "latents": torch.randn(1, 4, 16, LATENT_HW, LATENT_HW, generator=gen, dtype=torch.float64),
        "context": torch.randn(1, 93, 1024, generator=gen, dtype=torch.float64),  # 77 text + 16 image tokens
        "cam_frames": torch.rand(8, 3, 8 * LATENT_HW, 8 * LATENT_HW, generator=gen, dtype=torch.float64) * 2 - 1,
        "image_embeds": torch.randn(1, 8, 1024, generator=gen, dtype=torch.float64),
    }


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "streaming_t2v")
    commit = fc.original_commit(args.original_path, args.commit)
    orig = import_streaming_t2v(args.original_path)
    os.makedirs(args.out_dir, exist_ok=True)
    keys = released_keys(orig)
    write_keys(keys, os.path.join(args.out_dir, "released_keys.tsv.gz"))
    cases = parity_cases(orig, fc.reference_weights(), args.out_dir)
    from safetensors.torch import save_file

    save_file(cases, os.path.join(args.out_dir, "cases.safetensors"))
    files = {n: os.path.getsize(os.path.join(args.out_dir, n)) for n in sorted(os.listdir(args.out_dir))
             if n != "SOURCE.json"}
    fc.write_source(args.out_dir, REPO, commit, files,
                    "released_keys.tsv.gz: the key list of the released streaming_t2v.ckpt at full size (branch "
                    "StreamingModelscope), built on the meta device from the original classes as config.yaml "
                    "configures them; text encoder / VAE / image encoder from their classes' layouts (see the "
                    "generator's docstring). streaming_t2v_tiny_fp16.recipe.json: the original UNet3D (mergers, "
                    "APM), ControlNet (CAM) and ImgEmbContextResampler with tiny widths (cross-attention 1024, "
                    "hard-coded in the original), random fp16-rounded weights as a seeded recipe. cases.safetensors: "
                    "their outputs in float64 through the xformers processor the release ran (memory_efficient_"
                    "attention replaced by plain softmax attention): CAM features, the noise prediction with and "
                    "without CAM residuals (93-token context), and the resampler's 16 tokens.",
                    extra={"branch": "StreamingModelscope", "num_keys": len(keys), "tiny_unet": TINY_UNET,
                           "tiny_conditioning_channels": TINY_COND_CHANNELS, "timestep": TIMESTEP,
                           "input_seed": INPUT_SEED})


if __name__ == "__main__":
    main()

"""Run inside ComfyUI's Python (COMFYUI_PYTHON): core's *Load CLIP* (type stable_diffusion) + *CLIP Text Encode*
on a text tower in the released ModelScopeT2V / I2VGen-XL ``text_encoder/model.safetensors`` layout, against the
pack's own text encoding of the same file. Prints one JSON object. Used by test_t2v_core_clip.py; also runnable by
hand:

    $COMFYUI_PYTHON tests/integration/t2v_clip_probe.py COMFYUI_DIR PACK_ROOT MODELS_DIR SCRATCH_DIR

Core only recognises OpenCLIP ViT-H text towers at their real size (its SD 2 CLIP is built from a fixed 1024-wide,
24-layer config), so the probe writes full-size towers with random weights, in fp16 as the released fp16 files:
23 layers (ModelScope) and 24 layers (I2VGen-XL), and compares the conditioning core hands to a sampler with the
embedding our sampler computes (ModelScope: last hidden state; I2VGen-XL: penultimate through the final LayerNorm).
"""
import gc
import json
import os
import sys
import types

from probes import boot_comfy_with_pack  # this folder is the script's sys.path[0]

PROMPTS = ("an anime girl with long silver hair turns around and smiles", "")


def write_random_tower(config, folder):
    """A random fp16 text tower in the released layout (transformers 4's ``text_model.`` level), written straight
    from the module's shapes (no slow library init of 340 M parameters)."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CLIPTextModel(config).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("position_ids"):
            continue
        t = torch.randn(shape, generator=gen) * 0.02
        if "norm" in k and k.endswith("weight"):
            t = 1.0 + t
        sd[k if k.startswith("text_model.") else "text_model." + k] = t.half()
    os.makedirs(folder, exist_ok=True)
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)


def main(comfy_dir, pack_root, models_dir, scratch):
    boot_comfy_with_pack(comfy_dir, pack_root, scratch)
    import torch
    import comfy.sd
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from AnimeVideo.pipelines.t2v import loader, pipeline, tiny

    tokenizer_dir = os.path.join(comfy_dir, "comfy", "sd1_tokenizer")  # CLIP's real 49408-token BPE vocabulary
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, pad_token="!", model_max_length=77)  # OpenCLIP pads with 0
    out = {}
    for name, cfg, kind in (("modelscope", tiny.FULL_MODELSCOPE_TEXT, loader.MODELSCOPE),
                            ("i2vgenxl", tiny.FULL_I2VGENXL_TEXT, loader.I2VGENXL)):
        clip_skip = pipeline.CLIP_SKIP[kind]  # the layer our sampler reads for this model
        folder = os.path.join(scratch, name)
        write_random_tower(CLIPTextConfig(**cfg), folder)
        path = os.path.join(folder, "model.safetensors")
        ours = CLIPTextModel.from_pretrained(folder, dtype=torch.float32).eval()
        model = types.SimpleNamespace(tokenizer=tokenizer, text_encoder=ours)
        core = comfy.sd.load_clip(ckpt_paths=[path], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
        rows = []
        for prompt in PROMPTS:
            with torch.inference_mode():
                mine = pipeline.encode_text(model, [prompt], clip_skip).float()
            theirs = core.encode_from_tokens(core.tokenize(prompt)).float()
            rows.append({"prompt": prompt, "shape": list(theirs.shape), "ours_shape": list(mine.shape),
                         "max_abs": float((mine - theirs).abs().max()), "scale": float(mine.abs().max()),
                         "core_class": type(core.cond_stage_model).__name__})
        out[name] = rows
        del ours, core, model
        gc.collect()
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])

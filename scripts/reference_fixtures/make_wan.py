#!/usr/bin/env python3
"""Reference fixture from the ORIGINAL AniSora V3 Wan code (bilibili/Index-anisora, ``anisoraV3/wan``): a tiny
``WanModel`` (``wan/modules/model_infer.py``, the class ``image2video_any`` runs) and a tiny ``WanVAE_``
(``wan/modules/vae.py``) with random weights, saved as a native Wan ``.safetensors`` transformer and a
``Wan2.1_VAE.pth``-style state dict, plus the original's outputs in float64:

The transformer runs in float32 (its own precision: it asserts float32 modulation), the VAE in float64.

- ``forward``: one I2V transformer call (noise + y = [4-channel mask ; 16-channel guide latent], a 7-token
  prompt the model pads to 512, 257 CLIP tokens, t = 700);
- ``vae``: ``WanVAE.encode`` of a 5-frame video and ``WanVAE.decode`` of a latent (with the release's
  latent mean/std);
- ``sample``: ``image2video_any``'s sampling loop (``FlowUniPCMultistepScheduler``, shift 5, 4 steps, CFG 3
  against a second prompt) on the tiny transformer, from stored noise.

    python scripts/reference_fixtures/make_wan.py /path/to/Index-anisora [OUT_DIR] [--commit SHA]

Runs on CPU: ``flash_attention`` (CUDA only) is replaced by the same file's ``attention`` fallback
(scaled_dot_product_attention) in float64; with every sequence at full length (no padding), its ``k_lens``
masking is a no-op. The image projection is the original's ``MLPProj`` built for 12-wide CLIP tokens instead of
1280 (kilobytes instead of megabytes);
"""
from __future__ import annotations

import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402

REPO = "bilibili/Index-anisora"
PLACEHOLDERS = ["easydict", "ftfy", "dashscope", "xfuser", "fastvideo"]
HEAD_DIM = 12
NET = dict(model_type="i2v", patch_size=(1, 2, 2), text_len=512, in_dim=36, dim=2 * HEAD_DIM, ffn_dim=32,
           freq_dim=16, text_dim=16, out_dim=16, num_heads=2, num_layers=2, window_size=(-1, -1), qk_norm=True,
           cross_attn_norm=True, eps=1e-6)
CLIP_DIM = 12
VAE = dict(dim=4)  # the release: 96; z_dim 16, dim_mult [1,2,4,4], 2 res blocks, temporal downsample [F,T,T]
FRAMES, SIZE = 5, 32  # 2 latent frames of 4x4
STEPS, SHIFT, CFG = 4, 5.0, 3.0


def randomize(module, seed, std):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64) * std
            if name.endswith("gamma") or (name.endswith("weight") and "norm" in name):
                noise = 1.0 + noise
            p.copy_(noise.to(p.dtype))
    return module


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "wan")
    commit = fc.original_commit(args.original_path, args.commit)
    root = os.path.join(args.original_path, "anisoraV3")
    fc.import_original(root, PLACEHOLDERS)
    for pkg in ("wan", "wan/modules", "wan/utils"):  # their __init__ files import every pipeline (T5, CLIP, ...)
        fc.bare_package(pkg.replace("/", "."), os.path.join(root, pkg))
    from wan.modules import attention as wan_attention
    from wan.modules import model_infer
    from wan.modules import vae as wan_vae
    from wan.utils.fm_solvers_unipc import FlowUniPCMultistepScheduler

    fc.import_pack()
    from safetensors.torch import save_file

    from animevideo.pipelines.backbones.wan import keys as wan_keys

    def cpu_attention(q, k, v, q_lens=None, k_lens=None, **kw):
        for lens, x in ((q_lens, q), (k_lens, k)):
            assert lens is None or bool((lens == x.shape[1]).all()), "padded sequences: k_lens would matter"
        return wan_attention.attention(q, k, v, dtype=q.dtype)

    model_infer.flash_attention = cpu_attention

    torch.manual_seed(0)
    model = model_infer.WanModel(**NET)
    model.img_emb = model_infer.MLPProj(CLIP_DIM, NET["dim"])
    randomize(model, 1, 0.2)
    fc.round_to_(model, torch.float32)

    os.makedirs(args.out_dir, exist_ok=True)
    native = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(native, os.path.join(args.out_dir, "anisora_tiny.safetensors"),
              metadata={wan_keys.HEAD_DIM_METADATA: str(HEAD_DIM)})

    vae_path = os.path.join(args.out_dir, "Wan2.1_VAE_tiny.pth")
    vae_net = wan_vae.WanVAE_(z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                              temperal_downsample=[False, True, True], dropout=0.0, **VAE)
    randomize(vae_net, 2, 0.15)
    torch.save({k: v.float().contiguous() for k, v in vae_net.state_dict().items()}, vae_path)
    # the original wrapper (latent mean/std, chunked causal encode/decode), its loader pointed at the tiny width
    wan_vae._video_vae = functools.partial(wan_vae._video_vae, **VAE)
    vae = wan_vae.WanVAE(z_dim=16, vae_pth=vae_path, dtype=torch.float64, device="cpu")
    vae.model.double()

    # The transformer runs in float32, its own precision: it asserts float32 modulation and casts norms to
    # float32 (model_infer.WanAttentionBlock / Head), so a float64 run would not be the original's arithmetic.
    model.float().eval()

    gen = torch.Generator().manual_seed(3)
    t_lat, h = (FRAMES - 1) // 4 + 1, SIZE // 8
    c = {
        "noise": torch.randn(16, t_lat, h, h, generator=gen),
        "y": torch.cat([(torch.rand(4, t_lat, h, h, generator=gen) > 0.5).float(),
                        torch.randn(16, t_lat, h, h, generator=gen)]),
        "context": torch.randn(7, NET["text_dim"], generator=gen),
        "context_null": torch.randn(5, NET["text_dim"], generator=gen),
        "clip": torch.randn(1, 257, CLIP_DIM, generator=gen),
        "t": torch.tensor([700.0]),
        "video": torch.rand(3, FRAMES, SIZE, SIZE, generator=gen) * 2 - 1,
        "latent": torch.randn(16, t_lat, h, h, generator=gen),
    }
    seq_len = t_lat * (h // 2) ** 2

    def run(x, t, context):
        return model([x.float()], t=t, context=[context.float()], seq_len=seq_len, clip_fea=c["clip"],
                     y=[c["y"]])[0]

    with torch.no_grad():
        c["forward.out"] = run(c["noise"], c["t"], c["context"]).float()
        c["vae.encoded"] = vae.encode([c["video"].double()])[0].double()
        c["vae.decoded"] = vae.decode([c["latent"].double()])[0].double()

        sched = FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
        sched.set_timesteps(STEPS, device="cpu", shift=SHIFT)
        latent = c["noise"].clone()
        for t in sched.timesteps:
            cond = run(latent, torch.stack([t]), c["context"]).float()
            uncond = run(latent, torch.stack([t]), c["context_null"])
            pred = uncond + CFG * (cond - uncond)
            latent = sched.step(pred.unsqueeze(0), t, latent.unsqueeze(0), return_dict=False)[0].squeeze(0)
        c["sample.out"] = latent.float()
        c["sample.timesteps"] = sched.timesteps.double()
    for k in ("forward.out", "vae.encoded", "vae.decoded", "sample.out"):
        print(f"{k}: {tuple(c[k].shape)} |max| {c[k].abs().max():.4f}")
    save_file({k: v.contiguous() for k, v in c.items()}, os.path.join(args.out_dir, "cases.safetensors"))

    fc.write_source(
        args.out_dir, REPO, commit, fc.file_sizes(args.out_dir),
        "anisoraV3/wan: WanModel (modules/model_infer.py) and WanVAE_/WanVAE (modules/vae.py) with tiny widths and "
        "random weights; transformer and sampling in float32 (the original asserts float32 modulation), VAE in float64; flash_attention -> the "
        "file's own SDPA fallback (no padded sequences); sampling = image2video_any's loop with "
        "FlowUniPCMultistepScheduler(shift=1).set_timesteps(steps, shift=5) and CFG.",
        {"transformer_config": {k: list(v) if isinstance(v, tuple) else v for k, v in NET.items()},
         "clip_dim": CLIP_DIM, "vae_dim": VAE["dim"], "steps": STEPS, "shift": SHIFT, "cfg": CFG})


if __name__ == "__main__":
    main()

"""AniSora on the Wan2.1-I2V backbone: our path vs diffusers' WanImageToVideoPipeline on the same weights,
and what the guide machinery (Φ4 mask packing + zero-filled guide video) costs next to a sampling step.

Both sides use the *same module objects* (transformer, VAE), the same prompt / image embeddings and the same
initial noise; the outputs are compared once (fp32: asserted max abs diff < 1e-4) before any timing.
Timing: one warm-up per side, then interleaved repeats (ours, diffusers, ...), whole call (encode, steps,
decode). Separately: the median time of ``packing.build_wan_condition`` (the part a first-frame run through
diffusers does not have in this form) vs the median of one transformer forward, at the bench size and at
the real 480x832x81 size for the packing alone.

    python bench/anisora_wan.py                                 # mid-size random Wan, CPU fp32
    python bench/anisora_wan.py --device cuda --real-arch --dtype bf16 --size 832x480 --frames 81 --steps 2

The last line printed is ``ratio ours/diffusers=X.XXX`` (median of ours / median of diffusers).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pkg = types.ModuleType("animevideo")
pkg.__path__ = [ROOT]
sys.modules.setdefault("animevideo", pkg)

import torch  # noqa: E402

from animevideo.pipelines.anisora import flow_sampler, loader, packing, text as anisora_text, wan  # noqa: E402
from animevideo.pipelines.backbones.wan import tiny  # noqa: E402
from animevideo.pipelines.anisora.model import AniSoraHooks, AniSoraModel, AniSoraRequest, TextConditioning  # noqa: E402
from animevideo.pipelines.guides import Guide  # noqa: E402

MID = dict(tiny.TINY_TRANSFORMER_CONFIG, num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=4,
           text_dim=64, image_dim=64, added_kv_proj_dim=256, freq_dim=64)
REAL = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device, repeats):
    out = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


class _Processor:
    def __call__(self, images, return_tensors):
        return SimpleNamespace(to=lambda device: {"pixel_values": torch.zeros(1)})


class _ImageEncoder(torch.nn.Module):
    def __init__(self, embeds):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1, device=embeds.device))
        self.embeds = embeds

    @property
    def device(self):
        return self.anchor.device

    def forward(self, pixel_values, output_hidden_states):
        return SimpleNamespace(hidden_states=[None, self.embeds, None])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--real-arch", action="store_true", help="Wan2.1-I2V-14B shapes, random weights")
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    W, H = (int(v) for v in args.size.split("x"))
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    cfg = REAL if args.real_arch else MID
    torch.manual_seed(0)
    with torch.device(device):
        tr = WanTransformer3DModel(**cfg).eval().requires_grad_(False)
    loader.cast_like_diffusers(tr, dtype)  # as our loader and diffusers' from_pretrained(torch_dtype) leave it
    vae = tiny.build_tiny_vae(0).to(device)
    model = AniSoraModel("wan", tr, vae, dtype, "bench")
    g = torch.Generator().manual_seed(1)
    img = torch.rand(H, W, 3, generator=g)
    text = TextConditioning(torch.randn(1, 20, cfg["text_dim"], generator=g), None,
                            torch.randn(1, 257, cfg["image_dim"], generator=g))
    guide = Guide().with_keyframe(img, 0)
    req = AniSoraRequest(width=W, height=H, num_frames=args.frames, steps=args.steps, cfg=1.0, shift=5.0, seed=3)
    cond = packing.build_wan_condition(guide, req.num_frames, H, W)
    t_lat = cond.latent_frames
    noise = wan.initial_noise((1, 16, t_lat, H // 8, W // 8), req.seed)
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                   scheduler=flow_sampler.make_scheduler("unipc", 5.0), transformer=tr,
                                   image_encoder=_ImageEncoder(text.image_embeds.to(device)),
                                   image_processor=_Processor())
    pipe.set_progress_bar_config(disable=True)
    pos = anisora_text.pad_prompt_embeds(text.positive).to(device)

    def ours():
        c = packing.build_wan_condition(guide, req.num_frames, H, W)
        condition = wan.encode_condition(model, c, AniSoraHooks())
        lat = wan.sample_latents(model, condition, text, req, AniSoraHooks(), noise)
        return packing.decode_latents(vae, lat)

    def theirs():
        return pipe(image=img.permute(2, 0, 1)[None], prompt_embeds=pos, height=H, width=W,
                    num_frames=req.num_frames, num_inference_steps=req.steps, guidance_scale=1.0,
                    latents=noise.clone().to(device), output_type="pt", return_dict=False)[0]

    a, b = ours(), theirs()
    diff = (a - b[0].permute(0, 2, 3, 1).float().cpu()).abs().max().item()
    print(f"max abs diff ours vs diffusers = {diff:.3e}")
    if dtype == torch.float32:
        assert diff < 1e-4, diff
    # interleaved whole calls
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t_ours.append(median_time(ours, device, 1))
        t_theirs.append(median_time(theirs, device, 1))
    # the guide machinery vs one transformer forward
    pack = median_time(lambda: packing.build_wan_condition(guide, req.num_frames, H, W), device, 5)
    x = torch.cat([noise.to(device), wan.encode_condition(model, cond, AniSoraHooks())], 1).to(dtype)
    ctx, img_tok = pos.to(dtype), text.image_embeds.to(device, dtype)
    with torch.no_grad():
        step = median_time(lambda: tr(hidden_states=x, timestep=torch.tensor([500], device=device),
                                      encoder_hidden_states=ctx, encoder_hidden_states_image=img_tok,
                                      return_dict=False), device, 3)
    real_g = Guide().with_keyframe(torch.rand(480, 832, 3), 0).with_keyframe(torch.rand(480, 832, 3), -1)
    real_pack = median_time(lambda: packing.build_wan_condition(real_g, 81, 480, 832), torch.device("cpu"), 3)
    name = "Wan2.1-I2V-14B (random)" if args.real_arch else "mid-size Wan"
    print(f"model {name}, {sum(p.numel() for p in tr.parameters()) / 1e6:.1f} M params, {args.dtype}, {device}, "
          f"{W}x{H}x{req.num_frames} ({t_lat} latent frames), {args.steps} unipc steps")
    print(f"whole call median: ours {statistics.median(t_ours):.3f} s, diffusers {statistics.median(t_theirs):.3f} s "
          f"(ours {['%.3f' % t for t in t_ours]}, diffusers {['%.3f' % t for t in t_theirs]})")
    print(f"guide packing {pack * 1e3:.2f} ms vs one transformer step {step * 1e3:.1f} ms: "
          f"{100 * pack / step:.2f}% of one step (it runs once per clip, i.e. {100 * pack / (step * args.steps):.3f}% "
          f"of the {args.steps}-step run)")
    print(f"guide packing at 832x480x81, two keyframes (CPU): {real_pack * 1e3:.1f} ms")
    print(f"ratio ours/diffusers={statistics.median(t_ours) / statistics.median(t_theirs):.3f}")


if __name__ == "__main__":
    main()

"""What AniSora Wan Conditioning (the core route's node) costs next to one sampling step of the Wan model it
feeds: the node runs once per clip, a step runs 8 (AniSora V3) to 50 times. Goal: the node's own work <= 2% of
one step.

Measured side by side in one process, interleaved (node, step, node, step ...), medians:

* **node**: ``AnimeVideoAniSoraWanConditioning.condition`` with core's VAE contract served by a VAE that returns
  the guide latent at once, so the figure is the node's own work (guide video, Φ4 mask packing, the copies onto
  the conditioning), not the VAE pass that core's own WanImageToVideo makes too. The tiny Wan VAE pass is timed
  separately for reference.
* **step**: one forward of the Wan2.1-I2V transformer on [noise | mask | guide latent] (one step at cfg 1, as
  AniSora V3 samples; cfg > 1 doubles it), through the same call our own sampler makes (``wan.sample_latents``'
  velocity), for the tiny test transformer and for one at the released width (5120 wide, 40 heads x 128, ffn
  13824, text 4096, image 1280) with ``--layers`` layers. The released model has 40 such layers; the step time per
  layer is uniform, so the 40-layer figure is the measured one x 40 / layers (printed as an extrapolation).

    python bench/anisora_core_conditioning.py                       # CPU, 128x128x17, tiny + 1 wide layer
    python bench/anisora_core_conditioning.py --device cuda --size 832x480 --frames 81 --layers 4 --dtype bf16

Last lines: ``ratio node/step (<model>)=X.XXXX`` per model.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pkg = types.ModuleType("animevideo")
pkg.__path__ = [ROOT]
sys.modules.setdefault("animevideo", pkg)
os.environ.setdefault("ANIMEVIDEO_QUIET", "1")  # no tqdm bar outside ComfyUI

import torch  # noqa: E402

from animevideo.nodes.anisora_core import AnimeVideoAniSoraWanConditioning  # noqa: E402
from animevideo.pipelines.anisora import loader, packing  # noqa: E402
from animevideo.pipelines.anisora.text import pad_prompt_embeds  # noqa: E402
from animevideo.pipelines.backbones.wan import tiny  # noqa: E402
from animevideo.pipelines.guides import Guide  # noqa: E402

RELEASED_LAYERS = 40
WIDE = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=1e-6, image_dim=1280, added_kv_proj_dim=5120)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


class ReadyLatentVAE:
    """Core's VAE.encode contract, answering with a latent computed beforehand (the node's own work only)."""

    def __init__(self, latent):
        self.latent = latent

    def encode(self, pixels):
        return self.latent


class TinyCoreVAE:
    """Core's VAE.encode contract on the tiny diffusers Wan VAE (for the VAE pass's reference time)."""

    def __init__(self, vae):
        self.vae = vae

    def encode(self, pixels):
        with torch.no_grad():
            return self.vae.encode((pixels * 2 - 1).permute(3, 0, 1, 2)[None]).latent_dist.mode()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--size", default="128x128", help="WxH of the clip")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--layers", type=int, default=1, help="layers of the released-width transformer")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-wide", action="store_true", help="only the tiny transformer")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    W, H = (int(v) for v in args.size.split("x"))
    from diffusers import WanTransformer3DModel

    g = torch.Generator().manual_seed(0)
    guide = Guide().with_keyframe(torch.rand(H, W, 3, generator=g), 0).with_keyframe(
        torch.rand(H, W, 3, generator=g), -1)
    cond = packing.build_wan_condition(guide, args.frames, H, W)
    vae = tiny.build_tiny_vae(0)
    latent = TinyCoreVAE(vae).encode(packing.guide_pixels(cond.video))
    positive = [[torch.randn(1, 20, 8, generator=g), {"pooled_output": None}]]
    negative = [[torch.randn(1, 20, 8, generator=g), {"pooled_output": None}]]
    node = AnimeVideoAniSoraWanConditioning()

    def run_node(v):
        return node.condition(positive, negative, v, W, H, args.frames, 1, guide=guide)

    ready = ReadyLatentVAE(latent)
    out = run_node(ready)  # warm-up, and the shapes the step takes
    noise = torch.randn(out[2]["samples"].shape, generator=g)
    y = torch.cat([1.0 - out[0][0][1]["concat_mask"], latent], 1)  # what core's concat_cond hands the model

    models = [("tiny Wan (test layout)", dict(tiny.TINY_TRANSFORMER_CONFIG), None)]
    if not args.no_wide:
        models.append((f"released-width Wan, {args.layers} layer(s)", dict(WIDE, num_layers=args.layers),
                       RELEASED_LAYERS / args.layers))
    print(f"clip {W}x{H}x{cond.num_frames} ({cond.latent_frames} latent frames), two keyframes, {args.dtype}, "
          f"{device}, torch threads {torch.get_num_threads()}, {args.repeats} interleaved repeats")
    vae_times = [timed(lambda: run_node(TinyCoreVAE(vae)), torch.device("cpu")) for _ in range(3)]
    print(f"node with the tiny Wan VAE pass (reference): {statistics.median(vae_times) * 1e3:.2f} ms")
    results = []
    for name, config, scale in models:
        torch.manual_seed(0)
        with torch.device(device):
            tr = WanTransformer3DModel(**config).eval().requires_grad_(False)
        loader.cast_like_diffusers(tr, dtype)
        text_dim, image_dim = config["text_dim"], config["image_dim"]
        ctx = pad_prompt_embeds(torch.randn(1, 20, text_dim, generator=g), 512).to(device, dtype)
        img = torch.randn(1, 257, image_dim, generator=g).to(device, dtype)
        x = torch.cat([noise, y], 1).to(device, dtype)
        t = torch.tensor([500.0], device=device)

        def step():
            with torch.no_grad():
                return tr(hidden_states=x, timestep=t, encoder_hidden_states=ctx, encoder_hidden_states_image=img,
                          return_dict=False)[0]

        step()  # warm-up
        node_t, step_t = [], []
        for _ in range(args.repeats):
            node_t.append(timed(lambda: run_node(ready), torch.device("cpu")))
            step_t.append(timed(step, device))
        n, s = statistics.median(node_t), statistics.median(step_t)
        params = sum(p.numel() for p in tr.parameters()) / 1e6
        print(f"{name} ({params:.1f} M params): node {n * 1e3:.2f} ms, one step {s * 1e3:.1f} ms -> "
              f"{100 * n / s:.3f}% of one step")
        if scale is not None:
            print(f"  extrapolated to the released {RELEASED_LAYERS} layers (step x {scale:g}): "
                  f"{100 * n / (s * scale):.4f}% of one step")
        results.append((name, n / s))
        del tr
    for name, ratio in results:
        print(f"ratio node/step ({name})={ratio:.4f}")


if __name__ == "__main__":
    main()

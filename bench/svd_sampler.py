"""Side-by-side wall time of our SVD sampler vs diffusers' StableVideoDiffusionPipeline on the same weights.

Both sides get the same image (a PIL image at exactly the output size for diffusers, the same pixels /255
as a tensor for ours), the same seed (a CPU generator; both draw augmentation noise then latent noise),
the same steps, CFG range and decode_chunk_size, and the *same module objects* (the diffusers pipeline is
assembled from our loaded SVDModel's unet/vae/image_encoder), so they do the same work. The outputs are
compared once (fp32: asserted max abs diff < 1e-3) before any timing.

Timing: warm-up of both, then interleaved repeats (ours, diffusers, ours, diffusers, ...). Each call is
split at the last step's callback into "cond+sample" and "decode+post" (with a CUDA sync there on GPU).

    python bench/svd_sampler.py                       # mid-size random UNet, CPU fp32
    python bench/svd_sampler.py --device cuda --real-arch --dtype fp16 --frames 14 --size 1024x576 --steps 25

The last line printed is ``ratio ours/diffusers=X.XXX`` (median of ours / median of diffusers, whole call).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pkg = types.ModuleType("animevideo")
pkg.__path__ = [ROOT]
sys.modules.setdefault("animevideo", pkg)

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from animevideo.pipelines.svd import loader, pipeline, tiny  # noqa: E402

MID_UNET = dict(
    block_out_channels=(64, 128, 256),
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                      "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    num_attention_heads=(1, 2, 4),  # width / 64
)

# Released SVD / SVD-XT shapes. The UNet's default config is already SVD-XT's; the VAE's default is not.
REAL_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=768,
    scaling_factor=0.18215, force_upcast=True,
)
REAL_CLIP = dict(
    hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120, patch_size=14,
    image_size=224, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5,
)


def parse_size(s: str) -> tuple[int, int]:
    """'64' -> (64, 64); '1024x576' -> (width 1024, height 576)."""
    if "x" in s.lower():
        w, h = s.lower().split("x")
        return int(w), int(h)
    return int(s), int(s)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    return loader.resolve_dtype(name, device)


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

def init_parameter_(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Fill one parameter in place: norms' weights 1, biases 0, mix factors 0.5, the rest N(0, 1/fan_in)
    so activations stay O(1) through billion-parameter stacks in fp16."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "mix_factor":
        p.fill_(0.5)
    elif leaf == "bias":
        p.zero_()
    elif p.ndim == 1 and ("norm" in name or "layernorm" in name or "ln_" in name):
        p.fill_(1.0)
    elif p.ndim == 1:
        p.normal_(0.0, 0.02, generator=gen)
    else:
        fan_in = int(np.prod(p.shape[1:]))
        p.normal_(0.0, fan_in ** -0.5, generator=gen)
    return p


def _generic_init_(module: torch.nn.Module, gen: torch.Generator):
    """Fill every parameter on its device (``init_parameter_``) and set position ids to arange."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            init_parameter_(name, p, gen)
        for name, b in module.named_buffers():
            if name.endswith("position_ids"):
                b.copy_(torch.arange(b.shape[-1], device=b.device).expand(b.shape))
    return module.eval().requires_grad_(False)


def build_real_arch(device: str, dtype: torch.dtype, meta_only: bool = False, seed: int = 0):
    """Released-size SVD-XT UNet / SVD VAE / ViT-H CLIP with random weights, built on meta then
    materialised straight on ``device`` (no CPU init of 2B parameters)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()
        vae = AutoencoderKLTemporalDecoder(**REAL_VAE)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**REAL_CLIP))
    if meta_only:
        return unet, vae, clip
    gen = torch.Generator(device).manual_seed(seed)
    out = []
    for m, dt in ((unet, dtype), (vae, loader.vae_dtype_for(dtype)), (clip, dtype)):
        m = m.to_empty(device=device)
        _generic_init_(m, gen)
        out.append(m.to(dt))
    unet, vae, clip = out
    model = loader.SVDModel(unet=unet, vae=vae, image_encoder=clip, dtype=dtype, source="random:real-arch",
                            layout="diffusers")
    return model


def build_mid(device: str, dtype: torch.dtype, workdir: str, seed: int = 0, generic_init: bool = False):
    """Mid-size random UNet + tiny VAE/CLIP, written as a diffusers folder and loaded by our loader."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    unet, vae, clip = tiny.build_tiny_svd(seed, unet_overrides=MID_UNET)
    if generic_init:  # exercise the --real-arch init path on a CPU-sized model
        gen = torch.Generator("cpu").manual_seed(seed)
        for m in (unet, vae, clip):
            _generic_init_(m, gen)
    path = os.path.join(workdir, "svd_mid")
    tiny.write_diffusers_folder(path, unet, vae, clip)
    del unet, vae, clip
    model = loader.load_svd(path, dtype)
    return model.to(device), path


def diffusers_pipe(model: loader.SVDModel):
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

    fe_cfg = {k: v for k, v in tiny.FEATURE_EXTRACTOR_CONFIG.items() if k != "image_processor_type"}
    pipe = StableVideoDiffusionPipeline(
        vae=model.vae, image_encoder=model.image_encoder, unet=model.unet,
        scheduler=EulerDiscreteScheduler.from_config(tiny.SCHEDULER_CONFIG),
        feature_extractor=CLIPImageProcessor(**fe_cfg),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------
# one call each
# ---------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, model, pipe, args, width, height):
        from PIL import Image

        self.model, self.pipe, self.args = model, pipe, args
        self.device = model.device
        rng = np.random.default_rng(1234)
        u8 = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        self.pil = Image.fromarray(u8)
        self.images = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255.0
        self.width, self.height = width, height
        self.req = pipeline.SVDRequest(num_frames=args.frames, steps=args.steps, min_cfg=args.min_cfg,
                                       max_cfg=args.max_cfg, seed=args.seed,
                                       decode_chunk_size=args.decode_chunk_size)

    def _mem_start(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        return 0

    def _mem_end(self, base):
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            return peak, peak - base
        return None, None

    def ours(self):
        marks = {}

        def on_step(state):
            if state.step == state.total - 1:
                sync(self.device)
                marks["sampled"] = time.perf_counter()

        base = self._mem_start()
        t0 = time.perf_counter()
        res = pipeline.image_to_video(self.model, self.images, self.req, hooks=pipeline.SVDRunHooks(on_step=on_step))
        sync(self.device)
        t1 = time.perf_counter()
        peak = self._mem_end(base)
        frames = res.frames.permute(0, 3, 1, 2)  # [F,3,H,W]
        return frames, dict(total=t1 - t0, sample=marks["sampled"] - t0, decode=t1 - marks["sampled"],
                            peak=peak[0], work=peak[1])

    def theirs(self):
        marks = {}
        a = self.args

        def cb(pipe, i, t, kw):
            if i == a.steps - 1:
                sync(self.device)
                marks["sampled"] = time.perf_counter()
            return {}

        base = self._mem_start()
        t0 = time.perf_counter()
        out = self.pipe(self.pil, height=self.height, width=self.width, num_frames=a.frames,
                        num_inference_steps=a.steps, min_guidance_scale=a.min_cfg, max_guidance_scale=a.max_cfg,
                        fps=7, motion_bucket_id=127, noise_aug_strength=0.02,
                        decode_chunk_size=a.decode_chunk_size, generator=torch.Generator("cpu").manual_seed(a.seed),
                        output_type="pt", callback_on_step_end=cb, callback_on_step_end_tensor_inputs=[])
        sync(self.device)
        t1 = time.perf_counter()
        peak = self._mem_end(base)
        frames = out.frames[0]  # [F,3,H,W]
        return frames, dict(total=t1 - t0, sample=marks["sampled"] - t0, decode=t1 - marks["sampled"],
                            peak=peak[0], work=peak[1])


def med(xs):
    return statistics.median(xs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per side (interleaved), at least 1")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per side first")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--size", default="64", help="'64' or WIDTHxHEIGHT, e.g. 1024x576")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, fp16 on CUDA), fp32, fp16, bf16")
    p.add_argument("--decode-chunk-size", type=int, default=None, help="default: = frames")
    p.add_argument("--min-cfg", type=float, default=1.0)
    p.add_argument("--max-cfg", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--real-arch", action="store_true",
                   help="released-size SVD-XT UNet / SVD VAE / ViT-H CLIP, random weights (GPU only; on CPU it "
                        "only checks construction on the meta device)")
    p.add_argument("--generic-init", action="store_true", help="mid-size model with the --real-arch init (test)")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="seconds for the timed repeats; stop early (after >= 1 pair) if the next pair would pass it")
    p.add_argument("--no-check", action="store_true", help="skip the output agreement check")
    args = p.parse_args(argv)
    args.decode_chunk_size = args.decode_chunk_size or args.frames
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, args.device)
    width, height = parse_size(args.size)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, dtype {dtype}")
    print(f"frames {args.frames}, size {width}x{height}, steps {args.steps}, cfg {args.min_cfg}..{args.max_cfg}, "
          f"decode_chunk_size {args.decode_chunk_size}, repeats {args.repeats}, warmup {args.warmup}")

    workdir = tempfile.mkdtemp(prefix="svd_bench_")
    try:
        if args.real_arch:
            if device.type != "cuda":
                unet, vae, clip = build_real_arch(args.device, dtype, meta_only=True)
                n = [sum(q.numel() for q in m.parameters()) / 1e6 for m in (unet, vae, clip)]
                print(f"real-arch constructs on meta: unet {n[0]:.1f}M, vae {n[1]:.1f}M, clip {n[2]:.1f}M params")
                print("real-arch is not run on CPU; use --device cuda")
                return 0
            t = time.perf_counter()
            model = build_real_arch(args.device, dtype, seed=args.seed)
            sync(device)
            print(f"built real-arch on {device} in {time.perf_counter() - t:.1f}s")
        else:
            model, _ = build_mid(args.device, dtype, workdir, seed=args.seed, generic_init=args.generic_init)
        n_unet = sum(q.numel() for q in model.unet.parameters()) / 1e6
        print(f"unet {n_unet:.1f}M params, block_out_channels {tuple(model.unet.config.block_out_channels)}")
        pipe = diffusers_pipe(model)
        run = Runner(model, pipe, args, width, height)

        # warm-up, and the fairness check on the warm-up outputs
        for _ in range(max(1, args.warmup)):
            a, _ = run.ours()
            b, _ = run.theirs()
        assert a.shape == b.shape, (a.shape, b.shape)
        diff = (a.float().cpu() - b.float().cpu()).abs().max().item()
        finite = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
        print(f"outputs: shape {tuple(a.shape)}, max abs diff ours vs diffusers = {diff:.3e}, finite={finite}, "
              f"mean {a.float().mean().item():.4f}/{b.float().mean().item():.4f}")
        if not args.no_check and dtype == torch.float32:
            assert finite and diff < 1e-3, f"outputs disagree (max abs diff {diff:.3e}); the comparison is not fair"
        del a, b

        ours, theirs = [], []
        t_start = time.perf_counter()
        for r in range(args.repeats):
            if args.time_budget and ours:
                spent = time.perf_counter() - t_start
                if spent + spent / len(ours) > args.time_budget:
                    print(f"  stopping after {len(ours)} pairs: --time-budget {args.time_budget:.0f}s")
                    break
            _, m1 = run.ours()
            _, m2 = run.theirs()
            ours.append(m1)
            theirs.append(m2)
            print(f"  rep {r}: ours {m1['total']:.3f}s (sample {m1['sample']:.3f} decode {m1['decode']:.3f})  "
                  f"diffusers {m2['total']:.3f}s (sample {m2['sample']:.3f} decode {m2['decode']:.3f})")

        def summary(name, ms):
            t, s, d = (med([m[k] for m in ms]) for k in ("total", "sample", "decode"))
            line = (f"{name:9s} median total {t:.3f}s  cond+sample {s:.3f}s  decode+post {d:.3f}s  "
                    f"({t / args.frames:.4f} s/frame, min {min(m['total'] for m in ms):.3f}s)")
            if ms[0]["peak"] is not None:
                line += (f"  peak VRAM {max(m['peak'] for m in ms) / 2**30:.2f} GiB "
                         f"(working {max(m['work'] for m in ms) / 2**30:.2f} GiB over weights+inputs)")
            print(line)
            return t, s, d

        to, so, do = summary("ours", ours)
        tt, st, dt = summary("diffusers", theirs)
        pair = med([o["total"] / t["total"] for o, t in zip(ours, theirs)])
        print(f"sample ratio ours/diffusers={so / st:.3f}  decode ratio ours/diffusers={do / dt:.3f}  "
              f"median of per-pair ratios={pair:.3f}")
        print(f"ratio ours/diffusers={to / tt:.3f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""LVCD colorization benchmarks: memory and time vs clip length, and the cost of reference attention.

1. ``length`` (default): peak working memory and wall time of ``pipelines.lvcd.colorize.colorize`` for L=60 vs
   L=20 lineart frames (14-frame segments, overlap 4: 6 vs 2 passes). Goals: memory ratio <= 1.15 (bounded by one
   segment, not the clip) and time ratio within 10% of the pass-count ratio. Each case runs in a fresh
   subprocess, cases interleaved, medians reported. Working memory = peak during the call - what was live before
   it (model, inputs) - the output IMAGE tensor ([L, H, W, 3] float32, allocated inside the call). Measured as
   ``torch`` (every torch CPU allocation, via the profiler, exact for tensors) and ``rss`` (VmHWM growth, includes
   allocator slack); ``cuda`` on a GPU (max_memory_allocated; the output lives on the CPU).
2. ``attention``: one forward at T=19 frames of the UNet with reference attention (the installed LVCD attention,
   ``normal_plan(5, 14)``: 2x keys in every spatial self-attention, masked temporal layers) vs the same UNet with
   no plan (stock SVD attention), and the full LVCD denoiser (ControlNet + patched UNet) for context.
3. ``speed`` (GPU): the released LVCD architecture with random weights at 320x576 (fp16): seconds per output frame
   for a clip of ``--frames`` frames, 25 steps (paper: ~2 s/frame on an RTX A6000).

    python bench/lvcd.py                               # tiny LVCD, 128x128 px, 3 steps, CPU
    python bench/lvcd.py attention --size 320x576      # tiny LVCD at the paper's resolution
    python bench/lvcd.py attention --real-arch --device cuda --dtype fp16 --size 320x576
    python bench/lvcd.py speed --device cuda --dtype fp16
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from memtools import _reset_hwm, _status_kb, _torch_peak, child_result, import_pack, run_child  # bench/ is on sys.path when run as a script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 2 ** 20



def parse_size(s: str) -> tuple[int, int]:
    """'128' -> (128, 128); '320x576' -> (height 320, width 576)."""
    if "x" in s.lower():
        h, w = s.lower().split("x")
        return int(h), int(w)
    return int(s), int(s)


def sync(device):
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def build_model(args):
    """The tiny LVCD (random weights, tiny SVD config) or the released architecture with random weights."""
    import torch

    from animevideo.pipelines.reference_attention.attention import install_lvcd_attention
    from animevideo.pipelines.lvcd.controlnet import SVDControlNet
    from animevideo.pipelines.lvcd.loader import LVCDModel
    from animevideo.pipelines.svd import loader as svd_loader

    dtype = svd_loader.resolve_dtype(args.dtype, args.device)
    if args.real_arch:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from svd_sampler import _generic_init_, build_real_arch

        unet, vae, clip = build_real_arch(args.device, dtype, seed=args.seed)
        with torch.device("meta"):
            controlnet = SVDControlNet(dict(unet.config), 3, (16, 32, 96, 256))
        controlnet = _generic_init_(controlnet.to_empty(device=args.device),
                                    torch.Generator(args.device).manual_seed(args.seed + 1)).to(dtype)
    else:
        from animevideo.pipelines.lvcd import tiny as lvcd_tiny

        unet, vae, clip, controlnet, _ = lvcd_tiny.build_tiny_lvcd(args.seed)
        unet, vae, clip, controlnet = (m.to(args.device) for m in (unet, vae, clip, controlnet))
        if dtype != torch.float32:
            unet, clip, controlnet = unet.to(dtype), clip.to(dtype), controlnet.to(dtype)
            vae = vae.to(svd_loader.vae_dtype_for(dtype))
    for m in (unet, vae, clip, controlnet):
        m.eval().requires_grad_(False)
    svd = svd_loader.SVDModel(unet=unet, vae=vae, image_encoder=clip, dtype=dtype, source="random", layout="sgm")
    return LVCDModel(svd=svd, controlnet=controlnet, unet_attention=install_lvcd_attention(unet),
                     controlnet_attention=install_lvcd_attention(controlnet), dtype=dtype, svd_source="random",
                     lvcd_source="random")


def inputs(frames: int, h: int, w: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    hints = (torch.rand(frames, 1, h, w, generator=g) > 0.85).float().expand(-1, 3, -1, -1).contiguous()
    ref = torch.rand(3, h, w, generator=g)
    return ref, hints


# ------------------------------------------------------------------------------------------ length
def length_child(args) -> dict:
    import_pack()
    import gc
    import resource

    import torch

    from animevideo.pipelines.long_video.segments import LongVideoOptions, plan_segments
    from animevideo.pipelines.lvcd import colorize as lc

    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = parse_size(args.size)
    model = build_model(args)
    opts = lc.ColorizeOptions(long_video=LongVideoOptions(args.segment_length, args.overlap))
    ref, hints = inputs(args.one, h, w, args.seed)
    wref, whints = inputs(3, h, w, args.seed)
    lc.colorize(model, [(wref, 0)], whints, opts, steps=1, seed=0)  # warm-up: thread pools, kernel caches
    gc.collect()
    out_bytes = args.one * h * w * 3 * 4
    res = dict(frames=args.one, passes=len(plan_segments(args.one, args.segment_length, args.overlap)),
               out_bytes=out_bytes)
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        lc.colorize(model, [(ref, 0)], hints, opts, steps=args.steps, seed=0)
        torch.cuda.synchronize()
        res.update(seconds=time.perf_counter() - t0, cuda_working=torch.cuda.max_memory_allocated() - base)
        return res
    hwm_ok = _reset_hwm()
    base_kb = _status_kb("VmRSS") if hwm_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = lc.colorize(model, [(ref, 0)], hints, opts, steps=args.steps, seed=0)
    res["seconds"] = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM") if hwm_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert out.numel() * out.element_size() == out_bytes
    res.update(rss_working=(peak_kb - base_kb) * 1024 - out_bytes, hwm_reset=hwm_ok)
    del out
    gc.collect()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        lc.colorize(model, [(ref, 0)], hints, opts, steps=args.steps, seed=0)
    res["torch_working"] = _torch_peak(prof) - out_bytes
    return res


def run_length(args):
    a, b = args.frames
    runs = {a: [], b: []}
    for r in range(args.runs):
        for f in (a, b):
            cmd = [sys.executable, os.path.abspath(__file__), "length", "--child", "--one", str(f)] + args.passthrough
            res = run_child(cmd, f"{f} frames")
            runs[f].append(res)
            mem = " ".join(f"{k} {res[k] / MiB:7.2f} MiB" for k in ("cuda_working", "rss_working", "torch_working")
                           if k in res)
            print(f"  run {r} L={f:3d} ({res['passes']} passes): {res['seconds']:7.2f} s  {mem}", flush=True)
    keys = [k for k in ("cuda_working", "rss_working", "torch_working") if k in runs[a][0]]
    pa, pb = runs[a][0]["passes"], runs[b][0]["passes"]
    print(f"size {args.size}, steps {args.steps}, segment {args.segment_length}/overlap {args.overlap}, "
          f"{'real arch' if args.real_arch else 'tiny LVCD'}, {args.device}, {args.runs} runs (medians):")
    for k in keys:
        ma = statistics.median(x[k] for x in runs[a])
        mb = statistics.median(x[k] for x in runs[b])
        print(f"  {k:14s} L={a} {ma / MiB:8.2f} MiB   L={b} {mb / MiB:8.2f} MiB   ratio {ma / mb:.3f}")
    ta = statistics.median(x["seconds"] for x in runs[a])
    tb = statistics.median(x["seconds"] for x in runs[b])
    print(f"  time           L={a} {ta:8.2f} s     L={b} {tb:8.2f} s     ratio {ta / tb:.3f} "
          f"vs pass ratio {pa / pb:.3f} (off by {100 * (ta / tb / (pa / pb) - 1):+.1f}%)")
    ma = statistics.median(x[keys[-1]] for x in runs[a])
    mb = statistics.median(x[keys[-1]] for x in runs[b])
    print(f"memory ratio L{a}/L{b}={ma / mb:.3f} time/pass ratio={ta / tb / (pa / pb):.3f}")


# ------------------------------------------------------------------------------------------ attention
def run_attention(args):
    import_pack()
    import torch

    from animevideo.pipelines.lvcd.denoiser import LVCDDenoiser
    from animevideo.pipelines.reference_attention.plan import normal_plan
    from animevideo.pipelines.svd import sampler as edm

    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = parse_size(args.size)
    model = build_model(args)
    dev, dt = args.device, model.dtype
    f = model.svd.spatial_factor
    t = 19
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, t, 4, h // f, w // f, generator=g).to(dev, dt)
    cond = torch.randn(1, t, 4, h // f, w // f, generator=g).to(dev, dt)
    hidden = torch.randn(1, 1, model.unet.config.cross_attention_dim, generator=g).to(dev, dt)
    ids = torch.tensor([[6.0, 160.0, 0.0]]).to(dev, dt)
    c_noise = torch.tensor(0.25).to(dev)
    hints = inputs(t, h, w, 0)[1].to(dev, dt)
    plan = normal_plan(5, 14)
    stock = edm.UNetDenoiser(model.unet)

    def patched(*a):
        with model.unet_attention.use(plan):
            return stock(*a)

    full = LVCDDenoiser(model, hints, plan)
    cases = {"stock UNet": stock, "patched UNet": patched, "LVCD (ControlNet+UNet)": full}
    times = {k: [] for k in cases}
    with torch.inference_mode():
        for fn in cases.values():  # warm-up
            fn(x, c_noise, hidden, ids, cond, 0)
        sync(dev)
        for _ in range(args.repeats):
            for k, fn in cases.items():
                t0 = time.perf_counter()
                fn(x, c_noise, hidden, ids, cond, 0)
                sync(dev)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"one forward at T={t}, {h}x{w} px, {'real arch' if args.real_arch else 'tiny LVCD'}, {dev} {dt}, "
          f"{args.repeats} interleaved repeats (medians):")
    for k, v in med.items():
        print(f"  {k:24s} {v * 1000:9.1f} ms   x{v / med['stock UNet']:.3f}")
    print(f"reference-attention ratio patched/stock={med['patched UNet'] / med['stock UNet']:.3f}")


# ------------------------------------------------------------------------------------------ speed
def speed(model, n_frames: int, h: int, w: int, steps: int, device, seed: int = 0, warmup_steps: int = 2) -> dict:
    """Colorize an ``n_frames`` clip (14-frame segments, overlap 4) after a short warm-up; seconds per output
    frame, sampling vs decode, and the device's peak memory (None on the CPU). Also used by gpu_suite.py."""
    import_pack()
    import torch

    from animevideo.pipelines.long_video.segments import LongVideoOptions, plan_segments
    from animevideo.pipelines.lvcd import colorize as lc

    opts = lc.ColorizeOptions(long_video=LongVideoOptions(14, 4))
    wref, whints = inputs(min(14, n_frames), h, w, 1)
    lc.colorize(model, [(wref, 0)], whints, opts, steps=warmup_steps, seed=0)  # warm-up (kernels, allocator)
    ref, hints = inputs(n_frames, h, w, seed)
    steps_done = []
    cb = lc.ColorizeCallbacks(on_step=lambda i, st: steps_done.append(time.perf_counter()))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    lc.colorize(model, [(ref, 0)], hints, opts, steps=steps, seed=0, callbacks=cb)
    sync(device)
    total = time.perf_counter() - t0
    sampling = steps_done[-1] - t0
    return dict(frames=n_frames, passes=len(plan_segments(n_frames, 14, 4)), steps=steps, total=total,
                sampling=sampling, s_per_frame=total / n_frames,
                peak_bytes=torch.cuda.max_memory_allocated() if cuda else None)


def run_speed(args):
    args.real_arch = True
    h, w = parse_size(args.size)
    model = build_model(args)
    r = speed(model, args.one or 34, h, w, args.steps, args.device, args.seed)
    n, passes, total, sampling = r["frames"], r["passes"], r["total"], r["sampling"]
    peak = r["peak_bytes"] / 2 ** 30 if r["peak_bytes"] is not None else float("nan")
    print(f"real LVCD arch (random weights), {h}x{w}, {model.dtype}, {n} frames, {passes} passes x {args.steps} steps, "
          f"{args.device}: total {total:.2f} s, sampling {sampling:.2f} s, decode+rest {total - sampling:.2f} s, "
          f"peak {peak:.2f} GiB")
    print(f"seconds per output frame={total / n:.3f} (sampling {sampling / n:.3f}); per pass {sampling / passes:.2f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", default="length", choices=("length", "attention", "speed"))
    p.add_argument("--frames", type=int, nargs=2, default=(60, 20), metavar=("A", "B"))
    p.add_argument("--size", default="128", help="H or HxW in px (default 128; the paper: 320x576)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--segment-length", dest="segment_length", type=int, default=14)
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--real-arch", dest="real_arch", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.passthrough = ["--size", args.size, "--steps", str(args.steps), "--segment-length", str(args.segment_length),
                        "--overlap", str(args.overlap), "--device", args.device, "--dtype", args.dtype,
                        "--threads", str(args.threads), "--seed", str(args.seed)]
    args.passthrough += ["--real-arch"] if args.real_arch else []
    if args.mode == "length":
        if args.child:
            print(child_result(length_child(args)))
            return 0
        run_length(args)
    elif args.mode == "attention":
        run_attention(args)
    else:
        run_speed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

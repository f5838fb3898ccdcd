"""Upscaling benchmarks: working memory vs clip length, and speed of our chunked runner vs plain calls.

(a) memory   Peak working memory of ``stream.upscale_frames`` for 200 vs 20 frames (same chunk size), excluding
             the output tensor [N, 4H, 4W, 3] float32. Each case runs in a fresh subprocess, cases interleaved
             200, 20, 200, 20, ... ``--runs`` times, medians reported. Measured as in bench/decode_memory.py:
             ``torch`` = peak of live bytes from torch.profiler's CPU [memory] events during one call (exact for
             tensors; this gives the ratio line), ``rss`` = VmHWM - VmRSS before (reset via /proc/self/clear_refs,
             glibc run with MALLOC_MMAP_THRESHOLD_=65536). The input clip and the weights exist before the call and
             are not counted. A warm-up call on one chunk runs first.
(b) animesr  AnimeSR (released architecture, random weights) frames per second: ours vs a plain loop calling the
             same module's ``cell`` frame by frame (window of 3, previous SR, state), as the official scripts do:
             contiguous NCHW frames, outputs clamped and stacked into an IMAGE tensor. A second plain loop fed
             channels-last tensors (the layout our runner uses) separates the layout gain from runner overhead.
(c) esrgan   Real-ESRGAN (realesr-animevideov3 Compact and RealESRGAN_x4plus_anime_6B RRDB at released sizes,
             random weights) through our runner vs spandrel's descriptor called directly per frame on
             ``frame.permute(0, 3, 1, 2)`` (what ComfyUI core passes), outputs stacked into an IMAGE tensor.

Speed: one warm-up call per side, then interleaved timed calls (ours, theirs, theirs, ours, ...), medians and the
median of per-pair ratios. ``ratio`` = fps ours / fps theirs = median time theirs / median time ours. Outputs are
compared once before timing. Everything runs under torch.inference_mode on both sides.

    python bench/upscale.py                   # all three, CPU
    python bench/upscale.py memory --kind compact
    python bench/upscale.py animesr --size 64 --frames 12 --repeats 7
    python bench/upscale.py esrgan --threads 1 --clock cpu     # steadier when other jobs share the CPU
    python bench/upscale.py --device cuda --size 256 --frames 24  # GPU, fp16 (memory (a): device peak)
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import types

from memtools import _reset_hwm, _status_kb, _torch_peak, child_result, run_child  # bench/ is on sys.path when run as a script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pkg = types.ModuleType("animevideo")
pkg.__path__ = [ROOT]
sys.modules.setdefault("animevideo", pkg)

MiB = 2 ** 20


# ---------------------------------------------------------------------------------------------
# Models (released architectures, random weights)
# ---------------------------------------------------------------------------------------------

def build(kind: str, seed: int = 0, real: bool = True):
    """The released architecture (``real``) or the tiny test size, random weights, through our loader."""
    import torch

    from animevideo.pipelines.upscale import loader, tiny

    torch.manual_seed(seed)
    if kind == "animesr":
        sd = tiny.build_tiny_animesr(seed, **(tiny.REAL_ANIMESR if real else tiny.TINY_ANIMESR)).state_dict()
    elif kind == "compact":
        sd = tiny.compact_state_dict(**(tiny.REAL_COMPACT if real else tiny.TINY_COMPACT), seed=seed)
    elif kind == "rrdb":
        sd = tiny.rrdb_state_dict(**(tiny.REAL_RRDB if real else tiny.TINY_RRDB), seed=seed)
    else:
        raise SystemExit(f"unknown kind {kind}")
    return loader.load_state_dict_upscaler(dict(sd), f"random-{kind}")


def frames_for(n, size, seed=0):
    import torch

    return torch.rand(n, size, size, 3, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# (a) memory
# ---------------------------------------------------------------------------------------------

def memory_child(args) -> dict:
    import gc

    import torch
    from torch.profiler import ProfilerActivity, profile

    from animevideo.pipelines.upscale import stream

    if args.threads:
        torch.set_num_threads(args.threads)
    up = build(args.kind, args.seed)
    device = _on_device(up, args)
    frames = frames_for(args.one, args.size, args.seed)
    opts = stream.StreamOptions(chunk_size=args.chunk)
    if args.impl == "plain":  # the sensitivity check: whole-clip plain calls, whose memory grows with the clip
        def call(x):
            return plain_animesr_loop(up.model, x) if up.recurrent else spandrel_direct(up.descriptor, x)
    else:
        def call(x):
            return stream.upscale_frames(up, x, opts)
    with torch.inference_mode():
        call(frames[: args.chunk])  # warm-up
    gc.collect()
    s = up.scale
    out_bytes = args.one * args.size * s * args.size * s * 3 * 4
    res = dict(frames=args.one, chunk=args.chunk, size=args.size, kind=args.kind, out_bytes=out_bytes)
    if device.type == "cuda":  # the output lives on the CPU: device working memory is all of the device peak
        with torch.inference_mode():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            call(frames)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        res.update(torch_peak=peak + out_bytes, torch_peak_working=peak, rss_peak_growth=0, rss_peak_working=0,
                   hwm_reset=False)
        return res
    with torch.inference_mode():  # both implementations, and the measurements, in inference mode
        hwm_ok = _reset_hwm()
        base_kb = _status_kb("VmRSS") if hwm_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = call(frames)
        peak_kb = _status_kb("VmHWM") if hwm_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert out.numel() * 4 == out_bytes
        res.update(rss_peak_growth=(peak_kb - base_kb) * 1024,
                   rss_peak_working=(peak_kb - base_kb) * 1024 - out_bytes, hwm_reset=hwm_ok)
        del out
        gc.collect()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = call(frames)
        peak = _torch_peak(prof)
    res.update(torch_peak=peak, torch_peak_working=peak - out_bytes)
    return res


def run_memory(args):
    a, b = args.mem_frames
    runs = {a: [], b: []}
    for r in range(args.runs):
        for f in (a, b):
            cmd = [sys.executable, os.path.abspath(__file__), "memory", "--child", "--one", str(f), "--chunk",
                   str(args.chunk), "--size", str(args.size), "--kind", args.kind, "--threads", str(args.threads),
                   "--seed", str(args.seed), "--impl", args.impl, "--device", args.device, "--dtype", args.dtype]
            res = run_child(cmd, f"{f} frames")
            runs[f].append(res)
            print(f"  run {r} {f:3d}f: torch working {res['torch_peak_working'] / MiB:8.2f} MiB (peak "
                  f"{res['torch_peak'] / MiB:.2f} incl. output {res['out_bytes'] / MiB:.2f}); rss working "
                  f"{res['rss_peak_working'] / MiB:8.2f} MiB (growth {res['rss_peak_growth'] / MiB:.2f}"
                  f"{'' if res['hwm_reset'] else ', ru_maxrss'})", flush=True)
    print(f"(a) memory: {args.kind} ({args.impl}), chunk_size {args.chunk}, {args.size}x{args.size} px in, "
          f"{args.device} {args.dtype}, {args.runs} runs "
          f"per case (fresh subprocess each), medians:")
    ratios = {}
    for k in ("rss_peak_working", "torch_peak_working"):
        ma = statistics.median(x[k] for x in runs[a])
        mb = statistics.median(x[k] for x in runs[b])
        ratios[k] = ma / mb
        print(f"  {k:20s} {a}f {ma / MiB:8.2f} MiB   {b}f {mb / MiB:8.2f} MiB   ratio {ratios[k]:.3f}")
    print(f"  output tensor (excluded): {a}f {runs[a][0]['out_bytes'] / MiB:.2f} MiB, "
          f"{b}f {runs[b][0]['out_bytes'] / MiB:.2f} MiB")
    print(f"ratio {a}f/{b}f={ratios['torch_peak_working']:.2f}")


# ---------------------------------------------------------------------------------------------
# (b), (c) speed
# ---------------------------------------------------------------------------------------------

def _param(model):
    return next(model.parameters())


def plain_animesr_loop(model, frames, channels_last=False):
    """The official scripts' loop: window (t-1, t, t+1) with border reuse, previous SR, state; clamp per frame.
    The clip goes to the model's device at once (as the official frames script keeps it there frame by frame);
    outputs come back to the CPU per frame."""
    import torch

    w0 = _param(model)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = frames.permute(0, 3, 1, 2).to(w0.device, w0.dtype).contiguous(memory_format=fmt)
    n = x.shape[0]
    sr, st = (t.contiguous(memory_format=fmt) for t in model.initial_state(x[:1]))
    outs = []
    for i in range(n):
        p, q = max(i - 1, 0), min(i + 1, n - 1)
        w = torch.cat((x[p:p + 1], x[i:i + 1], x[q:q + 1]), dim=1)
        sr, st = model.cell(w, sr, st)
        outs.append(sr.clamp(0, 1)[0].permute(1, 2, 0).float().cpu())
    return torch.stack(outs)


def spandrel_direct(desc, frames):
    """spandrel's descriptor per frame on frame.permute(0, 3, 1, 2), moved to the model's device and dtype."""
    import torch

    dev, dt = desc.device, desc.dtype
    return torch.stack([desc(frames[i:i + 1].permute(0, 3, 1, 2).to(dev, dt))[0].permute(1, 2, 0).float().cpu()
                        for i in range(len(frames))])


def _synced(fn, device):
    import torch

    def call():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out
    return call


def _on_device(up, args):
    import torch

    from animevideo.pipelines.upscale import loader

    device = torch.device(args.device)
    up.dtype = loader.resolve_dtype(args.dtype, device, True, True)
    if up.descriptor is not None:
        up.descriptor.to(device).to(up.dtype)
    else:
        up.model.to(device=device, dtype=up.dtype)
    return device


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_sides(sides: dict, repeats: int, clock: str = "wall"):
    """sides: name -> callable. Interleaved repeats after one warm-up each, the order reversed every other repeat.
    Returns name -> list of seconds."""
    for fn in sides.values():
        fn()
    times = {k: [] for k in sides}
    order = list(sides)
    for r in range(repeats):
        for k in (order if r % 2 == 0 else order[::-1]):  # ABBA: no side always runs first
            fn, now = sides[k], CLOCKS[clock]
            t = now()
            fn()
            times[k].append(now() - t)
    return times


def report(label, times, ours="ours", n_frames=1):
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:28s} median {med[k]:.4f} s  ({n_frames / med[k]:7.2f} frames/s)  min {min(v):.4f}  "
              f"max {max(v):.4f}")
    out = {}
    for k in times:
        if k == ours:
            continue
        pairs = statistics.median(t / o for t, o in zip(times[k], times[ours]))
        out[k] = med[k] / med[ours]
        print(f"  fps ratio ours/{k}: {out[k]:.3f} (median of per-pair ratios {pairs:.3f}, ratio of minima "
              f"{min(times[k]) / min(times[ours]):.3f})")
    return out


def run_animesr(args):
    import torch

    from animevideo.pipelines.upscale import stream

    if args.threads:
        torch.set_num_threads(args.threads)
    up = build("animesr", args.seed)
    device = _on_device(up, args)
    frames = frames_for(args.frames, args.size, args.seed)
    opts = stream.StreamOptions(chunk_size=args.chunk)
    with torch.inference_mode():
        a = stream.upscale_frames(up, frames, opts)
        b = plain_animesr_loop(up.model, frames)
        c = plain_animesr_loop(up.model, frames, channels_last=True)
        print(f"(b) animesr: released architecture (64 feat, blocks (5,3,2)), random weights, {args.frames} frames "
              f"{args.size}x{args.size} px -> x4, chunk_size {args.chunk}, threads {torch.get_num_threads()}, "
              f"{args.repeats} interleaved repeats, {args.clock} clock, {device} {up.dtype}")
        print(f"  outputs: max abs diff ours vs plain NCHW loop {(a - b).abs().max().item():.2e}, "
              f"ours vs plain channels-last loop {(a - c).abs().max().item():.2e} (equal: {torch.equal(a, c)})")
        times = time_sides({
            "ours": _synced(lambda: stream.upscale_frames(up, frames, opts), device),
            "plain loop (NCHW)": _synced(lambda: plain_animesr_loop(up.model, frames), device),
            "plain loop (channels-last)": _synced(lambda: plain_animesr_loop(up.model, frames, channels_last=True),
                                                  device),
        }, args.repeats, args.clock)
    r = report("animesr", times, n_frames=args.frames)
    print(f"ratio animesr ours/plain={r['plain loop (NCHW)']:.3f}")
    return r


def run_esrgan(args):
    import torch

    from animevideo.pipelines.upscale import stream

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for kind, size in (("compact", args.size), ("rrdb", args.rrdb_size)):
        up = build(kind, args.seed)
        device = _on_device(up, args)
        frames = frames_for(args.frames, size, args.seed)
        opts = stream.StreamOptions(chunk_size=args.chunk)
        with torch.inference_mode():
            a = stream.upscale_frames(up, frames, opts)
            b = spandrel_direct(up.descriptor, frames)
            print(f"(c) {kind} ({up.arch_name}, released size, random weights): {args.frames} frames {size}x{size} px "
                  f"-> x4, chunk_size {args.chunk}, threads {torch.get_num_threads()}, {args.repeats} interleaved "
                  f"repeats, {args.clock} clock, {device} {up.dtype}; outputs equal: "
                  f"{torch.equal(a, b)} (max abs diff {(a - b).abs().max().item():.1e})")
            times = time_sides({
                "ours": _synced(lambda: stream.upscale_frames(up, frames, opts), device),
                "spandrel direct": _synced(lambda: spandrel_direct(up.descriptor, frames), device),
            }, args.repeats, args.clock)
        results[kind] = report(kind, times, n_frames=args.frames)["spandrel direct"]
    for kind, r in results.items():
        print(f"ratio {kind} ours/spandrel={r:.3f}")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=["all", "memory", "animesr", "esrgan"])
    p.add_argument("--kind", default="animesr", choices=["animesr", "compact", "rrdb"], help="model for (a)")
    p.add_argument("--impl", default="ours", choices=["ours", "plain"],
                   help="(a): our runner, or the plain whole-clip calls of (b)/(c) as a sensitivity check")
    p.add_argument("--mem-frames", type=int, nargs=2, default=(200, 20), metavar=("A", "B"))
    p.add_argument("--runs", type=int, default=3, help="subprocess runs per case for (a)")
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--size", type=int, default=None, help="square input side in px ((a) 32, (b)/(c) 64)")
    p.add_argument("--rrdb-size", type=int, default=32, help="input side for the RRDB model in (c)")
    p.add_argument("--frames", type=int, default=12, help="frames per timed call in (b)/(c)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where the models run (cuda: (a) reports device memory)")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on a GPU, fp32 on the CPU), fp32, fp16, bf16")
    p.add_argument("--clock", default="wall", choices=list(CLOCKS),
                   help="(b)/(c): wall time, or process CPU time (steadier on a shared machine; use --threads 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        args.size = args.size or 32
        print(child_result(memory_child(args)))
        return 0
    size = args.size
    if args.what in ("all", "memory"):
        args.size = size or 32
        run_memory(args)
    if args.what in ("all", "animesr"):
        args.size = size or 64
        run_animesr(args)
    if args.what in ("all", "esrgan"):
        args.size = size or 64
        run_esrgan(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak working memory of our chunked ``decode.decode_latents`` for 25 vs 14 frames (same chunk size).

Working memory = peak during the call minus what was there before it (model weights, the input
latents) minus the output tensor ([F, H, W, 3] float32, allocated inside the call). With frame-chunked
decode it should not grow with the frame count, so the goal is ``ratio 25f/14f <= 1.1``.

Each case runs in a fresh subprocess (nothing cached from an earlier case), cases interleaved
25, 14, 25, 14, ... ``--runs`` times, medians reported. Two measures on CPU, one on CUDA:

* ``torch``: every CPU allocation/free made through torch's allocator inside the call, recorded by
  ``torch.profiler`` (profile_memory=True), summed in time order; peak of live bytes. Exact for tensors,
  blind to malloc fragmentation. This one gives the last line.
* ``rss``: the process's peak resident set (VmHWM, reset through /proc/self/clear_refs just before the call;
  falls back to ru_maxrss from process start) minus VmRSS just before. Includes allocator slack and
  library scratch; glibc is run with MALLOC_MMAP_THRESHOLD_=65536 so freed tensors go back to the OS.
* ``cuda`` (--device cuda): torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus
  memory_allocated before the call.

A warm-up decode of one chunk runs first in each subprocess (thread pools, kernel caches), untimed.

    python bench/decode_memory.py                     # tiny VAE, 128x128 px, chunk 4, CPU
    python bench/decode_memory.py --device cuda
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import types

from memtools import _reset_hwm, _status_kb, _torch_peak, child_result, run_child  # bench/ is on sys.path when run as a script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 2 ** 20


def child(args) -> dict:
    pkg = types.ModuleType("animevideo")
    pkg.__path__ = [ROOT]
    sys.modules.setdefault("animevideo", pkg)
    import gc

    import torch

    from animevideo.pipelines.svd import decode, tiny

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    _, vae, _ = tiny.build_tiny_svd(args.seed)
    vae = vae.to(device).eval().requires_grad_(False)
    gc.collect()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    h = w = args.size // factor
    gen = torch.Generator("cpu").manual_seed(args.seed)
    latents = torch.randn((args.frames, vae.config.latent_channels, h, w), generator=gen).to(device)
    sf = 0.18215
    # warm-up: one chunk, same shapes as a full chunk
    decode.decode_latents(vae, latents[: args.chunk], sf, args.chunk)
    gc.collect()
    res = dict(frames=args.frames, chunk=args.chunk, size=args.size, device=str(device))
    out_bytes = args.frames * args.size * args.size * 3 * 4  # [F, H, W, 3] float32 on CPU (out_device)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = decode.decode_latents(vae, latents, sf, args.chunk)
        torch.cuda.synchronize()
        res["cuda_peak_working"] = torch.cuda.max_memory_allocated() - base  # output lives on CPU
        res["out_bytes"] = out.numel() * out.element_size()
        return res

    # rss
    hwm_ok = _reset_hwm()
    base_kb = _status_kb("VmRSS")
    if not hwm_ok:
        base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = decode.decode_latents(vae, latents, sf, args.chunk)
    peak_kb = _status_kb("VmHWM") if hwm_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert out.numel() * out.element_size() == out_bytes, out.shape
    res.update(out_bytes=out_bytes, rss_peak_growth=(peak_kb - base_kb) * 1024,
               rss_peak_working=(peak_kb - base_kb) * 1024 - out_bytes, hwm_reset=hwm_ok)
    del out
    gc.collect()

    # torch allocator (profiler), a second identical call in the same process
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = decode.decode_latents(vae, latents, sf, args.chunk)
    peak = _torch_peak(prof)
    res.update(torch_peak=peak, torch_peak_working=peak - out_bytes)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs=2, default=(25, 14), metavar=("A", "B"))
    p.add_argument("--chunk", type=int, default=4, help="decode_chunk_size, same for both")
    p.add_argument("--size", type=int, default=128, help="square output side in px")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        args.frames = args.one
        print(child_result(child(args)))
        return 0

    a, b = args.frames
    runs = {a: [], b: []}
    for r in range(args.runs):
        for f in (a, b):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--one", str(f), "--chunk", str(args.chunk),
                   "--size", str(args.size), "--device", args.device, "--threads", str(args.threads),
                   "--seed", str(args.seed)]
            res = run_child(cmd, f"{f} frames")
            runs[f].append(res)
            if args.device.startswith("cuda"):
                print(f"  run {r} {f:2d}f: cuda working {res['cuda_peak_working'] / MiB:8.2f} MiB "
                      f"(output {res['out_bytes'] / MiB:.2f} MiB, on CPU)")
            else:
                print(f"  run {r} {f:2d}f: torch working {res['torch_peak_working'] / MiB:8.2f} MiB "
                      f"(peak {res['torch_peak'] / MiB:.2f} incl. output {res['out_bytes'] / MiB:.2f}); "
                      f"rss working {res['rss_peak_working'] / MiB:8.2f} MiB (growth {res['rss_peak_growth'] / MiB:.2f}"
                      f"{'' if res['hwm_reset'] else ', ru_maxrss'})")

    keys = ["cuda_peak_working"] if args.device.startswith("cuda") else ["rss_peak_working", "torch_peak_working"]
    print(f"decode_chunk_size {args.chunk}, {args.size}x{args.size} px, tiny VAE, device {args.device}, "
          f"{args.runs} runs per case (fresh subprocess each), medians:")
    ratios = {}
    for k in keys:
        ma = statistics.median(x[k] for x in runs[a])
        mb = statistics.median(x[k] for x in runs[b])
        ratios[k] = ma / mb
        print(f"  {k:20s} {a}f {ma / MiB:8.2f} MiB   {b}f {mb / MiB:8.2f} MiB   ratio {ratios[k]:.3f}")
    last = keys[-1]
    print(f"ratio {a}f/{b}f={ratios[last]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

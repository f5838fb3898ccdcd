"""Frames per second of our AnimeInterp clip runner vs a plain loop over the same module.

Both sides make the *same* output frames from the same clip, plan and module object:

- ours: ``run.interpolate_clip`` — each frame encoded once, one correlation volume for both flow
  directions (refined as one batch on a GPU, one after the other on the CPU), the flows of a pair
  computed once for all its in-between times;
- plain: ``run.plain_loop`` — one released-style ``model(I1, I2, None, None, t)`` call per in-between
  frame (the released test script's loop), everything recomputed per call.

The outputs are compared once (max abs diff, asserted < 1e-4) before timing. Timing: one warm-up
per side, then interleaved repeats (ours, plain, ours, plain, ...); medians, plus the median of the
per-repeat ratios. Weights are random (released widths by default; ``--tiny`` for the test model),
so the numbers measure speed only.

    python bench/interpolate.py                         # released widths, 5 frames 256x256, x2 and x4, CPU
    python bench/interpolate.py --size 960x544 --device cuda --multipliers 2 4 8

The last line printed is ``ratio ours/plain=X.XXX`` (time, the last multiplier; < 1 = ours faster).
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

import torch  # noqa: E402

from animevideo.pipelines.interpolate import animeinterp as ai  # noqa: E402
from animevideo.pipelines.interpolate import run, timing, tiny  # noqa: E402


def parse_size(s: str) -> tuple[int, int]:
    w, h = s.lower().split("x")
    return int(w), int(h)


def synthetic_clip(n: int, w: int, h: int, seed: int = 0) -> torch.Tensor:
    """Flat-coloured shapes moving a few px per frame over a gradient, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    frames = []
    for i in range(n):
        img = torch.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.6 - 0.3 * xx * yy], dim=-1)
        for k, colour in enumerate(([0.95, 0.3, 0.1], [0.1, 0.2, 0.8])):
            y0 = h // 4 + k * h // 3
            x0 = w // 8 + (4 + 3 * k) * i
            img[y0:y0 + h // 5, x0:x0 + w // 5] = torch.tensor(colour)
        frames.append(img + 0.01 * torch.rand(h, w, 3, generator=g))
    return torch.stack(frames).clamp(0, 1)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="256x256", help="W x H of the frames (default 256x256)")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--multipliers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=12, help="flow refinement steps (released: 12)")
    ap.add_argument("--tiny", action="store_true", help="the tiny test widths instead of the released ones")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    w, h = parse_size(args.size)

    cfg = tiny.TINY_CONFIG if args.tiny else ai.AnimeInterpConfig()
    model = tiny.build_tiny_interpolator(0, cfg).to(device=device, dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    clip = synthetic_clip(args.frames, w, h)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, dtype {args.dtype}")
    print(f"model: {'tiny' if args.tiny else 'released'} widths, {params / 1e6:.2f} M params (random weights); "
          f"clip {args.frames} frames {w}x{h}; {args.iters} flow iterations; {args.repeats} interleaved repeats")

    ratio = None
    for m in args.multipliers:
        analysis = timing.ClipAnalysis(args.frames, list(range(args.frames)))
        plan = timing.plan_retiming(analysis, 24, 24 * m)
        n_interp = sum(1 for f in plan if not f.is_copy)
        ours_fn = lambda: run.interpolate_clip(model, clip, plan, device=device, iters=args.iters)[0]  # noqa: E731
        plain_fn = lambda: run.plain_loop(model, clip, plan, device=device, iters=args.iters)  # noqa: E731
        _, a = timed(ours_fn, device)  # warm-up and check
        _, b = timed(plain_fn, device)
        diff = (a - b).abs().max().item()
        assert diff < (1e-4 if dtype == torch.float32 else 5e-2), diff
        ours_t, plain_t, ratios = [], [], []
        for _ in range(args.repeats):
            t1, _ = timed(ours_fn, device)
            t2, _ = timed(plain_fn, device)
            ours_t.append(t1)
            plain_t.append(t2)
            ratios.append(t1 / t2)
        mo, mp = statistics.median(ours_t), statistics.median(plain_t)
        ratio = mo / mp
        print(f"\nx{m}: {len(plan)} output frames, {n_interp} interpolated over {args.frames - 1} pairs; "
              f"max abs diff ours vs plain = {diff:.2e}")
        print(f"  ours : median {mo:.3f} s  ({n_interp / mo:.2f} interpolated fps, {len(plan) / mo:.2f} output fps)"
              f"  calls: {', '.join(f'{t:.2f}' for t in ours_t)}")
        print(f"  plain: median {mp:.3f} s  ({n_interp / mp:.2f} interpolated fps, {len(plan) / mp:.2f} output fps)"
              f"  calls: {', '.join(f'{t:.2f}' for t in plain_t)}")
        print(f"  median of per-repeat ratios {statistics.median(ratios):.3f}; speed-up {mp / mo:.2f}x")
    print(f"ratio ours/plain={ratio:.3f}")


if __name__ == "__main__":
    main()

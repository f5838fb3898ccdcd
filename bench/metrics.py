"""FVD benchmark: our batched feature extraction vs a plain one-clip-at-a-time loop, and its memory bound.

(a) speed   FVD between two sets of clips (default 32 generated + 32 gold = 64 clips x 16 frames, 128x128 source
            frames, standard protocol: resized to 224x224, [-1, 1]). Ours: the network as ``loader.load_i3d`` returns
            it (batch norms folded into the convolutions) through ``features.video_features`` (windows gathered into
            batches of ``--batch``, channels-last batches, only the features kept) and ``stats.frechet_distance``.
            Plain: what a straightforward port does (VideoGPT's ``get_fvd_logits`` with a batch of one, the network
            in its released layout with separate batch norms): per clip, resize its frames, one I3D call on
            [1, 3, 16, 224, 224], features kept, then the same Fréchet distance. Same weights, same inputs; the two
            FVDs are compared once. One
            warm-up call per side, then interleaved timed calls (ours, plain, plain, ours, ...), medians and the
            median of per-pair ratios. ``ratio`` = median plain time / median ours.
(b) memory  Peak live torch bytes (torch.profiler [memory] events) of ours for a small and a 4x larger set, each
            in a fresh subprocess: the peak follows the batch, not the set (features are 400 floats per clip).

The network: the tiny I3D of the tests (widths / 16, random weights) on a CPU; ``--real`` builds the released
size (random weights), for a GPU: ``--device cuda --fp16`` reports clips per second.

    python bench/metrics.py                       # (a) and (b), CPU, tiny I3D
    python bench/metrics.py speed --repeats 5 --threads 2
    python bench/metrics.py speed --real --device cuda --fp16 --clips 128 --batch 16
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types

from memtools import _torch_peak, child_result, run_child  # bench/ is on sys.path when run as a script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pkg = types.ModuleType("animevideo")
pkg.__path__ = [ROOT]
sys.modules.setdefault("animevideo", pkg)

MiB = 2 ** 20


def build_models(real: bool, device, dtype):
    """(as loaded by the plain port: the released layout, batch norms separate; as our loader returns it: fused)."""
    import copy

    import torch

    from animevideo.pipelines.metrics import i3d, tiny

    if real:
        torch.manual_seed(0)
        model = i3d.InceptionI3d(400, 1).eval().requires_grad_(False)
    else:
        model = tiny.build_tiny_i3d(0)
    plain = model.to(device=device, dtype=dtype)
    return plain, copy.deepcopy(plain).fuse_batch_norms()


def make_clips(n: int, frames: int, size: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    # smooth random clips (a low-resolution field upsampled), uint8 like frames read from disk
    base = torch.rand(n, frames, 3, size // 16, size // 16, generator=gen)
    up = torch.nn.functional.interpolate(base.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False)
    return (up.view(n, frames, 3, size, size).permute(0, 1, 3, 4, 2) * 255).round().to(torch.uint8)


def fvd_ours(model, generated, gold, batch, device, dtype) -> float:
    from animevideo.pipelines.metrics import features, stats

    fa = features.video_features(model, iter(generated), "standard", batch, device, dtype)
    fb = features.video_features(model, iter(gold), "standard", batch, device, dtype)
    return stats.frechet_distance(fa, fb).value


def fvd_plain(model, generated, gold, device, dtype) -> float:
    import torch
    import torch.nn.functional as F

    from animevideo.pipelines.metrics import stats

    def logits(clips):
        out = []
        with torch.inference_mode():
            for clip in clips:  # one clip at a time
                x = clip[:16].to(device).float().permute(0, 3, 1, 2) / 255.0
                x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False) * 2 - 1
                out.append(model(x.permute(1, 0, 2, 3)[None].to(dtype)).double().cpu())
        return torch.cat(out)

    return stats.frechet_distance(logits(generated), logits(gold)).value


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def speed(args):
    import torch

    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    plain_model, model = build_models(args.real, device, dtype)
    half = args.clips // 2
    generated = make_clips(half, 16, args.size, 1)
    gold = make_clips(args.clips - half, 16, args.size, 2)
    a = fvd_ours(model, generated, gold, args.batch, device, dtype)
    b = fvd_plain(plain_model, generated, gold, device, dtype)
    print(f"check: FVD ours {a:.6f}, plain {b:.6f}, relative difference {abs(a - b) / max(abs(b), 1e-12):.2e}")
    times = {"ours": [], "plain": []}
    order = []
    for i in range(args.repeats):
        order += (["ours", "plain"] if i % 2 == 0 else ["plain", "ours"])
    for name in order:
        sync(device)
        t0 = time.perf_counter()
        if name == "ours":
            fvd_ours(model, generated, gold, args.batch, device, dtype)
        else:
            fvd_plain(plain_model, generated, gold, device, dtype)
        sync(device)
        times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    pair_ratios = [p / o for o, p in zip(times["ours"], times["plain"])]
    print(f"device {device}, {'fp16' if args.fp16 else 'fp32'}, {'released-size' if args.real else 'tiny'} I3D, "
          f"{torch.get_num_threads()} threads, {args.clips} clips x 16 frames at {args.size}x{args.size}, "
          f"batch {args.batch}, {args.repeats} repeats")
    for k in ("ours", "plain"):
        print(f"  {k:<6} median {med[k]:.3f} s  ({args.clips / med[k]:.1f} clips/s)  runs "
              + " ".join(f"{t:.2f}" for t in times[k]))
    print(f"  median of per-pair ratios {statistics.median(pair_ratios):.2f}")
    print(f"  ratio plain/ours = {med['plain'] / med['ours']:.2f}x")


def memory_child(args):
    import torch
    from torch.profiler import ProfilerActivity, profile

    _, model = build_models(False, "cpu", torch.float32)
    half = args.clips // 2
    generated = make_clips(half, 16, args.size, 1)
    gold = make_clips(args.clips - half, 16, args.size, 2)
    fvd_ours(model, generated[:2], gold[:2], args.batch, "cpu", torch.float32)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fvd_ours(model, generated, gold, args.batch, "cpu", torch.float32)
    print(child_result({"peak": _torch_peak(prof)}))


def memory(args):
    rows = []
    for clips in (args.clips // 4, args.clips):
        cmd = [sys.executable, os.path.abspath(__file__), "memory-child", "--clips", str(clips), "--batch",
               str(args.batch), "--size", str(args.size), "--threads", str(args.threads)]
        rows.append((clips, run_child(cmd, f"memory {clips} clips")["peak"]))
    print(f"peak live torch bytes during FVD (ours, batch {args.batch}, tiny I3D, CPU; clips held as uint8 input "
          f"before the call, not counted):")
    for clips, peak in rows:
        print(f"  {clips:>4} clips: {peak / MiB:8.1f} MiB")
    print(f"  ratio large/small set = {rows[1][1] / rows[0][1]:.2f} (set size x{rows[1][0] / rows[0][0]:.0f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="?", default="all", choices=("all", "speed", "memory", "memory-child"))
    ap.add_argument("--clips", type=int, default=64, help="both sets together (half generated, half gold)")
    ap.add_argument("--size", type=int, default=128, help="source frame side before the 224 resize")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--real", action="store_true", help="released-size I3D (random weights)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "memory-child":
        memory_child(args)
        return
    if args.what in ("all", "speed"):
        speed(args)
    if args.what in ("all", "memory"):
        memory(args)


if __name__ == "__main__":
    main()

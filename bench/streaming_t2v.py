"""StreamingT2V extension: memory and time vs output length.

Peak working memory and wall time of ``pipelines.streaming_t2v.extend.extend_clip`` for 96 vs 24 output frames
from a 16-frame clip (10 vs 1 extension chunks). Goals: memory ratio <= 1.15 (bounded by one chunk, not the
clip) and time ratio within 10% of the chunk-count ratio. Each case runs in a fresh subprocess, cases interleaved,
medians reported. Working memory = peak during the call - what was live before it (model, inputs, prompt
embeddings) - the output IMAGE tensor ([N, size, size, 3] float32, allocated inside the call). Measured as
``torch`` (every torch CPU allocation, via the profiler) and ``rss`` (VmHWM growth, includes allocator slack);
``cuda`` on a GPU (max_memory_allocated; the output lives on the CPU). Time: the whole call, and its chunk loop
(from the first chunk on: the APM's image tokens, computed once per run whatever the length, are left out); prompt
encoding is outside both.

    python bench/streaming_t2v.py                    # the tiny released-layout checkpoint, 64x64, 4 steps, CPU
    python bench/streaming_t2v.py --size 128 --steps 8 --runs 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from memtools import _reset_hwm, _status_kb, _torch_peak, child_result, import_pack, run_child  # bench/ is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 2 ** 20



def child(args) -> dict:
    import_pack()
    import gc
    import resource

    import torch

    from animevideo.pipelines.streaming_t2v import extend, loader, tiny

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        path = tiny.write_tiny_streaming_t2v(d, seed=args.seed)
        model = loader.load_streaming_t2v(path).to(args.device)
        tok = loader.load_tokenizer(model.tokenizer_dir)
    pos, neg = extend.encode_prompt(model, tok, "a girl waves"), extend.encode_prompt(model, tok, "")
    clip = torch.rand(16, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))

    marks = {}

    def first_check():  # called before the first chunk: the chunk loop starts here (after the APM tokens)
        marks.setdefault("loop_start", time.perf_counter())

    def run(frames, steps):
        marks.clear()
        return extend.extend_clip(model, clip, pos, neg, frames, steps=steps, seed=0,
                                  check_interrupt=first_check).frames

    run(24, 1)  # warm-up: thread pools, kernel caches
    gc.collect()
    plan = extend.plan_extension(16, args.one)
    out_bytes = plan.total_frames * args.size * args.size * 3 * 4
    res = dict(frames=plan.total_frames, chunks=plan.chunks, out_bytes=out_bytes)
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        run(args.one, args.steps)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        res.update(seconds=t1 - t0, loop_seconds=t1 - marks["loop_start"],
                   cuda_working=torch.cuda.max_memory_allocated() - base)
        return res
    hwm_ok = _reset_hwm()
    base_kb = _status_kb("VmRSS") if hwm_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = run(args.one, args.steps)
    t1 = time.perf_counter()
    res.update(seconds=t1 - t0, loop_seconds=t1 - marks["loop_start"])
    peak_kb = _status_kb("VmHWM") if hwm_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert out.numel() * out.element_size() == out_bytes
    res.update(rss_working=(peak_kb - base_kb) * 1024 - out_bytes, hwm_reset=hwm_ok)
    del out
    gc.collect()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run(args.one, 1)  # one step per chunk: the same per-chunk working set, a shorter profile
    res["torch_working"] = _torch_peak(prof) - out_bytes
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, nargs=2, default=(96, 24))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--one", type=int)
    args = ap.parse_args()
    if args.child:
        print(child_result(child(args)))
        return
    passthrough = ["--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads),
                   "--seed", str(args.seed), "--device", args.device]
    a, b = args.frames
    runs = {a: [], b: []}
    for r in range(args.runs):
        for f in (a, b):  # interleaved
            res = run_child([sys.executable, os.path.abspath(__file__), "--child", "--one", str(f)] + passthrough,
                            f"{f} frames")
            runs[f].append(res)
            mem = " ".join(f"{k} {res[k] / MiB:7.2f} MiB" for k in ("cuda_working", "rss_working", "torch_working")
                           if k in res)
            print(f"  run {r} N={f:3d} ({res['chunks']} chunks): {res['seconds']:7.2f} s (chunk loop "
                  f"{res['loop_seconds']:7.2f} s)  {mem}", flush=True)
    keys = [k for k in ("cuda_working", "rss_working", "torch_working") if k in runs[a][0]]
    ca, cb = runs[a][0]["chunks"], runs[b][0]["chunks"]
    print(f"size {args.size}, steps {args.steps}, tiny streaming_t2v.ckpt, {args.device}, {args.threads} thread(s), "
          f"{args.runs} runs (medians):")
    for k in keys:
        ma = statistics.median(x[k] for x in runs[a])
        mb = statistics.median(x[k] for x in runs[b])
        print(f"  {k:14s} N={a} {ma / MiB:8.2f} MiB   N={b} {mb / MiB:8.2f} MiB   ratio {ma / mb:.3f}")
    for what, key in (("time (call)", "seconds"), ("time (chunks)", "loop_seconds")):
        ta = statistics.median(x[key] for x in runs[a])
        tb = statistics.median(x[key] for x in runs[b])
        print(f"  {what:14s} N={a} {ta:8.2f} s     N={b} {tb:8.2f} s     ratio {ta / tb:.3f} "
              f"vs chunk ratio {ca / cb:.3f} (off by {100 * (ta / tb / (ca / cb) - 1):+.1f}%)")


if __name__ == "__main__":
    main()

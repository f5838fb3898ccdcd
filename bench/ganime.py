#!/usr/bin/env python3
"""GANime benchmarks (CPU is enough). Not part of the tests.

    python bench/ganime.py speed   [--layers 4] [--frames 6] [--variations 8] [--threads 2]
    python bench/ganime.py quality [--steps-vq 400] [--steps-gpt 300]

speed: in-betweening frames per second on random weights shaped like the thesis model: the VQ-GAN of
appendix C.1 (64x128 frames, 8x16 codes, 50257 x 128 codebook) and a GPT-2 with gpt2-medium's widths
(1024 wide, 16 heads, 4096 inner, vocabulary 50257, 1024 positions) but fewer layers than its 24 so
a CPU run takes minutes (``--layers 24`` for the full depth). It compares
  fast:     all variations in one batch (shared last-frame prefix), predicted codes reused, one batched
            decode at the end;
  faithful: one variation at a time, every generated frame decoded and re-encoded (the original's loop);
and, to attribute the difference, the two halves (batched + re-encode, one-at-a-time + reuse).
Every path samples (temperature 1, top-k 50) so the variations differ; a variation's codes are the
same whether it runs batched or alone (checked).

quality: trains a tiny VQ-GAN and transformer on synthetic clips of a square moving between two
positions, then compares the in-betweens of held-out clips with the true frames and with a
cross-fade of the two keyframes (mean squared error over the in-between frames).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def import_pack():
    import types

    if "animevideo" not in sys.modules:
        pkg = types.ModuleType("animevideo")
        pkg.__path__ = [ROOT]
        sys.modules["animevideo"] = pkg


def speed(args):
    import_pack()
    from animevideo.pipelines.ganime import inference, loader
    from animevideo.pipelines.ganime.transformer import GANimeTransformer, TransformerConfig
    from animevideo.pipelines.ganime.vqgan import THESIS_CONFIG, VQGAN

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vq = VQGAN(THESIS_CONFIG).eval()
    tcfg = TransformerConfig.preset("gpt2-medium", n_layer=args.layers, dropout=0.0)
    tr = GANimeTransformer(tcfg).eval()
    model = loader.GANimeModel(vq, tr)
    g = torch.Generator().manual_seed(1)
    first, last = torch.rand(1, 3, 64, 128, generator=g), torch.rand(1, 3, 64, 128, generator=g)
    n, v = args.frames, args.variations
    produced = v * (n - 2)

    def run(batched: bool, reencode: bool):
        req = dict(num_frames=n, mode="sample", temperature=1.0, top_k=50, output_size="model",
                   reencode_previous=reencode)
        t = time.perf_counter()
        if batched:
            codes = inference.inbetween(model, first, last, inference.InbetweenRequest(variations=v, seed=0, **req)).codes
        else:
            codes = torch.cat([inference.inbetween(model, first, last, inference.InbetweenRequest(seed=k, **req)).codes
                               for k in range(v)])
        return time.perf_counter() - t, codes

    run(True, False)  # warm-up (kernels, allocator)
    order = [("fast", True, False), ("faithful", False, True), ("batched+reencode", True, True),
             ("one-at-a-time+reuse", False, False)]
    if args.only_main:
        order = order[:2]
    times = {name: [] for name, _, _ in order}
    codes = {}
    for _ in range(args.repeats):  # interleaved, so a busy moment of a shared CPU hits every path alike
        for name, batched, reencode in order:
            dt, codes[name] = run(batched, reencode)
            times[name].append(dt)
    results = {name: (sorted(ts)[len(ts) // 2], codes[name]) for name, ts in times.items()}
    alone = results["one-at-a-time+reuse"][1] if "one-at-a-time+reuse" in results else run(False, False)[1]
    same = torch.equal(results["fast"][1], alone)
    print(f"# GANime in-betweening speed, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"VQ-GAN C.1 (25.2 M params), GPT-2 gpt2-medium widths with {args.layers} of 24 layers "
          f"({sum(p.numel() for p in tr.parameters()) / 1e6:.0f} M params), {n} frames, {v} variations, "
          f"sampling top-k 50; median of {args.repeats}")
    print("| path | seconds, median (all runs) | in-between frames/s | vs faithful |")
    print("| --- | --- | --- | --- |")
    base = results["faithful"][0]
    for name, _, _ in order:
        dt = results[name][0]
        spread = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} | {dt:.2f} ({spread}) | {produced / dt:.2f} | {base / dt:.2f}x |")
    print(f"fast path codes == one-at-a-time codes: {same}")


def quality(args):
    import_pack()
    import numpy as np

    from animevideo.pipelines.ganime import inference, loader
    from animevideo.pipelines.ganime.training import config, dataset, train_gpt, train_vqgan
    from animevideo.pipelines.ganime.vqgan import VQGANConfig

    torch.set_num_threads(args.threads)
    h, w, n = 16, 32, args.frames
    vq_model = VQGANConfig(channels=16, channels_multiplier=(1, 2, 2), attention_resolution=(16,), resolution=64,
                           z_channels=32, embedding_dim=16, num_embeddings=64, image_size=(h, w), norm_groups=8)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        dataset.write_synthetic_dataset(data, n_clips=24, n_frames=n, height=h, width=w, seed=0)
        t = time.perf_counter()
        # MAE + VQ only: a VGG with random weights (no real one here) only adds noise to the loss
        vq_cfg = config.VQGANTrainConfig(data=data, model=vq_model.to_dict(), batch_size=16, steps=args.steps_vq,
                                         lr=1e-3, perceptual_weight=0.0, jitter=False, frame_step=1, log_every=50,
                                         save_every=10 ** 9)
        vq_hist = train_vqgan.train_vqgan(vq_cfg, os.path.join(tmp, "vq"), progress=True)
        gpt_cfg = config.GPTTrainConfig(
            data=data, vqgan=os.path.join(tmp, "vq", train_vqgan.EXPORT), size="custom",
            model=dict(n_positions=128, n_embd=64, n_layer=2, n_head=2, remaining_frames_size=32, dropout=0.0),
            batch_size=16, steps=args.steps_gpt, lr_start=1e-4, lr_max=3e-3, warmup_fraction=0.1,
            teacher_forcing_steps=args.steps_gpt // 2, log_every=50, save_every=10 ** 9)
        gpt_hist = train_gpt.train_gpt(gpt_cfg, os.path.join(tmp, "gpt"), progress=True)
        train_s = time.perf_counter() - t
        model = loader.load_ganime(os.path.join(tmp, "vq", train_vqgan.EXPORT),
                                   os.path.join(tmp, "gpt", train_gpt.EXPORT))
        cases = [(y, d, "trained") for y in (0.35, 0.5, 0.65) for d in (1, -1)]
        cases += [(y, d, "unseen height") for y in (0.42, 0.58) for d in (1, -1)]
        errs_model, errs_fade, errs_rec = [], [], []
        for y, direction, _ in cases:
            a, b = ((y, 0.2), (y, 0.8)) if direction > 0 else ((y, 0.8), (y, 0.2))
            clip = torch.from_numpy(dataset.moving_square_clip(n, h, w, a, b)).permute(0, 3, 1, 2).float() / 255
            res = inference.inbetween(model, clip[:1], clip[-1:], inference.InbetweenRequest(num_frames=n))
            gen = res.frames[0, 1:-1]
            truth = clip[1:-1]
            t_ = torch.linspace(0, 1, n)[1:-1].view(-1, 1, 1, 1)
            fade = clip[:1] * (1 - t_) + clip[-1:] * t_
            rec = (model.vqgan.decode_codes(model.vqgan.encode_to_codes(truth * 2 - 1)) + 1) / 2
            errs_model.append(float(((gen - truth) ** 2).mean()))
            errs_fade.append(float(((fade - truth) ** 2).mean()))
            errs_rec.append(float(((rec - truth) ** 2).mean()))
    print(f"# GANime learning-quality check ({n}-frame clips of a moving square, {h}x{w}), "
          f"{args.threads} threads, training {train_s:.0f} s")
    print(f"VQ-GAN loss {vq_hist[0]['loss']:.4f} -> {vq_hist[-1]['loss']:.4f} ({args.steps_vq} steps); "
          f"transformer loss {gpt_hist[0]['loss']:.3f} -> {gpt_hist[-1]['loss']:.3f}, token accuracy "
          f"{gpt_hist[0]['accuracy']:.2f} -> {gpt_hist[-1]['accuracy']:.2f} ({args.steps_gpt} steps)")
    print("| clip (keyframes only given) | GANime MSE | cross-fade MSE | VQ-GAN reconstruction MSE (floor) |")
    print("| --- | --- | --- | --- |")
    for (y, direction, kind), m, f, r in zip(cases, errs_model, errs_fade, errs_rec):
        arrow = "left to right" if direction > 0 else "right to left"
        print(f"| {kind}: height {y}, {arrow} | {m:.4f} | {f:.4f} | {r:.4f} |")
    for kind in ("trained", "unseen height"):
        m = np.mean([e for e, c in zip(errs_model, cases) if c[2] == kind])
        f = np.mean([e for e, c in zip(errs_fade, cases) if c[2] == kind])
        verdict = "closer to the true motion" if m < f else "NOT closer"
        print(f"{kind}: GANime {m:.4f}, cross-fade {f:.4f}: {verdict} than a cross-fade")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--layers", type=int, default=4)
    s.add_argument("--frames", type=int, default=6)
    s.add_argument("--variations", type=int, default=8)
    s.add_argument("--repeats", type=int, default=1)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--only-main", action="store_true", help="only the fast and faithful paths")
    q = sub.add_parser("quality")
    q.add_argument("--steps-vq", type=int, default=400)
    q.add_argument("--steps-gpt", type=int, default=300)
    q.add_argument("--frames", type=int, default=8)
    q.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("ANIMEVIDEO_QUIET", "1")
    (speed if args.cmd == "speed" else quality)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

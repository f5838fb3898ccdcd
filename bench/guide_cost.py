"""What the guide machinery costs per sampling step of a plain first-frame run (issue 4's goal: <= 2 %).

Two backbones, each measured side by side in one run with interleaved repeats (plain, guided, plain, ...), medians:

- **SVD** (training-free guides, ``pipelines/svd/guided.py``): the plain run is ``pipeline.image_to_video`` with
  no guide; the guided run is the same call with a frame-0 keyframe guide, as the sampler node runs it (the plan:
  fit + VAE-encode the keyframe once; the hook: ``D' = (1 - w) D + w g`` on the denoised estimate at every step).
  Per-step time comes from the sampler's step callback (time between the first and the last step callback,
  divided by steps - 1), so the encode and the decode, identical on both sides, do not dilute the figure. The plan,
  which runs once per clip, is timed on its own and reported amortised over the run's steps. The hook alone is
  also timed on a denoised estimate of SVD-XT's real latent size (25 x 4 x 72 x 128).
- **AniSora on Wan2.1** (``pipelines/anisora/packing.py``): the plain run builds the first-frame condition the way
  diffusers' ``WanImageToVideoPipeline`` does (the image then zeros, mask 1 on the first frame only), the guided
  run builds it through the guide machinery (``build_wan_condition``: Φ4 packing, zero-filled guide video). Both
  then run the same VAE encode, the same flow-matching steps and the same decode; the difference of the medians,
  divided by the steps, is the machinery's cost per step. Packing alone is timed as well.

    python bench/guide_cost.py                  # both, CPU, mid-size random models
    python bench/guide_cost.py --only svd --repeats 9 --threads 1

The models are the mid-size random ones of ``bench/svd_sampler.py`` and ``bench/anisora_wan.py`` (reused, not
rebuilt here). The last lines printed are ``svd guide cost per step=X.XX%`` and ``wan guide cost per step=X.XX%``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import anisora_wan  # noqa: E402  (registers the package ``animevideo`` too)
import svd_sampler  # noqa: E402

import torch  # noqa: E402

from animevideo.pipelines.anisora import packing, wan  # noqa: E402
from animevideo.pipelines.backbones.wan import tiny as wan_tiny  # noqa: E402
from animevideo.pipelines.anisora.model import AniSoraHooks, AniSoraModel, AniSoraRequest, TextConditioning  # noqa: E402
from animevideo.pipelines.guides import Guide  # noqa: E402
from animevideo.pipelines.svd import guided, pipeline  # noqa: E402


def med(xs):
    return statistics.median(xs)


def pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


# ---------------------------------------------------------------------------------------------
# SVD: the per-step hook
# ---------------------------------------------------------------------------------------------

def bench_svd(args) -> float:
    workdir = tempfile.mkdtemp(prefix="guide_cost_")
    try:
        model, _ = svd_sampler.build_mid("cpu", torch.float32, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    w, h = svd_sampler.parse_size(args.svd_size)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, h, w, generator=g)
    req = pipeline.SVDRequest(num_frames=args.svd_frames, steps=args.steps, max_cfg=3.0, seed=0,
                              decode_chunk_size=args.svd_frames)
    guide = Guide().with_keyframe(image[0].permute(1, 2, 0), 0)

    def run(with_guide: bool):
        marks = []
        hooks = pipeline.SVDRunHooks(on_step=lambda st: marks.append(time.perf_counter()))
        t0 = time.perf_counter()
        if with_guide:
            plan = guided.plan_svd_guide(model, guide, image, req.num_frames)
            hooks.denoised_hooks = [plan.hook()]
        t_plan = time.perf_counter() - t0
        res = pipeline.image_to_video(model, image, req, hooks)
        per_step = (marks[-1] - marks[0]) / (len(marks) - 1)
        return res, per_step, t_plan

    plain_out, _, _ = run(False)  # warm-up, and the check that the guide really acts on frame 0 only
    guided_out, _, _ = run(True)
    moved = (guided_out.latents - plain_out.latents).abs().amax(dim=(0, 2, 3, 4))
    print(f"svd: {sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f} M-param UNet, {w}x{h}, "
          f"{req.num_frames} frames, {req.steps} steps, CFG 1..3; guided vs plain max |latent diff| per frame: "
          f"{[round(float(m), 3) for m in moved]}")
    plain, guided_steps, plans = [], [], []
    for r in range(args.repeats):
        _, s_plain, _ = run(False)
        _, s_guided, t_plan = run(True)
        plain.append(s_plain)
        guided_steps.append(s_guided)
        plans.append(t_plan)
        print(f"  rep {r}: per step plain {s_plain * 1e3:.2f} ms, guided {s_guided * 1e3:.2f} ms "
              f"({pct(s_guided / s_plain - 1)}), plan {t_plan * 1e3:.2f} ms")
    step = med(plain)
    per_step = med(guided_steps) / step - 1
    pair = med([gs / ps - 1 for gs, ps in zip(guided_steps, plain)])
    plan_share = med(plans) / (step * req.steps)

    # the hook alone, at the bench size and at SVD-XT's real latent size
    def hook_time(shape):
        frames = shape[1]
        plan = guided.SVDGuidePlan(latents=torch.randn(frames, *shape[2:]), weight=torch.zeros(frames, 1,
                                   *shape[3:]), info="")
        plan.weight[0] = 1.0
        hook = plan.hook()
        state = type("S", (), {})()
        state.denoised = torch.randn(*shape)
        hook(state)  # the cache of device copies fills on the first call
        times = []
        for _ in range(20):
            t = time.perf_counter()
            hook(state)
            times.append(time.perf_counter() - t)
        return med(times)

    lat = (1, req.num_frames, 4, h // 8, w // 8)
    hook_bench = hook_time(lat)
    hook_real = hook_time((1, 25, 4, 72, 128))
    print(f"svd: median per step plain {step * 1e3:.2f} ms, guided {med(guided_steps) * 1e3:.2f} ms: "
          f"{pct(per_step)} (median of per-pair ratios {pct(pair)})")
    print(f"svd: the hook alone {hook_bench * 1e3:.3f} ms per step = {100 * hook_bench / step:.2f}% of a step at "
          f"this size; {hook_real * 1e3:.2f} ms on a 25x4x72x128 estimate (SVD-XT at 1024x576)")
    print(f"svd: the plan (fit + VAE-encode the keyframe), once per clip: {med(plans) * 1e3:.2f} ms = "
          f"{100 * plan_share:.2f}% of the {req.steps}-step sampling, {100 * plan_share:.2f}% per step amortised")
    ratios = sorted(gs / ps - 1 for gs, ps in zip(guided_steps, plain))
    spread = (ratios[(3 * len(ratios)) // 4] - ratios[len(ratios) // 4]) / 2 if len(ratios) > 3 else float("nan")
    # The side-by-side difference is the honest check that nothing else changed, but on a shared CPU its per-pair
    # spread is far above 2 %; the figure is the hook timed alone plus the plan, both measured directly.
    total = hook_bench / step + plan_share
    print(f"svd: side by side the guided steps differ by {pct(per_step)} (median), per-pair spread +-"
          f"{100 * spread:.1f}% (half the interquartile range): the hook is below this machine's noise")
    print(f"svd guide cost per step={100 * total:.2f}% (hook alone {100 * hook_bench / step:.3f}% + plan amortised "
          f"{100 * plan_share:.2f}%)")
    return total


# ---------------------------------------------------------------------------------------------
# Wan: the guide machinery vs the plain first-frame condition
# ---------------------------------------------------------------------------------------------

def plain_first_frame_condition(img: torch.Tensor, num_frames: int, height: int, width: int) -> packing.WanCondition:
    """What diffusers' WanImageToVideoPipeline builds for one image: the image then zeros, mask = first frame."""
    video = torch.zeros(1, 3, num_frames, height, width)
    video[0, :, 0] = img.permute(2, 0, 1) * 2 - 1
    t_lat = (num_frames - 1) // 4 + 1
    mask = torch.zeros(1, 4, t_lat, height // 8, width // 8)
    mask[:, :, 0] = 1
    return packing.WanCondition(num_frames, height, width, mask, video)


def bench_wan(args) -> float:
    from diffusers import WanTransformer3DModel

    w, h = (int(v) for v in args.wan_size.split("x"))
    torch.manual_seed(0)
    tr = WanTransformer3DModel(**anisora_wan.MID).eval().requires_grad_(False)
    vae = wan_tiny.build_tiny_vae(0)
    model = AniSoraModel("wan", tr, vae, torch.float32, "bench")
    g = torch.Generator().manual_seed(1)
    img = torch.rand(h, w, 3, generator=g)
    cfg = anisora_wan.MID
    text = TextConditioning(torch.randn(1, 20, cfg["text_dim"], generator=g), None,
                            torch.randn(1, 257, cfg["image_dim"], generator=g))
    guide = Guide().with_keyframe(img, 0)
    req = AniSoraRequest(width=w, height=h, num_frames=args.wan_frames, steps=args.steps, cfg=1.0, shift=5.0, seed=3)

    def run(with_guide: bool):
        t0 = time.perf_counter()
        cond = packing.build_wan_condition(guide, req.num_frames, h, w) if with_guide else \
            plain_first_frame_condition(img, req.num_frames, h, w)
        condition = wan.encode_condition(model, cond, AniSoraHooks())
        lat = wan.sample_latents(model, condition, text, req, AniSoraHooks())
        frames = packing.decode_latents(vae, lat)
        return frames, time.perf_counter() - t0

    a, _ = run(False)
    b, _ = run(True)
    diff = (a - b).abs().max().item()
    print(f"wan: {sum(p.numel() for p in tr.parameters()) / 1e6:.1f} M-param transformer, {w}x{h}x{req.num_frames}, "
          f"{req.steps} unipc steps; guide path vs plain first-frame condition: max abs diff {diff:.3e}")
    assert diff < 1e-5, "the two conditions must be the same first-frame run"
    plain, guided_runs = [], []
    for r in range(args.repeats):
        plain.append(run(False)[1])
        guided_runs.append(run(True)[1])
        print(f"  rep {r}: plain {plain[-1]:.3f} s, guided {guided_runs[-1]:.3f} s")
    pack = med(_times(lambda: packing.build_wan_condition(guide, req.num_frames, h, w), 9))
    hand = med(_times(lambda: plain_first_frame_condition(img, req.num_frames, h, w), 9))
    x = torch.randn(1, 36, (req.num_frames - 1) // 4 + 1, h // 8, w // 8)
    from animevideo.pipelines.anisora.text import pad_prompt_embeds

    ctx = pad_prompt_embeds(text.positive)
    with torch.no_grad():
        step = med(_times(lambda: tr(hidden_states=x, timestep=torch.tensor([500]), encoder_hidden_states=ctx,
                                     encoder_hidden_states_image=text.image_embeds, return_dict=False), 5))
    whole = (med(guided_runs) - med(plain)) / req.steps / step
    exact = (pack - hand) / req.steps / step
    print(f"wan: whole call median plain {med(plain):.3f} s, guided {med(guided_runs):.3f} s; one transformer "
          f"step {step * 1e3:.1f} ms")
    print(f"wan: packing {pack * 1e3:.2f} ms vs the plain condition {hand * 1e3:.2f} ms, once per clip: "
          f"{100 * exact:+.2f}% of a step per step over {req.steps} steps (from the whole calls: {pct(whole)})")
    print(f"wan guide cost per step={100 * exact:.2f}%")
    return exact


def _times(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["svd", "wan"], default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--svd-size", default="64")
    ap.add_argument("--svd-frames", type=int, default=14)
    ap.add_argument("--wan-size", default="128x128")
    ap.add_argument("--wan-frames", type=int, default=17)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU, repeats {args.repeats} "
          f"(interleaved plain/guided)")
    if args.only in (None, "svd"):
        bench_svd(args)
    if args.only in (None, "wan"):
        bench_wan(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

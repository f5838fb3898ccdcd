#!/usr/bin/env python3
"""Score a folder of generated clips against a folder of gold clips: a table on screen and a JSON file.

    python scripts/evaluate.py GENERATED_DIR GOLD_DIR [--paper pipeline|lvcd|ganime] [--metrics fvd,kvd,fid,...]
                               [--models MODELS_DIR] [--json OUT.json]

Each folder holds videos, animated images or one sub-folder of frames per clip (see pipelines/metrics/clips_io.py).
Set metrics (FVD, KVD, FID) compare the two sets as wholes; frame metrics (PSNR, SSIM, LPIPS, EDMD, TC) pair clips
by name and are averaged over frames, then over clips. The networks are read from MODELS_DIR (a ComfyUI models/
folder; default $ANIMEVIDEO_MODELS_DIR or ./models): metrics/ for I3D, Inception and LPIPS, lineart/ for EDMD,
interpolation/ (AnimeInterp) for TC's optical flow. --paper sets a paper's protocol; explicit options override it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ALL_METRICS = ("fvd", "kvd", "fid", "psnr", "ssim", "lpips", "edmd", "tc")
SET_METRICS = ("fvd", "kvd", "fid")
# The papers' protocols (digests: pipeline A1/A2/A11, LVCD B8.12, GANime 2.6 / B13)
PAPERS = {
    "pipeline": {"metrics": "fvd,lpips", "protocol": "standard", "lpips": "vgg", "resolution": "generated",
                 "skip_first": False},
    "lvcd": {"metrics": "fid,fvd,lpips,psnr,ssim,edmd,tc", "protocol": "windows", "lpips": "alex",
             "resolution": "256", "skip_first": True},
    "ganime": {"metrics": "fvd,kvd,fid,ssim,psnr", "protocol": "ganime", "lpips": "vgg", "resolution": "generated",
               "skip_first": True},
}
DEFAULTS = {"metrics": "fvd,kvd,fid,psnr,ssim,lpips", "protocol": "standard", "lpips": "alex",
            "resolution": "generated", "skip_first": False}


def import_pack():
    if "animevideo" not in sys.modules:
        pkg = types.ModuleType("animevideo")
        pkg.__path__ = [ROOT]
        sys.modules["animevideo"] = pkg


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("generated", help="folder of generated clips")
    ap.add_argument("gold", help="folder of gold (reference) clips")
    ap.add_argument("--paper", choices=sorted(PAPERS), help="use a paper's protocol (see README)")
    ap.add_argument("--metrics", help=f"comma-separated, from {','.join(ALL_METRICS)}")
    ap.add_argument("--protocol", choices=("standard", "windows", "ganime"), help="FVD/KVD clip protocol")
    ap.add_argument("--lpips", choices=("alex", "vgg"), help="LPIPS backbone")
    ap.add_argument("--resolution", choices=("generated", "256"), help="frame metrics: resize gold to the generated "
                    "size (pipeline paper) or both to 256x256 (LVCD)")
    ap.add_argument("--skip-first", dest="skip_first", action="store_true", default=None,
                    help="frame metrics and FID leave frame 0 of each clip out")
    ap.add_argument("--length", choices=("shorter", "exact"), default="shorter")
    ap.add_argument("--models", default=os.environ.get("ANIMEVIDEO_MODELS_DIR", os.path.join(os.getcwd(), "models")))
    ap.add_argument("--lineart", default="sk_model.pth", help="EDMD's lineart generator in MODELS/lineart")
    ap.add_argument("--interpolator", default="anime_interp_full.ckpt", help="TC's flow network in MODELS/interpolation")
    ap.add_argument("--batch-size", type=int, default=8, help="I3D windows per batch (memory is bounded by it)")
    ap.add_argument("--max-frames", type=int, default=0, help="read at most this many frames per clip (0: all)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    ap.add_argument("--json", help="write the results here (default: print only)")
    args = ap.parse_args(argv)
    preset = PAPERS.get(args.paper, DEFAULTS)
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.metrics = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in args.metrics if m not in ALL_METRICS]
    if unknown:
        ap.error(f"unknown metric(s) {unknown}; choose from {','.join(ALL_METRICS)}")
    return args


def model_file(models: str, folder: str, name: str, what: str) -> str:
    from animevideo.pipelines.errors import AnimeVideoModelError
    from animevideo.pipelines.metrics.loader import WHERE

    path = os.path.join(models, folder, name)
    if not os.path.isfile(path):
        hint = WHERE.get(what, f"Put it in {os.path.join(models, folder)}.")
        raise AnimeVideoModelError(f"'{name}' was not found in {os.path.join(models, folder)}. {hint}")
    return path


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.4f}"


def run(args) -> dict:
    import torch

    from animevideo.pipelines.metrics import clips_io, evaluate, loader, temporal

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gen_sources = clips_io.list_clips(args.generated, "generated")
    gold_sources = clips_io.list_clips(args.gold, "gold")
    wanted = set(args.metrics)
    out = {"generated": os.path.abspath(args.generated), "gold": os.path.abspath(args.gold),
           "paper": args.paper, "metrics": args.metrics, "device": str(device)}

    if wanted & set(SET_METRICS):
        i3d = inc = None
        if wanted & {"fvd", "kvd"}:
            i3d = loader.load_i3d(model_file(args.models, loader.FOLDER, loader.I3D_FILE, "i3d")).to(device)
        if "fid" in wanted:
            inc = loader.load_inception(model_file(args.models, loader.FOLDER, loader.INCEPTION_FILE,
                                                   "inception")).to(device)
        report = evaluate.set_metrics(lambda: clips_io.iter_clips(gen_sources, args.max_frames),
                                      lambda: clips_io.iter_clips(gold_sources, args.max_frames),
                                      i3d, inc, args.protocol, args.batch_size, skip_first_fid=args.skip_first,
                                      counts=(len(gen_sources), len(gold_sources)))
        out["set"] = report.as_dict()
        for m in SET_METRICS:
            if m not in wanted:
                out["set"][m] = None
        print(report.describe())

    pair_metrics = wanted - set(SET_METRICS)
    if pair_metrics:
        gold_by_name = {s.name: s for s in gold_sources}
        pairs = [(s, gold_by_name[s.name]) for s in gen_sources if s.name in gold_by_name]
        unmatched = [s.name for s in gen_sources if s.name not in gold_by_name]
        if not pairs:
            raise SystemExit(f"evaluate: no generated clip has a gold clip of the same name "
                             f"(generated: {[s.name for s in gen_sources][:5]}, gold: {list(gold_by_name)[:5]}); "
                             "frame metrics pair clips by name.")
        lp = lineart_fn = flow_fn = None
        flow_min = 0
        if "lpips" in pair_metrics:
            lp = loader.load_lpips(model_file(args.models, loader.FOLDER, loader.LPIPS_BACKBONES[args.lpips], "lpips"),
                                   model_file(args.models, loader.FOLDER, loader.LPIPS_HEADS[args.lpips], "lpips"))
            lp = lp.to(device)
        if "edmd" in pair_metrics:
            from animevideo.pipelines.lineart import extract as la_extract
            from animevideo.pipelines.lineart import loader as la_loader

            gen_model = la_loader.load_lineart_model(model_file(args.models, la_loader.FOLDER, args.lineart,
                                                                "lineart")).to(device)
            lineart_fn = lambda frames: la_extract.extract_lineart(gen_model, frames, device=device)  # noqa: E731
        if "tc" in pair_metrics:
            from animevideo.pipelines.interpolate import loader as interp_loader

            interp = interp_loader.load_interpolator(model_file(args.models, "interpolation", args.interpolator,
                                                                "interpolation")).to(device)
            flow_fn, flow_min = temporal.animeinterp_flow(interp), interp.min_size
        rows = []
        for gs, rs in pairs:
            rep = evaluate.clip_metrics(clips_io.read_clip(gs, args.max_frames), clips_io.read_clip(rs, args.max_frames),
                                        args.resolution, args.length, args.skip_first, lp, lineart_fn, None, flow_fn,
                                        flow_min)
            row = {"name": gs.name, **rep.as_dict()}
            for m in ("psnr", "ssim", "lpips", "edmd", "tc"):
                if m not in pair_metrics:
                    row[m] = None
            rows.append(row)
        cols = [m for m in ("psnr", "ssim", "lpips", "edmd", "tc") if m in pair_metrics]
        means = {}
        for m in cols:
            vals = [r[m] for r in rows if isinstance(r[m], (int, float))]
            inf = any(r[m] == "inf" for r in rows)
            means[m] = math.inf if inf else (sum(vals) / len(vals) if vals else None)
        print(f"\nFrame metrics ({rows[0]['protocol']}):")
        print(f"  {'clip':<24}" + "".join(f"{c.upper():>10}" for c in cols))
        for r in rows:
            print(f"  {r['name'][:24]:<24}" + "".join(f"{fmt(r[c] if r[c] != 'inf' else math.inf):>10}" for c in cols))
        print(f"  {'mean':<24}" + "".join(f"{fmt(means[c]):>10}" for c in cols))
        out["clips"] = rows
        out["mean"] = {m: (None if v is None else ("inf" if math.isinf(v) else v)) for m, v in means.items()}
        if unmatched:
            out["unmatched"] = unmatched
            print(f"  note: {len(unmatched)} generated clip(s) without a gold clip of the same name: {unmatched[:5]}")
    return out


def main(argv=None) -> int:
    import_pack()
    from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError

    args = parse_args(argv)
    try:
        out = run(args)
    except (AnimeVideoInputError, AnimeVideoModelError) as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

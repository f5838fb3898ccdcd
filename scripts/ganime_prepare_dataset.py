#!/usr/bin/env python3
"""Prepare GANime training clips from your own anime (episodes or frame folders).

    python scripts/ganime_prepare_dataset.py OUT_DIR INPUT [INPUT ...] [options]

INPUT: video files (scene-split with PySceneDetect; needs ``pip install scenedetect opencv-python``),
folders of frames (one already-cut scene each; no extras needed), or folders holding either.

The thesis' recipe by default: content detector threshold 15, scenes shorter than 0.5 s dropped,
the first 2 frames of each scene dropped, long scenes cut into 15-25-frame clips (Table 1), frames
resized to 64x128, written as uint8 safetensors shards with a manifest.json. Then train with
scripts/ganime_train.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_pack():
    if "animevideo" not in sys.modules:
        pkg = types.ModuleType("animevideo")
        pkg.__path__ = [ROOT]
        sys.modules["animevideo"] = pkg


def main(argv=None):
    import_pack()
    from animevideo.pipelines.errors import AnimeVideoInputError
    from animevideo.pipelines.ganime.training.dataset import ClipRules, prepare_dataset

    d = ClipRules()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="an empty folder for the shards and manifest.json")
    ap.add_argument("inputs", nargs="+", help="video files and/or frame folders")
    ap.add_argument("--threshold", type=float, default=d.threshold, help="PySceneDetect content threshold (15)")
    ap.add_argument("--min-scene-seconds", type=float, default=d.min_scene_seconds, help="shortest scene kept (0.5)")
    ap.add_argument("--keep-short-scenes", action="store_true", help="keep scenes shorter than --min-scene-seconds")
    ap.add_argument("--downscale", type=int, default=d.detect_downscale, help="frame downscale for detection (4)")
    ap.add_argument("--drop-first", type=int, default=d.drop_first, help="frames dropped at each scene start (2)")
    ap.add_argument("--frame-step", type=int, default=d.frame_step,
                    help="keep every k-th frame (1; the original repo's script kept every 2nd)")
    ap.add_argument("--min-clip", type=int, default=d.min_clip, help="shortest ideal clip length (15)")
    ap.add_argument("--max-clip", type=int, default=d.max_clip, help="longest ideal clip length, included (25)")
    ap.add_argument("--height", type=int, default=d.height)
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--clips-per-shard", type=int, default=256)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    rules = ClipRules(threshold=a.threshold, min_scene_seconds=a.min_scene_seconds,
                      drop_short_scenes=not a.keep_short_scenes, detect_downscale=a.downscale, drop_first=a.drop_first,
                      frame_step=a.frame_step, min_clip=a.min_clip, max_clip=a.max_clip, height=a.height, width=a.width)
    try:
        stats = prepare_dataset(a.inputs, a.out_dir, rules, a.clips_per_shard, progress=not a.quiet)
    except AnimeVideoInputError as e:
        print(f"ganime_prepare_dataset: {e}", file=sys.stderr)
        return 2
    print(f"{stats['clips']} clips ({stats['frames']} frames) from {stats['scenes']} scenes of {stats['inputs']} "
          f"inputs -> {stats['manifest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

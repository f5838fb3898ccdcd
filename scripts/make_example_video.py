#!/usr/bin/env python3
"""Write the example video file the video workflows load: the example clip as an MP4 with a sound track.

    <python with PyAV> scripts/make_example_video.py [OUT_DIR]     (default: example_inputs/)

Needs PyAV (``import av``), which ComfyUI itself depends on, so run it with ComfyUI's Python.

The picture is the example clip of scripts/make_example_clip.py (256x144, 12 frames at 12 fps, a ball
drawn on twos), encoded as H.264 (yuv420p, high quality so the held drawings stay near-identical for
AnimeVideo Interpolate's dedup). The sound is 1 s of mono AAC at 22.05 kHz: a quiet 220 Hz hum and a
short falling "boing" when the ball lands (drawing 2, frame 4), so a player (or a test) can tell the
audio track was kept and still lines up with the picture. Everything is computed from fixed numbers; the
file is small (well under 200 KB).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_example_clip as clip  # noqa: E402

VIDEO = "animevideo_example_clip_with_audio.mp4"
SAMPLE_RATE = 22050
LANDING_FRAME = 4  # first frame of the drawing where the ball touches the ground (BALL_HEIGHTS[2] == 0)
CRF = 12


def sound_track() -> np.ndarray:
    """[samples] float32 in -1..1, as long as the clip."""
    n = round(SAMPLE_RATE * clip.NUM_FRAMES / clip.FPS)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    hum = 0.08 * np.sin(2 * math.pi * 220.0 * t)
    start = LANDING_FRAME / clip.FPS
    tb = np.clip(t - start, 0.0, None)
    phase = 2 * math.pi * (660.0 * tb - 300.0 * tb ** 2)  # 660 Hz falling at 600 Hz/s
    boing = np.where(t >= start, 0.5 * np.exp(-tb * 9.0) * np.sin(phase), 0.0)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)  # 10 ms fades: no clicks at the ends
    return ((hum + boing) * fade).astype(np.float32)


def write_video(path: str) -> None:
    import av

    frames = clip.clip_frames()
    tmp = path + ".part"
    with av.open(tmp, mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=Fraction(clip.FPS, 1))
        video.width, video.height = clip.WIDTH, clip.HEIGHT
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(CRF), "preset": "medium", "tune": "animation"}
        audio = out.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.asarray(img.convert("RGB")), format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        samples = sound_track()
        chunk = 1024  # the AAC encoder's frame size
        for i in range(0, len(samples), chunk):
            part = samples[None, i:i + chunk]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = i
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    os.replace(tmp, path)


def write_all(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, VIDEO)
    write_video(path)
    return [path]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.path.join(clip.ROOT, "example_inputs"))
    args = ap.parse_args(argv)
    for path in write_all(args.out_dir):
        print(f"{path}: {os.path.getsize(path)} bytes, {clip.NUM_FRAMES} frames {clip.WIDTH}x{clip.HEIGHT} @ "
              f"{clip.FPS} fps, mono AAC {SAMPLE_RATE} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())

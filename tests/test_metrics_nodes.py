"""The metrics nodes, the clip folders and the command line, run without ComfyUI on the tiny networks."""
from __future__ import annotations

import importlib
import json
import math
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pack_paths import ROOT

from animevideo.nodes import comfy_bridge as bridge
from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.metrics import clips_io, evaluate, loader

metrics_nodes = importlib.import_module("animevideo.nodes.metrics")
interp_nodes = importlib.import_module("animevideo.nodes.interpolate")
nodes_pkg = importlib.import_module("animevideo.nodes")
ClipNode, SetNode = metrics_nodes.AnimeVideoClipMetrics, metrics_nodes.AnimeVideoSetMetrics


@pytest.fixture
def env(models_env, monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMEVIDEO_DEVICE", "cpu")
    monkeypatch.setenv("ANIMEVIDEO_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("ANIMEVIDEO_INPUT_DIR", str(tmp_path / "input"))
    return models_env


def frames(seed, n=6, h=40, w=48):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def write_frame_folder(folder, clip: torch.Tensor):
    os.makedirs(folder, exist_ok=True)
    for t, f in enumerate(clip):
        Image.fromarray((f.numpy() * 255).round().astype(np.uint8)).save(os.path.join(folder, f"frame{t}.png"))


def test_nodes_are_registered_with_tooltips():
    assert "metrics" in bridge.PACK_FOLDERS
    for node_id, cls in (("AnimeVideoClipMetrics", ClipNode), ("AnimeVideoSetMetrics", SetNode)):
        assert nodes_pkg.NODE_CLASS_MAPPINGS[node_id] is cls and node_id in nodes_pkg.NODE_DISPLAY_NAME_MAPPINGS
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, value in spec.get(section, {}).items():
                assert value[1].get("tooltip"), f"{node_id}.{name}"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert cls.CATEGORY == "AnimeVideo/Metrics"


def test_clip_node_scores_every_metric_and_identical_clips_score_perfectly(env):
    (handle,) = interp_nodes.AnimeVideoLoadInterpolator().load("anime_interp_full.ckpt")
    gen, gold = frames(0), frames(1)
    mask = torch.zeros(1, 40, 48)
    mask[:, :, :24] = 1  # the left half may move
    psnr, ssim, lp, edmd, tc, mp, report = ClipNode().score(gen, gold, "generated", "shorter", False, "alex",
                                                           "sk_model.pth", handle, None, 4, mask)
    for value in (psnr, ssim, lp, edmd, tc):
        assert math.isfinite(value)
    assert mp == pytest.approx(0.5, abs=0.05)  # random frames move everywhere: the mask's share
    assert psnr == pytest.approx(float(evaluate.pixel.psnr_per_frame(gen, gold).mean()))
    for name in ("PSNR", "SSIM", "LPIPS v0.1 ALEX", "EDMD", "LVCD Eq. 9", "gold resized to the generated 48x40",
                 "MASK P", "mask allows 50.0%"):
        assert name in report
    psnr, ssim, lp, edmd, tc, mp, report = ClipNode().score(gen, gen.clone(), lpips="vgg",
                                                           lineart_model="sk_model.pth", interpolator=handle)
    assert math.isnan(mp) and "no motion mask given" in report
    assert math.isinf(psnr) and ssim == pytest.approx(1.0) and lp == 0 and edmd == 0 and tc == pytest.approx(1.0)
    assert "PSNR is infinite" in report


def test_clip_node_resizes_gold_and_handles_lengths(env):
    gen = frames(2, n=4)
    gold = gen.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # the same frames at twice the size
    gold = torch.cat([gold, gold[:2]])  # and two frames longer
    psnr, *_, report = ClipNode().score(gen, gold, lpips="none")
    assert psnr > 20 and "gold resized from 96x80 to the generated 48x40" in report
    assert "lengths differ (4 generated, 6 gold)" in report and "LPIPS" in report and "not computed" in report
    with pytest.raises(AnimeVideoInputError, match="with length 'exact' they must match"):
        ClipNode().score(gen, gold, length="exact", lpips="none")
    *_, report = ClipNode().score(gen, gold[:4], resolution="256", skip_first_frame=True, lpips="none")
    assert "both resized to 256x256 (LVCD); 3 frame pair(s); frame 0 left out" in report


def test_clip_node_reports_missing_weights_with_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", str(tmp_path))
    message = ClipNode.VALIDATE_INPUTS(lpips="vgg")
    assert "vgg16-397923af.pth" in message and "download.pytorch.org" in message
    with pytest.raises(AnimeVideoModelError, match="PerceptualSimilarity"):
        ClipNode().score(frames(0), frames(1), lpips="alex")
    assert ClipNode.VALIDATE_INPUTS(lpips="none") is True
    assert "not one of" in ClipNode.VALIDATE_INPUTS(resolution="512")


def test_set_node_scores_folders_and_refuses_bad_folders(env, tmp_path):
    out = tmp_path / "output"
    for i in range(3):
        clip = frames(10 + i, n=16, h=24, w=32)
        write_frame_folder(out / "gen" / f"c{i}", clip)
        write_frame_folder(out / "gold" / f"c{i}", clip)
    fvd, kvd, fid, report = SetNode().score("output/gen", "output/gold", loader.I3D_FILE, loader.INCEPTION_FILE,
                                            "standard", batch_size=2)
    assert fvd == pytest.approx(0, abs=1e-6) and fid == pytest.approx(0, abs=1e-6)
    assert "3 generated clip(s) against 3 gold clip(s)" in report and "rank-deficient" in report
    assert "first 16 frames per clip" in report and math.isfinite(kvd)
    fvd, kvd, fid, _ = SetNode().score("output/gen", "output/gold", loader.I3D_FILE, "none", "ganime")
    assert fvd == pytest.approx(0, abs=1e-6) and math.isnan(fid)

    for bad, match in (("/etc", "must start with 'output/'"), ("output/../gen", "not allowed"),
                       ("output/missing", "does not exist"), ("gen", "must start with")):
        with pytest.raises(AnimeVideoInputError, match=match):
            SetNode().score(bad, "output/gold", loader.I3D_FILE, "none")
    os.makedirs(out / "empty")
    with pytest.raises(AnimeVideoInputError, match="holds no clips"):
        SetNode().score("output/empty", "output/gold", loader.I3D_FILE, "none")
    write_frame_folder(out / "one" / "c0", frames(3, n=16, h=24, w=32))
    with pytest.raises(AnimeVideoInputError, match="single clip"):
        SetNode().score("output/one", "output/gold", loader.I3D_FILE, "none")
    write_frame_folder(out / "short" / "c0", frames(4, n=5, h=24, w=32))
    with pytest.raises(AnimeVideoInputError, match="first 16 frames"):
        SetNode().score("output/short", "output/gold", loader.I3D_FILE, "none")
    assert "both 'none'" in SetNode.VALIDATE_INPUTS("none", "none")


def test_runs_that_would_not_fit_in_ram_are_refused_before_they_start(env, tmp_path, monkeypatch):
    from animevideo.pipelines.errors import AnimeVideoMemoryError

    monkeypatch.setenv("ANIMEVIDEO_MAX_RAM_GB", "1")
    with pytest.raises(AnimeVideoMemoryError, match="Lower batch_size"):
        SetNode().score("output/nothing-read-yet", "output/gold", loader.I3D_FILE, "none", batch_size=64)
    with pytest.raises(AnimeVideoMemoryError, match="Score fewer frames"):
        big = torch.zeros(1, 512, 512, 3).expand(200, -1, -1, -1)  # the size only; no memory behind it
        ClipNode().score(big, big, lpips="none")


def test_set_node_stops_on_cancel(env, tmp_path):
    for i in range(2):
        write_frame_folder(tmp_path / "output" / "g" / f"c{i}", frames(20 + i, n=16, h=24, w=32))
    bridge.request_interrupt()
    with pytest.raises(bridge.AnimeVideoInterrupted):
        SetNode().score("output/g", "output/g", loader.I3D_FILE, "none")


# ------------------------------------------------------------------------------------------------------
# Clip folders
# ------------------------------------------------------------------------------------------------------

def test_clip_folders_read_videos_frames_and_animated_images(tmp_path):
    av = pytest.importorskip("av")
    clip = (frames(5, n=4, h=32, w=48).numpy() * 255).astype(np.uint8)
    with av.open(str(tmp_path / "b_video.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv444p"
        stream.options = {"crf": "0"}
        for f in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    folder = tmp_path / "a_frames"
    folder.mkdir()
    for t in (0, 1, 2, 10):  # natural order: frame10 last
        Image.fromarray(np.full((8, 8, 3), t, np.uint8)).save(folder / f"frame{t}.png")
    Image.fromarray(clip[0]).save(tmp_path / "c_anim.png", save_all=True,
                                  append_images=[Image.fromarray(f) for f in clip[1:]])
    sources = clips_io.list_clips(str(tmp_path))
    assert [(s.name, s.kind) for s in sources] == [("b_video", "video"), ("a_frames", "frames"), ("c_anim", "image")]
    video = clips_io.read_clip(sources[0])
    assert video.shape == (4, 32, 48, 3) and (video.float() - torch.from_numpy(clip).float()).abs().mean() < 3
    assert clips_io.read_clip(sources[1])[:, 0, 0, 0].tolist() == [0, 1, 2, 10]
    assert torch.equal(clips_io.read_clip(sources[2]), torch.from_numpy(clip))
    assert clips_io.read_clip(sources[2], max_frames=2).shape[0] == 2


def test_a_folder_of_loose_frames_is_one_clip_and_mixed_sizes_are_refused(tmp_path):
    for t in range(3):
        Image.fromarray(np.zeros((8, 8 + (t == 2), 3), np.uint8)).save(tmp_path / f"{t}.png")
    (source,) = clips_io.list_clips(str(tmp_path))
    assert source.kind == "frames"
    with pytest.raises(AnimeVideoInputError, match="differ in size"):
        clips_io.read_clip(source)


# ------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------

def test_command_line_prints_a_table_and_writes_json(env, tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import evaluate as cli
    finally:
        sys.path.pop(0)
    for i in range(2):
        write_frame_folder(tmp_path / "gen" / f"clip{i}", frames(30 + i, n=16, h=32, w=40))
        write_frame_folder(tmp_path / "gold" / f"clip{i}", frames(40 + i, n=16, h=64, w=80))
    out = tmp_path / "result.json"
    rc = cli.main([str(tmp_path / "gen"), str(tmp_path / "gold"), "--models", env, "--metrics",
                   "fvd,kvd,psnr,ssim,lpips,edmd", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "FVD" in printed and "clip1" in printed and "mean" in printed and "EDMD" in printed
    result = json.loads(out.read_text())
    assert result["set"]["video_samples"] == {"generated": 2, "gold": 2} and result["set"]["fid"] is None
    assert [r["name"] for r in result["clips"]] == ["clip0", "clip1"]
    assert result["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result["clips"]]))
    assert "gold resized to the generated 40x32" in result["clips"][0]["protocol"]
    # a paper preset, and a clear refusal for missing weights
    rc = cli.main([str(tmp_path / "gen"), str(tmp_path / "gold"), "--models", str(tmp_path / "nothing"),
                   "--paper", "pipeline"])
    assert rc == 2 and "i3d_pretrained_400.pt" in capsys.readouterr().err

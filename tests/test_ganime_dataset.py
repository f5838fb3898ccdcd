"""GANime dataset preparation: the thesis' clip rule (Table 1), scene handling, shards, the optional extras."""
import builtins
import os

import numpy as np
import pytest
from PIL import Image

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.ganime.training import dataset as D


pytestmark = pytest.mark.usefixtures("one_thread")


TABLE_1 = {25: [25], 29: [29], 30: [15, 15], 31: [15, 16], 32: [16, 16], 33: [16, 17], 50: [25, 25],
           51: [17, 17, 17], 52: [17, 17, 18]}


@pytest.mark.parametrize("n,expected", sorted(TABLE_1.items()))
def test_table_1(n, expected):
    assert D.clip_lengths(n) == expected


def test_clip_rule_edges():
    assert D.best_clip_length(50) == 25  # the upper bound is included (the script's range() was not)
    assert D.best_clip_length(60) == 20  # ties go to the larger length (15 and 20 both divide 60)
    assert D.clip_lengths(10) == [10]  # shorter than any length: kept whole
    assert D.clip_lengths(0) == []
    for n in range(1, 200):
        parts = D.clip_lengths(n)
        assert sum(parts) == n
        if n >= 15:
            assert all(15 <= p < 50 for p in parts)
    assert D.split_range(100, 131) == [(100, 115), (115, 131)]


def test_scene_clips_drop_short_scenes_and_first_two_frames():
    rules = D.ClipRules()
    scenes = [(0, 10), (10, 43), (43, 95)]  # 10 frames < 0.5 s at 24 fps = 12 frames: dropped
    clips = D.scene_clips(scenes, fps=24.0, rules=rules)
    assert [len(c) for c in clips] == [15, 16, 25, 25]  # 33 - 2 = 31 -> 15, 16; 52 - 2 = 50 -> 25, 25
    assert clips[0][0] == 12 and clips[1][-1] == 42
    assert clips[2][0] == 45 and clips[3][-1] == 94
    stepped = D.scene_clips([(0, 40)], fps=24.0, rules=D.ClipRules(frame_step=2))
    assert stepped == [list(range(2, 40, 2))]


def test_image_folders_become_shards(tmp_path):
    scene = tmp_path / "scene_a"
    scene.mkdir()
    clip = D.moving_square_clip(20, 48, 96, (0.5, 0.2), (0.5, 0.8))
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(scene / f"{i:04d}.png")
    stats = D.prepare_dataset([str(tmp_path)], str(tmp_path / "out"), D.ClipRules(height=16, width=32), progress=False)
    assert stats["clips"] == 1 and stats["frames"] == 18  # 20 - 2 first frames, kept whole
    ds = D.ClipDataset(str(tmp_path / "out"))
    assert len(ds) == 1 and ds.size == (16, 32)
    assert tuple(ds[0].shape) == (18, 16, 32, 3) and str(ds[0].dtype) == "torch.uint8"
    with pytest.raises(AnimeVideoInputError, match="already holds"):
        D.prepare_dataset([str(tmp_path)], str(tmp_path / "out"), progress=False)


def test_videos_need_the_optional_extras(tmp_path, monkeypatch):
    video = tmp_path / "episode.mp4"
    video.write_bytes(b"not really a video")
    real_import = builtins.__import__

    def missing(name, *a, **k):
        if name in ("scenedetect", "cv2") or name.startswith("scenedetect."):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", missing)
    with pytest.raises(AnimeVideoInputError, match="pip install scenedetect opencv-python"):
        D.prepare_dataset([str(video)], str(tmp_path / "out"), progress=False)


def test_not_a_dataset(tmp_path):
    with pytest.raises(AnimeVideoInputError, match="ganime_prepare_dataset"):
        D.ClipDataset(str(tmp_path))


def test_synthetic_clips_move_between_two_positions(tmp_path):
    D.write_synthetic_dataset(str(tmp_path / "syn"), n_clips=2, n_frames=5)
    ds = D.ClipDataset(str(tmp_path / "syn"))
    clip = ds[0].numpy().astype(int)
    bright = [np.argwhere(f.sum(-1) > 400)[:, 1].mean() for f in clip]
    assert bright[0] < bright[2] < bright[-1]  # left to right
    assert os.path.isfile(os.path.join(str(tmp_path / "syn"), "manifest.json"))

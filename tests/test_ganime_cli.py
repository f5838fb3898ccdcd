"""scripts/ganime_prepare_dataset.py and scripts/ganime_train.py, run in-process on tiny data."""
import json
import os
import sys

import pytest
from PIL import Image

from pack_paths import ROOT


pytestmark = pytest.mark.usefixtures("one_thread")


def script(name):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_prepare_train_and_load(tmp_path, monkeypatch, capsys):
    from animevideo.pipelines.ganime import loader
    from animevideo.pipelines.ganime.training import dataset, losses

    frames = tmp_path / "frames" / "scene_01"
    frames.mkdir(parents=True)
    for i, f in enumerate(dataset.moving_square_clip(12, 32, 64, (0.5, 0.2), (0.5, 0.8))):
        Image.fromarray(f).save(frames / f"{i:03d}.png")
    prep = script("ganime_prepare_dataset")
    assert prep.main([str(tmp_path / "data"), str(tmp_path / "frames"), "--height", "16", "--width", "32", "--quiet"]) == 0
    assert "1 clips (10 frames)" in capsys.readouterr().out

    models = tmp_path / "models" / "ganime"
    models.mkdir(parents=True)
    losses.save_vgg(losses.VGG19Features(widths=(4, 8, 8, 16, 16)), str(models / "vgg19-dcbb9e9d.safetensors"))
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", str(tmp_path / "models"))
    train = script("ganime_train")
    assert train.main(["init-config", "gpt", str(tmp_path / "gpt.json")]) == 0
    assert json.load(open(tmp_path / "gpt.json"))["teacher_forcing_steps"] == 200
    vq_model = {"channels": 8, "channels_multiplier": [1, 2, 2], "resolution": 64, "z_channels": 16,
                "embedding_dim": 8, "num_embeddings": 16, "image_size": [16, 32], "norm_groups": 4}
    args = ["vqgan", str(tmp_path / "vq"), "--data", str(tmp_path / "data"), "--quiet",
            "--set", f"vgg={models / 'vgg19-dcbb9e9d.safetensors'}", "--set", "batch_size=2", "--set", "steps=3",
            "--set", "log_every=1"] + [x for k, v in vq_model.items() for x in ("--set", f"model.{k}={json.dumps(v)}")]
    assert train.main(args) == 0
    vq_file = tmp_path / "vq" / "ganime_vqgan.safetensors"
    assert vq_file.is_file()
    gpt_args = ["gpt", str(tmp_path / "gpt"), "--data", str(tmp_path / "data"), "--vqgan", str(vq_file), "--quiet",
                "--set", "size=custom", "--set", "batch_size=2", "--set", "steps=2",
                "--set", 'model={"n_positions": 64, "n_embd": 16, "n_layer": 1, "n_head": 2, "remaining_frames_size": 12}']
    assert train.main(gpt_args) == 0
    model = loader.load_ganime(str(vq_file), str(tmp_path / "gpt" / "ganime_transformer.safetensors"))
    assert model.transformer.config.n_layer == 1 and model.tokens_per_frame == 32
    assert train.main(["gpt", str(tmp_path / "gpt2"), "--data", str(tmp_path / "nodata"), "--vqgan", str(vq_file),
                       "--quiet"]) == 2
    assert "not a GANime dataset" in capsys.readouterr().err

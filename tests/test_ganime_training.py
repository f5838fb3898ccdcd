"""A tiny end-to-end GANime training run on synthetic clips (a square moving between two positions).

Both stages train on the CPU in seconds, their losses fall, runs resume from their checkpoint, and
the exported files load as a GANime pair that in-betweens.
"""
import json

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.ganime import inference, loader
from animevideo.pipelines.ganime.training import common, config, dataset, losses, train_gpt, train_vqgan
from animevideo.pipelines.ganime.vqgan import VQGANConfig


pytestmark = pytest.mark.usefixtures("one_thread")


VQ = VQGANConfig(channels=8, channels_multiplier=(1, 2, 2), attention_resolution=(16,), resolution=64, z_channels=16,
                 embedding_dim=8, num_embeddings=32, image_size=(16, 32), norm_groups=4)
GPT = dict(n_positions=128, n_embd=32, n_layer=2, n_head=2, remaining_frames_size=16, dropout=0.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ganime_train")
    data = str(root / "data")
    dataset.write_synthetic_dataset(data, n_clips=8, n_frames=6, height=16, width=32)
    vgg = losses.VGG19Features(widths=(4, 8, 8, 16, 16))  # random VGG weights (tests only)
    vq_cfg = config.VQGANTrainConfig(data=data, model=VQ.to_dict(), batch_size=4, steps=24, lr=3e-3, log_every=6,
                                     save_every=1000, jitter=True, frame_step=1)
    vq_hist = train_vqgan.train_vqgan(vq_cfg, str(root / "vq"), progress=False, vgg=vgg)
    vq_file = str(root / "vq" / train_vqgan.EXPORT)
    gpt_cfg = config.GPTTrainConfig(data=data, vqgan=vq_file, size="custom", model=GPT, batch_size=4, steps=24,
                                    lr_start=1e-3, lr_max=5e-3, warmup_fraction=0.1, teacher_forcing_steps=12,
                                    log_every=6, save_every=1000)
    first = train_gpt.train_gpt(gpt_cfg, str(root / "gpt"), progress=False, stop_after=12)
    rest = train_gpt.train_gpt(gpt_cfg, str(root / "gpt"), progress=False)  # resumes at step 12
    return {"root": root, "data": data, "vq": vq_hist, "gpt_first": first, "gpt_rest": rest, "vq_file": vq_file,
            "gpt_cfg": gpt_cfg}


def test_vqgan_loss_falls(runs):
    h = runs["vq"]
    assert [r["step"] for r in h] == [6, 12, 18, 24]
    assert h[-1]["loss"] < h[0]["loss"]
    assert h[-1]["mae"] < h[0]["mae"]
    assert all(r["perceptual"] > 0 for r in h)


def test_gpt_loss_falls_and_switches_from_teacher_forcing(runs):
    first, rest = runs["gpt_first"], runs["gpt_rest"]
    assert [r["step"] for r in first] == [6, 12] and [r["step"] for r in rest] == [18, 24]
    assert first[0]["teacher_forcing"] and not rest[-1]["teacher_forcing"]
    assert rest[-1]["loss"] < first[0]["loss"]
    log = common.read_log(str(runs["root"] / "gpt"))
    assert [r["step"] for r in log] == [6, 12, 18, 24]


def test_runs_keep_their_config_and_a_resumable_checkpoint(runs):
    with open(runs["root"] / "gpt" / config.CONFIG_FILE) as f:
        saved = config.from_dict(json.load(f))
    assert saved == runs["gpt_cfg"]
    state = common.load_checkpoint(str(runs["root"] / "gpt"))
    assert state["step"] == 24
    again = train_gpt.train_gpt(runs["gpt_cfg"], str(runs["root"] / "gpt"), progress=False)
    assert again == []  # already at cfg.steps


def test_exported_pair_in_betweens(runs):
    model = loader.load_ganime(runs["vq_file"], str(runs["root"] / "gpt" / train_gpt.EXPORT))
    assert model.tokens_per_frame == 32
    ds = dataset.ClipDataset(runs["data"])
    clip = ds[0].permute(0, 3, 1, 2).float() / 255
    res = inference.inbetween(model, clip[:1], clip[-1:], inference.InbetweenRequest(num_frames=6, output_size="model"))
    assert res.frames.shape == (1, 6, 3, 16, 32)


def test_config_errors(tmp_path):
    with pytest.raises(AnimeVideoInputError, match="unknown keys"):
        config.from_dict({"stage": "gpt", "batch_sise": 3})
    with pytest.raises(AnimeVideoInputError, match="stage"):
        config.from_dict({"stage": "both"})
    path = config.save_config(config.VQGANTrainConfig(data="x"), str(tmp_path))
    assert config.load_config(path).model["num_embeddings"] == 50257


def test_vgg_weights_file_round_trip(tmp_path):
    vgg = losses.VGG19Features(widths=(4, 8, 8, 16, 16), preprocess="matconvnet")
    path = losses.save_vgg(vgg, str(tmp_path / "vgg.safetensors"))
    back = losses.load_vgg(path)
    assert back.widths == vgg.widths and back.preprocess == "matconvnet"
    x = torch.rand(1, 3, 16, 32) * 2 - 1
    assert torch.allclose(losses.PerceptualLoss(back)(x, -x), losses.PerceptualLoss(vgg)(x, -x))
    with pytest.raises(Exception, match="VGG19 weights"):
        losses.load_vgg(str(tmp_path / "missing.pth"))


def test_discriminator_option_runs(tmp_path):
    data = str(tmp_path / "d")
    dataset.write_synthetic_dataset(data, n_clips=2, n_frames=4, height=16, width=32)
    cfg = config.VQGANTrainConfig(data=data, model=VQ.to_dict(), batch_size=2, steps=2, perceptual_weight=0.0,
                                  use_discriminator=True, disc_filters=8, disc_layers=2, log_every=1, save_every=1000)
    hist = train_vqgan.train_vqgan(cfg, str(tmp_path / "run"), progress=False)
    assert len(hist) == 2 and all(r["d"] > 0 for r in hist)
    state = common.load_checkpoint(str(tmp_path / "run"))
    assert "discriminator" in state


def test_warmup_cosine():
    lrs = [common.warmup_cosine(s, 100, 5e-6, 1e-4, 0.15) for s in range(100)]
    assert lrs[0] == pytest.approx(5e-6) and max(lrs) == pytest.approx(1e-4)
    assert lrs[15] == pytest.approx(1e-4) and lrs[-1] < 1e-6

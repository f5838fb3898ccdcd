"""Loader nodes fetch a missing pinned model (real huggingface_hub client, local Hub) and then load it.

The pinned entries keep their real repository, revision and file name; only the sha256/size are swapped for
those of the tiny stand-in file the local Hub serves (the real values belong to the real multi-GB files).
"""
import dataclasses
import hashlib
import importlib
import os

import pytest
import torch

from hub_server import HubServer

from animevideo.nodes import comfy_bridge as bridge
from animevideo.pipelines import model_downloads as md
from animevideo.pipelines.errors import AnimeVideoModelError
from animevideo.pipelines.upscale import tiny as tiny_upscalers

up_nodes = importlib.import_module("animevideo.nodes.upscale")
svd_nodes = importlib.import_module("animevideo.nodes.svd")
lineart_nodes = importlib.import_module("animevideo.nodes.lineart")
Load, Upscale = up_nodes.AnimeVideoLoadUpscaler, up_nodes.AnimeVideoUpscale
CHUNK = 4096


@pytest.fixture(scope="module")
def tiny_animesr(tmp_path_factory) -> bytes:
    d = str(tmp_path_factory.mktemp("tiny_up"))
    tiny_upscalers.write_tiny_upscalers(d)
    with open(os.path.join(d, "upscale_models", "AnimeSR_v2.pth"), "rb") as f:
        return f.read()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    monkeypatch.setenv("ANIMEVIDEO_DOWNLOADS", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", str(tmp_path / "models"))  # an empty, fresh install
    monkeypatch.setenv("ANIMEVIDEO_DEVICE", "cpu")
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def stand_in(monkeypatch, hub, folder, name, data):
    """Serve ``data`` as the pinned file (folder, name) and pin its hash and size instead of the real ones."""
    real = md.find_pinned(folder, name)
    fake = dataclasses.replace(real, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setattr(md, "PINNED", tuple(fake if e is real else e for e in md.PINNED))
    hub.files.add(real.repo_id, real.revision, real.filename, data)
    return fake


class RecordingProgress(bridge.Progress):
    values: list = []

    def set(self, value, preview_rgb=None):
        RecordingProgress.values.append((int(value), self.total))
        super().set(value, preview_rgb)


def test_load_upscaler_fetches_the_missing_model_then_loads_and_runs_it(hub, monkeypatch, tiny_animesr):
    entry = stand_in(monkeypatch, hub, "upscale_models", "AnimeSR_v2.pth", tiny_animesr)
    monkeypatch.setattr(bridge, "Progress", RecordingProgress)
    RecordingProgress.values = []
    target = os.path.join(os.environ["ANIMEVIDEO_MODELS_DIR"], "upscale_models", "AnimeSR_v2.pth")
    assert not os.path.exists(target)
    assert Load.VALIDATE_INPUTS("AnimeSR_v2.pth", "auto", True) is True  # missing but fetchable: validation passes

    (handle,) = Load().load("AnimeSR_v2.pth", "auto", False, True)
    with open(target, "rb") as f:
        assert f.read() == tiny_animesr
    assert hub.files.gets() == [(f"/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}", None)]
    # the node's bar saw the bytes arrive, chunk by chunk, up to the whole file
    assert (len(tiny_animesr), len(tiny_animesr)) in RecordingProgress.values
    assert len({v for v, _ in RecordingProgress.values}) > 2
    (out,) = Upscale().upscale(handle, torch.rand(2, 12, 16, 3), chunk_size=2, tile_size=0, input_rescaling=1.0,
                               output_scale=0.0)
    assert out.shape == (2, 48, 64, 3)
    # the file is now simply there: the next load asks the Hub nothing
    Load().load("AnimeSR_v2.pth", "auto", False, True)
    assert len(hub.files.gets()) == 1


def test_cancel_during_the_download_stops_it_and_the_next_run_resumes(hub, monkeypatch, tiny_animesr):
    assert len(tiny_animesr) > 3 * CHUNK
    stand_in(monkeypatch, hub, "upscale_models", "AnimeSR_v2.pth", tiny_animesr)

    class CancelMidway(bridge.Progress):
        def set(self, value, preview_rgb=None):
            if value >= 2 * CHUNK:
                bridge.request_interrupt()  # the user presses Cancel
            super().set(value, preview_rgb)

    monkeypatch.setattr(bridge, "Progress", CancelMidway)
    folder = os.path.join(os.environ["ANIMEVIDEO_MODELS_DIR"], "upscale_models")
    with pytest.raises(bridge.AnimeVideoInterrupted):
        Load().load("AnimeSR_v2.pth", "auto", False, True)
    assert not os.path.exists(os.path.join(folder, "AnimeSR_v2.pth"))
    kept = os.path.getsize(os.path.join(folder, md.PARTIAL_DIR, "AnimeSR_v2.pth.part"))
    assert 0 < kept < len(tiny_animesr)

    monkeypatch.setattr(bridge, "Progress", RecordingProgress)
    Load().load("AnimeSR_v2.pth", "auto", False, True)
    with open(os.path.join(folder, "AnimeSR_v2.pth"), "rb") as f:
        assert f.read() == tiny_animesr
    assert hub.files.gets()[-1][1] == f"bytes={kept}-"
    assert not os.path.exists(os.path.join(folder, md.PARTIAL_DIR))


def test_lineart_fetches_the_annotator_as_controlnet_aux_does(hub, monkeypatch, tmp_path):
    from animevideo.pipelines.lineart import tiny as tiny_lineart

    (rel,) = [r for r in tiny_lineart.write_tiny_lineart(str(tmp_path / "tiny")) if r.endswith("sk_model.pth")]
    with open(os.path.join(str(tmp_path / "tiny"), rel), "rb") as f:
        data = f.read()
    stand_in(monkeypatch, hub, "lineart", "sk_model.pth", data)
    (out,) = lineart_nodes.AnimeVideoLineart().run(torch.rand(1, 16, 16, 3), "sk_model.pth", "extract", "auto")
    assert out.shape == (1, 16, 16, 3)
    assert os.path.exists(os.path.join(os.environ["ANIMEVIDEO_MODELS_DIR"], "lineart", "sk_model.pth"))


def test_missing_model_messages_name_the_option_and_the_url(hub, monkeypatch):
    real = md.find_pinned("checkpoints", "svd_xt.safetensors")
    msg = svd_nodes.AnimeVideoLoadSVD.VALIDATE_INPUTS("svd_xt.safetensors", "auto", False)
    for part in ("ckpt_name", "download_if_missing", real.url, "gated", "HF_TOKEN", "checkpoints"):
        assert part in msg, part
    assert svd_nodes.AnimeVideoLoadSVD.VALIDATE_INPUTS("svd_xt.safetensors", "auto", True) is True
    # a name the pack does not pin is never fetched, whatever the option says
    assert "download_if_missing" not in svd_nodes.AnimeVideoLoadSVD.VALIDATE_INPUTS("my_finetune.safetensors")
    with pytest.raises(AnimeVideoModelError, match="was not found"):
        svd_nodes.AnimeVideoLoadSVD().load("my_finetune.safetensors", "auto", False, True)
    # downloads turned off for the whole server: the message says so and how to get the file by hand
    monkeypatch.setenv("ANIMEVIDEO_DOWNLOADS", "0")
    msg = svd_nodes.AnimeVideoLoadSVD.VALIDATE_INPUTS("svd_xt.safetensors", "auto", True)
    assert "ANIMEVIDEO_DOWNLOADS=0" in msg and real.url in msg
    assert not hub.files.requests


def test_the_option_defaults_to_on_and_sits_on_every_loader_that_can_fetch():
    from animevideo.nodes import NODE_CLASS_MAPPINGS

    with_option = {name for name, cls in NODE_CLASS_MAPPINGS.items()
                   if "download_if_missing" in cls.INPUT_TYPES().get("optional", {})}
    assert with_option == {"AnimeVideoLoadSVD", "AnimeVideoLoadLVCD", "AnimeVideoLoadUpscaler",
                           "AnimeVideoLoadAniSora", "AnimeVideoLoadAniSoraWan22", "AnimeVideoLineart"}
    for name in with_option:
        spec = NODE_CLASS_MAPPINGS[name].INPUT_TYPES()["optional"]["download_if_missing"]
        assert spec[0] == "BOOLEAN" and spec[1]["default"] is True


def test_a_fresh_install_lists_what_it_can_fetch(hub, monkeypatch):
    names = Load.INPUT_TYPES()["required"]["model_name"][0]
    assert names == ["AnimeSR_v2.pth"]  # nothing on disk yet: the pinned upscaler is offered
    svd_names = svd_nodes.AnimeVideoLoadSVD.INPUT_TYPES()["required"]["ckpt_name"][0]
    assert {"svd_xt.safetensors", "svd.safetensors", "svd_xt_1_1.safetensors"} <= set(svd_names)
    lineart = lineart_nodes.AnimeVideoLineart.INPUT_TYPES()["required"]["model_name"]
    assert lineart[1]["default"] == "sk_model.pth" and "sk_model.pth" in lineart[0]
    monkeypatch.setenv("ANIMEVIDEO_DOWNLOADS", "0")  # downloads off: only what is on disk
    assert Load.INPUT_TYPES()["required"]["model_name"][0] == []

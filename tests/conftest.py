"""Test setup: the repo root is imported as the package ``animevideo`` (ComfyUI imports it by path)."""
import os
import sys

import pytest

from pack_paths import ROOT  # noqa: E402  (registers the package first)

os.environ.setdefault("ANIMEVIDEO_QUIET", "1")
# No test reaches the network: the download tests switch this on against a local Hub (tests/hub_server.py).
os.environ.setdefault("ANIMEVIDEO_DOWNLOADS", "0")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a shared CPU does not oversubscribe."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_svd():
    """(unet, vae, image_encoder) with random weights in the tiny SVD layout."""
    from animevideo.pipelines.svd import tiny

    return tiny.build_tiny_svd(0)


@pytest.fixture(scope="session")
def tiny_svd_model(tiny_svd):
    """The tiny SVD modules as an SVDModel (float32), for pipeline-level tests."""
    import torch

    from animevideo.pipelines.svd import loader

    unet, vae, clip = tiny_svd
    return loader.SVDModel(unet, vae, clip, torch.float32, "tiny", "diffusers")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """A ComfyUI models/ folder written by scripts/make_tiny_models.py (real formats, real names)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_tiny_models
    finally:
        sys.path.pop(0)
    d = tmp_path_factory.mktemp("models")
    make_tiny_models.write_all(str(d))
    return str(d)


@pytest.fixture
def models_env(tiny_models_dir, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", tiny_models_dir)
    return tiny_models_dir

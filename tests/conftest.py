"""Test setup: the repo root is imported as the package ``animevideo`` (ComfyUI imports it by path)."""
import os
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if "animevideo" not in sys.modules:
    _pkg = types.ModuleType("animevideo")
    _pkg.__path__ = [ROOT]
    _pkg.__file__ = os.path.join(ROOT, "__init__.py")
    sys.modules["animevideo"] = _pkg

os.environ.setdefault("ANIMEVIDEO_QUIET", "1")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
MANIFESTS = os.path.join(SHARED, "manifests")


@pytest.fixture(scope="session")
def tiny_svd():
    """(unet, vae, image_encoder) with random weights in the tiny SVD layout."""
    from animevideo.pipelines.svd import tiny

    return tiny.build_tiny_svd(0)


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

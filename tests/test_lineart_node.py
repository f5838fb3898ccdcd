"""The lineart node as ComfyUI calls it, run here without ComfyUI (the bridge falls back to plain torch)."""
import importlib
import os

import pytest
import torch

from animevideo.nodes import comfy_bridge as bridge
from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.lineart import extract, loader, tiny
from animevideo.pipelines.model_cache import MODEL_CACHE

la_nodes = importlib.import_module("animevideo.nodes.lineart")
nodes_pkg = importlib.import_module("animevideo.nodes")
Node = la_nodes.AnimeVideoLineart


@pytest.fixture(scope="module")
def lineart_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("models"))
    tiny.write_tiny_lineart(d)
    torch.save({"head.weight": torch.zeros(2, 2)}, os.path.join(d, "lineart", "classifier.pth"))
    return d


@pytest.fixture
def env(lineart_dir, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", lineart_dir)
    monkeypatch.setenv("ANIMEVIDEO_DEVICE", "cpu")
    return lineart_dir


def test_node_is_registered_with_tooltips_and_types():
    assert nodes_pkg.NODE_CLASS_MAPPINGS["AnimeVideoLineart"] is Node
    assert "AnimeVideoLineart" in nodes_pkg.NODE_DISPLAY_NAME_MAPPINGS
    assert "lineart" in bridge.PACK_FOLDERS
    spec = Node.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            assert len(value) == 2 and value[1].get("tooltip"), name
    assert spec["required"]["image"][0] == "IMAGE"
    assert list(spec["required"]["mode"][0]) == ["extract", "already lineart"]
    assert list(spec["required"]["polarity"][0]) == ["auto", "white_on_black", "black_on_white"]
    assert Node.RETURN_TYPES == ("IMAGE",) and len(Node.OUTPUT_TOOLTIPS) == 1
    assert Node.CATEGORY.startswith("AnimeVideo/")


def test_combo_lists_models_lineart_with_sk_model_default(env):
    names, opts = Node.INPUT_TYPES()["required"]["model_name"]
    assert "sk_model.pth" in names and opts["default"] == "sk_model.pth"


def test_extract_outputs_an_lvcd_hint_image_and_caches_the_model(env):
    img = torch.rand(3, 10, 14, 3, generator=torch.Generator().manual_seed(0))
    (out,) = Node().run(img, "sk_model.pth", "extract", "auto", chunk_size=2)
    assert out.shape == (3, 10, 14, 3) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1 and torch.equal(out[..., 0], out[..., 2])
    direct = extract.extract_lineart(loader.load_lineart_model(os.path.join(env, "lineart", "sk_model.pth")), img)
    torch.testing.assert_close(out, direct, rtol=0, atol=0)
    hits = MODEL_CACHE.hits
    Node().run(img[:1], "sk_model.pth", "extract", "auto")
    assert MODEL_CACHE.hits == hits + 1
    assert Node.VALIDATE_INPUTS("sk_model.pth", "extract", "auto") is True


def test_already_lineart_needs_no_model_and_fixes_polarity(env):
    d = torch.zeros(2, 8, 8, 3)
    d[:, 3] = 1
    (out,) = Node().run(1 - d, "no_such_model.pth", "already lineart", "auto")
    torch.testing.assert_close(out, d, rtol=0, atol=1e-6)
    (kept,) = Node().run(d, "no_such_model.pth", "already lineart", "white_on_black")
    torch.testing.assert_close(kept, d, rtol=0, atol=1e-6)
    assert Node.VALIDATE_INPUTS("no_such_model.pth", "already lineart", "auto") is True


def test_missing_model_names_the_folder_and_the_source(env):
    msg = Node.VALIDATE_INPUTS("sk_model2.pth", "extract", "auto")
    assert isinstance(msg, str)
    for part in ("model_name", "sk_model2.pth", os.path.join(env, "lineart"), "lllyasviel/Annotators",
                 "already lineart"):
        assert part in msg, part
    with pytest.raises(AnimeVideoModelError, match="models/lineart"):
        Node().run(torch.rand(1, 8, 8, 3), "sk_model2.pth", "extract", "auto")


def test_wrong_file_and_bad_names_are_refused(env):
    with pytest.raises(AnimeVideoModelError, match="not a lineart generator"):
        Node().run(torch.rand(1, 8, 8, 3), "classifier.pth", "extract", "auto")
    for name in ("../lineart/sk_model.pth", "/etc/passwd"):
        msg = Node.VALIDATE_INPUTS(name, "extract", "auto")
        assert isinstance(msg, str) and "model_name" in msg
    assert "mode" in Node.VALIDATE_INPUTS("sk_model.pth", "sketch", "auto")
    assert "polarity" in Node.VALIDATE_INPUTS("sk_model.pth", "extract", "sideways")
    with pytest.raises(AnimeVideoInputError, match="mode"):
        Node().run(torch.rand(1, 8, 8, 3), "sk_model.pth", "sketch", "auto")


def test_interrupt_stops_between_chunks(env):
    bridge.request_interrupt()
    with pytest.raises(bridge.AnimeVideoInterrupted):
        Node().run(torch.rand(4, 8, 8, 3), "sk_model.pth", "extract", "auto", chunk_size=1)


def test_make_tiny_models_writes_the_lineart_file(tiny_models_dir):
    path = os.path.join(tiny_models_dir, *tiny.LINEART_FILE.split("/"))
    assert loader.load_lineart_model(path).config == tiny.TINY_CONFIG

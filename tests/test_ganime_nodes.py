"""The GANime nodes against tiny models in a models/ganime folder (no ComfyUI needed)."""
import pytest
import torch

from animevideo.nodes import ganime as N
from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.model_cache import MODEL_CACHE


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def env(models_env):
    """The models folder scripts/make_tiny_models.py writes (GANime files included), as the models dir."""
    return models_env


@pytest.fixture
def handle(env):
    return N.AnimeVideoLoadGANime().load(N.DEFAULT_VQGAN, N.DEFAULT_TRANSFORMER)[0]


def keyframe(seed, h=40, w=72):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_every_input_has_a_tooltip_and_a_category():
    for cls in N.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "AnimeVideo/GANime"
        for section in cls.INPUT_TYPES().values():
            for name, spec in section.items():
                assert spec[1].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert set(N.NODE_DISPLAY_NAME_MAPPINGS) == set(N.NODE_CLASS_MAPPINGS)


def test_loader_lists_and_validates(env):
    names = N.AnimeVideoLoadGANime.INPUT_TYPES()["required"]["vqgan_name"][0]
    assert sorted(names) == sorted([N.DEFAULT_VQGAN, N.DEFAULT_TRANSFORMER])
    assert N.AnimeVideoLoadGANime.VALIDATE_INPUTS(N.DEFAULT_VQGAN, N.DEFAULT_TRANSFORMER) is True
    msg = N.AnimeVideoLoadGANime.VALIDATE_INPUTS("missing.safetensors", N.DEFAULT_TRANSFORMER)
    assert "vqgan_name: 'missing.safetensors' was not found in models/ganime" in msg and "ganime_train.py" in msg
    assert "not allowed" in N.AnimeVideoLoadGANime.VALIDATE_INPUTS("../x.safetensors", N.DEFAULT_TRANSFORMER)
    assert "dtype" in N.AnimeVideoLoadGANime.VALIDATE_INPUTS(N.DEFAULT_VQGAN, N.DEFAULT_TRANSFORMER, "fp8")


def test_a_fresh_loader_defaults_to_a_vqgan_and_a_transformer_read_from_the_headers(env, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "ganime"
    folder.mkdir()
    # names that say nothing, sorting the transformer first: only the tensors tell them apart
    shutil.copy(f"{env}/ganime/{N.DEFAULT_TRANSFORMER}", folder / "a_model.safetensors")
    shutil.copy(f"{env}/ganime/{N.DEFAULT_VQGAN}", folder / "b_model.safetensors")
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", str(tmp_path))
    required = N.AnimeVideoLoadGANime.INPUT_TYPES()["required"]
    assert required["vqgan_name"][0] == ["b_model.safetensors", "a_model.safetensors"]
    assert required["vqgan_name"][1]["default"] == "b_model.safetensors"
    assert required["transformer_name"][1]["default"] == "a_model.safetensors"
    assert N.AnimeVideoLoadGANime.VALIDATE_INPUTS("b_model.safetensors", "a_model.safetensors") is True


def test_a_swapped_pair_is_refused_at_validation_naming_the_input(env):
    msg = N.AnimeVideoLoadGANime.VALIDATE_INPUTS(N.DEFAULT_TRANSFORMER, N.DEFAULT_TRANSFORMER)
    assert msg.startswith(f"vqgan_name: '{N.DEFAULT_TRANSFORMER}' is GANime's transformer file, not a VQ-GAN")
    assert "use 'ganime_kny_gpt2_medium.safetensors' in transformer_name" in msg
    msg = N.AnimeVideoLoadGANime.VALIDATE_INPUTS(N.DEFAULT_VQGAN, N.DEFAULT_VQGAN)
    assert msg.startswith(f"transformer_name: '{N.DEFAULT_VQGAN}' is GANime's VQ-GAN file, not a transformer")


def test_loader_caches_and_refuses_a_swapped_pair(env):
    MODEL_CACHE.clear()
    a = N.load_ganime_cached(N.DEFAULT_VQGAN, N.DEFAULT_TRANSFORMER, "auto")
    assert N.load_ganime_cached(N.DEFAULT_VQGAN, N.DEFAULT_TRANSFORMER, "auto") is a
    with pytest.raises(AnimeVideoModelError, match="^vqgan_name: .*transformer_name instead"):
        N.AnimeVideoLoadGANime().load(N.DEFAULT_TRANSFORMER, N.DEFAULT_VQGAN)


def test_inbetween_node(handle):
    node = N.AnimeVideoGANimeInbetween()
    (frames,) = node.inbetween(handle, keyframe(1), keyframe(2), 5, "greedy", 1.0, 50, 0, 1)
    assert frames.shape == (5, 40, 72, 3) and frames.dtype == torch.float32
    assert torch.equal(frames[0], keyframe(1)[0]) and torch.equal(frames[-1], keyframe(2)[0])
    (frames,) = node.inbetween(handle, keyframe(1), keyframe(2), 4, "sample", 1.0, 20, 3, 2, output_size="model",
                               aspect="letterbox", reencode_previous=True)
    assert frames.shape == (8, 64, 128, 3)  # 2 variations x 4 frames
    assert not torch.equal(frames[1], frames[5])


def test_inbetween_node_bad_input(handle):
    node = N.AnimeVideoGANimeInbetween()
    with pytest.raises(AnimeVideoInputError, match="same size"):
        node.inbetween(handle, keyframe(1), keyframe(2, 48, 72), 5, "greedy", 1.0, 50, 0, 1)
    with pytest.raises(AnimeVideoInputError, match="at least 3"):
        node.inbetween(handle, keyframe(1), keyframe(2), 2, "greedy", 1.0, 50, 0, 1)
    with pytest.raises(AnimeVideoInputError, match="at most 33"):
        node.inbetween(handle, keyframe(1), keyframe(2), 34, "greedy", 1.0, 50, 0, 1)
    with pytest.raises(AnimeVideoInputError, match="first: got a batch of 2"):
        node.inbetween(handle, torch.cat([keyframe(1)] * 2), keyframe(2), 5, "greedy", 1.0, 50, 0, 1)


def test_encode_decode_nodes(handle):
    codes, code_map = N.AnimeVideoGANimeEncode().encode(handle, torch.cat([keyframe(1), keyframe(3)]), "squash")
    assert codes["codes"].shape == (2, 128) and code_map.shape == (2, 64, 128, 3)
    (images,) = N.AnimeVideoGANimeDecode().decode(handle, codes)
    assert images.shape == (2, 64, 128, 3) and 0 <= images.min() and images.max() <= 1
    with pytest.raises(AnimeVideoInputError, match="Decode with the VQ-GAN"):
        N.AnimeVideoGANimeDecode().decode(handle, {**codes, "num_embeddings": 10})


def test_the_workflow_graph_runs_with_our_nodes(handle):
    """workflows/api/experimental/ganime_inbetween.json's chain up to core's nodes, with its literal widget values."""
    import json
    import os

    from pack_paths import ROOT

    with open(os.path.join(ROOT, "workflows", "api", "experimental", "ganime_inbetween.json")) as f:
        api = json.load(f)
    load = {k: v for k, v in api["3"]["inputs"].items()}
    model = N.AnimeVideoLoadGANime().load(**load)[0]
    inputs = {k: v for k, v in api["4"]["inputs"].items() if not isinstance(v, list)}
    inputs["num_frames"] = 4
    from PIL import Image
    import numpy as np

    def load_example(name):
        with Image.open(os.path.join(ROOT, "example_inputs", name)) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255)[None]

    (frames,) = N.AnimeVideoGANimeInbetween().inbetween(model, load_example(api["1"]["inputs"]["image"]),
                                                       load_example(api["2"]["inputs"]["image"]), **inputs)
    assert frames.shape == (4, 64, 128, 3)  # output_size "model": 64x128, then core's ImageScaleBy x4

"""The shipped AniSora API workflows, run in-process on the tiny models after the integration tests' encoder
swap (tests/integration/fake_encoders): our nodes for real, small stand-ins for core's image/video I/O nodes.
The real-ComfyUI run of the same rewritten prompts is in tests/integration."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from animevideo.pipelines.backbones.cogvideox import tiny as cogvideox_tiny
from animevideo.pipelines.backbones.wan import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(ROOT, "tests", "integration", "fake_encoders")
STEMS = ["anisora_image_to_video", "anisora_keyframe_inbetween", "anisora_localized_animation"]
SMALL = {"width": 64, "height": 64, "num_frames": 3, "steps": 2}  # as the server tests run them


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fake():
    return (load_module("av_fake_encoders", os.path.join(FAKE, "__init__.py")),
            load_module("av_fake_encoders_swap", os.path.join(FAKE, "swap.py")))


class LoadImage:  # core's LoadImage: IMAGE [1,H,W,3], MASK = 1 - alpha (zeros without alpha)
    def run(self, image):
        from PIL import Image

        with Image.open(os.path.join(ROOT, "example_inputs", image)) as im:
            has_alpha = "A" in im.getbands()
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        t = torch.from_numpy(rgba)
        mask = 1.0 - t[..., 3] if has_alpha else torch.zeros(t.shape[:2])
        return t[None, ..., :3], mask[None]


def run_prompt(prompt, classes):
    results, order, seen = {}, [], set()

    def visit(i):
        if i in seen:
            return
        seen.add(i)
        for v in prompt[i]["inputs"].values():
            if isinstance(v, list):
                visit(v[0])
        order.append(i)

    for i in prompt:
        visit(i)
    recorded = {}
    for i in order:
        node = prompt[i]
        kwargs = {k: (results[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        ctype = node["class_type"]
        if ctype == "LoadImage":
            results[i] = LoadImage().run(**kwargs)
        elif ctype == "ConditioningZeroOut":  # core's: the same conditioning with zeroed embeddings
            results[i] = ([[torch.zeros_like(c[0]), dict(c[1])] for c in kwargs["conditioning"]],)
        elif ctype == "CreateVideo":
            results[i] = ((kwargs["images"], kwargs["fps"]),)
        elif ctype in ("SaveVideo", "PreviewAny"):
            recorded[ctype] = kwargs
            results[i] = ()
        else:
            cls = classes[ctype]
            results[i] = getattr(cls(), cls.FUNCTION)(**kwargs)
    return recorded


def test_fake_encoder_sizes_match_the_tiny_model(fake):
    pack, _ = fake
    assert pack.TEXT_DIM == tiny.TINY_TEXT_DIM and pack.IMAGE_DIM == tiny.TINY_IMAGE_DIM
    assert pack.TEXT_DIM == cogvideox_tiny.TINY_TRANSFORMER["text_embed_dim"]  # the T5 stand-in for V1 too
    (cond,) = pack.AVTestTextEncode().encode("a b c")
    assert cond[0][0].shape == (1, 3, tiny.TINY_TEXT_DIM) and torch.equal(cond[0][0], pack.text_embedding("a b c"))
    (out,) = pack.AVTestClipVisionEncode().encode(torch.rand(1, 8, 8, 3))
    assert out.penultimate_hidden_states.shape == (1, 257, tiny.TINY_IMAGE_DIM)
    assert not any(n.startswith("AnimeVideo") for n in pack.NODE_CLASS_MAPPINGS)


def test_swap_replaces_core_encoders_only(fake):
    _, swap = fake
    with open(os.path.join(ROOT, "workflows", "api", "anisora_image_to_video.json")) as f:
        prompt = json.load(f)
    out = swap.swap_core_encoders(prompt)
    types = {n["class_type"] for n in out.values()}
    assert {"AVTestTextEncode", "AVTestClipVisionEncode"} <= types
    assert not types & {"CLIPLoader", "CLIPVisionLoader", "CLIPTextEncode", "CLIPVisionEncode"}
    assert prompt["2"]["class_type"] == "CLIPLoader"  # the original is left alone
    with open(os.path.join(ROOT, "workflows", "api", "svd_image_to_video.json")) as f:
        svd = json.load(f)
    assert swap.swap_core_encoders(svd) == svd


def test_install_links_the_pack_and_placeholder_names(fake, tmp_path):
    _, swap = fake
    (tmp_path / "custom_nodes").mkdir()
    link = swap.install(str(tmp_path), str(tmp_path / "models"))
    assert os.path.realpath(link) == os.path.realpath(FAKE)
    for rel in swap.PLACEHOLDER_FILES:
        assert os.path.isfile(tmp_path / "models" / rel)
    assert swap.install(str(tmp_path), str(tmp_path / "models")) == link  # idempotent


@pytest.mark.parametrize("stem", STEMS)
def test_shipped_workflow_runs_with_swapped_encoders(stem, fake, tmp_path_factory, monkeypatch, one_thread):
    import animevideo.nodes as pack_nodes

    pack, swap = fake
    models = str(tmp_path_factory.mktemp("anisora-models"))
    tiny.write_tiny_anisora(models, 0)
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", models)
    with open(os.path.join(ROOT, "workflows", "api", stem + ".json")) as f:
        prompt = swap.swap_core_encoders(json.load(f))
    for node in prompt.values():
        for k, v in SMALL.items():
            if k in node["inputs"] and not isinstance(node["inputs"][k], list):
                node["inputs"][k] = v
    classes = dict(pack_nodes.NODE_CLASS_MAPPINGS, **pack.NODE_CLASS_MAPPINGS)
    recorded = run_prompt(prompt, classes)
    frames, fps = recorded["SaveVideo"]["video"]
    assert frames.shape == (5, 64, 64, 3) and fps == 16.0  # 3 frames snapped to 4k+1 = 5
    info = recorded["PreviewAny"]["source"]
    assert "using 5" in info and "keyframe at frame 0 -> latent slot 0" in info
    if stem == "anisora_keyframe_inbetween":
        assert "keyframe at frame 4 (asked -1) -> latent slot 1 (mask channel 3 of 4)" in info
    if stem == "anisora_localized_animation":
        assert "motion mask" in info


def test_shipped_v1_workflow_runs_with_swapped_encoders(fake, tmp_path_factory, monkeypatch, one_thread):
    """anisora_v1_image_to_video: Load AniSora on the tiny AniSora V1 (CogVideoX-5B-I2V layout) folder, the T5
    stand-in for core's T5-XXL, ConditioningZeroOut as the negative, 9 frames (the server run's override)."""
    import animevideo.nodes as pack_nodes

    pack, swap = fake
    models = str(tmp_path_factory.mktemp("anisora-v1-models"))
    cogvideox_tiny.write_tiny_cogvideox(models, 0)
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", models)
    with open(os.path.join(ROOT, "workflows", "api", "anisora_v1_image_to_video.json")) as f:
        prompt = swap.swap_core_encoders(json.load(f))
    assert {n["class_type"] for n in prompt.values()} >= {"AVTestTextEncode", "ConditioningZeroOut"}
    for node in prompt.values():
        for k, v in dict(SMALL, num_frames=9).items():
            if k in node["inputs"] and not isinstance(node["inputs"][k], list):
                node["inputs"][k] = v
    classes = dict(pack_nodes.NODE_CLASS_MAPPINGS, **pack.NODE_CLASS_MAPPINGS)
    recorded = run_prompt(prompt, classes)
    frames, fps = recorded["SaveVideo"]["video"]
    assert frames.shape == (9, 64, 64, 3) and fps == 16.0
    assert float(frames.std()) > 0.01
    info = recorded["PreviewAny"]["source"]
    assert "AniSora V1 (CogVideoX I2V)" in info and "latent slot 0" in info and "DynamicCFG s=6" in info

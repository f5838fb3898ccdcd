"""Load AniSora Wan2.2 (AniSora V3.2) and native sharded Wan folders in the loader nodes, without ComfyUI: tiny
models in the released layouts under a models/ folder, sampled through the AniSora Sampler node."""
import os
from types import SimpleNamespace

import pytest
import torch

from animevideo.nodes import anisora as nodes
from animevideo.nodes import anisora_wan22 as wan22_nodes
from animevideo.nodes import guides as guide_nodes
from animevideo.pipelines.backbones.wan import tiny, tiny22
from animevideo.pipelines.errors import AnimeVideoModelError

H, W = 32, 48
HIGH, LOW = (f.split("/", 1)[1] for f in tiny22.TINY_FILES)
VAE = tiny.VAE_FILE.split("/", 1)[1]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, one_thread):
    d = str(tmp_path_factory.mktemp("models"))
    tiny.write_tiny_anisora(d, 0)
    tiny22.write_tiny_wan22(d, 0)
    high, low = tiny22.build_tiny_experts(1)
    tiny22.write_native_release(os.path.join(d, "diffusers", "Index-anisora-V3.2"), high, low, tiny.build_tiny_vae(0))
    tiny.write_native_folder(os.path.join(d, "diffusion_models", "Wan2.1-I2V-14B-480P"),
                             tiny.build_tiny_transformer(0), num_shards=2)
    return d


@pytest.fixture
def env(models_dir, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", models_dir)
    return models_dir


def conditioning(tokens, seed):
    return [[torch.randn(1, tokens, tiny.TINY_TEXT_DIM, generator=torch.Generator().manual_seed(seed)),
             {"pooled_output": None}]]


def first_frame_guide():
    img = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(0))
    return guide_nodes.AnimeVideoKeyframe().add(img, 0, 1.0)[0]


def sample(handle, **kw):
    args = dict(width=W, height=H, num_frames=5, steps=4, cfg=1.0, shift=5.0, sampler="unipc", seed=0)
    args.update(kw)
    return nodes.AnimeVideoAniSoraSampler().sample(handle, conditioning(6, 1), first_frame_guide(), **args)


def test_sharded_native_folder_is_listed_once_validated_and_loaded(env):
    names = nodes.AnimeVideoLoadAniSora.INPUT_TYPES()["required"]["transformer_name"][0]
    assert "Wan2.1-I2V-14B-480P" in names
    assert not any("diffusion_pytorch_model-0000" in n for n in names)  # its shards are not offered one by one
    assert "Index-anisora-V3.2" not in names  # a two-expert release: the Wan2.2 loader's
    assert nodes.AnimeVideoLoadAniSora.VALIDATE_INPUTS("Wan2.1-I2V-14B-480P", VAE, "auto") is True
    handle = nodes.AnimeVideoLoadAniSora().load("Wan2.1-I2V-14B-480P", VAE, "auto")[0]
    frames, info, _, _ = nodes.AnimeVideoAniSoraSampler().sample(
        handle, conditioning(6, 1), first_frame_guide(), W, H, 5, 2, 1.0, 5.0, "unipc", 0,
        clip_vision_output=SimpleNamespace(penultimate_hidden_states=torch.randn(1, 257, tiny.TINY_IMAGE_DIM)))
    assert frames.shape == (5, H, W, 3) and "Wan2.1-I2V backbone" in info


def test_wan22_loader_lists_the_pair_and_defaults_to_it(env):
    spec = wan22_nodes.AnimeVideoLoadAniSoraWan22.INPUT_TYPES()["required"]
    assert spec["high_noise_name"][1]["default"] == HIGH and spec["low_noise_name"][1]["default"] == LOW
    assert "Index-anisora-V3.2" in spec["high_noise_name"][0]
    assert spec["low_noise_name"][0][0] == wan22_nodes.FROM_RELEASE_FOLDER
    assert spec["vae_name"][1]["default"] == VAE
    assert wan22_nodes.AnimeVideoLoadAniSoraWan22.VALIDATE_INPUTS(HIGH, LOW, VAE, "auto") is True


def test_comfy_org_pair_samples_with_both_experts(env):
    handle = wan22_nodes.AnimeVideoLoadAniSoraWan22().load(HIGH, LOW, VAE, "auto")[0]
    assert handle.model.transformer_2 is not None and handle.model.boundary_ratio == 0.9
    frames, info, fps, latent = sample(handle)
    assert frames.shape == (5, H, W, 3) and fps == 16.0 and latent["samples"].shape == (1, 16, 2, H // 8, W // 8)
    assert "Wan2.2-I2V-A14B" in info and "high-noise steps 1-2, low-noise steps 3-4" in info
    assert wan22_nodes.AnimeVideoLoadAniSoraWan22().load(HIGH, LOW, VAE, "auto")[0].model is handle.model  # cached


def test_release_folder_with_its_own_vae(env):
    name = "Index-anisora-V3.2"
    v = wan22_nodes.AnimeVideoLoadAniSoraWan22.VALIDATE_INPUTS
    assert v(name, wan22_nodes.FROM_RELEASE_FOLDER, nodes.VAE_FROM_FOLDER, "auto") is True
    handle = wan22_nodes.AnimeVideoLoadAniSoraWan22().load(name, wan22_nodes.FROM_RELEASE_FOLDER,
                                                           nodes.VAE_FROM_FOLDER, "fp32")[0]
    frames, info, _, _ = sample(handle, steps=2)
    assert frames.shape == (5, H, W, 3) and "high_noise_model + low_noise_model" in info


def test_wrong_choices_are_named(env):
    v = wan22_nodes.AnimeVideoLoadAniSoraWan22.VALIDATE_INPUTS
    assert "low_noise_name" in v(HIGH, wan22_nodes.FROM_RELEASE_FOLDER, VAE, "auto")
    assert "high_noise_name" in v("Index-anisora-V3.2", LOW, VAE, "auto")
    assert "low_noise_name" in v(HIGH, HIGH, VAE, "auto")
    assert "high_noise_name" in v("missing.safetensors", LOW, VAE, "auto")
    assert "dtype" in v(HIGH, LOW, VAE, "int4")
    with pytest.raises(AnimeVideoModelError, match="Wan2.1-I2V transformer.*Load AniSora"):
        wan22_nodes.AnimeVideoLoadAniSoraWan22().load("anisora_v3_i2v_14b.safetensors", LOW, VAE, "fp32")
    with pytest.raises(AnimeVideoModelError, match="Load AniSora Wan2.2"):
        nodes.AnimeVideoLoadAniSora().load(LOW, VAE, "fp32")


def test_registered_in_the_pack():
    import animevideo.nodes as pack

    assert "AnimeVideoLoadAniSoraWan22" in pack.NODE_CLASS_MAPPINGS
    assert "AnimeVideoLoadAniSoraWan22" in pack.NODE_DISPLAY_NAME_MAPPINGS


def test_shipped_v32_workflow_runs_with_swapped_encoders(env, one_thread):
    """anisora_v32_wan22_keyframes (our own path, two experts) in-process, as the server tests run it."""
    import json

    import animevideo.nodes as pack_nodes
    from test_anisora_wan_workflows import FAKE, ROOT, load_module, run_prompt

    fake = load_module("av_fake_encoders", os.path.join(FAKE, "__init__.py"))
    swap = load_module("av_fake_encoders_swap", os.path.join(FAKE, "swap.py"))
    with open(os.path.join(ROOT, "workflows", "api", "anisora_v32_wan22_keyframes.json")) as f:
        prompt = swap.swap_core_encoders(json.load(f))
    for node in prompt.values():
        for k, v in {"width": 64, "height": 64, "num_frames": 3, "steps": 2}.items():
            if k in node["inputs"] and not isinstance(node["inputs"][k], list):
                node["inputs"][k] = v
    recorded = run_prompt(prompt, dict(pack_nodes.NODE_CLASS_MAPPINGS, **fake.NODE_CLASS_MAPPINGS))
    frames, fps = recorded["SaveVideo"]["video"]
    assert frames.shape == (5, 64, 64, 3) and fps == 16.0
    info = recorded["PreviewAny"]["source"]
    assert "Wan2.2-I2V-A14B" in info and "experts: high-noise steps 1-1, low-noise steps 2-2" in info
    assert "keyframe at frame 4 (asked -1) -> latent slot 1" in info

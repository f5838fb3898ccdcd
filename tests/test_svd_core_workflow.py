"""The core SVD workflow (workflows/api/svd_core_guide.json) as the real-ComfyUI tests queue it: the test-only
swap rewires SVD_img2vid_Conditioning's CLIP_VISION from Image Only Checkpoint Loader (whose tiny checkpoint has no
ViT-H, so core returns none) to a stand-in with core's ``encode_image`` contract; other workflows are untouched.
The run itself is in tests/integration (test_comfyui_server.py, svd_core_guide)."""
import importlib.util
import json
import os

import torch

from pack_paths import ROOT

FAKE = os.path.join(ROOT, "tests", "integration", "fake_encoders")


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_api(stem):
    with open(os.path.join(ROOT, "workflows", "api", stem + ".json")) as f:
        return json.load(f)


def test_swap_feeds_svd_conditioning_the_clip_vision_stand_in():
    swap = load_module("av_fake_swap_svd_core", os.path.join(FAKE, "swap.py"))
    prompt = load_api("svd_core_guide")
    out = swap.swap_core_encoders(prompt)
    stand_ins = [i for i, n in out.items() if n["class_type"] == swap.CLIP_VISION_STAND_IN]
    assert len(stand_ins) == 1
    cond = [n for n in out.values() if n["class_type"] == "SVD_img2vid_Conditioning"]
    assert [n["inputs"]["clip_vision"] for n in cond] == [[stand_ins[0], 0]]
    loader = [i for i, n in prompt.items() if n["class_type"] == "ImageOnlyCheckpointLoader"][0]
    assert [n["inputs"]["clip_vision"] for n in prompt.values() if "clip_vision" in n["inputs"]] == [[loader, 1]]
    # model and VAE still come from the checkpoint loader; nothing else changed
    assert {k: v for k, v in out.items() if k not in stand_ins and v["class_type"] != "SVD_img2vid_Conditioning"} == \
        {k: v for k, v in prompt.items() if v["class_type"] != "SVD_img2vid_Conditioning"}
    assert swap.swap_core_encoders(load_api("svd_localized_animation")) == load_api("svd_localized_animation")


def test_clip_vision_stand_in_has_cores_encode_image_contract():
    pack = load_module("av_fake_encoders_svd_core", os.path.join(FAKE, "__init__.py"))
    (clip_vision,) = pack.AVTestClipVisionLoader().load()
    out = clip_vision.encode_image(torch.rand(1, 64, 64, 3))
    assert out.image_embeds.shape == (1, 1024)  # core's SVD: context_dim 1024, image_embeds.unsqueeze(0)
    again = clip_vision.encode_image(torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(out.image_embeds, again.image_embeds)

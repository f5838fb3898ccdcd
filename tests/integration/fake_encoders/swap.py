"""Rewrite a shipped API workflow so it runs with the test-only encoders (see ``__init__``), and set up a
ComfyUI base directory for them. Plain Python: usable from the server tests and from unit tests."""
from __future__ import annotations

import copy
import os

PACK_DIR = os.path.dirname(os.path.abspath(__file__))
PACK_LINK_NAME = "zz_test_fake_encoders"  # not under the pack's own custom_nodes/AnimeVideo name
SWAPS = {"CLIPTextEncode": ("AVTestTextEncode", ("text",)),
         "CLIPVisionEncode": ("AVTestClipVisionEncode", ("image",))}
DROPPED_LOADERS = ("CLIPLoader", "CLIPVisionLoader", "DualCLIPLoader")
# Core's checkpoint loaders whose CLIP_VISION output (a ViT-H, which the tiny checkpoint lacks: core then
# returns None) is rewired to the stand-in loader: (class_type, output slot)
CLIP_VISION_OUTPUTS = {"ImageOnlyCheckpointLoader": 1}
CLIP_VISION_STAND_IN = "AVTestClipVisionLoader"
# Encoder file names the shipped workflows name; placeholders make the unmodified workflows validate.
PLACEHOLDER_FILES = ("text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "clip_vision/clip_vision_h.safetensors",
                     "text_encoders/t5xxl_fp16.safetensors")  # the last: AniSora V1 (CogVideoX) takes T5-XXL


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def swap_core_encoders(prompt: dict) -> dict:
    """A copy of ``prompt`` with core's encoders swapped for the test ones; unchanged if it has none."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        swap = SWAPS.get(node.get("class_type"))
        if swap:
            new_type, keep = swap
            node["class_type"] = new_type
            node["inputs"] = {k: v for k, v in node["inputs"].items() if k in keep}
            node.setdefault("_meta", {})["title"] = f"{new_type} (test swap)"
    stand_in = None
    for node in list(out.values()):
        for name, v in node["inputs"].items():
            if _is_link(v) and CLIP_VISION_OUTPUTS.get(out[v[0]]["class_type"]) == v[1]:
                if stand_in is None:
                    stand_in = str(max(int(i) for i in out) + 1)
                    out[stand_in] = {"class_type": CLIP_VISION_STAND_IN, "inputs": {},
                                     "_meta": {"title": f"{CLIP_VISION_STAND_IN} (test swap)"}}
                node["inputs"][name] = [stand_in, 0]
    used = {v[0] for n in out.values() for v in n["inputs"].values() if _is_link(v)}
    for node_id in [i for i, n in out.items() if n.get("class_type") in DROPPED_LOADERS and i not in used]:
        del out[node_id]
    return out


def install(base_dir: str, models_dir: str | None = None) -> str:
    """Symlink the test pack into ``base_dir``/custom_nodes and write the placeholder encoder files into
    ``models_dir`` (so /object_info lists the names the shipped workflows use; they are never loaded)."""
    link = os.path.join(base_dir, "custom_nodes", PACK_LINK_NAME)
    if not os.path.lexists(link):
        os.symlink(PACK_DIR, link)
    if models_dir:
        for rel in PLACEHOLDER_FILES:
            path = os.path.join(models_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.exists(path):
                with open(path, "wb"):
                    pass
    return link

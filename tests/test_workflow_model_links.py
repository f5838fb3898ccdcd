"""The model links embedded in the UI workflows (node ``properties.models``), which the frontend's missing-model
dialog offers to download, are links it can download, and they are the pack's pinned files.

The frontend (ComfyUI_frontend's MissingModelsWarning, bundled with ComfyUI 0.8.0) downloads only URLs starting
with https://civitai.com/, https://huggingface.co/ or http://localhost: and only names ending in .safetensors
or .sft, into a directory ComfyUI knows.
"""
import glob
import json
import os

import pytest

from pack_paths import ROOT

from animevideo.pipelines import model_downloads as md

FRONTEND_SOURCES = ("https://civitai.com/", "https://huggingface.co/")
FRONTEND_SUFFIXES = (".safetensors", ".sft")
ENTRY_KEYS = {"name", "url", "directory", "hash", "hash_type"}
# ComfyUI 0.8.0's model folders plus the ones the pack registers (nodes/comfy_bridge.py PACK_FOLDERS)
COMFY_FOLDERS = {"checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
                 "latent_upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
                 "model_patches", "audio_encoders", "lvcd", "ganime", "lineart", "interpolation"}
UI_FILES = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
PINNED_FOR_FRONTEND = {e.name: e for e in md.PINNED if e.name.endswith(FRONTEND_SUFFIXES)}


def model_entries(ui):
    for n in ui["nodes"]:
        for m in (n.get("properties") or {}).get("models") or []:
            yield n, m
    for m in ui.get("models") or []:
        yield None, m


def check_frontend_rules(where, m):
    assert set(m) <= ENTRY_KEYS and {"name", "url", "directory"} <= set(m), f"{where}: keys {sorted(m)}"
    assert m["url"].startswith(FRONTEND_SOURCES), f"{where}: the frontend will not download from {m['url']}"
    assert m["name"].endswith(FRONTEND_SUFFIXES), f"{where}: the frontend only downloads .safetensors/.sft"
    assert m["directory"] in COMFY_FOLDERS, f"{where}: unknown model folder {m['directory']!r}"


@pytest.mark.parametrize("path", UI_FILES, ids=os.path.basename)
def test_embedded_model_links_are_downloadable_pinned_files(path):
    ui = json.load(open(path))
    for node, m in model_entries(ui):
        where = f"{os.path.basename(path)} node {node['id'] if node else 'top'} {m.get('name')}"
        check_frontend_rules(where, m)
        entry = PINNED_FOR_FRONTEND.get(m["name"])
        assert entry is not None, f"{where}: not a pinned file (pipelines/model_downloads.py PINNED)"
        assert (m["directory"], m["url"]) == (entry.folder, entry.url), f"{where}: differs from the pinned table"
        assert f"/resolve/{entry.revision}/" in m["url"]
        if node is not None:
            assert m["name"] in (node.get("widgets_values") or []), f"{where}: the node does not use this file"


@pytest.mark.parametrize("path", UI_FILES, ids=os.path.basename)
def test_every_pinned_safetensors_a_node_names_carries_its_link(path):
    ui = json.load(open(path))
    for n in ui["nodes"]:
        linked = {m["name"] for m in (n.get("properties") or {}).get("models") or []}
        for value in n.get("widgets_values") or []:
            if isinstance(value, str) and value in PINNED_FOR_FRONTEND:
                assert value in linked, f"{os.path.basename(path)} node {n['id']}: no model link for {value}"


def test_the_rules_reject_what_the_frontend_rejects():
    good = {"name": "wan_2.1_vae.safetensors", "directory": "vae",
            "url": md.find_pinned("vae", "wan_2.1_vae.safetensors").url}
    check_frontend_rules("good", good)
    bad = [
        dict(good, url="https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-animevideov3.pth",
             name="realesr-animevideov3.pth"),
        dict(good, name="sk_model.pth", url="https://huggingface.co/lllyasviel/Annotators/resolve/main/sk_model.pth"),
        dict(good, directory="no_such_folder"),
        {"name": "x.safetensors", "url": good["url"]},
    ]
    for m in bad:
        with pytest.raises(AssertionError):
            check_frontend_rules("bad", m)

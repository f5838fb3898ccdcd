"""Model downloads inside a real ComfyUI: a shipped workflow whose model is missing is accepted, the loader
downloads from the Hub (here the local stand-in of tests/hub_server.py, through HF_ENDPOINT), shows the bytes on
its progress bar, stops on POST /interrupt, resumes on the next run, and a wrong file ends in a clear error with
nothing left in the model folder.

The server runs the pack's real pinned table, so the bytes served here cannot match the real sha256 of the real
multi-GB files: every download ends in the sha256 check, which is one of the things shown.
"""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from hub_server import HubServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def integration_helpers():
    spec = importlib.util.spec_from_file_location("animevideo_integration_helpers", os.path.join(HERE, "conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pinned(folder, name):
    from animevideo.pipelines import model_downloads as md  # the table the server runs with

    return md.find_pinned(folder, name)


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture(scope="module")
def comfy_dl(tmp_path_factory, hub):
    """A ComfyUI with the pack, an empty models/ folder, downloads on and HF_ENDPOINT at the local Hub."""
    pytest.importorskip("requests")
    pytest.importorskip("websocket")
    h = integration_helpers()
    comfy_dir, comfy_python = h.comfy_env()
    if not (comfy_dir and comfy_python):
        pytest.skip(h.SKIP_REASON)
    work = tmp_path_factory.mktemp("comfyui-downloads")
    base = work / "base"
    for sub in ("custom_nodes", "input", "output", "user", "models"):
        (base / sub).mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / h.PACK_LINK_NAME)
    server = h.ComfyServer(comfy_dir, comfy_python, str(base), str(base / "models"), str(work / "server.log"))
    saved = {k: os.environ.get(k) for k in ("ANIMEVIDEO_DOWNLOADS", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN")}
    os.environ.update(ANIMEVIDEO_DOWNLOADS="1", HF_ENDPOINT=hub.endpoint)
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ.pop("HF_TOKEN", None)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shipped_prompt(stem, **loader_inputs):
    """A shipped API workflow with its Load Image swapped for core's Empty Image (no input files needed)."""
    with open(os.path.join(ROOT, "workflows", "api", f"{stem}.json")) as f:
        prompt = json.load(f)
    loader_id = None
    for node_id, node in prompt.items():
        if node["class_type"] == "LoadImage":
            prompt[node_id] = {"class_type": "EmptyImage",
                               "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}}
        elif node["class_type"].startswith("AnimeVideoLoad"):
            loader_id = node_id
            node["inputs"].update(loader_inputs)
    return prompt, loader_id


def model_files(server, folder):
    path = os.path.join(server.models_dir, folder)
    out = []
    for dirpath, _, files in os.walk(path):
        out += [os.path.relpath(os.path.join(dirpath, f), path) for f in files]
    return sorted(out)


def test_a_missing_model_is_fetched_with_progress_and_a_wrong_file_is_refused(comfy_dl, hub):
    entry = pinned("upscale_models", "AnimeSR_v2.pth")
    data = os.urandom(entry.size)  # the pinned size, but not the pinned bytes
    hub.files.add(entry.repo_id, entry.revision, entry.filename, data)
    hub.files.etag_override = entry.sha256  # the Hub claims the pinned file
    prompt, loader = shipped_prompt("animesr_upscale")
    try:
        result = comfy_dl.run(prompt, timeout=300)  # queued without node_errors although the file is missing
    finally:
        hub.files.etag_override = None
    errors = result.of_type("execution_error")
    assert errors and errors[0]["node_id"] == loader, result.describe()
    msg = errors[0]["exception_message"]
    assert "sha256" in msg and "deleted" in msg and entry.url in msg, msg
    progress = [d for d in result.of_type("progress") if d.get("node") == loader]
    assert progress and max(d["value"] for d in progress) == entry.size, progress[-3:]
    assert hub.files.gets()[0][0] == f"/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}"
    assert model_files(comfy_dl, "upscale_models") == []  # nothing half-made left behind


def test_interrupt_stops_a_download_and_the_next_run_resumes_it(comfy_dl, hub):
    entry = pinned("checkpoints", "svd_xt_1_1.safetensors")  # no published size: any length is served
    data = os.urandom(24 << 20)  # more than two of huggingface_hub's 10 MB download chunks
    hub.files.add(entry.repo_id, entry.revision, entry.filename, data)
    hub.files.etag_override = entry.sha256
    hub.files.delay_per_mb = 0.3
    prompt, loader = shipped_prompt("svd_image_to_video", ckpt_name=entry.name)
    sent = {}

    def interrupt_on_first_bytes(kind, data_, prompt_id):
        if kind == "progress" and data_.get("node") == loader and data_.get("value", 0) > 0 and not sent:
            sent["at"] = data_["value"]
            comfy_dl.post("/interrupt", {"prompt_id": prompt_id})

    try:
        result = comfy_dl.run(prompt, timeout=300, on_message=interrupt_on_first_bytes)
        assert "at" in sent, result.describe()
        assert result.of_type("execution_interrupted"), result.describe()
        left = model_files(comfy_dl, "checkpoints")
        assert left == [os.path.join(".animevideo_downloads", entry.name + ".part")], left
        kept = os.path.getsize(os.path.join(comfy_dl.models_dir, "checkpoints", left[0]))
        assert 0 < kept < len(data)

        hub.files.delay_per_mb = 0.0
        result = comfy_dl.run(prompt, timeout=300)
    finally:
        hub.files.delay_per_mb = 0.0
        hub.files.etag_override = None
    assert hub.files.gets()[-1][1] == f"bytes={kept}-"  # resumed, not started over
    errors = result.of_type("execution_error")
    assert errors and "sha256" in errors[0]["exception_message"], result.describe()
    assert model_files(comfy_dl, "checkpoints") == []


def test_offline_the_error_says_which_file_where_and_the_url(comfy_dl, hub):
    hub.files.down = True  # the Hub goes away (last test of the module): kept-alive connections close too
    hub.httpd.shutdown()
    hub.httpd.server_close()
    prompt, loader = shipped_prompt("lvcd_colorize_lineart")
    result = comfy_dl.run(prompt, timeout=300)
    errors = result.of_type("execution_error")
    assert errors and errors[0]["node_id"] == loader, result.describe()
    msg = errors[0]["exception_message"]
    assert "unreachable" in msg and "by hand" in msg, msg
    # the first missing file of the loader is named with its folder and URL (svd.safetensors, then the LVCD weights)
    svd = pinned("checkpoints", "svd.safetensors")
    assert svd.url in msg and os.path.join(comfy_dl.models_dir, "checkpoints") in msg, msg

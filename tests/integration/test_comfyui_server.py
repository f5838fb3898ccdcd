"""The pack inside a real ComfyUI server (CPU, tiny random-weight models): loading, /object_info,
the shipped workflows (validated and run), progress, interrupt, and memory release on POST /free.

Needs COMFYUI_DIR and COMFYUI_PYTHON (see conftest.py); every test skips without them.
"""
from __future__ import annotations

import copy
import glob
import json
import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKFLOWS = os.path.join(ROOT, "workflows")
API = os.path.join(WORKFLOWS, "api")
EXAMPLES = os.path.join(ROOT, "example_inputs")
OUR_PREFIX = "AnimeVideo"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov")
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "mesh_upload")
SEED_NAMES = ("seed", "noise_seed")

# Small overrides that make any shipped workflow run in seconds on a CPU with the tiny models.
SMALL = {"width": 64, "height": 64, "num_frames": 3, "steps": 2, "decode_chunk_size": 2}
INTERRUPT_STEPS = 100  # far more than the run needs before the interrupt lands

# Memory test: a larger tiny-layout SVD, so the model's share of the RSS is well above the noise.
MEMTEST_CKPT = "svd_memtest.safetensors"
MEMTEST_UNET = {"block_out_channels": (256, 512), "num_attention_heads": (4, 8)}
# After /free the RSS must come back to within this share of what the model run added ...
MEMTEST_MAX_RESIDUAL_SHARE = 0.25
# ... and the run must have added at least this share of the checkpoint size, or the signal is noise.
MEMTEST_MIN_SIGNAL_SHARE = 0.5
MEMTEST_POLL_S = 30.0
# ComfyUI 0.8.0 can act on half of a /free: the route sets "unload_models" and then "free_memory" with
# two PromptQueue.set_flag() calls, each a Condition.notify(). When the worker wakes on the first and
# reads the flags before the second is set, it unloads (a no-op for our models), runs gc and goes back
# to q.get(timeout=1000); the second notify found no waiter and is lost, so "free_memory" (which drops
# the output cache that holds our models, execution.py::PromptExecutor.reset) waits for the next wake-up
# (main.py::prompt_worker). Seen here in about one /free out of three. A second /free wakes the worker,
# which then reads the pending flag, so the test repeats /free once when the RSS has not dropped.
# A model that something really keeps alive stays put either way.
MEMTEST_IDLE_S = 2.0
MEMTEST_FREE_TRIES = 2

# workflows/*.json are the Templates browser's; workflows/experimental/ (GANime: no public weights) are not
# listed there but run here like the others.
TEMPLATE_FILES = sorted(glob.glob(os.path.join(WORKFLOWS, "*.json")))
EXPERIMENTAL_UI = sorted(glob.glob(os.path.join(WORKFLOWS, "experimental", "*.json")))
API_FILES = sorted(glob.glob(os.path.join(API, "*.json")) + glob.glob(os.path.join(API, "experimental", "*.json")))
UI_FILES = TEMPLATE_FILES + EXPERIMENTAL_UI


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def api_copy(ui_path):
    return os.path.join(API, os.path.relpath(ui_path, WORKFLOWS))


def is_link(v):
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
            and isinstance(v[1], int) and not isinstance(v[1], bool))


# ---------------------------------------------------------------------------------------------
# /object_info helpers
# ---------------------------------------------------------------------------------------------

def input_specs(info: dict) -> dict:
    """name -> (type, options, section) for one /object_info entry, in input_order."""
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    out = {}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            out[name] = (spec[0], spec[1] if len(spec) > 1 else {}, section)
    return out


def combo_options(spec_type, opts):
    if isinstance(spec_type, list):
        return spec_type
    if spec_type == "COMBO":
        return opts.get("options", [])
    return None


def is_widget(spec_type) -> bool:
    return isinstance(spec_type, list) or spec_type in WIDGET_TYPES


def extra_ui_entries(name, spec_type, opts) -> int:
    """UI-only entries the canvas stores after a widget's value (seed control, upload button)."""
    n = 0
    if spec_type == "INT" and (opts.get("control_after_generate") or name in SEED_NAMES):
        n += 1
    if any(opts.get(flag) for flag in UPLOAD_FLAGS):
        n += 1
    return n


def types_match(output_type, input_type) -> bool:
    """ComfyUI's link rule: equal, '*' on either side, or the output's union within the input's."""
    if isinstance(input_type, list) or input_type == "COMBO":
        return isinstance(output_type, list) or output_type in ("COMBO", "*")
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    return set(str(output_type).split(",")) <= set(str(input_type).split(","))


def validate_api_prompt(prompt: dict, object_info: dict) -> list[str]:
    """What the server's own validation would object to, as readable strings (empty: valid)."""
    problems = []
    for node_id, node in prompt.items():
        ctype = node.get("class_type")
        if ctype not in object_info:
            problems.append(f"node {node_id}: unknown node type {ctype!r}")
            continue
        info = object_info[ctype]
        specs = input_specs(info)
        hidden = set(info["input"].get("hidden", {}))
        for name, (_, _, section) in specs.items():
            if section == "required" and name not in node["inputs"]:
                problems.append(f"node {node_id} ({ctype}): required input '{name}' missing")
        for name, value in node["inputs"].items():
            where = f"node {node_id} ({ctype}) input '{name}'"
            if name not in specs:
                if name not in hidden:
                    problems.append(f"{where}: not an input of {ctype}")
                continue
            spec_type, opts, _ = specs[name]
            if is_link(value):
                src = prompt.get(value[0])
                if src is None or src.get("class_type") not in object_info:
                    problems.append(f"{where}: linked to unknown node {value[0]}")
                    continue
                outputs = object_info[src["class_type"]]["output"]
                if value[1] >= len(outputs):
                    problems.append(f"{where}: {src['class_type']} has no output {value[1]}")
                elif not types_match(outputs[value[1]], spec_type):
                    problems.append(f"{where}: wants {spec_type}, linked to {src['class_type']} output "
                                    f"{value[1]} of type {outputs[value[1]]}")
                continue
            options = combo_options(spec_type, opts)
            if options is not None:
                if value not in options:
                    problems.append(f"{where}: {value!r} is not one of {options}")
                continue
            if spec_type == "INT":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif spec_type == "FLOAT":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif spec_type == "BOOLEAN":
                ok = isinstance(value, bool)
            elif spec_type == "STRING":
                ok = isinstance(value, str)
            else:
                problems.append(f"{where}: literal {value!r} for the socket type {spec_type}")
                continue
            if not ok:
                problems.append(f"{where}: {value!r} is not a {spec_type}")
                continue
            if spec_type in ("INT", "FLOAT"):
                if "min" in opts and value < opts["min"]:
                    problems.append(f"{where}: {value} is below min {opts['min']}")
                if "max" in opts and value > opts["max"]:
                    problems.append(f"{where}: {value} is above max {opts['max']}")
    return problems


def with_overrides(prompt: dict, **named) -> dict:
    """A copy with every literal input of the given names replaced (links are left alone)."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        for name, value in named.items():
            if name in node["inputs"] and not is_link(node["inputs"][name]):
                node["inputs"][name] = value
    return out


_unique = [int(time.time()) % 100000]


def fresh_seed(prompt: dict) -> dict:
    """A new seed on every seeded node: ComfyUI would otherwise serve a repeated prompt from its cache
    and run (and report progress for) nothing."""
    _unique[0] += 1
    return with_overrides(prompt, **{n: _unique[0] for n in SEED_NAMES})


def small_run_prompt(path, **extra) -> dict:
    return fresh_seed(with_overrides(load(path), **{**SMALL, **extra}))


def saved_files(result) -> list[dict]:
    """File entries ({filename, subfolder, type}) in a finished prompt's history outputs."""
    files = []
    for ui in (result.history or {}).get("outputs", {}).values():
        for key, entries in ui.items():
            if isinstance(entries, list):
                files.extend(e for e in entries if isinstance(e, dict) and "filename" in e)
    return files


VIDEO_PROBE = """
import av, json, sys
c = av.open(sys.argv[1]); s = c.streams.video[0]
n = sum(1 for _ in c.decode(s))
props = {'frames': n, 'width': s.codec_context.width, 'height': s.codec_context.height}
audio = {'audio_streams': len(c.streams.audio)}
if c.streams.audio:
    c.seek(0)
    a = c.streams.audio[0]
    samples = sum(f.samples for f in c.decode(a))
    audio.update(audio_seconds=samples / a.sample_rate, audio_rate=a.sample_rate)
print(json.dumps([props, audio]))
"""


def video_probe(comfy, path) -> tuple[dict, dict]:
    """({frames, width, height}, {audio_streams[, audio_seconds, audio_rate]}) of a video file, read with
    PyAV in ComfyUI's Python (which has it)."""
    r = subprocess.run([comfy.comfy_python, "-c", VIDEO_PROBE, path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"could not read {path} with PyAV: {r.stderr[-2000:]}"
    props, audio = json.loads(r.stdout.strip().splitlines()[-1])
    return props, audio


def video_props(comfy, path) -> dict:
    """Frame count and size of a saved video."""
    return video_probe(comfy, path)[0]


@pytest.fixture(scope="session")
def object_info(comfy):
    return comfy.object_info(refresh=True)


@pytest.fixture(scope="session")
def our_nodes():
    import animevideo.nodes  # registered as a package by tests/conftest.py

    return animevideo.nodes.NODE_CLASS_MAPPINGS, animevideo.nodes.NODE_DISPLAY_NAME_MAPPINGS


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def test_pack_imports_without_errors(comfy):
    log = comfy.log_text()
    ours = [line for line in log.splitlines() if comfy.pack_link in line or ROOT in line]
    failures = [line for line in ours if re.search(r"IMPORT FAILED|Cannot import", line)]
    assert not failures, "the pack failed to import:\n" + "\n".join(failures) + "\n" + comfy.log_tail()
    loaded = [line for line in ours if re.search(r"^\s*[\d.]+ seconds: ", line)]
    assert loaded, f"the pack is not in ComfyUI's 'Import times for custom nodes' list:\n{comfy.log_tail()}"
    tracebacks = [line for line in ours if line.strip().startswith('File "')]
    assert not tracebacks, "tracebacks through the pack's code in the server log:\n" + "\n".join(tracebacks)


def test_object_info_lists_every_node(comfy, our_nodes):
    mappings, display_names = our_nodes
    assert mappings, "NODE_CLASS_MAPPINGS is empty"
    info = comfy.object_info()
    missing = sorted(set(mappings) - set(info))
    assert not missing, f"/object_info lacks {missing}\n{comfy.log_tail()}"
    for name, cls in mappings.items():
        entry = info[name]
        assert entry["python_module"] == f"custom_nodes.{os.path.basename(comfy.pack_link)}", entry["python_module"]
        assert entry["display_name"] == display_names.get(name, name)
        assert entry["output"] == list(cls.RETURN_TYPES)
        assert entry["category"].startswith(OUR_PREFIX)
    stray = sorted(n for n in info if n.startswith(OUR_PREFIX) and n not in mappings)
    assert not stray, f"/object_info has {OUR_PREFIX}* nodes not in NODE_CLASS_MAPPINGS: {stray}"


def test_example_inputs_are_in_input_at_start_and_the_users_file_is_kept(comfy, object_info):
    """The pack copied its example inputs into input/ while loading (nothing was uploaded), except the one name
    the user already had a picture under, which is byte for byte the user's."""
    users_name, users_bytes = comfy.users_picture
    at_start = comfy.input_files_at_start
    names = sorted(os.listdir(EXAMPLES))
    assert users_name in names
    for name in names:
        assert name in at_start, f"{name} is not in input/ after the pack loaded"
        if name == users_name:
            assert at_start[name] == users_bytes, "the user's picture was replaced by the example input"
        else:
            with open(os.path.join(EXAMPLES, name), "rb") as f:
                assert at_start[name] == f.read(), f"input/{name} differs from example_inputs/{name}"
    videos = {n for n in names if n.lower().endswith(VIDEO_EXTENSIONS)}
    assert set(names) - videos <= set(object_info["LoadImage"]["input"]["required"]["image"][0])
    assert videos <= set(combo_options(*input_specs(object_info["LoadVideo"])["file"][:2])), videos


def test_front_end_extension_is_listed_and_served(comfy):
    """WEB_DIRECTORY (./js) is registered: GET /extensions lists the pack's script under the pack's folder
    name, and GET /extensions/<folder>/<file> serves the file as it is."""
    import requests

    folder = os.path.basename(comfy.pack_link)
    scripts = sorted(glob.glob(os.path.join(ROOT, "js", "*.js")))
    assert scripts, "js/ holds no script"
    listed = comfy.get("/extensions")
    for path in scripts:
        url = f"/extensions/{folder}/{os.path.basename(path)}"
        assert url in listed, f"{url} not in GET /extensions: {[u for u in listed if folder in u]}"
        r = requests.get(comfy.url + url, timeout=30)
        assert r.status_code == 200, f"GET {url} answered {r.status_code}"
        with open(path, "rb") as f:
            assert r.content == f.read()
        assert "javascript" in r.headers.get("Content-Type", ""), r.headers.get("Content-Type")


def test_example_video_has_frames_and_a_sound_track_and_regenerates(comfy, tmp_path):
    """example_inputs/ ships a small MP4 with audio for the video workflows; scripts/make_example_video.py
    (run with ComfyUI's Python, which has PyAV) writes the same picture and sound."""
    name = "animevideo_example_clip_with_audio.mp4"
    shipped = os.path.join(EXAMPLES, name)
    assert os.path.getsize(shipped) < 200 * 1024
    props, audio = video_probe(comfy, shipped)
    assert props == {"frames": 12, "width": 256, "height": 144}, props
    assert audio["audio_streams"] == 1 and abs(audio["audio_seconds"] - 1.0) < 0.1, audio
    r = subprocess.run([comfy.comfy_python, os.path.join(ROOT, "scripts", "make_example_video.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    code = ("import av, sys, numpy as np\n"
            "def frames(p):\n"
            "    with av.open(p) as c:\n"
            "        return np.stack([f.to_ndarray(format='rgb24') for f in c.decode(video=0)]).astype(np.int16)\n"
            "a, b = frames(sys.argv[1]), frames(sys.argv[2])\n"
            "print(a.shape == b.shape and float(np.abs(a - b).mean()))\n")
    r = subprocess.run([comfy.comfy_python, "-c", code, shipped, str(tmp_path / name)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    diff = r.stdout.strip().splitlines()[-1]
    assert diff != "False" and float(diff) < 1.0, f"the script draws another video (mean |diff| {diff})"


def test_shipped_svd_models_are_listed(comfy, object_info):
    names = object_info["AnimeVideoLoadSVD"]["input"]["required"]["ckpt_name"][0]
    assert "svd_xt.safetensors" in names
    assert "stable-video-diffusion-img2vid-xt" in names


# ---------------------------------------------------------------------------------------------
# Templates browser
# ---------------------------------------------------------------------------------------------

def test_every_workflow_template_opens(comfy):
    """What the Templates browser does: list the pack's templates, then fetch each one by name."""
    import requests

    pack = os.path.basename(comfy.pack_link)
    listing = comfy.get("/api/workflow_templates")
    assert sorted(listing.get(pack, [])) == sorted(stem(p) for p in TEMPLATE_FILES), listing.get(pack)
    assert EXPERIMENTAL_UI and not {stem(p) for p in EXPERIMENTAL_UI} & set(listing[pack])
    for name in listing[pack]:
        r = requests.get(f"{comfy.url}/api/workflow_templates/{pack}/{name}.json", timeout=30)
        assert r.status_code == 200, f"template {name}: GET answered {r.status_code}"
        with open(os.path.join(WORKFLOWS, name + ".json"), "rb") as f:
            assert r.content == f.read(), f"template {name}: the server sent something else than the file"


# ---------------------------------------------------------------------------------------------
# Shipped workflows against the live node definitions
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", API_FILES, ids=stem)
def test_api_workflow_validates_against_object_info(path, object_info):
    problems = validate_api_prompt(load(path), object_info)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", UI_FILES, ids=stem)
def test_ui_workflow_matches_object_info_and_api_copy(path, object_info):
    ui = load(path)
    assert os.path.isfile(api_copy(path)), f"no API copy for {os.path.basename(path)}"
    api = load(api_copy(path))
    unknown = sorted({n["type"] for n in ui["nodes"]} - set(object_info))
    assert not unknown, f"node types the server does not know: {unknown}"
    nodes = {n["id"]: n for n in ui["nodes"] if n.get("mode", 0) == 0}
    assert {str(i): n["type"] for i, n in nodes.items()} == {i: n["class_type"] for i, n in api.items()}

    # sockets as the server defines them
    for n in nodes.values():
        info = object_info[n["type"]]
        specs = input_specs(info)
        for i, out in enumerate(n["outputs"]):
            assert out["type"] == info["output"][i], f"node {n['id']} output {i}: {out['type']}"
            assert out["name"] == info["output_name"][i], f"node {n['id']} output {i}: {out['name']}"
        for inp in n["inputs"]:
            assert inp["name"] in specs, f"node {n['id']}: no input '{inp['name']}' on {n['type']}"
            spec_type = specs[inp["name"]][0]
            if not isinstance(spec_type, list) and spec_type != "COMBO":
                assert inp["type"] == spec_type, f"node {n['id']}.{inp['name']}: {inp['type']} vs {spec_type}"

    # links = the API copy's linked inputs
    ui_links = set()
    for _, src, src_slot, dst, dst_slot, link_type in ui["links"]:
        if src not in nodes or dst not in nodes:
            continue
        name = nodes[dst]["inputs"][dst_slot]["name"]
        out_type = object_info[nodes[src]["type"]]["output"][src_slot]
        in_type = input_specs(object_info[nodes[dst]["type"]])[name][0]
        assert types_match(out_type, in_type), f"link into node {dst}.{name}: {out_type} does not fit {in_type}"
        ui_links.add((str(dst), name, str(src), src_slot))
    api_links = {(i, k, v[0], v[1]) for i, n in api.items() for k, v in n["inputs"].items() if is_link(v)}
    assert ui_links == api_links, f"UI only: {sorted(ui_links - api_links)}; API only: {sorted(api_links - ui_links)}"

    # widget values = the API copy's literals, for every node (positional, in input_order)
    for node_id, n in nodes.items():
        values = list(n.get("widgets_values") or [])
        linked = {i["name"] for i in n["inputs"] if i.get("link") is not None}
        k = 0
        for name, (spec_type, opts, _) in input_specs(object_info[n["type"]]).items():
            if not is_widget(spec_type):
                continue
            assert k < len(values), f"node {node_id} ({n['type']}): no widget value for '{name}'"
            value, k = values[k], k + 1 + extra_ui_entries(name, spec_type, opts)
            api_value = api[str(node_id)]["inputs"].get(name)
            if name in linked:
                assert is_link(api_value), f"node {node_id}.{name}: linked in the UI, {api_value!r} in the API copy"
            else:
                assert api_value == value and isinstance(api_value, bool) == isinstance(value, bool), (
                    f"node {node_id} ({n['type']}).{name}: UI {value!r} != API {api_value!r}")
        assert k == len(values), f"node {node_id} ({n['type']}): {len(values)} widget values, {k} expected"


# ---------------------------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", API_FILES, ids=stem)
def test_api_workflow_runs_and_saves(path, comfy):
    """Each shipped workflow as queued from a fresh install: nothing is uploaded, the Load Image files are the
    pack's own copies in input/ (or, for animevideo_example_first_frame.png, the user's picture of that name)."""
    prompt = small_run_prompt(path, **MULTI_SEGMENT.get(stem(path), {}), **MORE_FRAMES.get(stem(path), {}))
    started = time.time()
    # the server starts with ComfyUI's default preview method 'none'; the frontend's setting comes per prompt
    result = comfy.run(prompt, timeout=600, extra_data={"preview_method": "auto"})
    assert "execution_success" in result.types, f"workflow {stem(path)}: {result.describe()}"
    assert result.status == "success", f"workflow {stem(path)}: {result.describe()}"
    assert not result.of_type("execution_error")

    progress = result.of_type("progress")
    assert progress, f"no 'progress' websocket message for the prompt (events: {result.types})"
    ours = {i for i, n in prompt.items() if n["class_type"].startswith(OUR_PREFIX)}
    assert {p.get("node") for p in progress} & ours, f"no progress from our nodes {ours}: {progress}"

    wants_preview = [i for i in ours if prompt[i]["inputs"].get("latent_preview") is True]
    if wants_preview:  # PREVIEW_IMAGE (1) frames, sent by ComfyUI's progress hook from our previews
        previews = [d for d in result.of_type("binary") if d["event"] == 1]
        assert previews, f"latent_preview is on in nodes {wants_preview} but no preview image arrived"

    outputs = (result.history or {}).get("outputs", {})
    for node_id in ours:  # nodes that explain what they did also send it as ui text, for js/animevideo_info.js
        if prompt[node_id]["class_type"] in UI_TEXT_NODES:
            text = outputs.get(node_id, {}).get("text")
            assert isinstance(text, list) and text and all(isinstance(t, str) and t for t in text), (
                f"node {node_id} ({prompt[node_id]['class_type']}) sent no ui text: {outputs.get(node_id)}")
    for node_id, needle in EXPECTED_INFO.get(stem(path), {}).items():
        assert needle in outputs[node_id]["text"][0], outputs[node_id]["text"][0]

    files = saved_files(result)
    assert files, f"no files in the history outputs: {result.history.get('outputs')}"
    videos = 0
    for entry in files:
        # previews (Preview Image of a timeline or storyboard) go to temp/, saved clips to output/
        assert entry.get("type") in ("output", "temp"), entry
        folder = comfy.output_dir if entry["type"] == "output" else os.path.join(comfy.base, "temp")
        on_disk = os.path.join(folder, entry.get("subfolder", ""), entry["filename"])
        assert os.path.isfile(on_disk), f"{on_disk} is in the history but not on disk"
        assert os.path.getsize(on_disk) > 0 and os.path.getmtime(on_disk) >= started - 1
        if on_disk.endswith(VIDEO_EXTENSIONS):
            videos += 1
            assert entry["type"] == "output", entry
            props, audio = video_probe(comfy, on_disk)
            default = {"frames": SMALL["num_frames"], "width": SMALL["width"], "height": SMALL["height"]}
            assert props == EXPECTED_VIDEO.get(stem(path), default), props
            if stem(path) in KEEPS_SOURCE_AUDIO:  # the example video's 1 s sound track, carried through
                assert audio["audio_streams"] == 1 and abs(audio["audio_seconds"] - 1.0) < 0.1, audio
            else:
                assert audio["audio_streams"] == 0, audio


# Long-video workflows get segments short enough that the small run still samples several overlapping
# segments (overlapped blending, prev-reference attention, the shifted-back last segment).
MULTI_SEGMENT = {
    "lvcd_colorize_lineart": {"segment_length": 6, "overlap": 2},  # 12 frames: 0-5, 4-9, 6-11
    "svd_long_image_to_video": {"num_frames": 8, "segment_length": 4, "overlap": 1},  # 0-3, 3-6, 4-7
    # core's Wan nodes name the clip length `length` (so does Image From Batch elsewhere: set it only here)
    "anisora_core_keyframe_inbetween": {"length": 5},
    "anisora_core_localized_animation": {"length": 5},
    # two KSamplerAdvanced passes split at step 3: 4 steps leave the low-noise expert one step to run
    "anisora_v32_wan22_core": {"length": 5, "steps": 4},
    # four keyframes at frames 0, 24, 56 and -1: 65 frames (8k+1) end on frame 64, AniSora's 8-frame grid
    "anisora_core_storyboard": {"length": 65, "num_frames": 65},
    "svd_core_guide": {"video_frames": 3},  # core's SVD_img2vid_Conditioning and our patch name it video_frames
}
# Workflows whose model needs another frame count than SMALL's 3 to sample a real clip: AniSora V1 takes 8k+1
# frames (3 would snap to 1), 9 = the tiny V1's trained 3 latent frames.
MORE_FRAMES = {"anisora_v1_image_to_video": {"num_frames": 9},
               # StreamingT2V conditions on 8 frames; 8 SVD frames at 32x32 + one chunk of 8 new frames
               "anime_pipeline_paper": {"num_frames": 8, "size": 32, "target_frames": 16},
               "anime_pipeline_paper_evaluate": {"num_frames": 8, "size": 32, "target_frames": 16},
               # 8 ModelScope frames at 64x64 (SMALL) + one chunk of 8 new frames at 32x32
               "anime_pipeline_paper_text": {"num_frames": 8, "size": 32, "target_frames": 16}}


# Workflows whose clip size SMALL does not set: they load the 12-frame 256x144 example clip (drawn on twos).
EXPECTED_VIDEO = {
    "anime_interpolate_x2": {"frames": 24, "width": 256, "height": 144},
    "animesr_upscale": {"frames": 12, "width": 1024, "height": 576},
    "realesrgan_anime_upscale": {"frames": 12, "width": 1024, "height": 576},
    "svd_refine_interpolate_upscale": {"frames": 6, "width": 256, "height": 256},  # 3 SVD frames, x2, x4
    "modelscope_text_to_video_interpolate_upscale": {"frames": 6, "width": 256, "height": 256},  # 3 frames, x2, x4
    "anime_pipeline_paper": {"frames": 32, "width": 128, "height": 128},  # 8 SVD + 8 StreamingT2V at 32x32, x2, x4
    "anime_pipeline_paper_evaluate": {"frames": 32, "width": 128, "height": 128},
    "anime_pipeline_paper_text": {"frames": 32, "width": 128, "height": 128},  # 8 ModelScope + 8 StreamingT2V, x2, x4
    "ganime_inbetween": {"frames": 3, "width": 512, "height": 256},  # 64x128 model frames, x4
    "lvcd_colorize_lineart": {"frames": 12, "width": 64, "height": 64},  # one output per lineart frame
    "lvcd_colorize_from_frames": {"frames": 12, "width": 64, "height": 64},
    "svd_long_image_to_video": {"frames": 8, "width": 64, "height": 64},
    "anisora_image_to_video": {"frames": 5, "width": 64, "height": 64},  # 3 frames snapped to 4k+1
    "anisora_keyframe_inbetween": {"frames": 5, "width": 64, "height": 64},
    "anisora_localized_animation": {"frames": 5, "width": 64, "height": 64},
    "anisora_core_keyframe_inbetween": {"frames": 5, "width": 64, "height": 64},  # core's KSampler + VAEDecode
    "anisora_clip_extension": {"frames": 9, "width": 64, "height": 64},  # 5 + 5 frames, the shared one once
    "anisora_core_localized_animation": {"frames": 5, "width": 64, "height": 64},
    "anisora_v32_wan22_keyframes": {"frames": 5, "width": 64, "height": 64},  # two experts, our sampler
    "anisora_v32_wan22_core": {"frames": 5, "width": 64, "height": 64},  # core's two KSamplerAdvanced passes
    "anisora_core_storyboard": {"frames": 65, "width": 64, "height": 64},
    "anisora_v1_image_to_video": {"frames": 9, "width": 64, "height": 64},  # 8k+1 = the tiny V1's 3 latent frames
    "anisora_interpolate_upscale": {"frames": 10, "width": 256, "height": 256},  # 5 frames, x2, x4
    # the example video (12 frames, 256x144, 12 fps, with sound): x2, x4
    "video_interpolate_upscale_keep_audio": {"frames": 24, "width": 1024, "height": 576},
    # colorized at 64x64 (SMALL), scaled back to the video's size, one frame per source frame
    "lvcd_colorize_video": {"frames": 12, "width": 256, "height": 144},
}
# What our nodes must have found, by workflow and node id (the ui text the node shows).
EXPECTED_INFO = {
    # the example video's held drawings survive H.264: dedup still sees the clip on twos
    "video_interpolate_upscale_keep_audio": {"4": "6 distinct drawings in 12 frames, on twos"},
    "anisora_interpolate_upscale": {"17": "Frame 0: keyframe, strength 1."},
    # 2 unipc steps at shift 5: t = 999 on the high-noise expert, 833 on the low-noise one
    "anisora_v32_wan22_keyframes": {"12": "experts: high-noise steps 1-1, low-noise steps 2-2"},
    "anisora_core_storyboard": {"20": "Frame 64 (frame_index -1): keyframe, strength 1."},
}
# Workflows that load the example video and must save its sound track with the new frames.
KEEPS_SOURCE_AUDIO = {"video_interpolate_upscale_keep_audio", "lvcd_colorize_video"}
# Our nodes that return {"ui": {"text": [info]}} (shown on the node by js/animevideo_info.js).
UI_TEXT_NODES = {"AnimeVideoInterpolate", "AnimeVideoGuidePreview"}


def test_video_without_sound_gives_a_video_without_sound(comfy, tmp_path):
    """The video workflows link Get Video Components' audio to Create Video: a source with no sound track
    gives None there, and the saved clip simply has no audio stream (no error)."""
    name = "animevideo_test_silent.mp4"
    code = ("import av, sys\n"
            "src = av.open(sys.argv[1]); out = av.open(sys.argv[2], 'w', format='mp4')\n"
            "v = out.add_stream_from_template(src.streams.video[0])\n"
            "for p in src.demux(src.streams.video[0]):\n"
            "    if p.dts is not None:\n"
            "        p.stream = v; out.mux(p)\n"
            "out.close(); src.close()\n")
    silent = tmp_path / name
    r = subprocess.run([comfy.comfy_python, "-c", code, os.path.join(EXAMPLES, "animevideo_example_clip_with_audio.mp4"),
                        str(silent)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert video_probe(comfy, str(silent))[1]["audio_streams"] == 0
    assert comfy.upload_image(str(silent))["name"] == name
    stem_ = "video_interpolate_upscale_keep_audio"
    prompt = small_run_prompt(os.path.join(API, stem_ + ".json"), file=name)
    result = comfy.run(prompt, timeout=600)
    assert "execution_success" in result.types, result.describe() + "\n" + comfy.log_tail()
    videos = [e for e in saved_files(result) if e["filename"].endswith(VIDEO_EXTENSIONS)]
    assert len(videos) == 1
    props, audio = video_probe(comfy, os.path.join(comfy.output_dir, videos[0].get("subfolder", ""),
                                                   videos[0]["filename"]))
    assert props == EXPECTED_VIDEO[stem_] and audio["audio_streams"] == 0, (props, audio)


def test_nul_in_a_model_name_is_a_validation_error(comfy):
    prompt = load(os.path.join(API, "svd_image_to_video.json"))
    loader = next(i for i, n in prompt.items() if n["class_type"] == "AnimeVideoLoadSVD")
    prompt[loader]["inputs"]["ckpt_name"] = "svd_xt\x00.safetensors"
    r = comfy.post("/prompt", {"prompt": prompt})
    assert r.status_code == 400, r.text[:2000]
    errors = r.json()["node_errors"][loader]["errors"]
    assert any(e["details"].startswith("ckpt_name - ckpt_name:") and "NUL" in e["details"] for e in errors), errors


def test_nan_frame_rate_is_an_error_naming_the_input(comfy):
    prompt = fresh_seed(load(os.path.join(API, "anime_interpolate_x2.json")))
    node = next(i for i, n in prompt.items() if n["class_type"] == "AnimeVideoInterpolate")
    prompt[node]["inputs"]["source_fps"] = float("nan")  # JSON NaN: ComfyUI's min/max check lets it through
    result = comfy.run(prompt, timeout=300)
    errors = result.of_type("execution_error")
    assert errors, result.describe()
    assert errors[0]["exception_type"].endswith("AnimeVideoInputError"), errors[0]
    assert errors[0]["exception_message"].startswith("source_fps: nan"), errors[0]["exception_message"]


def test_previews_follow_the_preview_method(comfy):
    """latent_preview is on in the SVD workflow; ComfyUI's preview method 'none' (its default, or the frontend's
    setting sent with the prompt) means no preview images, any other method means previews."""
    path = os.path.join(API, "svd_image_to_video.json")
    assert any(n["inputs"].get("latent_preview") is True for n in load(path).values())
    counts = {}
    for method in ("none", "latent2rgb"):
        result = comfy.run(small_run_prompt(path), timeout=600, extra_data={"preview_method": method})
        assert "execution_success" in result.types, result.describe()
        counts[method] = sum(1 for d in result.of_type("binary") if d["event"] == 1)
    assert counts["none"] == 0 and counts["latent2rgb"] > 0, counts


def test_a_frame_too_large_to_upscale_is_refused_with_what_to_change(comfy):
    """One 4096x4096 frame x4 needs 3 GiB for the result alone plus the blend buffers; the server's RAM cap
    (conftest.SERVER_RAM_CAP_GB) is 4 GiB: the pack's memory error, before any work, not an allocator error."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4096, "height": 4096, "batch_size": 1, "color": 0}},
        "2": {"class_type": "AnimeVideoLoadUpscaler", "inputs": {"model_name": "realesr-animevideov3.pth",
                                                                 "dtype": "auto"}},
        "3": {"class_type": "AnimeVideoUpscale", "inputs": {"upscaler": ["2", 0], "frames": ["1", 0], "chunk_size": 8,
                                                             "tile_size": 0, "input_rescaling": 1.0,
                                                             "output_scale": 0.0}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    result = comfy.run(prompt, timeout=300)
    errors = result.of_type("execution_error")
    assert errors, result.describe()
    e = errors[0]
    assert e["node_type"] == "AnimeVideoUpscale" and e["exception_type"].endswith("AnimeVideoMemoryError"), e
    assert "upscaling 1 frame(s) of 4096x4096 to 16384x16384" in e["exception_message"]
    assert "output_scale" in e["exception_message"] and "Nothing was started" in e["exception_message"]


def sampler_workflow():
    for path in API_FILES:
        prompt = load(path)
        ours_with_steps = any(n["class_type"].startswith(OUR_PREFIX) and "steps" in n["inputs"] for n in prompt.values())
        # the memory test swaps the SVD loader's ckpt_name for a larger plain SVD: LVCD's loader would refuse it
        # (workflows that need more frames than SMALL's, e.g. the StreamingT2V pipeline, are left out: these tests
        # queue SMALL's run)
        if ours_with_steps and stem(path) not in MORE_FRAMES and any(
                n["class_type"] == "AnimeVideoLoadSVD" for n in prompt.values()):
            return path
    pytest.skip("no shipped API workflow has one of our nodes with a 'steps' input and the SVD loader")


def test_interrupt_stops_a_run_and_the_next_prompt_runs(comfy):
    path = sampler_workflow()
    prompt = small_run_prompt(path, steps=INTERRUPT_STEPS)
    sent = {}

    def interrupt_on_first_progress(kind, data, prompt_id):
        if kind == "progress" and "at" not in sent:
            sent["at"] = time.monotonic()
            sent["value"] = data.get("value")
            r = comfy.post("/interrupt", {"prompt_id": prompt_id})
            assert r.status_code == 200, r.text

    result = comfy.run(prompt, timeout=600, on_message=interrupt_on_first_progress)
    assert "at" in sent, f"the run sent no progress message to interrupt on: {result.describe()}"
    interrupted = result.of_type("execution_interrupted")
    assert interrupted, f"expected execution_interrupted, got {result.describe()}"
    assert "execution_success" not in result.types
    assert interrupted[0]["node_type"].startswith(OUR_PREFIX), interrupted[0]
    last_value = max(p["value"] for p in result.of_type("progress"))
    total = result.of_type("progress")[0]["max"]
    assert last_value < total, f"the run went to the end ({last_value}/{total}) before stopping"
    assert result.status != "success"
    assert not saved_files(result), "an interrupted run saved output"

    after = comfy.run(small_run_prompt(path), timeout=600)
    assert "execution_success" in after.types, after.describe() + "\n" + comfy.log_tail()
    assert saved_files(after)


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

def settle_rss(comfy, seconds_min=3.0, seconds_max=MEMTEST_POLL_S, until=None) -> tuple[int, list[int]]:
    """Poll the server's RSS once a second until it is steady (or ``until(rss)`` holds)."""
    samples = []
    start = time.monotonic()
    while True:
        time.sleep(1.0)
        samples.append(comfy.rss_kb())
        elapsed = time.monotonic() - start
        if until is not None and until(samples[-1]) and elapsed >= seconds_min:
            break
        if until is None and elapsed >= seconds_min and len(samples) >= 3 and \
                max(samples[-3:]) - min(samples[-3:]) < 4 * 1024:
            break
        if elapsed >= seconds_max:
            break
    return samples[-1], samples


def write_memtest_checkpoint(path):
    code = (
        "import sys, types\n"
        f"root = {ROOT!r}\n"
        "pkg = types.ModuleType('animevideo'); pkg.__path__ = [root]; sys.modules['animevideo'] = pkg\n"
        "from animevideo.pipelines.svd import tiny\n"
        f"unet, vae, clip = tiny.build_tiny_svd(0, unet_overrides={MEMTEST_UNET!r})\n"
        "tiny.write_sgm_file(sys.argv[1] + '.part', unet, vae, clip)\n"
        "import os; os.replace(sys.argv[1] + '.part', sys.argv[1])\n"
    )
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"could not write {path}:\n{r.stderr[-3000:]}"


def test_free_releases_our_models(comfy, record_property):
    path = sampler_workflow()
    prompt = load(path)
    assert any("ckpt_name" in n["inputs"] for n in prompt.values()), "the sampler workflow has no ckpt_name"
    ckpt = os.path.join(comfy.models_dir, "checkpoints", MEMTEST_CKPT)
    if not os.path.exists(ckpt):
        write_memtest_checkpoint(ckpt)
    ckpt_mb = os.path.getsize(ckpt) / 2**20

    # Baseline: whatever earlier tests loaded is released first, so only the memtest model counts.
    time.sleep(MEMTEST_IDLE_S)
    comfy.free()
    before_kb, _ = settle_rss(comfy)
    comfy.free()  # the repeat of a possibly missed /free (see MEMTEST_FREE_TRIES)
    before_kb = min(before_kb, settle_rss(comfy)[0])

    result = comfy.run(small_run_prompt(path, ckpt_name=MEMTEST_CKPT), timeout=600)
    assert "execution_success" in result.types, result.describe() + "\n" + comfy.log_tail()
    time.sleep(MEMTEST_IDLE_S)
    loaded_kb = comfy.rss_kb()
    increase_kb = loaded_kb - before_kb

    limit_kb = before_kb + MEMTEST_MAX_RESIDUAL_SHARE * increase_kb
    samples, free_requests = [], 0
    for _ in range(MEMTEST_FREE_TRIES):
        comfy.free()
        free_requests += 1
        after_kb, polled = settle_rss(comfy, seconds_min=3.0, seconds_max=MEMTEST_POLL_S / MEMTEST_FREE_TRIES,
                                      until=lambda rss: rss <= limit_kb)
        samples += polled
        if after_kb <= limit_kb:
            break

    numbers = {
        "rss_at_server_start_mb": round(comfy.rss_at_start_kb / 1024, 1),
        "rss_before_load_mb": round(before_kb / 1024, 1),
        "rss_after_run_mb": round(loaded_kb / 1024, 1),
        "rss_after_free_mb": round(after_kb / 1024, 1),
        "checkpoint_mb": round(ckpt_mb, 1),
        "model_increase_mb": round(increase_kb / 1024, 1),
        "residual_mb": round((after_kb - before_kb) / 1024, 1),
        "free_requests": free_requests,
        "poll_samples_mb": [round(s / 1024, 1) for s in samples],
    }
    record_property("rss", json.dumps(numbers))
    print("RSS (MiB):", json.dumps(numbers))

    assert increase_kb >= MEMTEST_MIN_SIGNAL_SHARE * ckpt_mb * 1024, (
        f"loading a {ckpt_mb:.0f} MiB model raised the RSS by only {increase_kb / 1024:.0f} MiB: "
        f"no usable signal ({numbers})")
    assert after_kb <= limit_kb, (
        f"POST /free left {(after_kb - before_kb) / 1024:.0f} MiB of the {increase_kb / 1024:.0f} MiB the model "
        f"added (allowed: {MEMTEST_MAX_RESIDUAL_SHARE:.0%}): {numbers}")

    # the pack still works after /free (reloads the model)
    again = comfy.run(small_run_prompt(path), timeout=600)
    assert "execution_success" in again.types, again.describe()

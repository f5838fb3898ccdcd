"""The shipped workflows, checked without ComfyUI: pure JSON plus our nodes' INPUT_TYPES.

Every ``workflows/<stem>.json`` (UI/workflow format 0.4, what the canvas loads) has an API-format
copy ``workflows/api/<stem>.json`` (what ``POST /prompt`` runs) and the two describe the same graph:
same node ids and types, same links, and the same widget values on our AnimeVideo* nodes. The values
must also be acceptable to our nodes (names known, numbers in range, combo entries listed), and the
example images the workflows load must be shipped in ``example_inputs/``.

tests/integration/test_comfyui_server.py repeats the graph checks against a real server's
/object_info (core nodes included) and runs every API workflow.
"""
from __future__ import annotations

import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = os.path.join(ROOT, "workflows")
API = os.path.join(WORKFLOWS, "api")
EXAMPLES = os.path.join(ROOT, "example_inputs")
OUR_PREFIX = "AnimeVideo"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# Combo lists that depend on what is installed (model folders), so a literal may be absent in CI.
DYNAMIC_COMBOS = {"ckpt_name", "model_name", "vqgan_name", "transformer_name", "vae_name", "lvcd_name", "high_noise_name",
                  "low_noise_name"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov")
# Core nodes whose widget inputs name a file in ComfyUI's input/ folder.
FILE_INPUTS = {"LoadImage": "image", "LoadImageMask": "image", "LoadVideo": "file"}


# Workflows for methods without public weights (GANime) live in workflows/experimental/ (API copy in
# workflows/api/experimental/): ComfyUI lists only workflows/*.json as templates, and their stems keep the
# "experimental/" prefix here so every check below covers them too.
EXPERIMENTAL = "experimental"


def stems(folder):
    paths = glob.glob(os.path.join(folder, "*.json")) + glob.glob(os.path.join(folder, EXPERIMENTAL, "*.json"))
    return sorted(os.path.relpath(p, folder)[:-5].replace(os.sep, "/") for p in paths)


UI_STEMS = stems(WORKFLOWS)
API_STEMS = stems(API)
ALL_STEMS = sorted(set(UI_STEMS) | set(API_STEMS))
PAIRED = sorted(set(UI_STEMS) & set(API_STEMS))


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_ui(stem):
    return load(os.path.join(WORKFLOWS, stem + ".json"))


def load_api(stem):
    return load(os.path.join(API, stem + ".json"))


@pytest.fixture(scope="module")
def node_classes():
    import animevideo.nodes  # registered as a package by tests/conftest.py

    return animevideo.nodes.NODE_CLASS_MAPPINGS


def input_specs(cls) -> dict:
    """name -> (type, options) in INPUT_TYPES order (required, then optional); hidden ones left out."""
    types_ = cls.INPUT_TYPES()
    out = {}
    for section in ("required", "optional"):
        for name, spec in types_.get(section, {}).items():
            out[name] = (spec[0], spec[1] if len(spec) > 1 else {})
    return out


def required_names(cls) -> list[str]:
    return list(cls.INPUT_TYPES().get("required", {}))


def is_widget(spec_type) -> bool:
    return isinstance(spec_type, list) or spec_type in WIDGET_TYPES


def has_control_after_generate(name, spec_type, opts) -> bool:
    """The UI stores an extra 'fixed'/'randomize'/... entry after these INT widgets."""
    return spec_type == "INT" and (name == "seed" or bool(opts.get("control_after_generate")))


def ui_widget_map(node, specs) -> dict:
    """Spread a UI node's positional widgets_values over its widget inputs (INPUT_TYPES order)."""
    values = list(node.get("widgets_values") or [])
    out, i = {}, 0
    for name, (spec_type, opts) in specs.items():
        if not is_widget(spec_type):
            continue
        assert i < len(values), f"node {node['id']} ({node['type']}): no widget value for '{name}'"
        out[name] = values[i]
        i += 1
        if has_control_after_generate(name, spec_type, opts):
            assert i < len(values), f"node {node['id']}: '{name}' lacks its control_after_generate entry"
            assert values[i] in ("fixed", "increment", "decrement", "randomize"), (
                f"node {node['id']}: entry after '{name}' should be a control_after_generate mode, got {values[i]!r}")
            i += 1
    assert i == len(values), (
        f"node {node['id']} ({node['type']}): {len(values)} widget values for {i} widget slots: {values}")
    return out


def active_ui_nodes(ui) -> dict:
    """UI nodes the API export contains: muted (2) and bypassed (4) nodes are not exported."""
    return {n["id"]: n for n in ui["nodes"] if n.get("mode", 0) == 0}


def is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


# ---------------------------------------------------------------------------------------------
# File pairing and format
# ---------------------------------------------------------------------------------------------

def test_workflows_are_shipped():
    assert UI_STEMS, "no workflows/*.json"


def test_ganime_is_experimental_and_out_of_the_templates():
    assert "experimental/ganime_inbetween" in PAIRED
    assert not os.path.exists(os.path.join(WORKFLOWS, "ganime_inbetween.json"))
    note = load_ui("experimental/ganime_inbetween")["extra"]["animevideo"]["experimental"]
    assert "no public weights" in note


# ComfyUI (app/custom_node_manager.py) mounts one static route per folder of these names it finds in a pack, all
# at /api/workflow_templates/<pack>/, in this order: the first one found answers every template request, so any
# other such folder shadows workflows/ and every template from the Templates browser answers 404.
TEMPLATE_ALIASES = ("example_workflows", "example", "examples", "workflow", "workflows")


def test_no_folder_shadows_the_workflow_templates():
    top_level = {name.lower(): name for name in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, name))}
    assert "workflows" in top_level
    shadowing = [top_level[a] for a in TEMPLATE_ALIASES if a != "workflows" and a in top_level]
    assert not shadowing, (f"{shadowing}: ComfyUI serves templates from the first of {TEMPLATE_ALIASES} it finds, "
                           "so these folders hide workflows/ from the Templates browser; rename them "
                           "(example inputs live in example_inputs/)")


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_ui_and_api_copies_pair_up(stem):
    assert stem in UI_STEMS, f"workflows/api/{stem}.json has no UI copy workflows/{stem}.json"
    assert stem in API_STEMS, f"workflows/{stem}.json has no API copy workflows/api/{stem}.json"


@pytest.mark.parametrize("stem", UI_STEMS)
def test_ui_file_is_workflow_format_0_4(stem):
    ui = load_ui(stem)
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in ui, f"missing top-level '{key}'"
    assert ui["version"] == 0.4
    ids = [n["id"] for n in ui["nodes"]]
    assert len(ids) == len(set(ids)), "duplicate node ids"
    assert ui["last_node_id"] >= max(ids)
    link_ids = [link[0] for link in ui["links"]]
    assert len(link_ids) == len(set(link_ids)), "duplicate link ids"
    assert ui["last_link_id"] >= max(link_ids, default=0)
    for n in ui["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                    "widgets_values"):
            assert key in n, f"node {n.get('id')}: missing '{key}'"
        assert len(n["pos"]) == 2 and len(n["size"]) == 2
        assert isinstance(n["flags"], dict) and isinstance(n["widgets_values"], (list, dict))
        assert n["properties"].get("Node name for S&R") == n["type"]
        for model in n["properties"].get("models", []):  # the canvas offers these as downloads
            assert set(model) >= {"name", "url", "directory"}, model
            assert model["url"].startswith("https://") and model["url"].endswith(model["name"]), model
        for inp in n["inputs"]:
            assert isinstance(inp.get("name"), str) and "type" in inp and "link" in inp
        for out in n["outputs"]:
            assert isinstance(out.get("name"), str) and "type" in out and "links" in out
    ds = ui["extra"].get("ds")
    if ds is not None:
        assert isinstance(ds.get("scale"), (int, float)) and len(ds.get("offset", [])) == 2
    assert sorted(n["order"] for n in ui["nodes"]) == list(range(len(ui["nodes"])))
    for g in ui["groups"]:
        assert g.get("title") and len(g.get("bounding", [])) == 4


@pytest.mark.parametrize("stem", UI_STEMS)
def test_ui_links_are_consistent_with_node_sockets(stem):
    """Each link row matches the sockets it joins: the canvas drops links that do not."""
    ui = load_ui(stem)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, link_type in ui["links"]:
        assert src in nodes and dst in nodes, f"link {link_id}: unknown node"
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in (out.get("links") or []), f"link {link_id} missing from node {src} output {src_slot}"
        assert inp.get("link") == link_id, f"link {link_id} missing from node {dst} input {dst_slot}"
        # a wildcard input ("*", e.g. core's PreviewAny) accepts any link type
        assert out["type"] == link_type and inp["type"] in (link_type, "*"), \
            f"link {link_id}: types {out['type']}/{link_type}/{inp['type']}"
    all_links = {link[0] for link in ui["links"]}
    for n in ui["nodes"]:
        for inp in n["inputs"]:
            assert inp.get("link") is None or inp["link"] in all_links, f"node {n['id']}: dangling input link"
        for out in n["outputs"]:
            for link_id in out.get("links") or []:
                assert link_id in all_links, f"node {n['id']}: dangling output link {link_id}"


@pytest.mark.parametrize("stem", API_STEMS)
def test_api_file_is_prompt_format(stem):
    api = load_api(stem)
    assert isinstance(api, dict) and api
    for node_id, node in api.items():
        assert node_id.isdigit(), f"API node id {node_id!r} should be the UI node id as a string"
        assert isinstance(node.get("class_type"), str) and isinstance(node.get("inputs"), dict)
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                assert is_link(value) and value[0] in api, f"node {node_id} input {name}: bad link {value}"


# ---------------------------------------------------------------------------------------------
# UI and API describe the same graph
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", PAIRED)
def test_node_types_agree(stem):
    ui, api = load_ui(stem), load_api(stem)
    ui_types = {str(i): n["type"] for i, n in active_ui_nodes(ui).items()}
    api_types = {i: n["class_type"] for i, n in api.items()}
    assert ui_types == api_types


@pytest.mark.parametrize("stem", PAIRED)
def test_links_agree(stem):
    ui, api = load_ui(stem), load_api(stem)
    nodes = active_ui_nodes(ui)
    ui_links = set()
    for _, src, src_slot, dst, dst_slot, _ in ui["links"]:
        if src not in nodes or dst not in nodes:
            continue
        name = nodes[dst]["inputs"][dst_slot]["name"]
        ui_links.add((str(dst), name, str(src), src_slot))
        value = api[str(dst)]["inputs"].get(name)
        assert value == [str(src), src_slot], (
            f"UI link {src}:{src_slot} -> {dst}.{name} is {value!r} in the API copy")
    api_links = {(i, name, v[0], v[1]) for i, n in api.items() for name, v in n["inputs"].items() if is_link(v)}
    assert api_links == ui_links, f"links only in the API copy: {sorted(api_links - ui_links)}"


@pytest.mark.parametrize("stem", PAIRED)
def test_our_widget_values_match_api_literals(stem, node_classes):
    ui, api = load_ui(stem), load_api(stem)
    checked = 0
    for node_id, node in active_ui_nodes(ui).items():
        if not node["type"].startswith(OUR_PREFIX):
            continue
        cls = node_classes[node["type"]]
        widgets = ui_widget_map(node, input_specs(cls))
        api_inputs = api[str(node_id)]["inputs"]
        linked = {i["name"] for i in node["inputs"] if i.get("link") is not None}
        for name, value in widgets.items():
            if name in linked:
                assert is_link(api_inputs.get(name)), f"node {node_id}.{name}: linked in UI, literal in API"
                continue
            assert name in api_inputs, f"node {node_id}: widget '{name}' missing from the API copy"
            api_value = api_inputs[name]
            same = api_value == value and isinstance(api_value, bool) == isinstance(value, bool)
            assert same, f"node {node_id}.{name}: UI {value!r} != API {api_value!r}"
            checked += 1
        # nothing in the API copy that the UI node does not carry
        extra = set(api_inputs) - set(widgets) - {i["name"] for i in node["inputs"]}
        assert not extra, f"node {node_id}: API inputs {sorted(extra)} have no UI widget or socket"
    if any(n["type"].startswith(OUR_PREFIX) for n in ui["nodes"]):
        assert checked, "no widget values compared"


# ---------------------------------------------------------------------------------------------
# Values our nodes accept
# ---------------------------------------------------------------------------------------------

def check_value(node_id, name, spec_type, opts, value):
    where = f"node {node_id} input '{name}'"
    if isinstance(spec_type, list):
        if name not in DYNAMIC_COMBOS:
            assert value in spec_type, f"{where}: {value!r} not in {spec_type}"
        else:
            assert isinstance(value, str) and value, f"{where}: expected a model name"
        return
    if spec_type == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an INT"
    elif spec_type == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} not a FLOAT"
    elif spec_type == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r} is not a BOOLEAN"
    elif spec_type == "STRING":
        assert isinstance(value, str), f"{where}: {value!r} is not a STRING"
    else:
        raise AssertionError(f"{where}: a literal {value!r} for the socket type {spec_type}; it must be linked")
    if spec_type in ("INT", "FLOAT"):
        if "min" in opts:
            assert value >= opts["min"], f"{where}: {value} < min {opts['min']}"
        if "max" in opts:
            assert value <= opts["max"], f"{where}: {value} > max {opts['max']}"


@pytest.mark.parametrize("stem", API_STEMS)
def test_our_node_inputs_are_valid(stem, node_classes):
    api = load_api(stem)
    for node_id, node in api.items():
        if not node["class_type"].startswith(OUR_PREFIX):
            continue
        assert node["class_type"] in node_classes, f"node {node_id}: unknown node type {node['class_type']}"
        cls = node_classes[node["class_type"]]
        specs = input_specs(cls)
        for name in required_names(cls):
            assert name in node["inputs"], f"node {node_id}: required input '{name}' missing"
        for name, value in node["inputs"].items():
            assert name in specs, f"node {node_id}: '{name}' is not an input of {node['class_type']}"
            spec_type, opts = specs[name]
            if is_link(value):
                src = api[value[0]]
                if src["class_type"] in node_classes:
                    src_types = node_classes[src["class_type"]].RETURN_TYPES
                    assert value[1] < len(src_types), f"node {node_id}.{name}: source slot {value[1]} out of range"
                    if not isinstance(spec_type, list):
                        assert src_types[value[1]] == spec_type, (
                            f"node {node_id}.{name}: {spec_type} fed by {src['class_type']} {src_types[value[1]]}")
                continue
            check_value(node_id, name, spec_type, opts, value)


@pytest.mark.parametrize("stem", PAIRED)
def test_ui_links_into_our_nodes_have_the_right_types(stem, node_classes):
    ui = load_ui(stem)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for _, src, src_slot, dst, dst_slot, link_type in ui["links"]:
        for node_id, slot, side in ((dst, dst_slot, "in"), (src, src_slot, "out")):
            n = nodes[node_id]
            if not n["type"].startswith(OUR_PREFIX):
                continue
            cls = node_classes[n["type"]]
            if side == "out":
                assert cls.RETURN_TYPES[slot] == link_type, f"node {node_id} output {slot}"
                assert n["outputs"][slot]["name"] == getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)[slot]
            else:
                name = n["inputs"][slot]["name"]
                spec_type, _ = input_specs(cls)[name]
                assert spec_type == link_type, f"node {node_id} input {name}: {spec_type} fed {link_type}"


# ---------------------------------------------------------------------------------------------
# Example images
# ---------------------------------------------------------------------------------------------

def referenced_example_files(api) -> list[str]:
    out = []
    for node in api.values():
        name = FILE_INPUTS.get(node["class_type"])
        value = node["inputs"].get(name) if name else None
        if isinstance(value, str):
            out.append(value)
        for v in node["inputs"].values():  # any other literal that names an image file
            if isinstance(v, str) and v.lower().endswith(IMAGE_EXTENSIONS) and v not in out:
                out.append(v)
    return out


@pytest.mark.parametrize("stem", API_STEMS)
def test_referenced_example_images_exist(stem):
    from PIL import Image

    files = referenced_example_files(load_api(stem))
    for name in files:
        path = os.path.join(EXAMPLES, name)
        assert os.path.isfile(path), f"workflows/api/{stem}.json loads '{name}', which is not in example_inputs/"
        if name.lower().endswith(VIDEO_EXTENSIONS):
            # decoded (frames, audio) by the real-ComfyUI tests, whose Python has PyAV; here: the container
            with open(path, "rb") as f:
                head = f.read(12)
            if name.lower().endswith((".mp4", ".mov")):
                assert head[4:8] == b"ftyp", f"{name} is not an MP4/QuickTime file"
            assert os.path.getsize(path) < 200 * 1024, f"{name} should stay small"
            continue
        with Image.open(path) as im:
            im.verify()


@pytest.mark.parametrize("stem", UI_STEMS)
def test_ui_loaders_name_the_same_example_files(stem):
    ui = load_ui(stem)
    for n in ui["nodes"]:
        if n["type"] in FILE_INPUTS:
            name = n["widgets_values"][0]
            assert os.path.isfile(os.path.join(EXAMPLES, name)), f"node {n['id']}: '{name}' not in example_inputs/"


def test_example_images_regenerate(tmp_path):
    """scripts/make_example_images.py draws the shipped images (pixels compared, not PNG bytes)."""
    import sys

    import numpy as np
    from PIL import Image

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_example_images
    finally:
        sys.path.pop(0)
    for path in make_example_images.write_all(str(tmp_path)):
        shipped = os.path.join(EXAMPLES, os.path.basename(path))
        assert os.path.isfile(shipped), f"{os.path.basename(path)} is made by the script but not shipped"
        assert os.path.getsize(shipped) < 300 * 1024
        with Image.open(path) as a, Image.open(shipped) as b:
            assert a.size == b.size and a.mode == b.mode
            diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert diff.mean() < 1.0, f"{shipped} differs from what the script draws (mean |diff| {diff.mean():.2f})"

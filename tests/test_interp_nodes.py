"""The interpolation nodes as ComfyUI calls them, run without ComfyUI against a tiny AnimeInterp."""
import importlib

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.interpolate import tiny
from animevideo.pipelines.model_cache import MODEL_CACHE

nodes = importlib.import_module("animevideo.nodes.interpolate")
NAME = "anime_interp_full.ckpt"


@pytest.fixture(scope="module")
def interp_models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("interp_models")
    tiny.write_tiny_interpolator(str(d))
    from safetensors.torch import save_file

    save_file({"body.0.weight": torch.zeros(4, 3, 3, 3), "body.0.bias": torch.zeros(4)},
              str(d / "interpolation" / "realesr-animevideov3.safetensors"))
    return str(d)


@pytest.fixture
def env(interp_models_dir, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", interp_models_dir)
    return interp_models_dir


@pytest.fixture
def handle(env):
    return nodes.AnimeVideoLoadInterpolator().load(NAME, "auto")[0]


def clip(drawings, h=128, w=128, shot=0):
    """IMAGE clip: a square moving 6 px per drawing; ``shot`` changes the whole palette."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    bg = [(0.85, 0.8, 0.7), (0.1, 0.2, 0.45)][shot]
    fg = [(0.9, 0.2, 0.15), (0.3, 0.9, 0.3)][shot]
    out = []
    for d in drawings:
        img = torch.empty(h, w, 3)
        img[:] = torch.tensor(bg)
        img[((xx - 20 - 6 * d).abs() < 12) & ((yy - h // 2).abs() < 12)] = torch.tensor(fg)
        out.append(img)
    return torch.stack(out)


def run_node(handle, frames, **kw):
    """The node's whole answer: {"ui": {"text": [info]}, "result": (frames, fps, info, timeline)}."""
    args = dict(source_fps=24.0, multiplier=2, target_fps=0.0, dedup=True, dedup_threshold=0.02,
                scene_cut_threshold=0.4)
    args.update(kw)
    return nodes.AnimeVideoInterpolate().interpolate(handle, frames, **args)


def run(handle, frames, **kw):
    """(frames, fps, info)"""
    return run_node(handle, frames, **kw)["result"][:3]


def test_nodes_are_prefixed_with_tooltips_and_category():
    assert set(nodes.NODE_CLASS_MAPPINGS) == {"AnimeVideoLoadInterpolator", "AnimeVideoInterpolate"}
    assert set(nodes.NODE_DISPLAY_NAME_MAPPINGS) == set(nodes.NODE_CLASS_MAPPINGS)
    for cls in nodes.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "AnimeVideo/Interpolate" and callable(getattr(cls, cls.FUNCTION))
        for section in ("required", "optional"):
            for name, value in cls.INPUT_TYPES().get(section, {}).items():
                assert len(value) == 2 and value[1].get("tooltip"), name
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert nodes.AnimeVideoInterpolate.RETURN_TYPES == ("IMAGE", "FLOAT", "STRING", "IMAGE")


def test_loader_lists_loads_and_caches(env):
    names = nodes.AnimeVideoLoadInterpolator.INPUT_TYPES()["required"]["model_name"][0]
    assert NAME in names
    first = nodes.AnimeVideoLoadInterpolator().load(NAME, "auto")[0]
    hits = MODEL_CACHE.hits
    second = nodes.AnimeVideoLoadInterpolator().load(NAME, "fp32")[0]  # auto is fp32
    assert second.model is first.model and MODEL_CACHE.hits == hits + 1
    assert nodes.AnimeVideoLoadInterpolator.VALIDATE_INPUTS(NAME) is True


def test_missing_model_message_names_folder_file_and_source(env):
    msg = nodes.AnimeVideoLoadInterpolator.VALIDATE_INPUTS("anime_interp.ckpt")
    assert isinstance(msg, str)
    for part in (env, "interpolation", "anime_interp_full.ckpt", "lisiyao21/AnimeInterp"):
        assert part in msg


@pytest.mark.parametrize("name", ["../anime_interp_full.ckpt", "/etc/passwd", "interpolation/../../x.ckpt"])
def test_model_names_cannot_leave_the_model_folder(env, name):
    msg = nodes.AnimeVideoLoadInterpolator.VALIDATE_INPUTS(name)
    assert isinstance(msg, str) and "model_name" in msg
    with pytest.raises((AnimeVideoInputError, AnimeVideoModelError)):
        nodes.AnimeVideoLoadInterpolator().load(name)


def test_a_non_interpolator_file_is_refused_with_what_it_holds(env):
    with pytest.raises(AnimeVideoModelError) as e:
        nodes.AnimeVideoLoadInterpolator().load("realesr-animevideov3.safetensors")
    assert "not an AnimeInterp checkpoint" in str(e.value) and "upscaler" in str(e.value)


def test_on_twos_clip_at_double_rate(handle):
    frames = clip([0, 0, 1, 1, 2, 2])
    out, fps, info = run(handle, frames)
    assert out.shape == (12, 128, 128, 3) and fps == 48.0
    assert "3 distinct drawings in 6 frames, on twos" in info
    assert "6 interpolated over 2 drawing pairs" in info
    for j, src in ((0, 0), (4, 2), (8, 4)):  # the drawings at their own times are the inputs
        assert torch.equal(out[j], frames[src])
    assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("multiplier", [4, 8])
def test_multipliers(handle, multiplier):
    out, fps, _ = run(handle, clip([0, 1]), multiplier=multiplier, dedup=False)
    assert out.shape[0] == 2 * multiplier and fps == 24.0 * multiplier


def test_arbitrary_target_fps_sets_the_frame_count(handle):
    frames = clip([0, 0, 1, 1, 2, 2, 3, 3])
    out, fps, info = run(handle, frames, target_fps=30.0)
    assert out.shape[0] == 10 and fps == 30.0 and "10 frames at 30 fps from 8 at 24 fps" in info


def test_scene_cut_is_never_crossed(handle):
    frames = torch.cat([clip([0, 0, 1, 1]), clip([0, 0, 1, 1], shot=1)])
    out, fps, info = run(handle, frames, multiplier=2)
    assert out.shape[0] == 16 and "Scene cuts (threshold 0.4): 1, before frame 4" in info
    # the last drawing before the cut is held up to the cut, the first after it starts clean
    for j in range(4, 8):
        assert torch.equal(out[j], frames[2])
    assert torch.equal(out[8], frames[4])
    out_off, _, info_off = run(handle, frames, multiplier=2, scene_cut_threshold=1.0)
    assert "detection off" in info_off and not torch.equal(out_off[6], frames[2])  # blended when told to


def test_one_frame_clip_is_returned_unchanged_with_a_note(handle):
    frames = clip([0])
    out, fps, info = run(handle, frames, multiplier=4)
    assert torch.equal(out, frames) and fps == 96.0 and "Only 1 frame" in info


def test_odd_sizes_and_alpha(handle):
    frames = torch.cat([clip([0, 1], h=67, w=129), torch.ones(2, 67, 129, 1)], dim=-1)  # RGBA
    out, _, info = run(handle, frames, dedup=False)
    assert out.shape == (4, 67, 129, 3) and "padded from 129x67 to 136x128" in info
    assert torch.equal(out[0], frames[0, ..., :3])


@pytest.mark.parametrize("kw,name", [(dict(multiplier=0), "multiplier"), (dict(multiplier=-2), "multiplier"),
                                     (dict(source_fps=0.0), "source_fps"), (dict(target_fps=-1.0), "target_fps"),
                                     (dict(dedup_threshold=1.5), "dedup_threshold"),
                                     (dict(flow_iterations=0), "flow_iterations")])
def test_bad_numbers_are_named(handle, kw, name):
    with pytest.raises(AnimeVideoInputError, match=name):
        run(handle, clip([0, 1]), **kw)


def test_multiplier_is_ignored_when_a_target_fps_is_given(handle):
    out, fps, _ = run(handle, clip([0, 1]), multiplier=0, target_fps=48.0, dedup=False)
    assert fps == 48.0 and out.shape[0] == 4


def test_bad_frames_are_named(handle):
    with pytest.raises(AnimeVideoInputError, match="frames"):
        run(handle, torch.zeros(0, 128, 128, 3))
    with pytest.raises(AnimeVideoInputError, match="frames"):
        run(handle, torch.zeros(128, 128, 3))
    with pytest.raises(AnimeVideoInputError, match="interpolator"):
        run("not a model", clip([0, 1]))


def test_multiplier_one_fills_in_repeated_frames_and_needs_no_model_on_ones(handle, monkeypatch):
    twos = clip([0, 0, 1, 1, 2, 2])
    out, fps, info = run(handle, twos, multiplier=1)
    assert out.shape[0] == 6 and fps == 24.0 and "2 interpolated over 2 drawing pairs" in info
    assert torch.equal(out[0], twos[0]) and torch.equal(out[2], twos[2])
    assert not torch.equal(out[1], twos[1])  # the repeat became the in-between of drawings 0 and 1

    def no_model(*a, **k):
        raise AssertionError("the model should not run")

    monkeypatch.setattr(handle.model, "encode_frame", no_model)
    ones = clip([0, 1, 2])
    out, _, _ = run(handle, ones, multiplier=1)
    assert torch.equal(out, ones)


def test_timeline_output_and_ui_text_show_what_was_found(handle):
    """The 4th output draws the analysis the frames were made from; the info text also goes to the node's ui."""
    from animevideo.pipelines import storyboard as sb
    from animevideo.pipelines.interpolate import timing

    frames = torch.cat([clip([0, 0, 1, 1]), clip([0, 0, 1, 1], shot=1)])
    answer = run_node(handle, frames, multiplier=2)
    out, fps, info, timeline = answer["result"]
    assert answer["ui"] == {"text": [info]}
    assert timeline.ndim == 4 and timeline.shape[0] == 1 and timeline.shape[-1] == 3 and timeline.dtype == torch.float32
    analysis = timing.analyze_clip(frames, True, 0.02, 0.4)
    plan = timing.plan_retiming(analysis, 24.0, 48.0)
    layout = sb.timeline_layout(8, len(plan), 0.5, thumb_h=40)
    pixels = (timeline[0] * 255).round().to(torch.uint8).numpy()
    y = (layout.output_y[0] + layout.output_y[1]) // 2
    x0, x1 = layout.cut_bar(4)
    assert tuple(pixels[y, (x0 + x1) // 2]) == sb.CUT  # the cut before frame 4
    for j, f in enumerate(plan):
        c0, c1 = layout.output_cell(j)
        if not (x0 <= (c0 + c1 - 1) // 2 < x1):
            assert tuple(pixels[y, (c0 + c1 - 1) // 2]) == (sb.COPIED if f.is_copy else sb.NEW), j
    assert sum(not f.is_copy for f in plan) == int(info.split(" interpolated over")[0].rsplit(" ", 1)[1])


def test_one_frame_clip_still_draws_a_timeline(handle):
    answer = run_node(handle, clip([0]), multiplier=2)
    assert answer["result"][3].shape[0] == 1 and answer["ui"]["text"][0] == answer["result"][2]

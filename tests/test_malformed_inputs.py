"""Malformed values (possible through ComfyUI's API) get an error naming the input and what is allowed, never an
internal error: NUL in model names, non-finite FLOATs, wrong-rank / empty / integer IMAGE and MASK tensors."""
from __future__ import annotations

import math

import pytest
import torch

from animevideo.nodes import NODE_CLASS_MAPPINGS
from animevideo.pipelines.errors import AnimeVideoInputError

NUL = "svd_xt\x00.safetensors"

# (node, the name inputs of its VALIDATE_INPUTS, the other arguments it takes)
LOADERS = [
    ("AnimeVideoLoadSVD", ["ckpt_name"], {}),
    ("AnimeVideoLoadLVCD", ["ckpt_name", "lvcd_name"], {}),
    ("AnimeVideoLoadUpscaler", ["model_name"], {}),
    ("AnimeVideoLoadInterpolator", ["model_name"], {}),
    ("AnimeVideoLoadGANime", ["vqgan_name", "transformer_name"], {}),
    ("AnimeVideoLoadAniSora", ["transformer_name", "vae_name"], {}),
    ("AnimeVideoLineart", ["model_name"], {"mode": "extract"}),
]


def good_names(models_env):
    """A valid name for every name input (files written by scripts/make_tiny_models.py)."""
    out = {}
    for node, names, _ in LOADERS:
        spec = NODE_CLASS_MAPPINGS[node].INPUT_TYPES()["required"]
        for name in names:
            choices = spec[name][0]
            out[(node, name)] = spec[name][1].get("default") if spec[name][1].get("default") in choices else \
                choices[-1]
    return out


@pytest.mark.parametrize("node,names,extra", LOADERS, ids=[n for n, _, _ in LOADERS])
def test_nul_in_a_model_name_is_rejected_at_validation(node, names, extra, models_env):
    cls = NODE_CLASS_MAPPINGS[node]
    valid = good_names(models_env)
    for bad in names:
        args = {n: valid[(node, n)] for n in names}
        args[bad] = NUL
        answer = cls.VALIDATE_INPUTS(**args, **extra)
        assert isinstance(answer, str), f"{node}.{bad}: VALIDATE_INPUTS answered {answer!r}"
        assert answer.startswith(f"{bad}:") and "NUL" in answer, answer


def test_valid_names_still_validate(models_env):
    valid = good_names(models_env)
    for node, names, extra in LOADERS:
        if node == "AnimeVideoLoadAniSora":  # the tiny transformer is a single file: it needs the VAE file
            args = {"transformer_name": valid[(node, "transformer_name")], "vae_name": "wan_2.1_vae.safetensors"}
        else:
            args = {n: valid[(node, n)] for n in names}
        assert NODE_CLASS_MAPPINGS[node].VALIDATE_INPUTS(**args, **extra) is True, (node, args)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0, -24.0])
def test_interpolate_source_fps_must_be_a_real_rate(value):
    from animevideo.nodes.interpolate import AnimeVideoInterpolate, InterpolatorHandle

    handle = InterpolatorHandle(model=None, name="x", keep_on_gpu=False)
    with pytest.raises(AnimeVideoInputError, match=r"^source_fps: .* give"):
        AnimeVideoInterpolate().interpolate(handle, torch.rand(2, 8, 8, 3), value, 2)


def node_inputs(kind):
    for node, cls in sorted(NODE_CLASS_MAPPINGS.items()):
        types_ = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, spec in types_.get(section, {}).items():
                if spec[0] == kind:
                    yield node, name, spec[1] if len(spec) > 1 else {}


FLOAT_INPUTS = list(node_inputs("FLOAT"))
IMAGE_INPUTS = list(node_inputs("IMAGE"))
MASK_INPUTS = list(node_inputs("MASK"))


def call(node, **kwargs):
    cls = NODE_CLASS_MAPPINGS[node]
    return getattr(cls(), cls.FUNCTION)(**kwargs)


@pytest.mark.parametrize("node,name,opts", FLOAT_INPUTS, ids=[f"{n}.{i}" for n, i, _ in FLOAT_INPUTS])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_every_float_input_refuses_non_finite_values(node, name, opts, value):
    with pytest.raises(AnimeVideoInputError, match=rf"^{name}: {value!r} is not a finite number"):
        call(node, **{name: value})


BAD_IMAGES = {
    "rank 3": (torch.rand(8, 8, 3), "channels"),
    "2 channels": (torch.rand(1, 8, 8, 2), "channels"),
    "empty batch": (torch.rand(0, 8, 8, 3), "empty"),
    "integer": (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), "floats"),
    "not a tensor": ([[0.5]], "IMAGE tensor"),
}


@pytest.mark.parametrize("node,name,opts", IMAGE_INPUTS, ids=[f"{n}.{i}" for n, i, _ in IMAGE_INPUTS])
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_every_image_input_refuses_malformed_tensors(node, name, opts, case):
    value, words = BAD_IMAGES[case]
    with pytest.raises(AnimeVideoInputError, match=rf"^{name}: .*{words}"):
        call(node, **{name: value})


BAD_MASKS = {
    "rank 4": (torch.rand(1, 8, 8, 1), "shape"),
    "empty": (torch.rand(0, 8, 8), "shape"),
    "integer": (torch.ones(8, 8, dtype=torch.int64), "floats"),
}


@pytest.mark.parametrize("node,name,opts", MASK_INPUTS, ids=[f"{n}.{i}" for n, i, _ in MASK_INPUTS])
@pytest.mark.parametrize("case", sorted(BAD_MASKS))
def test_every_mask_input_refuses_malformed_tensors(node, name, opts, case):
    value, words = BAD_MASKS[case]
    with pytest.raises(AnimeVideoInputError, match=rf"^{name}: .*{words}"):
        call(node, **{name: value})


def test_every_node_is_guarded():
    for node, cls in NODE_CLASS_MAPPINGS.items():
        assert getattr(getattr(cls, cls.FUNCTION), "_animevideo_guarded", False), node
    assert FLOAT_INPUTS and IMAGE_INPUTS and MASK_INPUTS

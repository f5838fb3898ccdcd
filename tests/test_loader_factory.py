"""The loader-node factory (nodes/common.py make_loader_node) and the plain placement outside ComfyUI.

The six loader nodes are built by the factory; their ids, inputs, widget order, VALIDATE_INPUTS arguments (which
ComfyUI reads with getfullargspec: the inputs it names are left to the node to check) and outputs are the ones
saved workflows depend on, written out here.
"""
import inspect
import types

import pytest
import torch

from animevideo.nodes import NODE_CLASS_MAPPINGS
from animevideo.nodes import comfy_bridge as bridge
from animevideo.nodes import common
from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoMemoryError
from animevideo.pipelines.model_cache import ModelCache

# node id: (required inputs in widget order, optional inputs, VALIDATE_INPUTS arguments, output type)
LOADERS = {
    "AnimeVideoLoadSVD": (["ckpt_name", "dtype"], ["keep_on_gpu", "download_if_missing"],
                          ["cls", "ckpt_name", "dtype", "download_if_missing"], "ANIMEVIDEO_SVD"),
    "AnimeVideoLoadLVCD": (["ckpt_name", "lvcd_name", "dtype"], ["keep_on_gpu", "download_if_missing"],
                           ["cls", "ckpt_name", "lvcd_name", "dtype", "download_if_missing"], "ANIMEVIDEO_LVCD"),
    "AnimeVideoLoadAniSora": (["transformer_name", "vae_name", "dtype"], ["keep_on_gpu", "download_if_missing"],
                              ["cls", "transformer_name", "vae_name", "dtype", "download_if_missing"],
                              "ANIMEVIDEO_ANISORA"),
    "AnimeVideoLoadAniSoraWan22": (["high_noise_name", "low_noise_name", "vae_name", "dtype"],
                                   ["keep_on_gpu", "download_if_missing"],
                                   ["cls", "high_noise_name", "low_noise_name", "vae_name", "dtype",
                                    "download_if_missing"], "ANIMEVIDEO_ANISORA"),
    "AnimeVideoLoadUpscaler": (["model_name", "dtype"], ["keep_on_gpu", "download_if_missing"],
                               ["cls", "model_name", "dtype", "download_if_missing"], "ANIMEVIDEO_UPSCALER"),
    "AnimeVideoLoadInterpolator": (["model_name", "dtype"], ["keep_on_gpu"], ["cls", "model_name", "dtype"],
                                   "ANIMEVIDEO_INTERPOLATOR"),
    "AnimeVideoLoadModelScopeT2V": (["model_name", "dtype"], ["keep_on_gpu"], ["cls", "model_name", "dtype"],
                                    "ANIMEVIDEO_MODELSCOPE_T2V"),
    "AnimeVideoLoadI2VGenXL": (["model_name", "dtype"], ["keep_on_gpu"], ["cls", "model_name", "dtype"],
                               "ANIMEVIDEO_I2VGENXL"),
    "AnimeVideoLoadStreamingT2V": (["ckpt_name", "dtype"], ["keep_on_gpu"], ["cls", "ckpt_name", "dtype"],
                                   "ANIMEVIDEO_STREAMING_T2V"),
    "AnimeVideoLoadGANime": (["vqgan_name", "transformer_name", "dtype"], ["keep_on_gpu"],
                             ["cls", "vqgan_name", "transformer_name", "dtype"], "ANIMEVIDEO_GANIME"),
}


@pytest.mark.parametrize("node_id", sorted(LOADERS))
def test_the_loader_nodes_come_from_the_factory_with_their_inputs_unchanged(node_id):
    required, optional, validate_args, output = LOADERS[node_id]
    cls = NODE_CLASS_MAPPINGS[node_id]
    assert cls.loader_spec.node_id == node_id and cls.__name__ == node_id
    spec = cls.INPUT_TYPES()
    assert list(spec["required"]) == required and list(spec.get("optional", {})) == optional
    assert spec["required"]["dtype"][1]["default"] == "auto"
    assert spec["optional"]["keep_on_gpu"] == ("BOOLEAN", {"default": False,
                                                           "tooltip": spec["optional"]["keep_on_gpu"][1]["tooltip"]})
    assert inspect.getfullargspec(cls.VALIDATE_INPUTS).args == validate_args
    assert cls.RETURN_TYPES == (output,) and cls.FUNCTION == "load"
    assert list(inspect.signature(cls.load).parameters) == ["self"] + required + optional


class Bundle:
    """A pack model in the shape the pipelines use: torch parts, a device, to()."""

    def __init__(self):
        self.net = torch.nn.Linear(4, 4)
        self.moves = []
        self.device = torch.device("cpu")

    def to(self, device):  # where it would be: the test's "device" is a name only
        self.moves.append(str(device))
        self.device = torch.device(device)
        return self

    def modules_for_memory(self):
        return [self.net]


def fake_spec(loads, checks_seen, **kw):
    def open_(model_name, dtype, download_if_missing):
        return ("fake", model_name, dtype), lambda: loads.append(model_name) or Bundle(), model_name, None

    def checks(model_name, download_if_missing):
        return [lambda: checks_seen.append((model_name, download_if_missing))]

    return common.LoaderSpec(node_id="AnimeVideoLoadFake", description="a fake loader",
                             model_inputs=lambda: {"model_name": (["a", "b"], {"tooltip": "which"})},
                             dtypes=["auto", "fp32"], dtype_tooltip="precision", return_type="FAKE",
                             return_name="fake", output_tooltip="the fake", category="AnimeVideo/Test",
                             open=open_, checks=checks, **kw)


def test_a_factory_loader_shares_one_model_per_file_and_carries_keep_on_gpu(monkeypatch):
    cache = ModelCache(budget_bytes=0)
    monkeypatch.setattr(common, "MODEL_CACHE", cache)
    loads, seen = [], []
    Node = common.make_loader_node(fake_spec(loads, seen))
    first = Node().load("a", "auto")[0]
    second = Node().load(model_name="a", dtype="auto", keep_on_gpu=True)[0]
    assert loads == ["a"] and second.model is first.model and isinstance(first.model, Bundle)
    assert (first.keep_on_gpu, second.keep_on_gpu) == (False, True)
    assert Node().load("b", "auto")[0].model is not first.model and loads == ["a", "b"]
    assert Node.VALIDATE_INPUTS("a") is True and seen == [("a", common.DOWNLOAD_DEFAULT)]
    assert "dtype: 'fp64' is not one of auto, fp32" in Node.VALIDATE_INPUTS("a", "fp64")
    with pytest.raises(AnimeVideoInputError, match="dtype: 'fp64'"):
        Node().load("a", "fp64")
    # Unload Models: the output lets go of the model and loads it again when used
    cache.release_all()
    assert first.ref.released and isinstance(first.model, Bundle) and loads == ["a", "b", "a"]


def test_a_factory_loader_checks_its_dependencies(monkeypatch):
    from animevideo.pipelines import dependencies

    monkeypatch.setattr(common, "MODEL_CACHE", ModelCache(budget_bytes=0))
    required = []
    monkeypatch.setattr(dependencies, "require", required.append)
    Node = common.make_loader_node(fake_spec([], [], requires="SVD"))
    Node().load("a", "auto")
    Node.VALIDATE_INPUTS("a")
    assert required == ["SVD", "SVD"]


def test_outside_comfyui_a_run_moves_the_model_and_puts_it_back_unless_kept(monkeypatch):
    assert not bridge.IN_COMFYUI
    bundle = Bundle()
    managed = bridge.manage(bundle)
    assert isinstance(managed, bridge.PlainManaged) and managed.pack_model is bundle
    monkeypatch.setattr(bridge, "torch_device", lambda: torch.device("cuda"))  # a device other than the offload one
    monkeypatch.setattr(bridge, "empty_cache", lambda: None)
    with common.ModelOnDevice(managed, keep_on_gpu=False) as model:
        assert model is bundle and bundle.device.type == "cuda"
    assert bundle.moves == ["cuda", "cpu"] and bundle.device.type == "cpu"
    with common.ModelOnDevice(managed, keep_on_gpu=True):
        pass
    with common.ModelOnDevice(managed, keep_on_gpu=True):
        pass
    assert bundle.moves[2:] == ["cuda"] and bundle.device.type == "cuda"  # kept there, moved once


def test_out_of_memory_during_a_run_is_the_packs_error_with_advice():
    def run():
        with common.ModelOnDevice(Bundle(), False, 1 << 30, "the test run", "Lower the size."):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(AnimeVideoMemoryError) as e:
        run()
    msg = str(e.value)
    assert msg.startswith("Out of memory: the test run needs about 1.0 GiB") and "Lower the size." in msg
    assert "Tried to allocate 2.00 GiB" in msg
    with pytest.raises(ValueError):  # anything else passes through as it is
        with common.ModelOnDevice(Bundle(), False, 0, "x", "y"):
            raise ValueError("not memory")


def test_handles_built_from_a_model_still_work():
    """Tests and scripts build handles from a bare model: it is placed like a managed one."""
    bundle = Bundle()
    handle = common.ModelHandle(bundle, True)
    assert handle.model is bundle and handle.keep_on_gpu and handle.managed.pack_model is bundle
    assert types.SimpleNamespace(model=None).model is None

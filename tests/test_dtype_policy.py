"""One dtype policy: auto keeps the file's half/fp8 storage, else picks by device and free memory; explicit
choices are honoured or refused by name; ComfyUI's dtype flags reach every loader through one hook."""
import pytest
import torch
from safetensors.torch import save_file

from animevideo.pipelines import dtype_policy
from animevideo.pipelines.dtype_policy import resolve_dtype
from animevideo.pipelines.errors import AnimeVideoInputError

CPU, GPU = torch.device("cpu"), torch.device("mps")  # device objects only: nothing runs on them here
F8 = torch.float8_e4m3fn
GB = 2 ** 30


@pytest.fixture(autouse=True)
def no_flags():
    previous = dtype_policy.set_flag_overrides(None)
    yield
    dtype_policy.set_flag_overrides(previous)


def pair(choice):
    return choice.compute, choice.storage


def test_auto_on_the_cpu_is_fp32_whatever_the_file():
    for file_dtype in (None, torch.float32, torch.float16, torch.bfloat16):
        assert pair(resolve_dtype("auto", CPU, file_dtype=file_dtype)) == (torch.float32, torch.float32)


def test_auto_on_a_gpu_keeps_the_files_half_type_else_the_models_half():
    assert pair(resolve_dtype("auto", GPU, file_dtype=torch.bfloat16)) == (torch.bfloat16, torch.bfloat16)
    assert pair(resolve_dtype("auto", GPU, file_dtype=torch.float16)) == (torch.float16, torch.float16)
    assert pair(resolve_dtype("auto", GPU, file_dtype=torch.float32)) == (torch.float16, torch.float16)
    assert pair(resolve_dtype("auto", GPU, half=torch.bfloat16)) == (torch.bfloat16, torch.bfloat16)
    # a model that does not run in the file's half type gets one it does run in
    assert resolve_dtype("auto", GPU, file_dtype=torch.float16, supports_half=False).compute == torch.bfloat16
    assert resolve_dtype("auto", GPU, supports_half=False, supports_bf16=False).compute == torch.float32
    assert resolve_dtype("auto", GPU, auto_half=False).compute == torch.float32


def test_auto_keeps_an_fp8_file_fp8_where_the_model_can_store_fp8():
    assert pair(resolve_dtype("auto", GPU, file_dtype=F8, supports_fp8=True)) == (torch.float16, F8)
    assert pair(resolve_dtype("auto", CPU, file_dtype=F8, supports_fp8=True)) == (torch.float32, F8)
    # a model without fp8 storage upcasts the file instead
    assert pair(resolve_dtype("auto", GPU, file_dtype=F8)) == (torch.float16, torch.float16)


def test_auto_falls_back_to_fp8_storage_when_the_half_weights_would_not_fit():
    big = dict(file_dtype=torch.float32, weights_nbytes=10 * GB, supports_fp8=True)  # 5 GB in fp16
    assert pair(resolve_dtype("auto", GPU, free_bytes=8 * GB, **big)) == (torch.float16, torch.float16)
    tight = resolve_dtype("auto", GPU, free_bytes=4 * GB, **big)
    assert pair(tight) == (torch.float16, F8) and "would not fit" in tight.reason
    # without fp8 support the half type stays (the memory check refuses the run later, with its own advice)
    assert pair(resolve_dtype("auto", GPU, free_bytes=1 * GB, file_dtype=torch.float32, weights_nbytes=10 * GB)) == \
        (torch.float16, torch.float16)


def test_explicit_choices_are_honoured_or_refused_by_name():
    assert pair(resolve_dtype("bf16", CPU)) == (torch.bfloat16, torch.bfloat16)
    assert pair(resolve_dtype("fp16", CPU, half_on_cpu=False)) == (torch.float32, torch.float32)
    assert pair(resolve_dtype("fp8_e4m3fn", GPU, supports_fp8=True)) == (torch.float16, F8)
    with pytest.raises(AnimeVideoInputError, match="^dtype: this model does not support fp8_e4m3fn"):
        resolve_dtype("fp8_e4m3fn", GPU)
    with pytest.raises(AnimeVideoInputError, match="does not support fp16"):
        resolve_dtype("fp16", GPU, supports_half=False)
    with pytest.raises(AnimeVideoInputError, match="^precision: 'int4' is not one of auto, fp32"):
        resolve_dtype("int4", CPU, input_name="precision")


def test_flag_overrides_apply_to_auto_for_their_role_only():
    forced = {"vae": torch.bfloat16, "diffusion": F8}
    dtype_policy.set_flag_overrides(lambda role, device: forced.get(role))
    assert pair(resolve_dtype("auto", GPU, role="vae")) == (torch.bfloat16, torch.bfloat16)
    assert pair(resolve_dtype("auto", GPU, role="diffusion", supports_fp8=True)) == (torch.float16, F8)
    assert pair(resolve_dtype("auto", GPU, role="other")) == (torch.float16, torch.float16)
    assert resolve_dtype("fp32", GPU, role="vae").compute == torch.float32  # the node's explicit choice wins
    dtype_policy.set_flag_overrides(None)
    assert resolve_dtype("auto", GPU, role="vae").compute == torch.float16


def test_the_loaders_use_the_policy_and_its_flags():
    from animevideo.pipelines.ganime import loader as ganime_loader
    from animevideo.pipelines.interpolate import loader as interp_loader
    from animevideo.pipelines.svd import loader as svd_loader
    from animevideo.pipelines.upscale import loader as upscale_loader

    assert svd_loader.resolve_dtype("auto", "cpu") == torch.float32
    assert svd_loader.resolve_dtype("auto", GPU) == torch.float16
    assert upscale_loader.resolve_dtype("fp16", "cpu") == torch.float32  # half convs on a CPU run in fp32
    assert upscale_loader.resolve_dtype("auto", GPU, supports_half=False) == torch.bfloat16
    assert interp_loader.resolve_dtype("auto", GPU) == torch.float32  # released fp32 numerics
    assert ganime_loader.resolve_dtype("auto", GPU) == torch.float16
    dtype_policy.set_flag_overrides(lambda role, device: torch.bfloat16 if role == "diffusion" else None)
    assert svd_loader.resolve_dtype("auto", GPU) == torch.bfloat16  # --bf16-unet reaches the SVD UNet
    assert upscale_loader.resolve_dtype("auto", GPU) == torch.float16  # and not the upscaler
    with pytest.raises(AnimeVideoInputError, match="^dtype: 'fp64'"):
        interp_loader.resolve_dtype("fp64")


def test_storage_dtype_is_read_from_the_header(tmp_path):
    from animevideo.pipelines.checkpoint_io import storage_dtype

    mixed = tmp_path / "mixed.safetensors"
    save_file({"big": torch.zeros(64, 64, dtype=torch.float16), "norm": torch.zeros(8),
               "index": torch.zeros(1000, dtype=torch.int64)}, str(mixed))
    assert storage_dtype(str(mixed)) == torch.float16  # most floating bytes; integer tensors do not count
    fp8 = tmp_path / "fp8.safetensors"
    save_file({"w": torch.zeros(64, 64).to(F8), "scale": torch.ones(1)}, str(fp8))
    assert storage_dtype(str(fp8)) == F8
    assert storage_dtype(str(tmp_path / "x.pth")) is None and storage_dtype(str(tmp_path)) is None


def test_comfyui_flags_through_the_bridge_hook():
    """nodes/comfy_bridge.py maps ComfyUI's parsed flags (comfy.cli_args.args, here a stand-in) to roles and
    installs them through the policy's one hook: --fp16-unet / --fp8_e4m3fn-unet reach the SVD UNet and the Wan
    transformer on auto only, --bf16-vae the VAE role, and a flag for a type a model cannot hold is ignored."""
    from types import SimpleNamespace

    from animevideo.nodes import comfy_bridge
    from animevideo.pipelines.backbones.wan import loader as wan_loader
    from animevideo.pipelines.svd import loader as svd_loader
    from animevideo.pipelines.upscale import loader as upscale_loader

    args = SimpleNamespace(fp16_unet=True, bf16_unet=False, fp32_unet=False, bf16_vae=True,
                           fp8_e4m3fn_text_enc=True)
    comfy_bridge.install_dtype_flags(args)
    assert svd_loader.resolve_dtype("auto", "cpu") == torch.float16
    assert svd_loader.resolve_dtype("fp32", "cpu") == torch.float32  # the node's explicit choice wins
    assert wan_loader.resolve_dtype("auto", CPU) == (torch.float16, None)
    assert wan_loader.resolve_dtype("bf16", CPU) == (torch.bfloat16, None)
    assert pair(resolve_dtype("auto", CPU, role="vae")) == (torch.bfloat16, torch.bfloat16)
    assert pair(resolve_dtype("auto", CPU, role="text_encoder")) == (torch.float32, torch.float32)  # no fp8 here
    assert pair(resolve_dtype("auto", CPU, role="text_encoder", supports_fp8=True)) == (torch.float32, F8)
    assert upscale_loader.resolve_dtype("auto", "cpu") == torch.float32  # no flag for the "other" role
    comfy_bridge.install_dtype_flags(SimpleNamespace(fp8_e4m3fn_unet=True))
    assert wan_loader.resolve_dtype("auto", CPU) == (torch.float32, F8)  # fp8 storage, computing in fp32 on CPU
    assert svd_loader.resolve_dtype("auto", "cpu") == torch.float32  # the SVD UNet does not keep fp8
    comfy_bridge.install_dtype_flags(SimpleNamespace())
    assert svd_loader.resolve_dtype("auto", "cpu") == torch.float32 and wan_loader.resolve_dtype("auto", CPU) == (
        torch.float32, None)

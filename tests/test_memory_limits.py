"""Runs that would not fit the RAM are refused before they start, with the size and what to change; a failed
allocation becomes the same kind of error instead of a raw allocator RuntimeError."""
from __future__ import annotations

import types

import pytest
import torch

from animevideo.nodes import comfy_bridge as bridge
from animevideo.pipelines import memory
from animevideo.pipelines.errors import AnimeVideoMemoryError
from animevideo.pipelines.upscale import stream, tiny as up_tiny

GIB = 2 ** 30
ALLOCATOR_FAILURE = ("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: not enough memory: you tried "
                     "to allocate 3221225472 bytes.")


def big_view(n, h, w, dtype=torch.float32):
    """An IMAGE batch of any size that takes no memory (one pixel, broadcast)."""
    return torch.full((1, 1, 1, 3), 0.5, dtype=dtype).expand(n, h, w, 3)


@pytest.fixture
def ram(monkeypatch):
    """Set the RAM the pack sees, in GiB (through ANIMEVIDEO_MAX_RAM_GB, the user-facing cap)."""
    monkeypatch.setenv("ANIMEVIDEO_DEVICE", "cpu")

    def set_gib(gib):
        monkeypatch.setenv("ANIMEVIDEO_MAX_RAM_GB", str(gib))
    return set_gib


# ---------------------------------------------------------------------------------------------
# The shared helper
# ---------------------------------------------------------------------------------------------

def test_mem_available_is_read_from_proc_meminfo(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n")
    assert memory.proc_mem_available(str(f)) == 8000000 * 1024
    assert memory.proc_mem_available(str(tmp_path / "missing")) is None


def test_the_cap_lowers_what_is_available(monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MAX_RAM_GB", "2")
    assert memory.apply_limit(10 * GIB) == 2 * GIB
    assert memory.apply_limit(GIB) == GIB
    assert memory.apply_limit(None) == 2 * GIB
    monkeypatch.setenv("ANIMEVIDEO_MAX_RAM_GB", "")
    assert memory.apply_limit(10 * GIB) == 10 * GIB
    assert bridge.available_ram_bytes() == memory.system_available_bytes()


def test_check_fits_names_the_size_and_the_advice():
    memory.check_fits("a clip", GIB, GIB, 8 * GIB, "Use fewer frames.")
    memory.check_fits("a clip", 100 * GIB, 0, None, "unknown RAM: no check")
    with pytest.raises(AnimeVideoMemoryError) as e:
        memory.check_fits("a clip", 6 * GIB, 2 * GIB, 4 * GIB, "Use fewer frames.")
    msg = str(e.value)
    assert "a clip needs about 8.0 GiB" in msg and "6.0 GiB for the result" in msg and "only 4.0 GiB" in msg
    assert msg.endswith("Use fewer frames.")


@pytest.mark.parametrize("error", [RuntimeError(ALLOCATOR_FAILURE), torch.OutOfMemoryError("CUDA out of memory"),
                                   MemoryError()])
def test_allocation_failures_become_memory_errors(error):
    with pytest.raises(AnimeVideoMemoryError, match=r"^Out of memory: the clip needs about 3\.0 GiB .* Try less"):
        with memory.allocation_guard("the clip", 3 * GIB, "Try less."):
            raise error


def test_other_runtime_errors_pass_through():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with memory.allocation_guard("the clip", GIB, "Try less."):
            raise RuntimeError("shape mismatch")


def test_allocate_turns_a_failed_torch_empty_into_a_memory_error(monkeypatch):
    def failing_empty(*a, **k):
        raise RuntimeError(ALLOCATOR_FAILURE)

    monkeypatch.setattr(memory.torch, "empty", failing_empty)
    with pytest.raises(AnimeVideoMemoryError, match=r"the output \(4 frames\) needs about 12\.0 GiB"):
        memory.allocate((4, 16384, 16384, 3), torch.float32, "cpu", "the output (4 frames)", "Try less.")


# ---------------------------------------------------------------------------------------------
# Upscale Video
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upscalers(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("models"))
    up_tiny.write_tiny_upscalers(d)
    return d


@pytest.fixture
def upscale_env(upscalers, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", upscalers)
    from animevideo.nodes import upscale

    return upscale


UP_ARGS = dict(chunk_size=8, tile_size=0, input_rescaling=1.0, output_scale=0.0)


def test_one_4096px_frame_is_refused_with_the_size_and_what_to_change(upscale_env, ram):
    ram(2)
    handle = upscale_env.AnimeVideoLoadUpscaler().load("realesr-animevideov3.pth")[0]
    with pytest.raises(AnimeVideoMemoryError) as e:
        upscale_env.AnimeVideoUpscale().upscale(handle, big_view(1, 4096, 4096), **UP_ARGS)
    msg = str(e.value)
    assert "upscaling 1 frame(s) of 4096x4096 to 16384x16384 needs about" in msg
    assert "3.0 GiB for the result" in msg and "only 2.0 GiB is available" in msg
    assert "output_scale" in msg and "Meta Batch" in msg


def test_a_long_clip_is_refused_before_any_frame_is_made(upscale_env, ram, monkeypatch):
    ram(8)
    handle = upscale_env.AnimeVideoLoadUpscaler().load("AnimeSR_v2.pth")[0]
    ran = []
    monkeypatch.setattr(stream, "upscale_frames", lambda *a, **k: ran.append(1))
    with pytest.raises(AnimeVideoMemoryError, match=r"upscaling 288 frame\(s\) of 854x480 to 3416x1920"):
        upscale_env.AnimeVideoUpscale().upscale(handle, big_view(288, 480, 854), **UP_ARGS)  # 12 s at 24 fps
    assert not ran


def test_whole_frames_too_large_switch_to_tiles_that_fit(upscale_env, ram):
    handle = upscale_env.AnimeVideoLoadUpscaler().load("realesr-animevideov3.pth")[0]
    frames = torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(0))
    plan = stream.plan_clip(handle.upscaler, 1, 96, 96, stream.StreamOptions(**UP_ARGS))
    whole = sum(stream.memory_needs(handle.upscaler, plan, stream.StreamOptions(**UP_ARGS), "cpu"))
    tiled = sum(stream.memory_needs(handle.upscaler, plan, stream.StreamOptions(**{**UP_ARGS, "tile_size": 64}),
                                    "cpu"))
    assert tiled < whole
    available = memory.HEADROOM_BYTES + (whole + tiled) // 2
    opts, _, _ = stream.fit_to_memory(handle.upscaler, plan, stream.StreamOptions(**UP_ARGS), "cpu", available)
    assert opts.tile_size == 64
    ram(available / GIB)
    (out,) = upscale_env.AnimeVideoUpscale().upscale(handle, frames, **UP_ARGS)
    (ref,) = upscale_env.AnimeVideoUpscale().upscale(handle, frames, **{**UP_ARGS, "tile_size": 64})
    assert torch.equal(out, ref)


def test_an_allocator_runtime_error_in_the_model_becomes_a_memory_error(upscale_env, ram, monkeypatch):
    ram(64)
    handle = upscale_env.AnimeVideoLoadUpscaler().load("realesr-animevideov3.pth")[0]

    def fails(x):
        raise RuntimeError(ALLOCATOR_FAILURE)

    monkeypatch.setattr(handle.upscaler, "run_image", fails)
    with pytest.raises(AnimeVideoMemoryError, match="Out of memory on cpu upscaling 64x64 px frames even in tiles"):
        upscale_env.AnimeVideoUpscale().upscale(handle, torch.rand(1, 64, 64, 3), **UP_ARGS)


def test_an_allocator_runtime_error_on_whole_frames_falls_back_to_tiles(upscale_env, ram, monkeypatch):
    ram(64)
    handle = upscale_env.AnimeVideoLoadUpscaler().load("realesr-animevideov3.pth")[0]
    frames = torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(1))
    (ref,) = upscale_env.AnimeVideoUpscale().upscale(handle, frames, **{**UP_ARGS, "tile_size": 48})
    real = handle.upscaler.run_image

    def fails_on_whole_frames(x):
        if x.shape[-1] > 48:
            raise RuntimeError(ALLOCATOR_FAILURE)
        return real(x)

    monkeypatch.setattr(handle.upscaler, "run_image", fails_on_whole_frames)
    (out,) = upscale_env.AnimeVideoUpscale().upscale(handle, frames, **UP_ARGS)
    assert torch.equal(out, ref)


# ---------------------------------------------------------------------------------------------
# The other nodes that build a whole clip
# ---------------------------------------------------------------------------------------------

def test_interpolate_refuses_an_output_clip_that_does_not_fit(ram, monkeypatch):
    from animevideo.nodes.interpolate import AnimeVideoInterpolate, InterpolatorHandle

    ram(4)
    handle = InterpolatorHandle(model=types.SimpleNamespace(size_multiple=8, min_size=128), name="x",
                                keep_on_gpu=False)
    with pytest.raises(AnimeVideoMemoryError) as e:  # 2 s at 24 fps to 1000 fps: 2000 frames of 1024x1024
        AnimeVideoInterpolate().interpolate(handle, big_view(48, 1024, 1024), 24.0, 2, target_fps=1000.0)
    assert "interpolating 48 frames of 1024x1024 to 2000 frames" in str(e.value)
    assert "multiplier or target_fps" in str(e.value)


def test_samplers_refuse_a_clip_that_does_not_fit(ram):
    from animevideo.nodes import anisora, ganime, lineart, lvcd, svd
    from animevideo.pipelines.guides import Guide

    ram(1)
    nothing = types.SimpleNamespace(model=None, keep_on_gpu=False)
    with pytest.raises(AnimeVideoMemoryError, match=r"the SVD clip \(4096 frames of 1024x576\)"):
        svd.AnimeVideoSVDSampler().sample(nothing, torch.rand(1, 64, 64, 3), 1024, 576, "crop", 4096, 7.0, 127,
                                          0.02, 2, 1.0, 1.0, 0, 8)
    with pytest.raises(AnimeVideoMemoryError, match="colorizing 2000 lineart frames at 576x320"):
        lvcd.AnimeVideoLVCDColorize().colorize(nothing, torch.rand(1, 64, 64, 3), big_view(2000, 320, 576), 576,
                                               320, "crop", 2, 0, False, "auto")
    with pytest.raises(AnimeVideoMemoryError, match=r"the AniSora clip \(1025 frames of 1280x720\)"):
        anisora.AnimeVideoAniSoraSampler().sample(anisora.AniSoraHandle(None, False), None, Guide(), 1280, 720,
                                                  1025, 8, 1.0, 5.0, "unipc", 0)
    with pytest.raises(AnimeVideoMemoryError, match="16000 in-between frames of 1920x1080"):
        ganime.AnimeVideoGANimeInbetween().inbetween(nothing, torch.rand(1, 1080, 1920, 3),
                                                     torch.rand(1, 1080, 1920, 3), 1000, "sample", 1.0, 50, 0, 16)
    with pytest.raises(AnimeVideoMemoryError, match="lineart for 2000 frames of 1280x720"):
        lineart.AnimeVideoLineart().run(big_view(2000, 720, 1280), "sk_model.pth", "already lineart")

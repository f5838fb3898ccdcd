"""Run inside ComfyUI's Python (COMFYUI_PYTHON): the pack's models under core's model management. Prints one JSON
object on its last line. Used by test_managed_models_in_comfyui.py:

    $COMFYUI_PYTHON tests/integration/managed_models_probe.py COMFYUI_DIR PACK_ROOT MODELS_DIR SCRATCH_DIR

Three parts, each through the pack's real loader and sampler nodes as ComfyUI calls them:

- ``unload``: for SVD, LVCD, AniSora (Wan), an upscaler and the interpolator: after a run the model is in core's
  loaded-model list; then core's ``unload_all_models()`` (what ComfyUI's prompt worker calls for ``POST /free``
  with ``{"unload_models": true}``) and a gc (which the worker runs after it), with the loader node's output still
  held (as ComfyUI's output cache holds it): every torch module of the model is gone and the RSS is back near its
  level before the load. The loader output still works afterwards (the model is loaded again).
- ``eviction``: a device core manages with a budget set here (``cpu:0`` with ``get_free_memory`` answering from
  the budget): loading a core ModelPatcher evicts ours, running ours evicts core's.
- ``partial``: the same device made to look like a GPU in NORMAL_VRAM with room for about half the weights: core's
  load_models_gpu loads the heavy models (SVD UNet, LVCD UNet + ControlNet, Wan transformer, CogVideoX
  transformer) partially, their comfy.ops layers cast per call, and the clip equals the fully loaded run's.
"""
import gc
import json
import os
import sys
import weakref

from probes import boot_comfy_with_pack  # this folder is the script's sys.path[0]

MEMTEST_UNET = {"block_out_channels": (256, 512), "num_attention_heads": (4, 8)}  # about 420 MiB (float32)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def settled_rss() -> float:
    gc.collect()
    return rss_mb()


def write_larger_models(root):
    """Models large enough for the RSS to show them, in the released layouts, under ``root``/<folder>."""
    import torch

    from AnimeVideo.pipelines.interpolate.animeinterp import AnimeInterp, AnimeInterpConfig
    from AnimeVideo.pipelines.interpolate.tiny import official_layout
    from AnimeVideo.pipelines.svd import tiny as svd_tiny
    from AnimeVideo.pipelines.upscale import tiny as up_tiny

    paths = {}
    os.makedirs(os.path.join(root, "checkpoints"), exist_ok=True)
    paths["svd"] = os.path.join(root, "checkpoints", "svd_memtest.safetensors")
    unet, vae, clip = svd_tiny.build_tiny_svd(0, unet_overrides=MEMTEST_UNET)
    svd_tiny.write_sgm_file(paths["svd"], unet, vae, clip)
    del unet, vae, clip
    os.makedirs(os.path.join(root, "upscale_models"), exist_ok=True)
    paths["upscaler"] = os.path.join(root, "upscale_models", "RealESRGAN_x4plus_anime_6B_fullsize.pth")
    torch.save({"params_ema": up_tiny.rrdb_state_dict(**up_tiny.REAL_RRDB, seed=3)}, paths["upscaler"])
    os.makedirs(os.path.join(root, "interpolation"), exist_ok=True)
    paths["interpolator"] = os.path.join(root, "interpolation", "anime_interp_fullsize.ckpt")
    torch.manual_seed(0)
    torch.save(official_layout(AnimeInterp(AnimeInterpConfig())), paths["interpolator"])
    gc.collect()
    return paths


def main(comfy_dir, pack_root, models_dir, scratch):
    boot_comfy_with_pack(comfy_dir, pack_root, scratch)
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import folder_paths

    from AnimeVideo.nodes import anisora, guides, interpolate, lvcd, svd, upscale
    from AnimeVideo.nodes import comfy_bridge as bridge
    from AnimeVideo.pipelines.backbones.cogvideox import tiny as cog_tiny
    from AnimeVideo.pipelines.backbones.wan import tiny as wan_tiny

    torch.set_num_threads(2)
    for kind in ("checkpoints", "diffusers", "diffusion_models", "vae", "lvcd", "upscale_models", "interpolation"):
        folder_paths.add_model_folder_path(kind, os.path.join(models_dir, kind))
    larger = os.path.join(scratch, "larger-models")
    paths = write_larger_models(larger)
    for kind in ("checkpoints", "upscale_models", "interpolation"):
        folder_paths.add_model_folder_path(kind, os.path.join(larger, kind))

    def image(n, h, w, seed=0):
        return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))

    def keyframe_guide(h, w):
        return guides.AnimeVideoKeyframe().add(image(1, h, w, 5), 0, 1.0)[0]

    def text(tokens, dim, seed=1):
        return [[torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed)), {"pooled_output": None}]]

    # each: (loader output, run(handle) -> the clip)
    def svd_case(name, keep=False):
        handle = svd.AnimeVideoLoadSVD().load(name, "auto", keep)[0]
        return handle, lambda h: svd.AnimeVideoSVDSampler().sample(
            h, image(1, 64, 64), 64, 64, "crop", 3, 8.0, 127, 0.02, 2, 1.0, 2.5, 1, 2)[0]

    def lvcd_case(keep=False):
        handle = lvcd.AnimeVideoLoadLVCD().load("svd.safetensors", "lvcd-fp16.safetensors", "auto", keep)[0]
        return handle, lambda h: lvcd.AnimeVideoLVCDColorize().colorize(
            h, image(1, 64, 64, 1), image(2, 64, 64, 2), 64, 64, "crop", 1, 0, False, "auto")[0]

    def wan_case(keep=False):
        handle = anisora.AnimeVideoLoadAniSora().load(os.path.basename(wan_tiny.TRANSFORMER_FILE),
                                                      os.path.basename(wan_tiny.VAE_FILE), "auto", keep)[0]
        vision = type("ClipVisionOutput", (), {})()
        vision.penultimate_hidden_states = torch.randn(1, 257, wan_tiny.TINY_IMAGE_DIM,
                                                       generator=torch.Generator().manual_seed(0))
        return handle, lambda h: anisora.AnimeVideoAniSoraSampler().sample(
            h, text(6, wan_tiny.TINY_TEXT_DIM), keyframe_guide(32, 48), 48, 32, 9, 2, 1.0, 5.0, "unipc", 0,
            clip_vision_output=vision)[0]

    def cogvideox_case(keep=False):
        handle = anisora.AnimeVideoLoadAniSora().load(os.path.basename(cog_tiny.FOLDER), anisora.VAE_FROM_FOLDER,
                                                      "auto", keep)[0]
        return handle, lambda h: anisora.AnimeVideoAniSoraSampler().sample(
            h, text(226, cog_tiny.TINY_TRANSFORMER["text_embed_dim"]), keyframe_guide(64, 64), 64, 64, 9, 2, 1.0,
            5.0, "unipc", 0)[0]

    def upscaler_case(name):
        handle = upscale.AnimeVideoLoadUpscaler().load(name, "auto")[0]
        return handle, lambda h: upscale.AnimeVideoUpscale().upscale(h, image(2, 16, 16), 2, 0, 1.0, 0.0)[0]

    def interpolator_case(name):
        handle = interpolate.AnimeVideoLoadInterpolator().load(name, "auto")[0]
        return handle, lambda h: interpolate.AnimeVideoInterpolate().interpolate(
            h, image(2, 32, 32), 12.0, 2, flow_iterations=1)["result"][0]

    def in_core(managed) -> bool:
        return any(m is managed for m in mm.loaded_models())

    # -- unload -------------------------------------------------------------------------------------------
    def unload(make, again=False):
        before = settled_rss()
        handle, run = make()
        run(handle)
        managed = handle.managed
        report = {"loaded_after_run": in_core(managed), "patcher": type(managed).__name__,
                  "model_mb": round(sum(p.numel() * p.element_size() for m in managed.modules_for_memory()
                                        for p in m.parameters()) / 2 ** 20, 1)}
        modules = [weakref.ref(m) for m in managed.modules_for_memory()]
        del managed
        after_run = settled_rss()
        mm.unload_all_models()
        gc.collect()
        after_unload = rss_mb()
        report.update(rss_before_load_mb=round(before, 1), rss_after_run_mb=round(after_run, 1),
                      rss_after_unload_mb=round(after_unload, 1),
                      modules_alive=sum(r() is not None for r in modules), modules=len(modules),
                      ref_released=handle.ref.released, loaded_after_unload=len(mm.loaded_models()))
        if again:
            run(handle)  # the loader output ComfyUI keeps still works: the model is loaded again
            report["runs_again"] = not handle.ref.released and in_core(handle.managed)
            mm.unload_all_models()
        del handle, run
        gc.collect()
        return report

    # the smaller models first, on a heap the larger ones have not left holes in
    out = {"unload": {
        "upscaler": unload(lambda: upscaler_case(os.path.basename(paths["upscaler"])), again=True),
        "interpolator": unload(lambda: interpolator_case(os.path.basename(paths["interpolator"]))),
        "anisora_wan": unload(wan_case),
        "lvcd": unload(lvcd_case, again=True),
        "svd": unload(lambda: svd_case(os.path.basename(paths["svd"]))),
    }}

    # -- a device with a budget ---------------------------------------------------------------------------
    device = torch.device("cpu", 0)  # not "cpu": load_models_gpu makes room only on other devices
    budget = {"bytes": None}
    real_get_free_memory, real_is_device_cpu = mm.get_free_memory, mm.is_device_cpu

    def budget_free_memory(dev=None, torch_free_too=False):
        if dev is None:
            dev = mm.get_torch_device()
        if dev != device or budget["bytes"] is None:
            return real_get_free_memory(dev, torch_free_too)
        used = sum(lm.model_loaded_memory() for lm in mm.current_loaded_models if lm.device == device)
        free = budget["bytes"] - used
        return (free, free) if torch_free_too else free

    mm.get_torch_device = lambda: device
    mm.get_free_memory = budget_free_memory

    # -- eviction both ways -------------------------------------------------------------------------------
    # core's free_memory unloads partly when that makes enough room (partially_unload), else wholly
    ops = comfy.ops.disable_weight_init  # what core builds its models with
    core_module = torch.nn.Sequential(*[ops.Linear(1024, 1024) for _ in range(12)])  # 48 MiB
    core_model = comfy.model_patcher.ModelPatcher(core_module, load_device=device, offload_device=torch.device("cpu"))
    handle, run = svd_case("svd_xt.safetensors", keep=True)  # keep_on_gpu: stays loaded after the run
    ours = handle.managed
    sizes = [ours.model_size(), core_model.model_size()]
    # room for the larger of the two with core's 10 % margin, not for both
    budget["bytes"] = int(mm.minimum_inference_memory() + 1.1 * max(sizes) + 2 ** 20)

    def state():
        loaded = {id(lm.model): lm.model_loaded_memory() for lm in mm.current_loaded_models}
        return {"ours_mb": round(loaded.get(id(ours), 0) / 2 ** 20, 2),
                "core_mb": round(loaded.get(id(core_model), 0) / 2 ** 20, 2)}

    first = run(handle)
    eviction = {"budget_mb": round(budget["bytes"] / 2 ** 20, 1), "ours_size_mb": round(sizes[0] / 2 ** 20, 2),
                "core_size_mb": round(sizes[1] / 2 ** 20, 2), "ours_load_device": str(ours.load_device),
                "after_our_run": state()}
    mm.load_models_gpu([core_model])
    eviction["after_core_load"] = state()
    again = run(handle)
    eviction["after_our_second_run"] = state()
    eviction["same_clip"] = bool(torch.equal(first, again))
    mm.load_models_gpu([core_model])
    handle_off, run_off = svd_case("svd_xt.safetensors", keep=False)
    run_off(handle_off)
    eviction["keep_on_gpu_off_offloaded_after_run"] = not in_core(handle_off.managed)
    out["eviction"] = eviction
    budget["bytes"] = None
    mm.unload_all_models()
    handle = run = ours = handle_off = run_off = core_model = core_module = None  # let them go
    gc.collect()

    # -- partial loading --------------------------------------------------------------------------------
    mm.is_device_cpu = lambda d: False if d == device else real_is_device_cpu(d)  # treated as a GPU
    mm.vram_state, mm.lowvram_available = mm.VRAMState.NORMAL_VRAM, True
    seen = {}
    real_load = bridge._managed_patcher_class().load

    def recording_load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        real_load(self, device_to, lowvram_model_memory, force_patch_weights, full_load)
        seen["lowvram"] = bool(self.model.model_lowvram)
        seen["loaded_mb"] = round(self.loaded_size() / 2 ** 20, 2)
        seen["model_mb"] = round(self.model_size() / 2 ** 20, 2)
        seen["cast_layers"] = sum(1 for m in self.model.modules() if getattr(m, "comfy_cast_weights", False))
        seen["comfy_ops_layers"] = sum(1 for m in self.model.modules() if hasattr(m, "comfy_cast_weights"))
        seen["cast_layers_per_part"] = [sum(1 for m in part.modules() if getattr(m, "comfy_cast_weights", False))
                                         for part in self.model.parts]

    bridge._managed_patcher_class().load = recording_load
    partial = {}
    for name, make in (("svd", lambda: svd_case("svd_xt.safetensors")), ("lvcd", lvcd_case),
                       ("anisora_wan", wan_case), ("anisora_cogvideox", cogvideox_case)):
        budget["bytes"] = 1 << 50  # room for everything: a full load
        handle, run = make()
        full = run(handle)
        full_state = dict(seen)
        mm.unload_all_models()
        handle, run = make()
        size = handle.managed.model_size()
        budget["bytes"] = int(mm.minimum_inference_memory() + size // 2)  # room for about half the weights
        part = run(handle)
        partial[name] = {"full_load": full_state, "partial_load": dict(seen), "equal": bool(torch.equal(full, part)),
                         "max_abs_diff": float((full - part).abs().max())}
        mm.unload_all_models()
        del handle, run
        gc.collect()
    out["partial"] = partial
    bridge._managed_patcher_class().load = real_load

    # -- where a partial load leaves the weights ----------------------------------------------------------
    # "meta" as the load device makes placement visible (data is not needed): core leaves the comfy.ops layers
    # that do not fit on the offload device (the CPU) and casts them per call; every other module with weights of
    # its own (a block's scale_shift_table, a causal conv) and each part's first layer must be on the device.
    _, build, _, _ = anisora.open_anisora(os.path.basename(wan_tiny.TRANSFORMER_FILE),
                                          os.path.basename(wan_tiny.VAE_FILE), "auto", False)
    patcher = bridge.manage(build())
    meta = torch.device("meta")
    patcher.load(meta, lowvram_model_memory=patcher.model_size() // 3, full_load=False)
    placement = {"lowvram": bool(patcher.model.model_lowvram), "non_castable_off_device": [],
                 "castable_left_on_offload": 0, "first_layer_on_device": []}
    for part in patcher.model.parts:
        first = True
        for name, m in part.named_modules():
            own = [t for t in list(m._parameters.values()) + list(m._buffers.values()) if t is not None]
            if not own:
                continue
            on_device = all(t.device == meta for t in own)
            if first:
                placement["first_layer_on_device"].append(on_device)
                first = False
            if not hasattr(m, "comfy_cast_weights"):
                if not on_device:
                    placement["non_castable_off_device"].append(f"{type(part).__name__}.{name}")
            elif not on_device:
                placement["castable_left_on_offload"] += 1
    out["placement"] = placement
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])

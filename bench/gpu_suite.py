"""Every GPU figure the issues ask for, in one run: what anyone with a GPU runs first.

All models are the released architectures with random weights (built on the meta device, materialised straight on
the GPU; nothing is downloaded). Each figure runs in its own try/except, so one failure is reported in the table and
the others still run; a global budget (--budget-s) skips the figures that no longer fit. One table (figure, value,
peak VRAM, note) is printed and written to ``--out`` (STEM.json and STEM.md).

Figures (issue numbers in brackets):
  svd      [1, 10]  SVD-XT, 14 frames 1024x576, 25 steps, fp16: our sampler vs diffusers' StableVideoDiffusionPipeline
                    on the same modules (bench/svd_sampler.py); s/step each and the ratio
  wan      [10]     Wan2.1-I2V-14B (real config) with fp8 block weights (our loader's storage), 832x480x81, 1 warm-up
                    step then 2 timed: s/step uncapped, and capped at 16 GiB with
                    torch.cuda.set_per_process_memory_fraction plus partial loading (the blocks that do not fit stay
                    in pinned CPU memory and are copied in ahead of use on a side stream)
  lvcd     [5, 10]  LVCD (SVD UNet + ControlNet, reference attention), 320x576, 24 frames (2 passes), 25 steps:
                    s/frame (bench/lvcd.py)
  upscale  [7, 10]  AnimeSR and realesr-animevideov3 (Compact), 320x576 in, x4: frames/s through our runner
                    (bench/upscale.py)
  interp   [8, 10]  AnimeInterp x2, released widths, 960x544: interpolated frames/s (bench/interpolate.py)
  anisora_core_route [11]  core ComfyUI's WanModel (what AniSora's core route samples with; comfy.ops.manual_cast)
                    vs our transformer on the same fp8 weights (mapped by the pack's native key map, shared, not
                    copied) and inputs: one forward = one step at cfg 1, interleaved; the ratio core/own and the
                    outputs' max difference. Needs a ComfyUI checkout (--comfyui PATH or $COMFYUI_DIR), else skipped.
  streamingt2v [16] StreamingT2V s/new frame extending 16 frames at 256x256 by two chunks, 50 steps.

    python bench/gpu_suite.py --out bench/gpu_results          # one H100: about 5 minutes (estimated)
    python bench/gpu_suite.py --comfyui ~/ComfyUI --out bench/gpu_results   # with the core-route figure
    python bench/gpu_suite.py --smoke --out /tmp/gpu_smoke     # tiny sizes on the CPU, < 2 minutes
    python bench/gpu_suite.py --only svd,wan --out /tmp/part   # a subset

Timings are medians of interleaved repeats where there are two sides; the number of repeats is set by the time
each figure may use. Peak VRAM = torch.cuda.max_memory_allocated over the measured call (weights included).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

# fewer fragments under the 16 GiB cap; must be set before CUDA starts
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("ANIMEVIDEO_QUIET", "1")
os.environ.setdefault("ANIMEVIDEO_DOWNLOADS", "0")

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import svd_sampler as svd_bench  # noqa: E402  (registers the repo root as the package ``animevideo``)
import torch  # noqa: E402

GiB = 2 ** 30
CAP_BYTES = 16 * GiB


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

OK, ERROR, SKIPPED, NOT_IN_BUILD = "ok", "error", "skipped", "not in this build"


@dataclass
class Row:
    figure: str  # stable id (the smoke test checks every one is present)
    what: str
    value: float | None = None
    unit: str = ""
    peak_vram_gib: float | None = None
    status: str = OK
    note: str = ""
    check: dict = field(default_factory=dict)  # numbers a test may hold the figure to (e.g. swap vs no swap)


@dataclass
class Figure:
    name: str
    rows: dict[str, str]  # row id -> what it measures
    run: Callable[["Ctx"], dict[str, Row]] | None
    gpu_seconds: float  # what the figure may spend on extra repeats on one H100
    absent: str = ""  # why run is None ("not in this build")


class Ctx:
    def __init__(self, args):
        self.smoke = args.smoke
        self.device = torch.device("cpu" if args.smoke else args.device)
        self.cuda = self.device.type == "cuda"
        self.deadline = time.perf_counter() + args.budget_s
        self.seed = args.seed
        self.comfyui = getattr(args, "comfyui", "")
        self.figure_start = time.perf_counter()
        self.figure_seconds = 0.0

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def more(self, one_repeat: float) -> bool:
        """Another repeat fits in this figure's share and the global budget."""
        spent = time.perf_counter() - self.figure_start
        return spent + one_repeat <= self.figure_seconds and one_repeat < self.left()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self):
        if self.cuda:
            self.sync()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / GiB if self.cuda else None

    def free(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def _row(fig: Figure, rid: str, value, unit, peak=None, note="") -> Row:
    return Row(rid, fig.rows[rid], None if value is None else float(value), unit, peak, OK, note)


def med(xs):
    return statistics.median(xs)


# ---------------------------------------------------------------------------------------------
# SVD-XT: our sampler vs diffusers (reuses bench/svd_sampler.py)
# ---------------------------------------------------------------------------------------------

def run_svd(ctx: Ctx, fig: Figure) -> dict[str, Row]:
    from animevideo.pipelines.svd import loader, tiny

    if ctx.smoke:
        unet, vae, clip = tiny.build_tiny_svd(ctx.seed)
        model = loader.SVDModel(unet, vae, clip, torch.float32, "tiny", "diffusers")
        w, h, frames, steps, chunk, warm_steps = 64, 64, 3, 2, 3, 1
    else:
        model = svd_bench.build_real_arch(str(ctx.device), torch.float16, seed=ctx.seed)
        w, h, frames, steps, chunk, warm_steps = 1024, 576, 14, 25, 8, 2
    pipe = svd_bench.diffusers_pipe(model)

    def runner(n_steps):
        a = SimpleNamespace(frames=frames, steps=n_steps, min_cfg=1.0, max_cfg=3.0, seed=ctx.seed,
                            decode_chunk_size=chunk)
        return svd_bench.Runner(model, pipe, a, w, h)

    warm = runner(warm_steps)
    warm.ours()
    warm.theirs()
    run = runner(steps)
    ours, theirs = [], []
    while True:
        t = time.perf_counter()
        ours.append(run.ours()[1])
        theirs.append(run.theirs()[1])
        if not ctx.more(time.perf_counter() - t):
            break
    so, st = med([m["sample"] for m in ours]) / steps, med([m["sample"] for m in theirs]) / steps
    pk = (lambda ms: max(m["peak"] for m in ms) / GiB if ms[0]["peak"] is not None else None)
    setting = (f"{frames} f {w}x{h}, {steps} steps, {model.dtype}, CFG 1..3, decode_chunk_size {chunk}, "
               f"{len(ours)} interleaved pair(s); s/step = (conditioning + sampling) / steps")
    return {
        "svd_xt_ours_s_per_step": _row(fig, "svd_xt_ours_s_per_step", so, "s/step", pk(ours),
                                       f"{setting}; whole call {med([m['total'] for m in ours]):.2f} s"),
        "svd_xt_diffusers_s_per_step": _row(fig, "svd_xt_diffusers_s_per_step", st, "s/step", pk(theirs),
                                            f"whole call {med([m['total'] for m in theirs]):.2f} s"),
        "svd_xt_ratio": _row(fig, "svd_xt_ratio", so / st, "ours/diffusers", None,
                             f"whole-call ratio {med([m['total'] for m in ours]) / med([m['total'] for m in theirs]):.3f}"),
    }


# ---------------------------------------------------------------------------------------------
# Wan2.1-I2V-14B in fp8: uncapped, and capped at 16 GiB with partial loading
# ---------------------------------------------------------------------------------------------

def materialize_(module: torch.nn.Module, device, dtype_for: Callable[[str], torch.dtype], seed: int):
    """Give every meta parameter real memory on ``device`` in ``dtype_for(name)``, filled as svd_sampler's
    init (fp8 weights are drawn in bf16 and cast); buffers (built real, e.g. the rope tables) move along."""
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for mod_name, mod in module.named_modules():
            for pname, p in list(mod._parameters.items()):
                if p is None or not p.is_meta:
                    continue
                name = f"{mod_name}.{pname}" if mod_name else pname
                target = dtype_for(name)
                work = target if target in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16
                t = svd_bench.init_parameter_(name, torch.empty(p.shape, dtype=work, device=device), gen)
                mod._parameters[pname] = torch.nn.Parameter(t.to(target), requires_grad=False)
    return module.to(device)


def build_wan(config: dict, device, compute: torch.dtype, storage: torch.dtype | None, seed: int):
    """WanTransformer3DModel(**config) as our loader leaves it: fp32 where diffusers keeps fp32, the block
    Linear weights in ``storage`` (fp8) with per-layer upcast (``loader.store_linears``), the rest ``compute``."""
    from diffusers import WanTransformer3DModel

    from animevideo.pipelines.anisora import loader
    from animevideo.pipelines.checkpoint_io import empty_weights

    with empty_weights(keep_buffers=True):
        tr = WanTransformer3DModel(**config)
    materialize_(tr, device, lambda k: loader.transformer_dtype_for(k, compute, storage), seed)
    if storage is not None:
        loader.store_linears(tr, storage)
    return tr.eval().requires_grad_(False)


class BlockSwap:
    """Partial loading by block: ``blocks[:resident]`` stay on the device, the others live in (pinned) CPU memory
    and are copied in for their forward, the next one on a side stream while the current one computes, and
    dropped after it. The tensors themselves are swapped (``param.data``), so the model's code is unchanged."""

    def __init__(self, blocks, device, resident: int):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.blocks = list(blocks)
        self.swapped = list(range(max(0, resident), len(self.blocks)))
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.host: dict[int, list] = {}
        self.ready: dict[int, tuple] = {}
        self.copied_bytes = 0
        for i in self.swapped:
            entries = []
            for mod in self.blocks[i].modules():
                for store in (mod._parameters, mod._buffers):
                    for name, t in store.items():
                        if t is None:
                            continue
                        cpu = t.data.to("cpu")
                        if self.cuda and not cpu.is_pinned():
                            cpu = cpu.pin_memory()
                        entries.append((store, name, cpu))
                        self._assign(store, name, cpu)
            self.host[i] = entries
        self.handles = []
        for i, b in enumerate(self.blocks):
            self.handles.append(b.register_forward_pre_hook(lambda m, a, i=i: self._enter(i)))
            self.handles.append(b.register_forward_hook(lambda m, a, o, i=i: self._leave(i)))

    @staticmethod
    def _assign(store, name, t):
        if isinstance(store[name], torch.nn.Parameter):
            store[name].data = t
        else:
            store[name] = t

    def _copy_in(self, i):
        if i in self.ready or i not in self.host:
            return
        if self.cuda:
            with torch.cuda.stream(self.stream):
                dev = [cpu.to(self.device, non_blocking=True) for _, _, cpu in self.host[i]]
                event = torch.cuda.Event()
                event.record(self.stream)
        else:  # CPU (the smoke run): real copies, so a wrong tensor in the wrong block shows in the output
            dev, event = [cpu.clone() for _, _, cpu in self.host[i]], None
        self.copied_bytes += sum(t.numel() * t.element_size() for t in dev)
        self.ready[i] = (event, dev)

    def _enter(self, i):
        if i in self.host:
            self._copy_in(i)
            event, dev = self.ready.pop(i)
            if self.cuda:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                for t in dev:  # the allocator must not reuse this memory before the compute stream is done
                    t.record_stream(current)
            for (store, name, _), t in zip(self.host[i], dev):
                self._assign(store, name, t)
        if self.swapped:  # the next swapped block (wrapping to the first for the next step)
            later = [j for j in self.swapped if j > i]
            nxt = later[0] if later else self.swapped[0]
            if nxt != i:
                self._copy_in(nxt)

    def _leave(self, i):
        if i in self.host:
            for store, name, cpu in self.host[i]:
                self._assign(store, name, cpu)

    def remove(self):
        for h in self.handles:
            h.remove()
        self.ready.clear()


def _module_bytes(m: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


def wan_steps(ctx: Ctx, model, condition, text, request, noise) -> dict:
    """Our sampler (pipelines.anisora.wan.sample_latents); per-step times from its on_step hook."""
    from animevideo.pipelines.anisora import wan
    from animevideo.pipelines.anisora.model import AniSoraHooks

    stamps = []

    def on_step(step, total):
        ctx.sync()
        stamps.append(time.perf_counter())

    ctx.reset_peak()
    before = torch.cuda.memory_allocated(ctx.device) if ctx.cuda else 0
    ctx.sync()
    t0 = time.perf_counter()
    lat = wan.sample_latents(model, condition, text, request, AniSoraHooks(on_step=on_step), noise)
    steps = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    peak = torch.cuda.max_memory_allocated(ctx.device) if ctx.cuda else 0
    reserved = torch.cuda.max_memory_reserved(ctx.device) if ctx.cuda else 0
    return dict(latents=lat.cpu(), steps=steps, s_per_step=med(steps[1:]) if len(steps) > 1 else steps[0],
                peak=peak, reserved=reserved, working=peak - before)


def wan_setup(ctx: Ctx) -> SimpleNamespace:
    """Our Wan transformer (real 14B config on the GPU, tiny in --smoke) and the inputs of one AniSora clip."""
    from animevideo.pipelines.anisora import wan
    from animevideo.pipelines.anisora.model import AniSoraModel, AniSoraRequest, TextConditioning
    from animevideo.pipelines.backbones.wan import tiny as wan_tiny

    import anisora_wan

    storage = torch.float8_e4m3fn
    if ctx.smoke:
        # bf16 compute as on the GPU: the fp32-kept modules beside bf16 ones and the fp8 upcasts all run
        cfg, compute, (w, h, frames) = wan_tiny.TINY_TRANSFORMER_CONFIG, torch.bfloat16, (64, 64, 5)
    else:
        cfg, compute, (w, h, frames) = anisora_wan.REAL, torch.bfloat16, (832, 480, 81)
    t = time.perf_counter()
    tr = build_wan(cfg, ctx.device, compute, storage, ctx.seed)
    built = time.perf_counter() - t
    model = AniSoraModel("wan", tr, None, compute, "random:wan2.1-i2v-14b" if not ctx.smoke else "random:tiny")
    request = AniSoraRequest(width=w, height=h, num_frames=frames, steps=3, cfg=1.0, shift=5.0, seed=ctx.seed)
    t_lat = (frames - 1) // 4 + 1
    g = torch.Generator().manual_seed(ctx.seed + 7)
    condition = torch.randn(1, 20, t_lat, h // 8, w // 8, generator=g)  # mask + guide latent; only shapes matter
    text = TextConditioning(torch.randn(1, 24, cfg["text_dim"], generator=g), None,
                            torch.randn(1, 257, cfg["image_dim"], generator=g))
    noise = wan.initial_noise((1, 16, t_lat, h // 8, w // 8), ctx.seed)
    params_b = sum(p.numel() for p in tr.parameters()) / 1e9
    setting = (f"{params_b:.2f} B params, block Linear weights fp8_e4m3fn, compute {compute}, {w}x{h}x{frames} "
               f"({t_lat} latent frames), cfg 1; built in {built:.0f} s")
    return SimpleNamespace(tr=tr, model=model, request=request, condition=condition, text=text, noise=noise,
                           cfg=cfg, compute=compute, setting=setting)


def run_wan(ctx: Ctx, fig: Figure) -> dict[str, Row]:
    su = wan_setup(ctx)
    tr, model, request, condition, text, noise = su.tr, su.model, su.request, su.condition, su.text, su.noise
    setting = f"{su.setting}; UniPC, 1 warm-up step + {request.steps - 1} timed"
    print(f"  wan: {setting}", flush=True)
    try:
        unc = wan_steps(ctx, model, condition, text, request, noise)
        rows = {"wan14b_fp8_uncapped_s_per_step": _row(
            fig, "wan14b_fp8_uncapped_s_per_step", unc["s_per_step"], "s/step",
            unc["peak"] / GiB if ctx.cuda else None,
            f"{setting}; steps {', '.join(f'{s:.2f}' for s in unc['steps'])} s")}
    except torch.cuda.OutOfMemoryError as e:  # a card under ~20 GiB: the capped run below still says something
        unc = None
        rows = {"wan14b_fp8_uncapped_s_per_step": Row(
            "wan14b_fp8_uncapped_s_per_step", fig.rows["wan14b_fp8_uncapped_s_per_step"], status=ERROR,
            note=f"out of memory uncapped on this card ({str(e).splitlines()[0][:160]}); {setting}")}
        ctx.free()

    blocks = tr.blocks
    block_bytes = max(_module_bytes(b) for b in blocks)
    rest_bytes = _module_bytes(tr) - sum(_module_bytes(b) for b in blocks)
    if ctx.cuda:
        total = torch.cuda.get_device_properties(ctx.device).total_memory
        # as many blocks stay resident as fit beside the other weights, the measured working memory (+20 %)
        # and two blocks in flight
        working = unc["working"] if unc else 6 * GiB  # measured uncapped, else a guess for 480x832x81
        room = CAP_BYTES - rest_bytes - 1.2 * working - 2 * block_bytes - 512 * 2 ** 20
        resident = int(max(0, min(len(blocks), room // block_bytes)))
    else:
        total, resident = None, len(blocks) // 2
    compute_device = next(tr.parameters()).device  # the patch embedding: never swapped
    tries = [resident] + ([0] if resident else [])
    cap_note, capped = "", None
    for k in tries:
        swap, probes = None, []
        try:
            swap = BlockSwap(blocks, ctx.device, k)
            probe = [0, 0]  # swapped-block forwards, and those that ran on copied-in tensors (not the host's)

            def seen(i, swap=swap):
                if i in swap.host:
                    probe[0] += 1
                    host = {t.data_ptr() for _, _, t in swap.host[i]}
                    probe[1] += all(q.data_ptr() not in host and q.device == compute_device
                                    for q in blocks[i].parameters())

            probes = [b.register_forward_pre_hook(lambda m, a, i=i: seen(i)) for i, b in enumerate(blocks)]
            ctx.free()
            if ctx.cuda:
                torch.cuda.set_per_process_memory_fraction(min(1.0, CAP_BYTES / total), ctx.device)
            print(f"  wan: capped run, {k}/{len(blocks)} blocks resident", flush=True)
            capped = wan_steps(ctx, model, condition, text, request, noise)
            capped.update(resident=k, copied=swap.copied_bytes, probe=list(probe))
            break
        except torch.cuda.OutOfMemoryError as e:
            cap_note += f"out of memory with {k} resident blocks ({str(e).splitlines()[0][:120]}); "
            capped = None
        finally:
            for h in probes:
                h.remove()
            if swap is not None:
                swap.remove()
            if ctx.cuda:
                torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
            ctx.free()
    if capped is None:
        raise RuntimeError(f"capped run failed: {cap_note}")
    diff = (capped["latents"] - unc["latents"]).abs().max().item() if unc else float("nan")
    versus = f"x{capped['s_per_step'] / unc['s_per_step']:.2f} vs uncapped" if unc else "no uncapped run to compare"
    if ctx.cuda:
        where = (f"16 GiB cap (set_per_process_memory_fraction), peak reserved {capped['reserved'] / GiB:.2f} GiB"
                 + (" - ABOVE THE CAP: it was not enforced" if capped["reserved"] > CAP_BYTES else ""))
    else:
        where = "CPU smoke: no cap, swap exercised"
    rows["wan14b_fp8_capped16gb_s_per_step"] = _row(
        fig, "wan14b_fp8_capped16gb_s_per_step", capped["s_per_step"], "s/step",
        capped["peak"] / GiB if ctx.cuda else None,
        f"{where}; partial loading: {capped['resident']}/{len(blocks)} blocks resident, the rest copied in ahead "
        f"of use ({capped['copied'] / GiB:.2f} GiB moved over {request.steps} steps); "
        f"{versus}; max |latents capped - uncapped| = "
        f"{diff:.3g}; {cap_note}this is the bench's block swap, not ComfyUI's --lowvram (needs the managed-models "
        f"code of issue 10)")
    rows["wan14b_fp8_capped16gb_s_per_step"].check = {
        "max_abs_diff_vs_uncapped": diff, "swapped_blocks": len(blocks) - capped["resident"],
        "swapped_forwards": capped["probe"][0], "swapped_forwards_on_copies": capped["probe"][1]}
    del tr, model
    return rows


def import_comfy(path: str):
    """ComfyUI's ``comfy`` package (from ``path`` if given, else as installed), or None where there is none."""
    if path:
        if not os.path.isdir(os.path.join(path, "comfy")):
            raise FileNotFoundError(f"--comfyui {path}: no comfy/ folder there (give a ComfyUI checkout)")
        if path not in sys.path:
            sys.path.append(path)  # appended: ComfyUI's top-level modules must not shadow anything of ours
    try:
        import comfy.cli_args
    except ImportError:
        return None
    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True  # else comfy.model_management looks for a GPU at import
    import comfy.ldm.wan.model  # noqa: F401
    import comfy.ops  # noqa: F401

    return comfy


def core_wan_from_ours(comfy, tr) -> torch.nn.Module:
    """Core's WanModel (i2v) with our transformer's weights, mapped to native names by the pack's key map and
    assigned without copies (the fp8 block weights are shared), run with core's manual-cast layers as core runs an
    fp8 file with bf16 compute."""
    from animevideo.pipelines.backbones.wan import keys as wan_keys

    c = tr.config
    with torch.device("meta"):
        core = comfy.ldm.wan.model.WanModel(
            model_type="i2v", patch_size=tuple(c.patch_size), text_len=512, in_dim=c.in_channels,
            dim=c.num_attention_heads * c.attention_head_dim, ffn_dim=c.ffn_dim, freq_dim=c.freq_dim,
            text_dim=c.text_dim, out_dim=c.out_channels, num_heads=c.num_attention_heads, num_layers=c.num_layers,
            qk_norm=True, cross_attn_norm=c.cross_attn_norm, eps=c.eps, device="meta", dtype=torch.bfloat16,
            operations=comfy.ops.manual_cast)
    native = wan_keys.transformer_to_native(dict(tr.state_dict()))
    missing, unexpected = core.load_state_dict(native, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"core WanModel vs the pack's native key map: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    return core.eval().requires_grad_(False)


def run_core_route(ctx: Ctx, fig: Figure) -> dict[str, Row]:
    """Issue 11: core's Wan model (what AniSora's core route samples with) vs our transformer, one forward = one
    step at cfg 1, interleaved on the same weights and inputs."""
    rid = "anisora_core_vs_own_s_per_step"
    comfy = import_comfy(ctx.comfyui)
    if comfy is None:
        return {rid: Row(rid, fig.rows[rid], status=SKIPPED,
                         note="needs ComfyUI: pass --comfyui PATH (a ComfyUI checkout) or set COMFYUI_DIR")}
    from animevideo.pipelines.anisora.text import MAX_TEXT_TOKENS, pad_prompt_embeds

    su = wan_setup(ctx)
    core = core_wan_from_ours(comfy, su.tr)
    dev, dt = ctx.device, su.compute
    x = torch.cat([su.noise, su.condition], 1).to(dev, dt)
    t = torch.tensor([900.0], device=dev)
    ctx_emb = pad_prompt_embeds(su.text.positive, MAX_TEXT_TOKENS).to(dev, dt)
    img = su.text.image_embeds.to(dev, dt)

    def ours():
        return su.tr(hidden_states=x, timestep=t, encoder_hidden_states=ctx_emb, encoder_hidden_states_image=img,
                     return_dict=False)[0]

    def theirs():
        return core(x, t, ctx_emb, clip_fea=img)

    times = {"ours": [], "core": []}
    peaks = {"ours": 0, "core": 0}
    outs = {}
    with torch.inference_mode():
        for r in range(3):  # the first pair warms up
            for name, fn in (("ours", ours), ("core", theirs)) if r % 2 == 0 else (("core", theirs), ("ours", ours)):
                ctx.reset_peak()
                before = torch.cuda.memory_allocated(dev) if ctx.cuda else 0
                t0 = time.perf_counter()
                out = fn()
                ctx.sync()
                if r:
                    times[name].append(time.perf_counter() - t0)
                if ctx.cuda:
                    peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(dev) - before)
                outs[name] = out.float().cpu()
                del out
    so, sc = med(times["ours"]), med(times["core"])
    diff = (outs["ours"] - outs["core"]).abs().max().item()
    scale = outs["ours"].abs().max().item()
    weights = sum(p.numel() * p.element_size() for p in su.tr.parameters()) / GiB
    work = (f"; working memory ours {peaks['ours'] / GiB:.2f} GiB, core {peaks['core'] / GiB:.2f} GiB over "
            f"{weights:.1f} GiB of shared weights") if ctx.cuda else ""
    row = _row(fig, rid, sc / so, "core/own", (torch.cuda.memory_allocated(dev) / GiB + max(peaks.values()) / GiB)
               if ctx.cuda else None,
               f"{su.setting}; one transformer forward = one step at cfg 1: ours {so:.3f} s, core WanModel "
               f"(comfy.ops.manual_cast) {sc:.3f} s, medians of {len(times['ours'])} interleaved; same weights: "
               f"max |ours - core| = {diff:.3g} (outputs up to {scale:.3g}){work}")
    row.check = {"max_abs_diff_ours_vs_core": diff, "max_abs_output": scale}
    return {rid: row}


# ---------------------------------------------------------------------------------------------
# LVCD s/frame (reuses bench/lvcd.py)
# ---------------------------------------------------------------------------------------------

def run_lvcd(ctx: Ctx, fig: Figure) -> dict[str, Row]:
    import lvcd as lvcd_bench

    if ctx.smoke:
        ns = SimpleNamespace(dtype="fp32", device="cpu", real_arch=False, seed=ctx.seed)
        h, w, frames, steps = 64, 64, 4, 1
    else:
        ns = SimpleNamespace(dtype="fp16", device=str(ctx.device), real_arch=True, seed=ctx.seed)
        h, w, frames, steps = 320, 576, 24, 25
    model = lvcd_bench.build_model(ns)
    r = lvcd_bench.speed(model, frames, h, w, steps, str(ctx.device), ctx.seed, warmup_steps=1 if ctx.smoke else 2)
    peak = r["peak_bytes"] / GiB if r["peak_bytes"] is not None else None
    return {"lvcd_s_per_frame": _row(
        fig, "lvcd_s_per_frame", r["s_per_frame"], "s/frame", peak,
        f"{frames} frames {h}x{w} ({r['passes']} passes of 14, overlap 4), {steps} steps, {model.dtype}; total "
        f"{r['total']:.1f} s, sampling {r['sampling']:.1f} s (paper: ~2 s/frame on an RTX A6000)")}


# ---------------------------------------------------------------------------------------------
# Upscalers (reuses bench/upscale.py)
# ---------------------------------------------------------------------------------------------

def run_upscale(ctx: Ctx, fig: Figure) -> dict[str, Row]:
    import upscale as up_bench

    from animevideo.pipelines.upscale import stream

    h, w, n = (32, 48, 4) if ctx.smoke else (320, 576, 16)
    frames = torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(ctx.seed))
    rows = {}
    for kind, rid in (("animesr", "animesr_fps"), ("compact", "realesr_animevideov3_fps")):
        up = up_bench.build(kind, ctx.seed, real=not ctx.smoke)
        up_bench._on_device(up, SimpleNamespace(device=str(ctx.device), dtype="auto"))
        opts = stream.StreamOptions(chunk_size=8)

        def call():
            with torch.inference_mode():
                out = stream.upscale_frames(up, frames, opts)
            ctx.sync()
            return out

        call()  # warm-up
        ctx.reset_peak()
        times, start = [], time.perf_counter()
        while True:
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
            # the two models share this figure's time
            if time.perf_counter() - start + times[-1] > fig.gpu_seconds / 2 or len(times) >= 5 or \
                    not ctx.more(times[-1]) or ctx.smoke:
                break
        rows[rid] = _row(fig, rid, n / med(times), "frames/s", ctx.peak_gib(),
                         f"{up.arch_name}, {n} frames {w}x{h} -> x4, {up.dtype}, chunk 8, output IMAGE on the CPU; "
                         f"median of {len(times)}")
        ctx.free()
    return rows


# ---------------------------------------------------------------------------------------------
# AnimeInterp x2 (reuses bench/interpolate.py)
# ---------------------------------------------------------------------------------------------

def run_interp(ctx: Ctx, fig: Figure) -> dict[str, Row]:
    import interpolate as interp_bench

    from animevideo.pipelines.interpolate import animeinterp as ai
    from animevideo.pipelines.interpolate import run, timing, tiny

    if ctx.smoke:
        cfg, (w, h), n, iters = tiny.TINY_CONFIG, (64, 64), 3, 2
    else:
        cfg, (w, h), n, iters = ai.AnimeInterpConfig(), (960, 544), 9, 12
    model = tiny.build_tiny_interpolator(ctx.seed, cfg).to(ctx.device)
    clip = interp_bench.synthetic_clip(n, w, h)
    plan = timing.plan_retiming(timing.ClipAnalysis(n, list(range(n))), 24, 48)
    n_interp = sum(1 for f in plan if not f.is_copy)

    def call():
        run.interpolate_clip(model, clip, plan, device=ctx.device, iters=iters)
        ctx.sync()

    call()
    ctx.reset_peak()
    times = []
    while True:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
        if len(times) >= 5 or not ctx.more(times[-1]) or ctx.smoke:
            break
    m = med(times)
    return {"animeinterp_x2_fps": _row(
        fig, "animeinterp_x2_fps", n_interp / m, "interpolated frames/s", ctx.peak_gib(),
        f"released widths, {n} frames {w}x{h} -> {len(plan)} ({n_interp} interpolated), {iters} flow iterations, "
        f"fp32; {len(plan) / m:.2f} output frames/s; median of {len(times)}")}


# ---------------------------------------------------------------------------------------------
# StreamingT2V s/frame (issue 16): the released architecture from the released key table, random weights
# ---------------------------------------------------------------------------------------------

def _released_streaming_t2v_state_dict(device, dtype, seed: int) -> dict:
    """Random tensors in the shapes of the released streaming_t2v.ckpt (its key table, a test fixture)."""
    import gzip

    table = os.path.join(os.path.dirname(BENCH), "tests", "data", "reference_fixtures", "streaming_t2v",
                         "released_keys.tsv.gz")
    gen = torch.Generator(device=device).manual_seed(seed)
    sd = {}
    with gzip.open(table, "rt") as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")
            dims = tuple(int(x) for x in shape.split(",") if x)
            sd[key] = (torch.randn(dims, generator=gen, device=device, dtype=torch.float32) * 0.02).to(dtype)
    return sd


def run_streamingt2v(ctx: Ctx, fig: Figure) -> dict[str, Row]:
    from animevideo.pipelines.streaming_t2v import extend, loader, tiny

    dtype = torch.float32 if ctx.smoke else torch.float16
    if ctx.smoke:
        sd, size, target, steps = tiny.build_tiny_state_dict(ctx.seed), 32, 24, 2
    else:  # 16 given frames at 256x256 (the ModelScope variant's size) + 2 chunks of 8 new frames, 50 steps
        sd, size, target, steps = _released_streaming_t2v_state_dict(ctx.device, dtype, ctx.seed), 256, 32, 50
    model = loader.load_streaming_t2v("streaming_t2v.ckpt", dtype, None if ctx.smoke else torch.float32,
                                      sd=sd).to(ctx.device)
    del sd
    width = model.text_encoder.config.hidden_size
    gen = torch.Generator().manual_seed(ctx.seed)
    # the text encoder's output for a prompt: its content does not change the time
    pos = torch.randn(1, extend.NUM_TEXT_TOKENS, width, generator=gen).to(ctx.device, dtype)
    neg = torch.randn(1, extend.NUM_TEXT_TOKENS, width, generator=gen).to(ctx.device, dtype)
    clip = torch.rand(16, 3, size, size, generator=gen)

    def call(frames, n_steps):
        out = extend.extend_clip(model, clip, pos, neg, frames, steps=n_steps, seed=ctx.seed).frames
        ctx.sync()
        return out

    call(24, 1)  # warm-up: kernels, allocator
    ctx.reset_peak()
    t = time.perf_counter()
    out = call(target, steps)
    seconds = time.perf_counter() - t
    new_frames = out.shape[0] - 16
    del model
    ctx.free()
    return {"streamingt2v_s_per_frame": _row(
        fig, "streamingt2v_s_per_frame", seconds / max(1, new_frames), "s/new frame", ctx.peak_gib(),
        f"released architecture (key table of streaming_t2v.ckpt), random weights, {dtype} (VAE fp32), 16 -> "
        f"{out.shape[0]} frames at {size}x{size}, {steps} DDIM steps, cfg {extend.DEFAULT_CFG}; the official README: "
        "about 1.4 s/frame on an A100 80 GB (preview setting)")}


# ---------------------------------------------------------------------------------------------
# the figures
# ---------------------------------------------------------------------------------------------

def _has(*rel: str) -> bool:
    root = os.path.dirname(BENCH)
    return any(os.path.exists(os.path.join(root, r)) for r in rel)


def figures() -> list[Figure]:
    return [
        Figure("upscale", {"animesr_fps": "AnimeSR x4 frames/s, 320x576 in",
                           "realesr_animevideov3_fps": "realesr-animevideov3 x4 frames/s, 320x576 in"},
               run_upscale, 40),
        Figure("interp", {"animeinterp_x2_fps": "AnimeInterp x2 interpolated frames/s, 960x544"}, run_interp, 40),
        Figure("svd", {"svd_xt_ours_s_per_step": "SVD-XT 14 f 1024x576, 25 steps: ours s/step",
                       "svd_xt_diffusers_s_per_step": "SVD-XT 14 f 1024x576, 25 steps: diffusers s/step",
                       "svd_xt_ratio": "SVD-XT s/step ratio ours/diffusers"}, run_svd, 110),
        Figure("wan", {"wan14b_fp8_uncapped_s_per_step": "Wan2.1-I2V-14B fp8 832x480x81 s/step, uncapped",
                       "wan14b_fp8_capped16gb_s_per_step": "Wan2.1-I2V-14B fp8 832x480x81 s/step, capped 16 GiB"},
               run_wan, 150),
        Figure("lvcd", {"lvcd_s_per_frame": "LVCD s/frame, 320x576, 25 steps"}, run_lvcd, 90),
        # Hooks: each becomes a figure function like the ones above once its code is in the tree.
        Figure("anisora_core_route",
               {"anisora_core_vs_own_s_per_step": "AniSora Wan 14B fp8: core WanModel vs ours, s/step ratio"},
               run_core_route, 60),
        Figure("streamingt2v",
               {"streamingt2v_s_per_frame": "StreamingT2V s/frame, 256x256 extension (issue 16)"}, run_streamingt2v,
               60),
    ]


def run_all(args) -> tuple[list[Row], dict]:
    ctx = Ctx(args)
    only = set(args.only.split(",")) if args.only else None
    rows: list[Row] = []
    info = environment(ctx, args)
    for fig in figures():
        if only is not None and fig.name not in only:
            continue
        t0 = time.perf_counter()
        got: dict[str, Row] = {}
        if fig.run is None:
            got = {rid: Row(rid, what, status=NOT_IN_BUILD, note=fig.absent or "figure function not written yet")
                   for rid, what in fig.rows.items()}
        elif ctx.left() <= 0:
            got = {rid: Row(rid, what, status=SKIPPED, note=f"global budget of {args.budget_s:.0f} s used up")
                   for rid, what in fig.rows.items()}
        else:
            ctx.figure_start, ctx.figure_seconds = t0, (0.0 if args.smoke else fig.gpu_seconds)
            print(f"[{fig.name}] running ({ctx.left():.0f} s of budget left)", flush=True)
            try:
                got = fig.run(ctx, fig)
            except Exception as e:  # noqa: BLE001  (one figure's failure must not lose the others)
                tb = traceback.format_exc()
                print(tb, file=sys.stderr, flush=True)
                got = {rid: Row(rid, what, status=ERROR, note=f"{type(e).__name__}: {str(e)[:300]}")
                       for rid, what in fig.rows.items()}
            ctx.free()
        for rid, what in fig.rows.items():
            if rid not in got:  # a figure that forgot a row reports it instead of dropping it
                got[rid] = Row(rid, what, status=ERROR, note="the figure returned no value for this row")
        dt = time.perf_counter() - t0
        for rid in fig.rows:
            r = got[rid]
            r.note = (r.note + f" [figure took {dt:.0f} s]").strip() if fig.run is not None else r.note
            rows.append(r)
            print(f"  {r.figure}: {fmt_value(r)}", flush=True)
    info["seconds"] = round(time.perf_counter() - (ctx.deadline - args.budget_s), 1)
    return rows, info


def environment(ctx: Ctx, args) -> dict:
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                torch=torch.__version__, python=platform.python_version(), smoke=args.smoke,
                device=str(ctx.device), budget_s=args.budget_s)
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    if ctx.cuda:
        p = torch.cuda.get_device_properties(ctx.device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GiB, 1), cuda=torch.version.cuda)
    else:
        info.update(cpu_threads=torch.get_num_threads())
    return info


def fmt_value(r: Row) -> str:
    if r.status != OK:
        return f"{r.status}: {r.note}"
    v = r.value
    s = f"{v:.4g}" if v is not None and math.isfinite(v) else str(v)
    return f"{s} {r.unit}"


def markdown(rows: list[Row], info: dict) -> str:
    head = ", ".join(f"{k} {v}" for k, v in info.items())
    lines = ["# bench/gpu_suite.py", "", head, "",
             "| figure | value | peak VRAM | note |", "|---|---|---|---|"]
    for r in rows:
        val = fmt_value(r) if r.status == OK else f"**{r.status}**"
        pk = f"{r.peak_vram_gib:.2f} GiB" if r.peak_vram_gib is not None else "-"
        note = r.note.replace("|", "/")
        lines.append(f"| {r.what} (`{r.figure}`) | {val} | {pk} | {note} |")
    return "\n".join(lines) + "\n"


def write(out: str, rows: list[Row], info: dict):
    stem = out[:-5] if out.endswith(".json") else out[:-3] if out.endswith(".md") else out
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(dict(info=info, rows=[{**r.__dict__} for r in rows]), f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(rows, info))
    return stem + ".json", stem + ".md"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="STEM: writes STEM.json and STEM.md")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="global time budget; figures not started by then are skipped (default 450)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script end to end")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", default="", help="comma-separated figure names (upscale,interp,svd,wan,lvcd)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave; --smoke: 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_DIR", ""),
                    help="a ComfyUI checkout, for the core-route figure (default: $COMFYUI_DIR)")
    args = ap.parse_args(argv)
    threads = args.threads or (1 if args.smoke else 0)
    if threads:
        torch.set_num_threads(threads)
    if not args.smoke and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU, or use --smoke for the CPU check")
    rows, info = run_all(args)
    print()
    print(markdown(rows, info))
    paths = write(args.out, rows, info)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

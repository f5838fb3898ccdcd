"""Evaluation as the papers do it: a clip against its gold frames, and a set of clips against a gold set.

Clip vs gold (frame-by-frame; PSNR, SSIM, LPIPS, EDMD, TC):

- resolution ``generated`` (the anime pipeline paper, D000: "we resize the gold standard anime frames to match
  the resolution of the output") resizes gold to the generated size; ``256`` (LVCD) resizes both to 256x256;
- lengths: ``shorter`` scores the first min(N_generated, N_gold) frames of both, ``exact`` refuses a mismatch;
- ``skip_first``: leave frame 0 out (LVCD's reference frame, GANime's conditioning frame);
- resizing: antialiased bicubic, clamped to 0..1.

Set vs set (FVD, KVD on I3D; FID on Inception): see :mod:`.features` for the clip protocols; a report states the
protocol, the set sizes and whether the covariance is rank-deficient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError
from . import edmd as edmd_mod
from . import features, pixel, stats, temporal
from . import motion_mask as motion_mask_mod

RESOLUTIONS = ("generated", "256")
LENGTHS = ("shorter", "exact")
LVCD_SIZE = 256
LPIPS_MIN_SIDE = 32


def resize_frames(frames: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """IMAGE [N, H, W, C] 0..1 -> [N, h, w, C] (antialiased bicubic, clamped); unchanged when the size matches."""
    if tuple(frames.shape[1:3]) == (h, w):
        return frames.float()
    x = frames.float().permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return x.permute(0, 2, 3, 1)


def _as_image(frames, input_name: str) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise AnimeVideoInputError(f"{input_name}: expected an IMAGE batch [frames, H, W, 3], got {shape}.")
    if frames.shape[0] == 0:
        raise AnimeVideoInputError(f"{input_name}: the batch is empty.")
    return features.as_clip(frames, input_name)


@dataclass
class AlignedPair:
    generated: torch.Tensor
    gold: torch.Tensor
    notes: list[str]
    protocol: str


def align_pair(generated, gold, resolution: str = "generated", length: str = "shorter",
               skip_first: bool = False) -> AlignedPair:
    """Both clips as float [N, H, W, 3] 0..1 of one size and length, as the chosen protocol says."""
    if resolution not in RESOLUTIONS:
        raise AnimeVideoInputError(f"resolution: '{resolution}' is not one of {', '.join(RESOLUTIONS)}.")
    if length not in LENGTHS:
        raise AnimeVideoInputError(f"length: '{length}' is not one of {', '.join(LENGTHS)}.")
    g, r = _as_image(generated, "generated"), _as_image(gold, "gold")
    notes = []
    ng, nr = g.shape[0], r.shape[0]
    if ng != nr:
        if length == "exact":
            raise AnimeVideoInputError(
                f"generated has {ng} frames and gold {nr}; with length 'exact' they must match. Use 'shorter' to score "
                "the first frames both have.")
        notes.append(f"lengths differ ({ng} generated, {nr} gold): the first {min(ng, nr)} frames of each are scored")
        g, r = g[:min(ng, nr)], r[:min(ng, nr)]
    if skip_first:
        if g.shape[0] < 2:
            raise AnimeVideoInputError("generated: skip_first_frame leaves no frame to score; give at least 2 frames.")
        g, r = g[1:], r[1:]
    if resolution == "generated":
        h, w = g.shape[1:3]
        if tuple(r.shape[1:3]) != (h, w):
            notes.append(f"gold resized from {r.shape[2]}x{r.shape[1]} to the generated {w}x{h}")
        r = resize_frames(r, h, w)
        protocol = f"gold resized to the generated {w}x{h} (anime pipeline paper)"
    else:
        g, r = resize_frames(g, LVCD_SIZE, LVCD_SIZE), resize_frames(r, LVCD_SIZE, LVCD_SIZE)
        protocol = f"both resized to {LVCD_SIZE}x{LVCD_SIZE} (LVCD)"
    frames = g.shape[0]
    protocol += f"; {frames} frame pair(s)" + ("; frame 0 left out" if skip_first else "")
    return AlignedPair(g, r, notes, protocol)


@dataclass
class ClipReport:
    psnr: float = math.nan
    ssim: float = math.nan
    lpips: float = math.nan
    edmd: float = math.nan
    tc: float = math.nan
    mask_precision: float = math.nan
    frames: int = 0
    size: tuple[int, int] = (0, 0)  # (width, height)
    protocol: str = ""
    methods: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def values(self) -> dict[str, float]:
        return {"psnr": self.psnr, "ssim": self.ssim, "lpips": self.lpips, "edmd": self.edmd, "tc": self.tc,
                "mask_precision": self.mask_precision}

    def as_dict(self) -> dict:
        return {**{k: _json_float(v) for k, v in self.values().items()}, "frames": self.frames,
                "width": self.size[0], "height": self.size[1], "protocol": self.protocol, "methods": self.methods,
                "notes": self.notes}

    def describe(self) -> str:
        lines = [f"Clip vs gold: {self.protocol}"]
        arrows = {"psnr": "dB, higher is better", "ssim": "higher is better", "lpips": "lower is better",
                  "edmd": "px, lower is better", "tc": "1 = as consistent as gold, lower is better",
                  "mask_precision": "share of the motion inside the mask, higher is better"}
        for name, value in self.values().items():
            label = "MASK P" if name == "mask_precision" else name.upper()
            if name in self.methods:
                lines.append(f"  {label:<6} {_fmt(value):>10}  ({arrows[name]}; {self.methods[name]})")
            else:
                lines.append(f"  {label:<6} {'-':>10}  (not computed: {_missing_reason(name)})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _missing_reason(name: str) -> str:
    return {"lpips": "no LPIPS network given", "edmd": "no lineart extractor given",
            "tc": "no flow network given", "mask_precision": "no motion mask given", "psnr": "-", "ssim": "-"}[name]


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf"
    return f"{v:.4f}"


def _json_float(v: float):
    return None if math.isnan(v) else ("inf" if math.isinf(v) else v)


Interrupt = Callable[[], None]
Progress = Callable[[int, int], None]


@torch.inference_mode()
def lpips_per_frame(model, generated: torch.Tensor, gold: torch.Tensor, chunk: int = 8, device=None,
                    check_interrupt: Interrupt | None = None) -> torch.Tensor:
    """[N] LPIPS of frame i vs frame i (inputs IMAGE 0..1 of the same shape)."""
    if min(generated.shape[1:3]) < LPIPS_MIN_SIDE:
        raise AnimeVideoInputError(f"generated: LPIPS needs frames of at least {LPIPS_MIN_SIDE} px on each side, got "
                                   f"{generated.shape[2]}x{generated.shape[1]}.")
    device = device or model.device
    out = []
    for s in range(0, generated.shape[0], max(1, int(chunk))):
        if check_interrupt is not None:
            check_interrupt()
        a = generated[s:s + chunk].to(device, model.dtype).permute(0, 3, 1, 2) * 2 - 1
        b = gold[s:s + chunk].to(device, model.dtype).permute(0, 3, 1, 2) * 2 - 1
        out.append(model(a, b).double().cpu())
    return torch.cat(out)


def clip_metrics(generated, gold, resolution: str = "generated", length: str = "shorter", skip_first: bool = False,
                 lpips_model=None, lineart_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 reference_lineart: torch.Tensor | None = None, flow_fn: temporal.FlowFn | None = None,
                 flow_min_side: int = 0, chunk: int = 8, on_step: Callable[[str], None] | None = None,
                 check_interrupt: Interrupt | None = None, motion_mask: torch.Tensor | None = None) -> ClipReport:
    """Every frame metric that the given networks allow. ``lineart_fn``: colour IMAGE -> LVCD hints (EDMD);
    ``reference_lineart``: the input sketches to compare with (LVCD) instead of lineart re-extracted from gold;
    ``flow_fn``: a flow estimator for TC (see :func:`temporal.animeinterp_flow`); ``motion_mask``: MASK (1 = may
    move) for AniSora's motion-mask precision of the generated frames (our reconstruction, see
    :mod:`.motion_mask`)."""
    pair = align_pair(generated, gold, resolution, length, skip_first)
    g, r = pair.generated, pair.gold
    report = ClipReport(frames=int(g.shape[0]), size=(int(g.shape[2]), int(g.shape[1])), protocol=pair.protocol,
                        notes=list(pair.notes))

    def step(name):
        if check_interrupt is not None:
            check_interrupt()
        if on_step is not None:
            on_step(name)

    psnr = pixel.psnr_per_frame(g, r)
    report.psnr = float(psnr.mean())
    report.methods["psnr"] = "per frame on [0, 255], mean over frames"
    if torch.isinf(psnr).any():
        report.notes.append(f"{int(torch.isinf(psnr).sum())} frame(s) identical to gold: PSNR is infinite")
    step("psnr")
    report.ssim = float(pixel.ssim_per_frame(g, r, chunk).mean())
    report.methods["ssim"] = "11x11 Gaussian (1.5), K1 0.01, K2 0.03, on [0, 255], RGB mean"
    step("ssim")
    if lpips_model is not None:
        report.lpips = float(lpips_per_frame(lpips_model, g, r, chunk, check_interrupt=check_interrupt).mean())
        report.methods["lpips"] = f"LPIPS v0.1 {lpips_model.kind.upper()}, [-1, 1], mean over frames"
        step("lpips")
    if lineart_fn is not None:
        ref_note = "lineart re-extracted from gold"
        if reference_lineart is not None:
            from ..lineart.extract import to_hint

            ref = to_hint(_as_image(reference_lineart, "reference_lineart"), "auto")
            n0 = 1 if skip_first else 0
            ref = ref[n0:n0 + g.shape[0]]
            if ref.shape[0] != g.shape[0]:
                raise AnimeVideoInputError(f"reference_lineart: {ref.shape[0] + n0} sketches for {g.shape[0] + n0} "
                                           "scored frames; give one sketch per frame.")
            ref_hints = resize_frames(ref, g.shape[1], g.shape[2])
            ref_note = "against the given input sketches"
        else:
            ref_hints = lineart_fn(r)
        gen_hints = lineart_fn(g)
        res = edmd_mod.edmd(edmd_mod.binarize(gen_hints), edmd_mod.binarize(ref_hints))
        report.edmd = res.value
        report.methods["edmd"] = f"RMSE of exact distance maps, lines > 0.5, {ref_note}"
        if res.frames_without_lines:
            report.notes.append(f"EDMD: {res.frames_without_lines} frame(s) without any line pixel were left out")
        step("edmd")
    if flow_fn is not None:
        if g.shape[0] < 2:
            report.notes.append("TC needs at least 2 frames; not computed")
        else:
            flows = temporal.gold_flows(r, flow_fn, min_side=flow_min_side)
            res = temporal.temporal_consistency(g, r, flows)
            report.tc = res.value
            report.methods["tc"] = (f"LVCD Eq. 9, gold flow F(t+1 -> t), no occlusion mask; warping error "
                                    f"{res.generated_error:.4f} generated / {res.gold_error:.4f} gold")
        step("tc")
    if motion_mask is not None:
        if g.shape[0] < 2:
            report.notes.append("motion-mask precision needs at least 2 scored frames; not computed")
        else:
            res = motion_mask_mod.motion_mask_precision(g, motion_mask)
            report.mask_precision = res.precision
            report.methods["mask_precision"] = (f"AniSora, our reconstruction: frame difference > "
                                                f"{res.threshold:g}; mask allows {res.mask_fraction * 100:.1f}% "
                                                "(uniform motion would score that)")
        step("mask")
    return report


# ------------------------------------------------------------------------------------------------------
# Set level
# ------------------------------------------------------------------------------------------------------

@dataclass
class SetReport:
    fvd: float = math.nan
    kvd: float = math.nan
    fid: float = math.nan
    clips: tuple[int, int] = (0, 0)  # generated, gold
    video_samples: tuple[int, int] = (0, 0)
    image_samples: tuple[int, int] = (0, 0)
    protocols: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def values(self) -> dict[str, float]:
        return {"fvd": self.fvd, "kvd": self.kvd, "fid": self.fid}

    def as_dict(self) -> dict:
        return {**{k: _json_float(v) for k, v in self.values().items()},
                "clips": {"generated": self.clips[0], "gold": self.clips[1]},
                "video_samples": {"generated": self.video_samples[0], "gold": self.video_samples[1]},
                "image_samples": {"generated": self.image_samples[0], "gold": self.image_samples[1]},
                "protocols": self.protocols, "notes": self.notes}

    def describe(self) -> str:
        lines = [f"Set vs set: {self.clips[0]} generated clip(s) against {self.clips[1]} gold clip(s)"]
        for name, value in self.values().items():
            key = "fvd" if name in ("fvd", "kvd") else "fid"
            if key in self.protocols:
                n = self.video_samples if key == "fvd" else self.image_samples
                lines.append(f"  {name.upper():<4} {_fmt(value):>12}  (lower is better; {n[0]} vs {n[1]} samples)")
            else:
                lines.append(f"  {name.upper():<4} {'-':>12}  (not computed: no "
                             f"{'I3D' if key == 'fvd' else 'Inception'} network given)")
        lines += [f"  {k.upper()} protocol: {v}" for k, v in self.protocols.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def set_metrics(generated: Callable[[], Iterable[torch.Tensor]], gold: Callable[[], Iterable[torch.Tensor]],
                i3d_model=None, inception_model=None, protocol: str = "standard", batch_size: int = 8,
                skip_first_fid: bool = False, counts: tuple[int, int] = (0, 0),
                on_clip: Callable[[], None] | None = None, check_interrupt: Interrupt | None = None,
                kvd_subset_size: int = 1000) -> SetReport:
    """FVD/KVD (with ``i3d_model``) and FID (with ``inception_model``) between two clip sets.

    ``generated`` and ``gold`` are called once per network and yield clips [T, H, W, 3] (read lazily, so only one
    batch of windows is in memory at a time)."""
    if i3d_model is None and inception_model is None:
        raise AnimeVideoInputError("no network given: FVD/KVD need the I3D network, FID the Inception network.")
    report = SetReport(clips=counts)

    def tick(_):
        if on_clip is not None:
            on_clip()

    if i3d_model is not None:
        fa = features.video_features(i3d_model, generated(), protocol, batch_size, on_clip=tick,
                                     check_interrupt=check_interrupt, input_name="generated")
        fb = features.video_features(i3d_model, gold(), protocol, batch_size, on_clip=tick,
                                     check_interrupt=check_interrupt, input_name="gold")
        fvd = stats.frechet_distance(fa, fb, "FVD")
        report.fvd = fvd.value
        report.kvd = stats.kernel_distance(fa, fb, "KVD", subset_size=kvd_subset_size).value
        report.video_samples = (fvd.count_a, fvd.count_b)
        report.protocols["fvd"] = features.VIDEO_PROTOCOLS[protocol].description + \
            "; KVD: unbiased MMD^2, kernel (x.y/d + 1)^3"
        if fvd.rank_deficient:
            report.notes.append(fvd.note())
    if inception_model is not None:
        fa = features.image_features(inception_model, generated(), on_clip=tick, check_interrupt=check_interrupt,
                                     input_name="generated", skip_first=skip_first_fid)
        fb = features.image_features(inception_model, gold(), on_clip=tick, check_interrupt=check_interrupt,
                                     input_name="gold", skip_first=skip_first_fid)
        fid = stats.frechet_distance(fa, fb, "FID")
        report.fid = fid.value
        report.image_samples = (fid.count_a, fid.count_b)
        report.protocols["fid"] = features.FID_DESCRIPTION + ("; frame 0 of each clip left out" if skip_first_fid
                                                              else "")
        if fid.rank_deficient:
            report.notes.append(fid.note())
    return report

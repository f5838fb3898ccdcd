"""AniSora V1, the method: keyframe packing and sampling on the CogVideoX-5B image-to-video backbone (32 input
channels), on diffusers' modules.

The backbone (detection, SAT <-> diffusers key maps, loading, positions) is pipelines/backbones/cogvideox/;
:func:`load_cogvideox` wraps its parts into an :class:`AniSoraModel`.

Conditioning (:func:`build_guide_latents`), as AniSora's V1 code does it:
- every keyframe is VAE-encoded alone as a 1-frame clip (a sample of the latent distribution, as diffusers'
  ``CogVideoXImageToVideoPipeline`` does for its first frame), multiplied by the VAE scaling factor (0.7) and
  by the keyframe's strength, and written into latent slot ``k(i) = 0 if i == 0 else (i - 1) // 4 + 1``;
  all other slots are zeros (the zeros *are* the mask: V1 has no mask channel);
- the transformer input is ``cat([noise latent (16), guide latents (16)], channels)``;
- ``num_frames`` must be 8k+1 (4k+1 for the VAE, and an odd latent count: CogVideoX's decoder restores the
  causal first frame only then, and SAT allows 9/11/13 latent frames): others are snapped (ties up), reported;
  width and height are snapped to multiples of 16 (VAE x8, patch 2);
- two keyframes in one latent slot: the later frame wins (reported).

Motion masks: V1 has no mask channel, so the *latent-blend fallback* (digest A6.5) is used: the whole clip
made of the nearest keyframe is VAE-encoded once; after every sampler step the static region (1 − mask, reduced
to latent slots by a min over the slot's pixel frames and 8×8 pixels, then eroded by one latent pixel, i.e.
the motion mask dilated by one) is replaced by that latent noised to the step's level (clean after the last
step), weighted by the keyframe strength. This mirrors the paper's latent post-processing of the training target.

Sampling (:func:`generate`), as ``CogVideoXImageToVideoPipeline`` does: v-prediction, zero-terminal-SNR
DDPM (the scheduler config of the folder, else CogVideoX-5b-I2V's), ``CogVideoXDPMScheduler`` (DPM-Solver++(2M)
SDE, the official V1 sampler) or ``CogVideoXDDIMScheduler`` (``sampler="ddim"``); CFG over text only, the
unconditional branch keeps the guide latents; DynamicCFG ``w = 1 + s·(1 − cos(π·x⁵))/2`` with ``s = cfg``:
by default (``dynamic_cfg_timestep_quirk``, digest A6.7: V1's behaviour) the original's ``x = (steps − t) / steps``
with ``t`` the discrete DDPM timestep (SAT passes ``step_index=num_steps − timestep``, diffusers' pipeline the
same; w is then a pseudo-random value in [1, 1+s]); with the quirk off the intended ``x = step_index / steps``
(w ramps 1 → 1+s). ``cfg <= 1`` skips the unconditional pass.
One CPU generator seeded with ``seed`` draws, in diffusers' order, the keyframe latent samples, the initial
noise and the SDE noise, so a first-frame-only run equals diffusers' pipeline with the same generator.

Text: prompt embeddings ``[1, L, 4096]`` (T5-XXL) are zero-padded or truncated to the transformer's 226 tokens
(the learned positional table covers exactly 226 text positions). diffusers pads with the T5 outputs of pad
tokens instead; SAT's unconditional branch is an all-zero embedding (ComfyUI's ConditioningZeroOut gives it).

Positions: with the learned positional table (CogVideoX-5B-I2V / AniSora V1) diffusers only runs at the trained
resolution and swaps in sin-cos positions for other frame counts; here, as in the original SAT code, the first
``226 + tokens`` rows of the table are used (equal to diffusers at the trained size and frame count; at other
frame counts it is the trained table's first frames). RoPE is computed as diffusers' pipeline does.

Request/hook extras: ``request.fit`` fits keyframes/masks of another size (crop / pad / stretch; None =
bilinear stretch), ``request.vae_tiling`` switches CogVideoX's tiled VAE encode/decode, and ``hooks.device`` /
``hooks.offload_device`` keep only the part at work (VAE, then transformer, then VAE) on the compute device.

Known differences from the original SAT sampler (kept for parity with diffusers): the zero-terminal-SNR
rescale is applied to the 1000-step table (SAT rescales the subsampled step set); keyframe latents are a
sample of the VAE posterior (SAT's guides are the encoder's output, with no added noise); latents are kept in
float32 between steps (diffusers casts them to the model dtype; identical in float32).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..backbones.cogvideox.detect import is_cogvideox_folder, is_cogvideox_state_dict  # noqa: F401 (anisora/loader.py)
from ..backbones.cogvideox.loader import (DEFAULT_SCHEDULER_CONFIG, SPATIAL_RATIO, TEMPORAL_RATIO, TEXT_LENGTH,
                                          load_cogvideox_parts)
from ..backbones.cogvideox.positions import learned_positions, rotary_embedding
from ..errors import AnimeVideoInputError
from .model import AniSoraHooks, AniSoraModel, AniSoraRequest, AniSoraResult, TextConditioning, on_device

BACKBONE = "cogvideox"


def load_cogvideox(transformer_path_or_folder: str, vae_path_or_none: str | None, dtype: torch.dtype) -> AniSoraModel:
    """AniSora V1 from a diffusers folder (its ``vae/`` used unless a VAE file is given) or from a single
    transformer file (diffusers or SAT layout) plus a VAE file or folder
    (:func:`backbones.cogvideox.loader.load_cogvideox_parts`)."""
    parts = load_cogvideox_parts(transformer_path_or_folder, vae_path_or_none, dtype)
    return AniSoraModel(
        backbone=BACKBONE, transformer=parts.transformer, vae=parts.vae, dtype=dtype, source=parts.source,
        extras={"layout": parts.layout, "scheduler_config": parts.scheduler_config,
                "vae_scaling_factor": float(parts.vae.config.scaling_factor)})


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------

def latent_slot(i: int) -> int:
    """Latent frame holding pixel frame ``i`` in the causal VAE: slot 0 is frame 0 alone, slot k >= 1 holds
    pixel frames 4k-3 .. 4k."""
    return 0 if i == 0 else (i - 1) // TEMPORAL_RATIO + 1


def slot_frames(k: int) -> tuple[int, int]:
    return (0, 0) if k == 0 else (TEMPORAL_RATIO * k - 3, TEMPORAL_RATIO * k)


def snap_num_frames(n: int) -> tuple[int, str | None]:
    """Nearest 8k+1 (ties go up). The causal VAE packs 4 frames per latent after the first (4k+1), and its
    decoder only restores the causal first frame for an odd number of latent frames, so CogVideoX clips have
    an odd latent count: 1, 9, 17, …, 49 frames (AniSora's SAT code allows 9/11/13 latent frames)."""
    n = int(n)
    if n < 1:
        raise AnimeVideoInputError(f"num_frames: {n} is not allowed; use 8k+1 frames (1, 9, 17, ..., 49).")
    step = 2 * TEMPORAL_RATIO
    snapped = step * max(0, math.floor((n - 1) / step + 0.5)) + 1
    if snapped == n:
        return n, None
    return snapped, (f"num_frames: {n} is not 8k+1 (CogVideoX needs 4k+1 frames with an odd number of latent "
                     f"frames, e.g. 49); snapped to {snapped}.")


def snap_size(v: int, name: str) -> tuple[int, str | None]:
    m = SPATIAL_RATIO * 2  # VAE x8, then 2x2 patches
    s = max(m, int(round(v / m)) * m)
    if s == v:
        return v, None
    return s, f"{name}: {v} is not a multiple of {m}; snapped to {s}."


def plan_keyframes(guide, num_frames: int):
    """[(resolved keyframe, slot)] with one keyframe per slot (the later frame wins), and the info lines."""
    try:
        resolved = guide.resolve_keyframes(num_frames) if guide is not None else []
    except AnimeVideoInputError as e:
        raise AnimeVideoInputError(f"{e} (AniSora V1 clip: {num_frames} frames after snapping to 4k+1)") from None
    by_slot, lines = {}, []
    for r in resolved:
        k = latent_slot(r.index)
        if k in by_slot:
            lines.append(f"keyframe at frame {by_slot[k].index} dropped: frame {r.index} uses the same "
                         f"latent slot {k}.")
        by_slot[k] = r
    for k in sorted(by_slot):
        r = by_slot[k]
        a, b = slot_frames(k)
        asked = "" if r.requested == r.index else f" (asked {r.requested})"
        span = "frame 0 alone" if k == 0 else f"pixel frames {a}-{b}, shown as frame {b}"
        lines.append(f"keyframe frame {r.index}{asked} -> latent slot {k} ({span}), strength {r.keyframe.strength:g}.")
    return [(by_slot[k], k) for k in sorted(by_slot)], lines


def _pixels(image: torch.Tensor, height: int, width: int, fit: str | None = None) -> torch.Tensor:
    """[H,W,3] 0..1 -> [1,3,H,W] -1..1 at the clip size (bilinear stretch as diffusers' VideoProcessor resizes,
    or the guide's ``fit`` mode: crop / pad / stretch)."""
    from ..guides import fit_frame

    return fit_frame(image.float(), height, width, fit).permute(2, 0, 1)[None] * 2 - 1


def build_guide_latents(model: AniSoraModel, guide, num_frames: int, height: int, width: int,
                        generator: torch.Generator | None = None, fit: str | None = None):
    """The 16 guide channels [1, T, 16, h, w] (float32) and info lines: each keyframe VAE-encoded alone as a
    1-frame clip (latent sample drawn with ``generator``), times the scaling factor and its strength, at its slot."""
    vae = model.vae
    device, vdtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    T = (num_frames - 1) // TEMPORAL_RATIO + 1
    c = vae.config.latent_channels
    out = torch.zeros(1, T, c, height // SPATIAL_RATIO, width // SPATIAL_RATIO, device=device)
    plan, lines = plan_keyframes(guide, num_frames)
    scale = model.extras.get("vae_scaling_factor", vae.config.scaling_factor)
    for r, k in plan:
        x = _pixels(r.keyframe.image, height, width, fit).to(device, vdtype)[:, :, None]  # [1,3,1,H,W]
        z = vae.encode(x).latent_dist.sample(generator)  # [1,16,1,h,w]
        out[:, k] = z[:, :, 0].float() * scale * r.keyframe.strength
    if not plan:
        lines.append("no keyframe: all guide slots are zero (text-to-video, as V1's 5% guide dropout trained).")
    return out, lines


def build_static_blend(model: AniSoraModel, guide, num_frames: int, height: int, width: int,
                       fit: str | None = None):
    """(clean static latents [1,T,16,h,w], blend weight [1,T,1,h,w], info) for a motion mask, else None."""
    if guide is None or guide.motion_mask is None:
        return None
    resolved = guide.resolve_keyframes(num_frames)
    if not resolved:
        raise AnimeVideoInputError(
            "guide: a motion mask needs at least one keyframe (the picture whose unmasked part stays still); "
            "add an AnimeVideoKeyframe before the mask.")
    vae = model.vae
    device, vdtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    idx = torch.tensor([r.index for r in resolved])
    nearest = [resolved[int((idx - f).abs().argmin())] for f in range(num_frames)]
    frames = {}
    video = torch.cat([frames.setdefault(id(n), _pixels(n.keyframe.image, height, width, fit)) for n in nearest])
    video = video.permute(1, 0, 2, 3)[None].to(device, vdtype)  # [1,3,F,H,W]
    scale = model.extras.get("vae_scaling_factor", vae.config.scaling_factor)
    z = (vae.encode(video).latent_dist.mode().float() * scale).permute(0, 2, 1, 3, 4)  # [1,T,16,h,w]
    mask = guide.mask_video(num_frames, height, width, fit)  # 1 = may move
    strength = torch.tensor([n.keyframe.strength for n in nearest]).view(-1, 1, 1)
    still = (1.0 - mask) * strength  # [F,H,W]
    T = z.shape[1]
    slots = []
    for k in range(T):
        a, b = slot_frames(k)
        slots.append(still[a:b + 1].amin(0))
    w = torch.stack(slots)[:, None]  # [T,1,H,W]
    w = -F.max_pool2d(-w, SPATIAL_RATIO)  # a latent pixel is static only if all its pixels are
    w = -F.max_pool2d(-w, 3, stride=1, padding=1)  # erode the static region = dilate the motion mask by one
    w = w[None].to(device)  # [1,T,1,h,w]
    frac = float((w > 0).float().mean())
    info = (f"motion mask: latent-blend fallback (V1 has no mask channel): after every step the static region "
            f"({frac:.0%} of latent pixels, mask dilated by 1 latent pixel) is reset to the keyframe's latent "
            f"noised to that step.")
    return z, w, info


# ---------------------------------------------------------------------------------------------
# text, CFG, scheduler
# ---------------------------------------------------------------------------------------------

def fit_text(emb: torch.Tensor, name: str, text_dim: int, length: int = TEXT_LENGTH):
    """[1, L, D] -> [1, length, D]: zero-padded or truncated; returns (tensor, note or None)."""
    if emb.ndim == 2:
        emb = emb[None]
    if emb.ndim != 3 or emb.shape[0] != 1:
        raise AnimeVideoInputError(
            f"{name}: expected prompt embeddings [1, tokens, {text_dim}], got {tuple(emb.shape)}.")
    if emb.shape[-1] != text_dim:
        raise AnimeVideoInputError(
            f"{name}: the embeddings are {emb.shape[-1]}-wide; AniSora V1 (CogVideoX) takes T5-XXL embeddings "
            f"({text_dim}-wide). Encode the prompt with a T5-XXL text encoder (CLIPLoader with t5xxl).")
    L = emb.shape[1]
    if L == length:
        return emb, None
    if L > length:
        return emb[:, :length], f"{name}: {L} tokens truncated to {length}."
    pad = emb.new_zeros(1, length - L, emb.shape[-1])
    return torch.cat([emb, pad], 1), f"{name}: {L} tokens zero-padded to {length}."


def dynamic_cfg_scale(scale: float, step_index: int, timestep: int, steps: int, quirk: bool) -> float:
    """DynamicCFG weight w = 1 + s(1 − cos(π x⁵))/2 with x = step_index/steps, or (quirk) x = (steps − t)/steps
    with t the discrete DDPM timestep, exactly as CogVideoX's SAT code and diffusers compute it."""
    x = (steps - timestep) / steps if quirk else step_index / steps
    return 1 + scale * (1 - math.cos(math.pi * x ** 5.0)) / 2


def make_scheduler(model: AniSoraModel, sampler: str):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    cfg = {k: v for k, v in model.extras.get("scheduler_config", DEFAULT_SCHEDULER_CONFIG).items()
           if not k.startswith("_")}
    if (sampler or "").lower() == "ddim":
        return CogVideoXDDIMScheduler.from_config(cfg), "DDIM (CogVideoXDDIMScheduler)"
    return CogVideoXDPMScheduler.from_config(cfg), "DPM-Solver++(2M) SDE (CogVideoXDPMScheduler, AniSora V1's sampler)"


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------

def set_vae_tiling(vae, enabled: bool):
    """CogVideoX's own tiling (diffusers' defaults: tiles of half the VAE's sample size, overlapping)."""
    if enabled:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


@torch.no_grad()
def generate(model: AniSoraModel, guide, text: TextConditioning, request: AniSoraRequest,
             hooks: AniSoraHooks | None = None) -> AniSoraResult:
    from diffusers import CogVideoXDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    hooks = hooks or AniSoraHooks()
    tr, vae = model.transformer, model.vae
    dtype = next(tr.parameters()).dtype
    info: list[str] = []
    num_frames, note = snap_num_frames(request.num_frames)
    width, wnote = snap_size(request.width, "width")
    height, hnote = snap_size(request.height, "height")
    info += [n for n in (note, wnote, hnote) if n]
    steps = int(request.steps)
    if steps < 1:
        raise AnimeVideoInputError(f"steps: {steps} is not allowed; use 1 or more (AniSora V1 uses 50).")
    cfg_scale = float(request.cfg)
    do_cfg = cfg_scale > 1.0

    text_dim = tr.config.text_embed_dim
    length = tr.config.max_text_seq_length
    pos, n1 = fit_text(text.positive, "positive", text_dim, length)
    embeds, text_notes = pos, [n1]
    if do_cfg:
        if text.negative is None:
            raise AnimeVideoInputError(
                f"negative: cfg {cfg_scale:g} > 1 needs a negative conditioning (AniSora V1's original uses an "
                "all-zero one: ConditioningZeroOut on the positive); or set cfg to 1 to skip guidance.")
        neg, n2 = fit_text(text.negative, "negative", text_dim, length)
        embeds = torch.cat([neg, pos])
        text_notes.append(n2)
    info += [n for n in text_notes if n]

    gen = torch.Generator("cpu").manual_seed(int(request.seed))
    T, h, w = (num_frames - 1) // TEMPORAL_RATIO + 1, height // SPATIAL_RATIO, width // SPATIAL_RATIO
    fit = getattr(request, "fit", None)
    set_vae_tiling(vae, bool(getattr(request, "vae_tiling", False)))
    with on_device(vae, hooks):
        image_latents, lines = build_guide_latents(model, guide, num_frames, height, width, gen, fit)
        blend = build_static_blend(model, guide, num_frames, height, width, fit)
    info += lines
    if hooks.device is not None:
        tr.to(hooks.device)
    device = next(tr.parameters()).device
    embeds = embeds.to(device, dtype)
    c = vae.config.latent_channels
    latents = randn_tensor((1, T, c, h, w), generator=gen, device=device, dtype=torch.float32)
    if blend is not None:
        static_z, static_w, line = blend
        static_z, static_w = static_z.to(device), static_w.to(device)
        info.append(line)
        blend_noise = randn_tensor(static_z.shape, generator=torch.Generator("cpu").manual_seed(int(request.seed) + 1),
                                   device=device, dtype=torch.float32)

    scheduler, sampler_name = make_scheduler(model, request.sampler)
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    latents = latents * scheduler.init_noise_sigma
    if do_cfg and request.dynamic_cfg:
        how = "timestep quirk (x = (steps - t)/steps, as the original)" if request.dynamic_cfg_timestep_quirk \
            else "x = step/steps, w ramps 1 -> 1+s"
        cfg_line = f"DynamicCFG s={cfg_scale:g} ({how})"
    elif do_cfg:
        cfg_line = f"CFG {cfg_scale:g}"
    else:
        cfg_line = "no CFG (cfg <= 1)"
    info.insert(0, f"AniSora V1 (CogVideoX I2V): {width}x{height}, {num_frames} frames -> latent {T}x{h}x{w}; "
                   f"{sampler_name}, {steps} steps; {cfg_line}. (shift is not used by this backbone.)")

    rotary = rotary_embedding(tr, h, w, T, device) if tr.config.use_rotary_positional_embeddings else None
    ofs = latents.new_full((1,), 2.0).to(dtype) if tr.config.ofs_embed_dim else None
    alphas = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    final_alpha = float(scheduler.final_alpha_cumprod)
    is_dpm = isinstance(scheduler, CogVideoXDPMScheduler)
    old_x0 = None
    image_in = image_latents.to(device, dtype)  # the VAE may sit on another device (offload)
    with on_device(tr, hooks), learned_positions(tr, T, h, w, info):
        for i, t in enumerate(timesteps):
            x_in = torch.cat([latents, latents]) if do_cfg else latents
            x_in = scheduler.scale_model_input(x_in, t)
            g_in = torch.cat([image_in, image_in]) if do_cfg else image_in
            x_in = torch.cat([x_in.to(dtype), g_in], dim=2)
            out = tr(hidden_states=x_in, encoder_hidden_states=embeds, timestep=t.expand(x_in.shape[0]),
                     ofs=ofs, image_rotary_emb=rotary, return_dict=False)[0].float()
            if do_cfg:
                scale = dynamic_cfg_scale(cfg_scale, i, int(t.item()), steps, request.dynamic_cfg_timestep_quirk) \
                    if request.dynamic_cfg else cfg_scale
                u, cnd = out.chunk(2)
                out = u + scale * (cnd - u)
            if is_dpm:
                latents, old_x0 = scheduler.step(out, old_x0, t, timesteps[i - 1] if i > 0 else None, latents,
                                                 eta=0.0, generator=gen, return_dict=False)
            else:
                latents = scheduler.step(out, t, latents, eta=0.0, generator=gen, return_dict=False)[0]
            latents = latents.float()
            if blend is not None:
                prev = int(t.item()) - scheduler.config.num_train_timesteps // steps
                a = float(alphas[prev]) if prev >= 0 else final_alpha
                noised = a ** 0.5 * static_z + (1 - a) ** 0.5 * blend_noise
                latents = static_w * noised + (1 - static_w) * latents
                if old_x0 is not None:
                    old_x0 = static_w * static_z + (1 - static_w) * old_x0.float()
            if hooks.on_step is not None:
                hooks.on_step(i + 1, steps)

    scale = model.extras.get("vae_scaling_factor", vae.config.scaling_factor)
    with on_device(vae, hooks):
        vdevice, vdtype = next(vae.parameters()).device, next(vae.parameters()).dtype
        z = (1 / scale * latents.permute(0, 2, 1, 3, 4)).to(vdevice, vdtype)  # as diffusers multiplies
        video = vae.decode(z).sample  # [1,3,F,H,W] in -1..1
    frames = (video[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()  # [F,H,W,3]
    return AniSoraResult(frames=frames, info="\n".join(info), latents=z.float().cpu())

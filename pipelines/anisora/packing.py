"""The Wan2.1-I2V conditioning of AniSora V2/V3/anymask (digest A1.2/A6.2, "Φ4"): guide -> mask + guide video.

The transformer input is ``cat(noise 16ch, mask 4ch, guide latent 16ch)`` = 36 channels:

* known mask: per pixel frame, binary (soft mask edges rounded at 0.5; a keyframe's ``strength`` must be
  >= 0.5 and then counts as 1, a lower one is an error rather than a silently dropped keyframe), at latent
  resolution (nearest downsample, as AniSora's anymask code does), 1 = given, 0 = generate. Frame 0's mask is
  repeated 4 times in front (the causal VAE's first latent frame holds pixel frame 0 alone), giving
  ``F + 3 = 4·T_lat`` frames, viewed as ``(T_lat, 4, h, w)`` and transposed to ``(4, T_lat, h, w)``. Pixel frame
  ``i >= 1`` therefore lands in latent slot ``(i-1)//4 + 1``, mask channel ``(i-1) % 4``; frame 0 fills all 4
  channels of slot 0. This equals diffusers' ``WanImageToVideoPipeline.prepare_latents`` for a first-frame guide.
* guide video: the whole clip in [-1, 1], zero (mid-grey) where nothing is known, i.e. ``(2v - 1) · known``
  (``video ⊙ mask`` for motion masks), encoded in ONE pass through the causal VAE.
* keyframe positions: the pixel frame asked for is used as is (any frame packs into its slot/channel). AniSora's
  own scripts only ever give frames at multiples of 8 (V3 any-frame: ``round(int((F-1)·t)/8)·8``; anymask
  temporal: every 8th frame), i.e. mask channel 3 of an even latent slot, so other positions are reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError

TEMPORAL = 4  # Wan2.1 VAE: 4x in time (causal first frame)
SPATIAL = 8  # 8x in space
PATCH = 2  # transformer patch (1, 2, 2)
SIZE_MULTIPLE = SPATIAL * PATCH


def snap_num_frames(n: int) -> tuple[int, str | None]:
    """The nearest 4k+1 frame count and a note when it differs from ``n`` (11 -> 13, 10 -> 9)."""
    n = int(n)
    if n < 1:
        raise AnimeVideoInputError(f"num_frames: {n} is below 1; Wan/AniSora takes 4k+1 frames (e.g. 49, 81).")
    snapped = int((n - 1) / TEMPORAL + 0.5) * TEMPORAL + 1  # nearest; a tie goes to the longer clip
    if snapped == n:
        return n, None
    return snapped, (f"num_frames {n} is not 4k+1 (the Wan VAE packs 4 frames per latent after the first); "
                     f"using {snapped}.")


def latent_frames(num_frames: int) -> int:
    return (num_frames - 1) // TEMPORAL + 1


def latent_slot(pixel_index: int) -> tuple[int, int | None]:
    """(latent slot, packed mask channel) of a pixel frame; channel None for frame 0 (fills all 4)."""
    if pixel_index == 0:
        return 0, None
    return (pixel_index - 1) // TEMPORAL + 1, (pixel_index - 1) % TEMPORAL


KEYFRAME_STRIDE = 8  # AniSora's scripts place given frames at multiples of 8 pixel frames
MIN_STRENGTH = 0.5  # the binary mask's threshold


def check_strengths(resolved) -> list[str]:
    """A clear error for a keyframe the binary mask would drop (strength < 0.5); notes for 0.5 <= strength < 1."""
    for r in resolved:
        s = r.keyframe.strength
        if s < MIN_STRENGTH:
            raise AnimeVideoInputError(
                f"strength: the keyframe at frame {r.index} has strength {s:g}. AniSora's Wan models take a binary "
                f"mask (a frame is given or generated, nothing in between), so a strength below {MIN_STRENGTH:g} "
                f"would silently drop this keyframe. Set strength to 1 (any value from {MIN_STRENGTH:g} counts as "
                "1), or remove the keyframe.")
    return [f"keyframe at frame {r.index}: strength {r.keyframe.strength:g} counts as 1 (AniSora's Wan models take "
            "a binary mask)." for r in resolved if r.keyframe.strength < 1.0]


def off_grid_note(index: int, num_frames: int) -> str | None:
    """A note for a keyframe off AniSora's multiple-of-8 positions (it still lands where asked)."""
    if index % KEYFRAME_STRIDE == 0:
        return None
    lo = index - index % KEYFRAME_STRIDE
    near = [f for f in (lo, lo + KEYFRAME_STRIDE) if f < num_frames]
    hint = f"frame {' or '.join(map(str, near))} would match them"
    if index == num_frames - 1:
        hint += f"; for the last frame, an 8k+1 clip ({lo + 1} or {lo + KEYFRAME_STRIDE + 1} frames) ends on one"
    return (f"keyframe at frame {index} is not a multiple of {KEYFRAME_STRIDE}: AniSora's inference scripts only give "
            f"frames at multiples of 8 (V3 any-frame snaps to them), so this position is outside what they feed "
            f"the model; {hint}.")


def check_size(width: int, height: int):
    for name, v in (("width", width), ("height", height)):
        if v < SIZE_MULTIPLE or v % SIZE_MULTIPLE:
            raise AnimeVideoInputError(
                f"{name}: {v} px is not a positive multiple of {SIZE_MULTIPLE} (the Wan VAE's 8x times the "
                f"transformer's 2x2 patch); e.g. 832x480, 1280x720 or 960x544.")


def downsample_known(known: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[F, H, W] pixel known-mask -> [F, h, w] at latent size (nearest, as AniSora anymask does)."""
    return F.interpolate(known[:, None].float(), size=(h, w), mode="nearest")[:, 0]


def pack_mask(known_lat: torch.Tensor) -> torch.Tensor:
    """[F, h, w] per pixel frame (F = 4k+1) -> [4, T_lat, h, w] (Φ4)."""
    f, h, w = known_lat.shape
    if (f - 1) % TEMPORAL:
        raise AnimeVideoInputError(f"num_frames: {f} is not 4k+1.")
    full = torch.cat([known_lat[:1].expand(TEMPORAL, h, w), known_lat[1:]], dim=0)  # F + 3 frames
    return full.reshape(-1, TEMPORAL, h, w).transpose(0, 1).contiguous()


@dataclass
class Placement:
    requested: int
    index: int
    slot: int
    channel: int | None
    strength: float  # as the guide asked; the Wan mask itself is binary (see build_wan_condition)

    def describe(self) -> str:
        where = "all 4 mask channels" if self.channel is None else f"mask channel {self.channel} of 4"
        req = "" if self.requested == self.index else f" (asked {self.requested})"
        s = "" if self.strength == 1.0 else f", strength {self.strength:g}"
        return f"keyframe at frame {self.index}{req} -> latent slot {self.slot} ({where}{s})"


@dataclass
class WanCondition:
    num_frames: int
    height: int
    width: int
    mask: torch.Tensor  # [1, 4, T_lat, h, w] float32
    video: torch.Tensor  # [1, 3, F, H, W] float32 in [-1, 1], zero where unknown
    placements: list[Placement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def latent_frames(self) -> int:
        return self.mask.shape[2]

    def describe(self) -> str:
        lines = [f"{self.num_frames} frames -> {self.latent_frames} latent frames at "
                 f"{self.width // SPATIAL}x{self.height // SPATIAL}"]
        lines += [p.describe() for p in self.placements]
        lines += self.notes
        return "\n".join(lines)


def build_wan_condition(guide, num_frames: int, height: int, width: int, fit: str | None = None) -> WanCondition:
    """Guide (pipelines.guides.Guide) -> packed mask + zero-filled guide video for one VAE pass."""
    check_size(width, height)
    num_frames, note = snap_num_frames(num_frames)
    notes = [note] if note else []
    resolved = guide.resolve_keyframes(num_frames)
    if not resolved:
        raise AnimeVideoInputError(
            "guide: no keyframe. AniSora generates from at least one given frame; connect an AnimeVideoKeyframe "
            "(frame_index 0 for image-to-video).")
    notes += check_strengths(resolved)
    notes += [n for n in (off_grid_note(r.index, num_frames) for r in resolved) if n]
    full = replace(guide, keyframes=tuple(replace(k, strength=1.0) for k in guide.keyframes))  # binary: all given
    video, known = full.known_video(num_frames, height, width, fit)  # [F,H,W,3], [F,H,W] in 0..1
    if guide.motion_mask is not None:
        notes.append("motion mask: outside the mask every frame is given (static), inside it is generated.")
    # AniSora's Wan models were trained on binary masks (anymask: "> 0 means given"); soft brush edges are
    # rounded at 0.5 (strengths >= 0.5 count as 1, checked above) and the rounding is reported.
    binary = (known >= MIN_STRENGTH).float()
    if guide.motion_mask is not None and bool(((known > 0) & (known < 1)).any()):
        notes.append("soft mask edges rounded to given (>= 0.5) or generated (< 0.5): AniSora's Wan models take a "
                     "binary mask.")
    h, w = height // SPATIAL, width // SPATIAL
    mask = pack_mask(downsample_known(binary, h, w))[None]
    cond = torch.zeros(3, num_frames, height, width)
    for f in binary.flatten(1).amax(1).nonzero().flatten().tolist():  # only frames with something given
        cond[:, f] = (video[f].permute(2, 0, 1) * 2.0 - 1.0) * binary[f]
    placements = [Placement(r.requested, r.index, *latent_slot(r.index), r.keyframe.strength) for r in resolved]
    if resolved[0].index != 0:
        notes.append("no keyframe at frame 0: the clip's start is generated (AniSora V3 any-frame guidance).")
    return WanCondition(num_frames, height, width, mask.float(), cond[None], placements, notes)


def latents_mean_std(vae, device, dtype):
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, device=device, dtype=dtype).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=device, dtype=dtype).view(1, z, 1, 1, 1)
    return mean, std


def normalize_latent(lat: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent -> the transformer's latent space. Written as core ComfyUI's Wan21 latent format computes
    it ((x - mean) * 1.0 / std; diffusers multiplies by 1/std, which can differ in the last bit), so a guide
    latent normalised here and one that core normalises in ``WAN21.concat_cond`` are the same bits."""
    return (lat - mean) / std


def denormalize_latent(lat: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The transformer's latent space -> the raw VAE latent, as core's Wan21 latent format's process_out
    (x * std / 1.0 + mean): what a core LATENT holds."""
    return lat * std + mean


def encode_guide(vae, video: torch.Tensor) -> torch.Tensor:
    """[1, 3, F, H, W] in [-1,1] -> normalised guide latent [1, 16, T_lat, h, w] float32 (distribution mode)."""
    dev = next(vae.parameters()).device
    vdtype = next(vae.parameters()).dtype
    with torch.no_grad():
        lat = vae.encode(video.to(dev, vdtype)).latent_dist.mode().float()
    mean, std = latents_mean_std(vae, lat.device, lat.dtype)
    return normalize_latent(lat, mean, std)


def guide_pixels(video: torch.Tensor) -> torch.Tensor:
    """A packed guide video [1, 3, F, H, W] in [-1, 1] (zero where unknown) -> frames [F, H, W, 3] in 0..1
    (mid-grey where unknown), the IMAGE layout core ComfyUI's VAE encodes. Core maps pixels back with
    ``p * 2 - 1``, which returns exactly the values of ``video``: for x = 2v - 1 with v a float in [0, 1] (how
    build_wan_condition makes it), x + 1 and (x + 1) - 1 are exact (x is a multiple of the ulp of x + 1; Sterbenz
    for the subtraction), and halving/doubling is exact."""
    return ((video[0] + 1.0) / 2.0).permute(1, 2, 3, 0).contiguous()


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents [1, 16, T, h, w] -> frames [F, H, W, 3] float32 0..1."""
    dev = next(vae.parameters()).device
    vdtype = next(vae.parameters()).dtype
    mean, std = latents_mean_std(vae, dev, vdtype)
    lat = latents.to(dev, vdtype) / (1.0 / std) + mean
    with torch.no_grad():
        video = vae.decode(lat, return_dict=False)[0]
    video = (video.float() / 2 + 0.5).clamp(0, 1)
    return video[0].permute(1, 2, 3, 0).cpu().contiguous()

"""AniSora's Wan conditioning for core ComfyUI's own Wan MODEL (the "core route"): the guide becomes the
``concat_latent_image`` and ``concat_mask`` that core's ``WAN21.concat_cond`` turns into the transformer's
20 condition channels.

The packing is ours (:func:`packing.build_wan_condition`: Φ4 mask, zero-filled guide video, x mask for motion
masks); only the hand-over follows core's conventions, so that the ``y`` core builds is bit for bit the
``cat(mask, normalised guide latent)`` of our own path (``wan.encode_condition``) for the same encoder:

* ``concat_mask`` = 1 − known (core stores "1 = generate" and computes ``1 − concat_mask``; for a binary mask
  both subtractions are exact), shape [1, 4, T_lat, h, w] (core takes a 4-channel mask as is);
* ``concat_latent_image`` = the RAW latent of one VAE pass over the guide video (core normalises it with
  ``process_latent_in``, i.e. :func:`packing.normalize_latent`).

Plain torch: the encoder comes in as a callable (core's ``VAE.encode`` in the node), so nothing here imports
ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import AnimeVideoInputError
from . import packing

LATENT_CHANNELS = 16  # the Wan2.1 VAE (AniSora V2/V3/anymask)


@dataclass
class CoreWanCondition:
    concat_latent_image: torch.Tensor  # [1, 16, T_lat, h, w] raw VAE latent (core normalises it)
    concat_mask: torch.Tensor  # [1, 4, T_lat, h, w], 1 = generate (core's convention)
    condition: packing.WanCondition

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(channels, T_lat, h, w) of the noise latent this condition fits."""
        return (LATENT_CHANNELS,) + tuple(self.concat_mask.shape[2:])


def empty_condition(num_frames: int, height: int, width: int) -> packing.WanCondition:
    """No guide: nothing given (mask 0) and an all-grey guide video, as AniSora's code packs a clip without
    keyframes (core's WanImageToVideo without a start image instead leaves the guide latent at zero)."""
    packing.check_size(width, height)
    num_frames, note = packing.snap_num_frames(num_frames)
    t_lat = packing.latent_frames(num_frames)
    mask = torch.zeros(1, 4, t_lat, height // packing.SPATIAL, width // packing.SPATIAL)
    video = torch.zeros(1, 3, num_frames, height, width)
    notes = ([note] if note else []) + ["no guide: every frame is generated (text-to-video on the I2V model)."]
    return packing.WanCondition(num_frames, height, width, mask, video, [], notes)


def check_latent(latent, cond: packing.WanCondition) -> torch.Tensor:
    want = (1, LATENT_CHANNELS, cond.latent_frames, cond.height // packing.SPATIAL, cond.width // packing.SPATIAL)
    if not isinstance(latent, torch.Tensor) or tuple(latent.shape) != want:
        got = tuple(getattr(latent, "shape", ())) or type(latent).__name__
        raise AnimeVideoInputError(
            f"vae: it encoded the {cond.num_frames}-frame guide video to a latent of shape {got}, but AniSora's "
            f"Wan2.1 backbone takes {want} (16 channels, 4x in time, 8x in space). Load the Wan2.1 VAE "
            "(wan_2.1_vae.safetensors) in Load VAE; the Wan2.2 VAE (48 channels) and image VAEs do not fit.")
    return latent


def build_core_condition(guide, num_frames: int, height: int, width: int,
                         encode: Callable[[torch.Tensor], torch.Tensor], fit: str | None = None) -> CoreWanCondition:
    """Guide (or None) -> core's concat inputs. ``encode(frames [F, H, W, 3] in 0..1)`` -> raw latent
    [1, 16, T_lat, h, w] (core's ``VAE.encode``)."""
    if guide is None:
        cond = empty_condition(num_frames, height, width)
    else:
        cond = packing.build_wan_condition(guide, num_frames, height, width, fit)
    with torch.no_grad():
        latent = encode(packing.guide_pixels(cond.video))
    latent = check_latent(latent, cond)
    return CoreWanCondition(concat_latent_image=latent, concat_mask=1.0 - cond.mask, condition=cond)


def own_path_y(cond: packing.WanCondition, raw_latent: torch.Tensor, mean: torch.Tensor,
               std: torch.Tensor) -> torch.Tensor:
    """Our own path's 20 condition channels for a raw guide latent: cat(packed mask, normalised latent), as
    ``wan.encode_condition`` builds them (for comparing with what core's ``concat_cond`` builds)."""
    lat = packing.normalize_latent(raw_latent.float(), mean.to(raw_latent.device), std.to(raw_latent.device))
    return torch.cat([cond.mask.to(lat.device), lat], dim=1)

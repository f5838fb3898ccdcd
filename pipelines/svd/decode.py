"""Temporal-VAE decode in frame chunks, with optional spatial tiles blended across their seams.

Decode is where video packs run out of memory, so working memory is bounded by one chunk of
``decode_chunk_size`` frames (and, with tiling, one tile of it): each chunk is written straight into
the preallocated output and dropped.
"""
from __future__ import annotations

from typing import Callable

import torch


def _ramp(n: int, overlap: int, start_open: bool, end_open: bool) -> torch.Tensor:
    """1 inside, linear 0->1 ramps over ``overlap`` px at the edges that meet a neighbouring tile."""
    w = torch.ones(n)
    if overlap > 0:
        r = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        if start_open:
            w[:overlap] = torch.minimum(w[:overlap], r)
        if end_open:
            w[-overlap:] = torch.minimum(w[-overlap:], r.flip(0))
    return w


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if tile >= size:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted(set(starts))


def _decode(vae, z: torch.Tensor, num_frames: int) -> torch.Tensor:
    return vae.decode(z, num_frames=num_frames).sample.float()


@torch.inference_mode()
def decode_latents(vae, latents: torch.Tensor, scaling_factor: float, decode_chunk_size: int,
                   tile_size: int = 0, tile_overlap: int = 8, out: torch.Tensor | None = None,
                   on_chunk: Callable[[int, int], None] | None = None, out_device="cpu") -> torch.Tensor:
    """latents: [F, C, h, w] in model space (scaled). Returns IMAGE frames [F, H, W, 3] float32 0..1.

    ``tile_size``/``tile_overlap`` are in latent pixels; 0 disables tiling.
    """
    frames, _, h, w = latents.shape
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    chunk = max(1, int(decode_chunk_size))
    start = 0
    while start < frames:
        z = (latents[start:start + chunk] / scaling_factor).to(device=device, dtype=dtype)
        n = z.shape[0]
        try:
            if tile_size and (tile_size < h or tile_size < w):
                pix = _decode_tiled(vae, z, n, tile_size, tile_overlap)
            else:
                pix = _decode(vae, z, n)
        except torch.OutOfMemoryError:
            # Decode is the usual memory peak: retry with half the chunk, then with spatial tiles.
            del z
            _empty_cache(device)
            if chunk > 1:
                chunk = max(1, chunk // 2)
            elif not tile_size or tile_size > 16:
                tile_size = max(16, (tile_size or max(h, w)) // 2)
            else:
                raise
            continue
        if out is None:
            factor = pix.shape[-1] // w
            out = torch.empty((frames, h * factor, w * factor, 3), dtype=torch.float32, device=out_device)
        out[start:start + n] = (pix / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).to(out.device)
        del pix, z
        start += n
        if on_chunk is not None:
            on_chunk(start, frames)
    return out


def _empty_cache(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _decode_tiled(vae, z: torch.Tensor, n: int, tile: int, overlap: int) -> torch.Tensor:
    _, _, h, w = z.shape
    overlap = max(0, min(overlap, tile // 2))
    acc = None
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for y0 in ys:
        for x0 in xs:
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            pix = _decode(vae, z[:, :, y0:y1, x0:x1], n)
            f = pix.shape[-1] // (x1 - x0)
            if acc is None:
                acc = torch.zeros((n, pix.shape[1], h * f, w * f), dtype=torch.float32, device=pix.device)
                wsum = torch.zeros((1, 1, h * f, w * f), dtype=torch.float32, device=pix.device)
            wy = _ramp(pix.shape[-2], overlap * f, y0 > 0, y1 < h).to(pix.device)
            wx = _ramp(pix.shape[-1], overlap * f, x0 > 0, x1 < w).to(pix.device)
            weight = (wy[:, None] * wx[None, :])[None, None]
            acc[:, :, y0 * f:y1 * f, x0 * f:x1 * f] += pix * weight
            wsum[:, :, y0 * f:y1 * f, x0 * f:x1 * f] += weight
    return acc / wsum


# Linear latent -> RGB approximation for SD-family 4-channel latents (cheap step previews).
_LATENT_RGB = torch.tensor([
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
])


def latent_preview_rgb(latent: torch.Tensor) -> torch.Tensor:
    """[C, h, w] model-space latent -> [h, w, 3] uint8 preview."""
    if latent.shape[0] != _LATENT_RGB.shape[0]:
        return torch.zeros((*latent.shape[1:], 3), dtype=torch.uint8)
    rgb = torch.einsum("chw,cr->hwr", latent.float().cpu(), _LATENT_RGB)
    return ((rgb + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8)

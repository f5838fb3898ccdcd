"""Chunked temporal-VAE decode with a first-frame context (digest B4 step 5, B8.11; LVCD's
``decoding_t 10, decoding_first 1, decoding_olap 3``).

Each chunk holds ``chunk`` latents: ``context`` leading context latents (the reference frame's latent) and
``chunk - context`` video frames. Consecutive chunks share ``overlap`` video frames, so the temporal decoder
always sees the reference and some already-decoded frames; of a later chunk only the frames after the first
``context + overlap`` are kept. The context frames' own outputs are dropped (the reference is not part of the
clip). Pixels are clamped to [-1, 1] and mapped to [0, 1], nothing else: no min-max renormalisation (the
peer node's global min-max stretch shifts colours).

Memory is bounded by one chunk: every kept frame is written into the preallocated output.
"""
from __future__ import annotations

from typing import Callable

import torch


def chunk_spans(num_frames: int, chunk: int = 10, context: int = 1, overlap: int = 3) -> list[tuple[int, int, int]]:
    """(first video frame in the chunk, first frame kept, end) per chunk; kept spans tile 0..num_frames once."""
    per = chunk - context
    if per < 1 or overlap < 0 or overlap >= per:
        raise ValueError(f"decode chunk {chunk} with context {context} needs 0 <= overlap < {per}, got {overlap}")
    spans = []
    kept = 0
    while kept < num_frames:
        start = 0 if not spans else kept - overlap
        end = min(num_frames, start + per)
        spans.append((start, kept, end))
        kept = end
    return spans


@torch.inference_mode()
def decode_with_context(vae, latents: torch.Tensor, context_latent: torch.Tensor | Callable[[int], torch.Tensor] | None,
                        scaling_factor: float, chunk: int = 10, overlap: int = 3, out: torch.Tensor | None = None,
                        on_chunk: Callable[[int, int], None] | None = None, out_device="cpu") -> torch.Tensor:
    """latents: [L, C, h, w] model space (scaled); context_latent: [C, h, w] scaled (or a function of the
    chunk's first frame giving one, e.g. the nearest reference), None for no context.
    Returns IMAGE frames [L, H, W, 3] float32 in 0..1."""
    num_frames, _, h, w = latents.shape
    context = 0 if context_latent is None else 1
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    spans = chunk_spans(num_frames, chunk, context, overlap)
    for k, (start, keep, end) in enumerate(spans):
        parts = [latents[start:end].to(device=device, dtype=torch.float32)]
        if context:
            ctx = context_latent(start) if callable(context_latent) else context_latent
            parts.insert(0, ctx.to(device=device, dtype=torch.float32)[None])
        z = (torch.cat(parts) / scaling_factor).to(dtype)
        pix = vae.decode(z, num_frames=z.shape[0]).sample.float()
        if out is None:
            f = pix.shape[-1] // w
            out = torch.empty((num_frames, h * f, w * f, 3), dtype=torch.float32, device=out_device)
        sel = pix[context + keep - start:]
        out[keep:end] = (sel.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).to(out.device)
        del pix, z, sel, parts
        if on_chunk is not None:
            on_chunk(k + 1, len(spans))
    return out

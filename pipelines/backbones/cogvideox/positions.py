"""Positions in the CogVideoX 1.0 transformer: 3D RoPE placed as diffusers' pipeline places it, and the learned
positional table of the I2V checkpoints used beyond the trained size as the original SAT code uses it."""
from __future__ import annotations

from contextlib import contextmanager

from ...errors import AnimeVideoInputError
from .loader import SPATIAL_RATIO


def _crop_region(grid_h: int, grid_w: int, base_w: int, base_h: int):
    # The grid's aspect fitted inside the base grid, centred (how diffusers places CogVideoX 1.0's RoPE).
    if grid_h / grid_w > base_h / base_w:
        rh, rw = base_h, int(round(base_h / grid_h * grid_w))
    else:
        rw, rh = base_w, int(round(base_w / grid_w * grid_h))
    top, left = int(round((base_h - rh) / 2.0)), int(round((base_w - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def rotary_embedding(transformer, latent_h: int, latent_w: int, latent_t: int, device):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cfg = transformer.config
    p = cfg.patch_size
    gh, gw = latent_h // p, latent_w // p
    crops = _crop_region(gh, gw, cfg.sample_width // p, cfg.sample_height // p)
    return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops, grid_size=(gh, gw),
                                   temporal_size=latent_t, device=device)


@contextmanager
def learned_positions(transformer, latent_t: int, latent_h: int, latent_w: int, notes: list[str]):
    """Use the first rows of the learned positional table (as SAT does) when the clip is not the trained size."""
    pe = transformer.patch_embed
    if not pe.use_learned_positional_embeddings:
        yield
        return
    frames = (latent_t - 1) * pe.temporal_compression_ratio + 1
    if (latent_h, latent_w, frames) == (pe.sample_height, pe.sample_width, pe.sample_frames):
        yield
        return
    p = pe.patch_size
    need = pe.max_text_seq_length + latent_t * (latent_h // p) * (latent_w // p)
    table = pe.pos_embedding
    if need > table.shape[1]:
        th, tw = pe.sample_height * SPATIAL_RATIO, pe.sample_width * SPATIAL_RATIO
        raise AnimeVideoInputError(
            f"width/height/num_frames: this AniSora V1 model's learned positions cover {table.shape[1]} tokens "
            f"(trained at {tw}x{th}, {pe.sample_frames} frames); {need} are needed. Use at most {pe.sample_frames} "
            f"frames at {tw}x{th}, or fewer frames / a smaller size.")
    if (latent_h, latent_w) != (pe.sample_height, pe.sample_width):
        notes.append(
            f"size: the model was trained at {pe.sample_width * SPATIAL_RATIO}x{pe.sample_height * SPATIAL_RATIO}; "
            "at another size its learned positions are used as the original SAT code uses them (first rows of the "
            "table), which may lower quality.")
    saved = (pe.sample_height, pe.sample_width, pe.sample_frames, table)
    pe.sample_height, pe.sample_width, pe.sample_frames = latent_h, latent_w, frames
    pe.pos_embedding = table[:, :need]
    try:
        yield
    finally:
        pe.sample_height, pe.sample_width, pe.sample_frames, pe.pos_embedding = saved

"""Image helpers shared by the methods: fitting a frame to a target size, layout conversions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import AnimeVideoInputError

FIT_MODES = ("crop", "pad", "stretch")


def fit_image(images: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """[B,3,H,W] 0..1 -> [B,3,height,width].

    crop: centre-crop to the target aspect, then bilinear resize (as ComfyUI core's SVD conditioning does);
    pad: resize to fit inside, letterbox with black;
    stretch: resize ignoring aspect (as diffusers' pipeline does).
    """
    if mode not in FIT_MODES:
        raise AnimeVideoInputError(f"fit: '{mode}' is not one of {', '.join(FIT_MODES)}.")
    _, _, h, w = images.shape
    if (h, w) == (height, width):
        return images
    if mode == "stretch":
        return F.interpolate(images, size=(height, width), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    if mode == "crop":
        target = width / height
        if w / h > target:  # too wide
            new_w = max(1, round(h * target))
            x0 = (w - new_w) // 2
            images = images[:, :, :, x0:x0 + new_w]
        else:
            new_h = max(1, round(w / target))
            y0 = (h - new_h) // 2
            images = images[:, :, y0:y0 + new_h, :]
        return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = F.interpolate(images, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    out = images.new_zeros((images.shape[0], images.shape[1], height, width))
    y0, x0 = (height - new_h) // 2, (width - new_w) // 2
    out[:, :, y0:y0 + new_h, x0:x0 + new_w] = resized
    return out


def comfy_image_to_bchw(image: torch.Tensor, input_name: str = "image") -> torch.Tensor:
    """ComfyUI IMAGE [B,H,W,C] -> [B,3,H,W] float32 (alpha dropped, grey expanded)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise AnimeVideoInputError(f"{input_name}: expected an IMAGE tensor [batch, height, width, channels], got {shape}.")
    c = image.shape[-1]
    if c == 1:
        image = image.expand(-1, -1, -1, 3)
    elif c == 4:
        image = image[..., :3]
    elif c != 3:
        raise AnimeVideoInputError(f"{input_name}: expected 1, 3 or 4 channels, got {c}.")
    return image.permute(0, 3, 1, 2).float()

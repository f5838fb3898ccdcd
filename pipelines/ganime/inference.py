"""GANime in-betweening: the frames between a first and a last frame.

For a clip of N frames the VQ-GAN encodes the first and last frames; then for c = 1 .. N-1 the
transformer reads ``[last | previous M frames]`` with r = N-1-c and predicts frame c's codes in one
pass (greedy, or temperature + top-k sampling). The output is ``[first, generated 1..N-2, last]``,
with the model's own last frame instead of the given one on request (B10).

Two paths give the same kind of result:

- *faithful* (``reencode_previous=True``): every generated frame is decoded to pixels and encoded
  again before it becomes a previous frame, as the original code does (B11);
- *fast* (default): the predicted codes are the previous frame's codes, and all frames are decoded in
  one batch at the end.

Variations are rows of one batch: rows that share the last frame and r share the transformer's
prefix (computed once), identical rows are computed once, and each row samples from its own
generator (variation k uses ``seed + k``), so a variation gives the same codes alone or batched, on
any device (sampling draws on the CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError
from ..image_ops import fit_image
from . import tokens

MODES = ("greedy", "sample")
ASPECT_MODES = ("squash", "letterbox")  # squash: the thesis' resize; letterbox: pad to the model's aspect
OUTPUT_SIZES = ("input", "model")
MAX_VARIATIONS = 64
SEED_MOD = 1 << 64


@dataclass
class InbetweenRequest:
    num_frames: int = 15
    mode: str = "greedy"
    temperature: float = 1.0
    top_k: int = 50
    seed: int = 0
    variations: int = 1
    reencode_previous: bool = False
    use_generated_last: bool = False
    frames_before: int = 0  # 0: what the transformer was trained with
    aspect: str = "squash"
    output_size: str = "input"

    def validate(self):
        if self.mode not in MODES:
            raise AnimeVideoInputError(f"mode: '{self.mode}' is not one of {', '.join(MODES)}.")
        if self.aspect not in ASPECT_MODES:
            raise AnimeVideoInputError(f"aspect: '{self.aspect}' is not one of {', '.join(ASPECT_MODES)}.")
        if self.output_size not in OUTPUT_SIZES:
            raise AnimeVideoInputError(f"output_size: '{self.output_size}' is not one of {', '.join(OUTPUT_SIZES)}.")
        if self.mode == "sample" and not self.temperature > 0:
            raise AnimeVideoInputError(f"temperature: {self.temperature} is not allowed; give a value above 0.")
        if self.top_k < 0:
            raise AnimeVideoInputError(f"top_k: {self.top_k} is not allowed; give 0 (no limit) or more.")
        if not 1 <= self.variations <= MAX_VARIATIONS:
            raise AnimeVideoInputError(f"variations: {self.variations} is not allowed; give 1 to {MAX_VARIATIONS}.")
        if self.num_frames < 3:
            raise AnimeVideoInputError(
                f"num_frames: {self.num_frames} frames is too few; give at least 3 (first, one in-between, last).")


@dataclass
class Generated:
    codes: torch.Tensor  # [B, N, T]: slot 0 the first frame's codes, N-1 the last (given or generated)
    images: torch.Tensor  # [B, G, 3, h, w] in [-1, 1]: the generated frames 1..G (G = N-2, or N-1)
    context_codes: torch.Tensor  # [B, N, T]: the codes the context used (re-encoded in the faithful path)


@dataclass
class InbetweenResult:
    frames: torch.Tensor  # [V, N, 3, H, W] in 0..1
    codes: torch.Tensor  # [V, N, T]
    model_size: tuple[int, int]


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------

def make_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s) % SEED_MOD) for s in seeds]


def choose_codes(logits: torch.Tensor, mode: str, generators: list[torch.Generator] | None = None,
                 temperature: float = 1.0, top_k: int = 50) -> torch.Tensor:
    """logits [B, T, V] -> codes [B, T]. greedy: argmax. sample: /temperature, keep the top_k, softmax,
    one categorical draw per token from row b's own generator (on the CPU)."""
    if mode == "greedy":
        return logits.argmax(-1)
    k = logits.shape[-1] if top_k <= 0 else min(int(top_k), logits.shape[-1])
    values, index = (logits.float() / float(temperature)).topk(k, dim=-1)
    probs = torch.softmax(values, dim=-1).cpu()
    picks = torch.stack([torch.multinomial(probs[b], 1, generator=generators[b]) for b in range(probs.shape[0])])
    return index.gather(-1, picks.to(index.device)).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# The generation loop (codes)
# ---------------------------------------------------------------------------------------------

def _dedupe(pair_of_row: torch.Tensor, suffix: torch.Tensor):
    key = torch.cat([pair_of_row[:, None], suffix], dim=1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    return uniq[:, 0], uniq[:, 1:], inverse


@torch.no_grad()
def generate(model, first_codes: torch.Tensor, last_codes: torch.Tensor, n_frames: int,
             pair_of_row: torch.Tensor | None = None, seeds: list[int] | None = None, mode: str = "greedy",
             temperature: float = 1.0, top_k: int = 50, frames_before: int | None = None,
             reencode_previous: bool = False, generate_last: bool = False,
             on_step: Callable[[int, int], None] | None = None) -> Generated:
    """The in-betweening loop on codes.

    first_codes / last_codes [P, T]: P keyframe pairs. Row b of the batch continues pair
    ``pair_of_row[b]`` (default: one row per pair) and samples with ``seeds[b]``.
    ``generate_last``: also predict frame N-1 (r = 0); otherwise slot N-1 holds the given last frame.
    """
    vq, tr = model.vqgan, model.transformer
    device = tr.device
    t_codes = first_codes.shape[1]
    m = frames_before or tr.config.frames_before
    tokens.validate_frames_before(m, t_codes, tr.config.n_positions)
    tokens.validate_num_frames(n_frames, tr.config.remaining_frames_size)
    first_codes, last_codes = first_codes.to(device), last_codes.to(device)
    if pair_of_row is None:
        pair_of_row = torch.arange(first_codes.shape[0])
    pair_of_row = pair_of_row.to(device).long()
    b = pair_of_row.shape[0]
    seeds = list(seeds) if seeds is not None else list(range(b))
    gens = make_generators(seeds) if mode == "sample" else None

    codes = torch.zeros(b, n_frames, t_codes, dtype=torch.long, device=device)
    codes[:, 0] = first_codes[pair_of_row]
    codes[:, -1] = last_codes[pair_of_row]
    context = codes.clone()
    steps = tokens.schedule(n_frames, m)
    if not generate_last:
        steps = steps[:-1]
    images = []
    for i, step in enumerate(steps):
        suffix = torch.cat([context[:, j] for j in step.previous], dim=1)
        u_pair, u_suffix, inverse = _dedupe(pair_of_row, suffix)
        remaining = torch.full((last_codes.shape[0],), step.remaining, dtype=torch.long, device=device)
        logits = tr.shared_prefix_logits(last_codes, remaining, u_suffix, u_pair, n_out=t_codes)
        if mode == "greedy":
            new = logits.argmax(-1)[inverse]
        else:
            new = choose_codes(logits[inverse], mode, gens, temperature, top_k)
        codes[:, step.frame] = new
        if reencode_previous:  # faithful: pixels, then codes again (B11)
            u_new, u_inv = torch.unique(new, dim=0, return_inverse=True)
            img = vq.decode_codes(u_new)
            context[:, step.frame] = vq.encode_to_codes(img)[u_inv]
            images.append(img[u_inv].float())
        else:
            context[:, step.frame] = new
        if on_step is not None:
            on_step(i + 1, len(steps))
    n_gen = len(steps)
    if reencode_previous:
        out = torch.stack(images, dim=1) if images else torch.zeros(b, 0, 3, *vq.config.image_size, device=device)
    else:
        gen_codes = codes[:, 1:1 + n_gen].reshape(b * n_gen, t_codes)
        u_codes, u_inv = torch.unique(gen_codes, dim=0, return_inverse=True)
        out = vq.decode_codes(u_codes)[u_inv].float().view(b, n_gen, 3, *vq.config.image_size)
    return Generated(codes=codes, images=out, context_codes=context)


# ---------------------------------------------------------------------------------------------
# Pixels in and out (aspect handling, B12)
# ---------------------------------------------------------------------------------------------

def to_model(images01: torch.Tensor, model_size: tuple[int, int], aspect: str) -> torch.Tensor:
    """[B,3,H,W] 0..1 -> [B,3,h,w] in [-1,1] at the model's size (squash, or letterbox in black)."""
    h, w = model_size
    x = fit_image(images01.float(), w, h, "stretch" if aspect == "squash" else "pad")
    return x.clamp(0, 1) * 2 - 1


def letterbox_box(size: tuple[int, int], model_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, new_h, new_w): where an image of ``size`` sits inside the letterboxed model frame
    (the same arithmetic as image_ops.fit_image's pad mode)."""
    (hh, ww), (h, w) = size, model_size
    scale = min(w / ww, h / hh)
    nw, nh = max(1, round(ww * scale)), max(1, round(hh * scale))
    return (h - nh) // 2, (w - nw) // 2, nh, nw


def from_model(images01: torch.Tensor, size: tuple[int, int], model_size: tuple[int, int], aspect: str) -> torch.Tensor:
    """The inverse of ``to_model``: [B,3,h,w] 0..1 -> [B,3,H,W] (crop the letterbox, resize back)."""
    if aspect == "letterbox":
        y0, x0, nh, nw = letterbox_box(size, model_size)
        images01 = images01[:, :, y0:y0 + nh, x0:x0 + nw]
    if tuple(images01.shape[-2:]) == tuple(size):
        return images01
    return F.interpolate(images01, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def check_keyframes(first: torch.Tensor, last: torch.Tensor):
    for name, x in (("first", first), ("last", last)):
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise AnimeVideoInputError(f"{name}: expected one RGB image, got a tensor of shape {tuple(x.shape)}.")
    if first.shape[-2:] != last.shape[-2:]:
        (h1, w1), (h2, w2) = first.shape[-2:], last.shape[-2:]
        raise AnimeVideoInputError(
            f"first and last: the keyframes must have the same size; got first {w1}x{h1} and last {w2}x{h2}. "
            "Resize one of them first (e.g. core's Upscale Image).")


def inbetween(model, first: torch.Tensor, last: torch.Tensor, req: InbetweenRequest,
              on_step: Callable[[int, int], None] | None = None) -> InbetweenResult:
    """first / last: [1,3,H,W] in 0..1, the same size. Returns ``req.variations`` clips of N frames."""
    req.validate()
    check_keyframes(first, last)
    size = tuple(first.shape[-2:])
    model_size = tuple(model.image_size)
    vq, device = model.vqgan, model.device
    x = to_model(torch.cat([first, last]), model_size, req.aspect)
    keycodes = vq.encode_to_codes(x.to(device))
    v = req.variations if req.mode == "sample" else 1  # greedy variations are all the same clip
    gen = generate(model, keycodes[0:1], keycodes[1:2], int(req.num_frames),
                   pair_of_row=torch.zeros(v, dtype=torch.long),
                   seeds=[int(req.seed) + k for k in range(v)], mode=req.mode, temperature=req.temperature,
                   top_k=req.top_k, frames_before=req.frames_before or None,
                   reencode_previous=req.reencode_previous, generate_last=req.use_generated_last, on_step=on_step)
    generated01 = ((gen.images + 1) / 2).clamp(0, 1).cpu()
    n = int(req.num_frames)
    if req.output_size == "input":
        keys = torch.cat([first, last]).float().cpu()
        flat = generated01.flatten(0, 1)
        generated = from_model(flat, size, model_size, req.aspect).view(v, -1, 3, *size) if flat.numel() else \
            generated01.new_zeros(v, 0, 3, *size)
        out_size = size
    else:
        keys = ((x + 1) / 2).cpu()
        generated = generated01
        out_size = model_size
    frames = torch.empty(v, n, 3, *out_size)
    frames[:, 0] = keys[0]
    frames[:, 1:1 + generated.shape[1]] = generated
    if not req.use_generated_last:
        frames[:, -1] = keys[1]
    codes = gen.codes.cpu()
    if req.variations > v:  # greedy: repeat the one clip
        frames = frames.expand(req.variations, -1, -1, -1, -1).clone()
        codes = codes.expand(req.variations, -1, -1).clone()
    return InbetweenResult(frames=frames, codes=codes, model_size=model_size)

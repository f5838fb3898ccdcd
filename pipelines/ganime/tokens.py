"""GANime's token layout (B1) and remaining-frames values (B3), as plain functions.

For a clip of ``n`` frames F_0 .. F_{n-1} and M previous frames:

- predicting frame ``c`` (1 <= c <= n-1) the transformer reads
  ``[codes(F_last) | codes(F_{max(0,c-M)}) .. codes(F_{c-1})]`` (last frame first, then the previous
  frames oldest to newest: at most ``T * (1 + M)`` ids, T = codes per frame);
- a learned remaining-frames embedding of ``r = n - 1 - c`` is added at every position (so r = 0
  while the final frame is generated);
- the logits at the last T positions are the T codes of frame ``c``, all in one forward pass.

Early frames have fewer than M previous frames, so their context is shorter (thesis Table 6).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import AnimeVideoInputError

MAX_FRAMES_BEFORE = 7  # 128 * (1 + 7) = 1024 = gpt2's n_positions


def remaining_frames(n_frames: int) -> list[int]:
    """Remaining-frames value of each frame index 0..n-1 (the original's ``reversed(range(n))``)."""
    return list(range(n_frames - 1, -1, -1))


def remaining_for(n_frames: int, c: int) -> int:
    """r used while predicting frame ``c``."""
    return n_frames - 1 - c


def previous_indices(c: int, frames_before: int) -> list[int]:
    """Frame indices the context holds as "previous frames" when frame ``c`` is predicted (chronological)."""
    return list(range(max(0, c - frames_before), c))


@dataclass(frozen=True)
class Step:
    frame: int  # index of the frame this step predicts
    remaining: int  # r, added at every position
    previous: tuple[int, ...]  # indices of the previous frames in the context, oldest first

    def context_length(self, tokens_per_frame: int) -> int:
        return tokens_per_frame * (1 + len(self.previous))


def schedule(n_frames: int, frames_before: int) -> list[Step]:
    """One step per predicted frame 1..n-1."""
    return [Step(c, remaining_for(n_frames, c), tuple(previous_indices(c, frames_before)))
            for c in range(1, n_frames)]


def context_ids(last_codes: torch.Tensor, previous_codes: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """[B,T] last-frame codes and the previous frames' codes (oldest first) -> input ids [B, T*(1+m)]."""
    if isinstance(previous_codes, torch.Tensor):
        previous_codes = list(previous_codes.unbind(1)) if previous_codes.ndim == 3 else [previous_codes]
    return torch.cat([last_codes] + list(previous_codes), dim=1)


def max_frames_before(tokens_per_frame: int, n_positions: int) -> int:
    return min(MAX_FRAMES_BEFORE, n_positions // tokens_per_frame - 1)


def validate_frames_before(frames_before: int, tokens_per_frame: int, n_positions: int,
                           input_name: str = "frames_before") -> int:
    """1 <= M <= 7 and T * (1 + M) <= n_positions (past it GPT-2 has no position embedding)."""
    limit = max_frames_before(tokens_per_frame, n_positions)
    if not 1 <= frames_before <= limit:
        raise AnimeVideoInputError(
            f"{input_name}: {frames_before} previous frames is not allowed; this transformer takes 1 to {limit} "
            f"({tokens_per_frame} codes per frame, the last frame plus M previous frames must fit its "
            f"{n_positions} positions, and M is at most {MAX_FRAMES_BEFORE}).")
    return frames_before


def max_num_frames(remaining_table_size: int) -> int:
    """Longest clip the remaining-frames table can count down (r = n - 2 at the first step)."""
    return remaining_table_size + 1


def validate_num_frames(n_frames: int, remaining_table_size: int, input_name: str = "num_frames") -> int:
    limit = max_num_frames(remaining_table_size)
    if n_frames < 3:
        raise AnimeVideoInputError(
            f"{input_name}: {n_frames} frames is too few; give at least 3 (first, one in-between, last).")
    if n_frames > limit:
        raise AnimeVideoInputError(
            f"{input_name}: {n_frames} frames is more than this transformer can count: its remaining-frames "
            f"embedding has {remaining_table_size} entries, so at most {limit} frames (GANime was trained on "
            "clips of 15 to 25 frames).")
    return n_frames

"""GANime's token layout (B1) and remaining-frames values (B3) for N = 3, 4, 15, 25."""
import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.ganime import tokens


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("n", [3, 4, 15, 25])
def test_remaining_frames_values(n):
    r = tokens.remaining_frames(n)
    assert r == list(reversed(range(n)))  # the original's reversed(range(n_frames))
    steps = tokens.schedule(n, 1)
    assert [s.frame for s in steps] == list(range(1, n))
    assert [s.remaining for s in steps] == [n - 1 - c for c in range(1, n)]
    assert steps[-1].remaining == 0 and steps[0].remaining == n - 2
    assert all(s.remaining == r[s.frame] for s in steps)


@pytest.mark.parametrize("n", [3, 4, 15, 25])
def test_layout_with_one_previous_frame(n):
    steps = tokens.schedule(n, 1)
    assert [s.previous for s in steps] == [(c - 1,) for c in range(1, n)]
    assert all(s.context_length(128) == 256 for s in steps)


def test_layout_table_6_with_three_previous_frames():
    steps = tokens.schedule(15, 3)
    assert [s.previous for s in steps[:4]] == [(0,), (0, 1), (0, 1, 2), (1, 2, 3)]
    assert [s.context_length(128) for s in steps[:4]] == [256, 384, 512, 512]


def test_context_ids_last_frame_first_then_previous_oldest_first():
    last = torch.full((2, 4), 9)
    prev = [torch.full((2, 4), 1), torch.full((2, 4), 2)]
    ids = tokens.context_ids(last, prev)
    assert ids.shape == (2, 12)
    assert ids[0].tolist() == [9] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(tokens.context_ids(last, torch.stack(prev, 1)), ids)


def test_frames_before_limits():
    assert tokens.max_frames_before(128, 1024) == 7  # 128 * (1 + 7) = 1024
    assert tokens.validate_frames_before(7, 128, 1024) == 7
    with pytest.raises(AnimeVideoInputError, match="1 to 7"):
        tokens.validate_frames_before(8, 128, 1024)  # the thesis' M = 8 overflowed the positions
    with pytest.raises(AnimeVideoInputError, match="1 to 3"):
        tokens.validate_frames_before(4, 128, 512)
    with pytest.raises(AnimeVideoInputError):
        tokens.validate_frames_before(0, 128, 1024)


def test_num_frames_limits():
    assert tokens.validate_num_frames(3, 32) == 3
    assert tokens.validate_num_frames(33, 32) == 33  # r = 31 is the last row
    with pytest.raises(AnimeVideoInputError, match="at least 3"):
        tokens.validate_num_frames(2, 32)
    with pytest.raises(AnimeVideoInputError, match="at most 33"):
        tokens.validate_num_frames(34, 32)

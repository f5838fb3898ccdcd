"""StreamingT2V's refinement math: the official trim, SDEdit's partial noising, randomized blending."""
import random

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.streaming_t2v import refine


@pytest.mark.parametrize("frames,trimmed", [(80, 72), (72, 72), (30, 24), (24, 24), (240, 232), (88, 88)])
def test_plan_trims_as_the_official_code(frames, trimmed):
    plan = refine.plan_refinement(frames, 24, 8)
    assert plan.frames == trimmed
    assert plan.starts[-1] + 24 == trimmed and all(b - a == 16 for a, b in zip(plan.starts, plan.starts[1:]))


def test_too_short_or_bad_overlap_is_refused():
    with pytest.raises(AnimeVideoInputError, match="needs at least 24 frames"):
        refine.plan_refinement(20)
    with pytest.raises(AnimeVideoInputError, match="overlap: 24"):
        refine.plan_refinement(80, 24, 24)


def test_every_frame_comes_from_one_chunk_and_seams_move_inside_the_overlaps():
    plan = refine.plan_refinement(72, 24, 8)
    xt = torch.zeros(1, 1, 72, 1, 1)
    seams = {s: set() for s in plan.starts[1:]}
    for trial in range(200):
        rng = random.Random(trial)
        x0 = refine.randomized_blend(xt, plan, lambda x, start: torch.full_like(x, float(start)), rng)
        owner = x0.flatten().tolist()
        for f, start in enumerate(owner):
            assert start <= f < start + 24  # a frame only takes the prediction of a chunk that holds it
        for s in plan.starts[1:]:
            cut = next(f for f in range(72) if owner[f] == s)  # where chunk s takes over
            assert s <= cut <= s + 7
            assert all(owner[f] == s for f in range(cut, min(s + 16, 72)))  # the rest of the overlap is its own
            seams[s].add(cut - s)
    assert all(offsets == set(range(8)) for offsets in seams.values())  # every offset in [0, overlap-1] occurs
    assert owner[:16] == [0.0] * 16  # the first chunk starts at offset 0


def test_consistent_predictions_blend_to_themselves():
    plan = refine.plan_refinement(40, 24, 8)
    truth = torch.randn(2, 4, 40, 3, 3)
    x0 = refine.randomized_blend(torch.zeros_like(truth), plan,
                                 lambda x, start: truth[:, :, start:start + 24].clone(), random.Random(1))
    assert torch.equal(x0, truth)


def test_sdedit_start_is_ddpm_forward_noising():
    from animevideo.pipelines.streaming_t2v.extend import ddim_scheduler

    abar = ddim_scheduler().alphas_cumprod
    x0, eps = torch.randn(1, 4, 3, 2, 2, dtype=torch.float64), torch.randn(1, 4, 3, 2, 2, dtype=torch.float64)
    got = refine.sdedit_start(x0, eps, abar, 600)
    a = float(abar[599])
    assert torch.allclose(got, a ** 0.5 * x0 + (1 - a) ** 0.5 * eps, atol=1e-12)

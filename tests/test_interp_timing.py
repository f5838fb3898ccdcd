"""Duplicate drawings (on twos/threes), scene cuts and the re-timing plan, on synthetic clips."""
from fractions import Fraction

import pytest
import torch

from animevideo.pipelines.interpolate import timing
from animevideo.pipelines.interpolate.timing import ClipAnalysis, OutFrame


def drawn_clip(drawing_of_frame, h=96, w=128, noise=1.5 / 255, seed=0, background=(0.85, 0.8, 0.7)):
    """IMAGE clip: a square that moves 6 px per *drawing*; frame i shows drawing drawing_of_frame[i].

    Codec-like noise (+-noise) on every frame, so repeated frames are near, not bit, identical.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    frames = []
    for d in drawing_of_frame:
        img = torch.empty(h, w, 3)
        img[:] = torch.tensor(background)
        square = ((xx - 16 - 6 * d).abs() < 10) & ((yy - h // 2).abs() < 10)
        img[square] = torch.tensor([0.9, 0.2, 0.15])
        img = img + (torch.rand(h, w, 3, generator=g) * 2 - 1) * noise
        frames.append(img.clamp(0, 1))
    return torch.stack(frames)


def other_shot(n, h=96, w=128):
    """A different shot: dark blue background, a green bar."""
    img = torch.empty(h, w, 3)
    img[:] = torch.tensor([0.1, 0.15, 0.4])
    img[20:40, :, :] = torch.tensor([0.2, 0.8, 0.3])
    return img.expand(n, h, w, 3).clone()


def on_n(n_drawings, hold):
    return [d for d in range(n_drawings) for _ in range(hold)]


@pytest.mark.parametrize("hold,name", [(2, "on twos"), (3, "on threes")])
def test_clip_drawn_on_twos_or_threes_is_detected(hold, name):
    clip = drawn_clip(on_n(5, hold))
    a = timing.analyze_clip(clip)
    assert a.starts == [hold * k for k in range(5)]
    assert a.cadence == hold and a.duplicates == 5 * (hold - 1) and a.cuts == []
    text = " ".join(timing.describe(a, timing.plan_retiming(a, 24, 48), 24, 48))
    assert name in text and "5 distinct drawings in" in text


def test_clip_on_ones_has_no_duplicates_and_dedup_off_keeps_every_frame():
    a = timing.analyze_clip(drawn_clip(list(range(6))))
    assert a.starts == list(range(6)) and a.cadence == 1
    off = timing.analyze_clip(drawn_clip(on_n(3, 2)), dedup=False)
    assert off.starts == list(range(6)) and off.duplicates == 0
    assert "Dedup: off" in " ".join(timing.describe(off, timing.plan_retiming(off, 24, 48), 24, 48))


def test_mixed_timing_reports_the_dominant_cadence():
    clip = drawn_clip([0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 5, 5])
    a = timing.analyze_clip(clip)
    assert a.holds == [2, 2, 2, 3, 1, 2] and a.cadence == 2
    assert "mostly on twos" in " ".join(timing.describe(a, timing.plan_retiming(a, 24, 24), 24, 24))


def test_a_small_change_is_a_new_drawing_and_noise_is_not():
    base = drawn_clip([0, 0, 0], noise=2 / 255)
    base[2, 40:46, 60:66] = torch.tensor([0.1, 0.1, 0.1])  # a blink: 6x6 px of 96x128
    a = timing.analyze_clip(base)
    assert a.starts == [0, 2]


def test_slow_drift_does_not_chain_into_one_drawing():
    clip = drawn_clip([0] * 6, noise=0)
    for i in range(6):
        clip[i] = (clip[i] + 0.006 * i).clamp(0, 1)  # each step below the threshold, the sum is not
    a = timing.analyze_clip(clip, dup_threshold=0.02)
    assert len(a.starts) >= 2 and a.starts[0] == 0


def test_scene_cut_is_detected_and_the_threshold_turns_it_off():
    clip = torch.cat([drawn_clip(on_n(2, 2)), other_shot(3)])
    a = timing.analyze_clip(clip)
    assert a.starts == [0, 2, 4] and a.cuts == [2] and list(a.cut_scores) == [4]
    assert a.cut_scores[4] > 0.8
    text = " ".join(timing.describe(a, timing.plan_retiming(a, 24, 48), 24, 48))
    assert "before frame 4" in text and "never interpolated across" in text
    none = timing.analyze_clip(clip, cut_threshold=1.0)
    assert none.cuts == [] and "detection off" in " ".join(timing.describe(none, [], 24, 48))


def test_motion_inside_a_shot_is_not_a_cut():
    a = timing.analyze_clip(drawn_clip(list(range(0, 12, 2))))  # 12 px per frame
    assert a.cuts == []


@pytest.mark.parametrize("multiplier", [2, 4, 8])
def test_output_count_follows_the_multiplier_and_keeps_the_duration(multiplier):
    a = ClipAnalysis(num_frames=10, starts=list(range(0, 10, 2)))
    plan = timing.plan_retiming(a, 24, 24 * multiplier)
    assert len(plan) == 10 * multiplier
    assert plan[0] == OutFrame(0)


@pytest.mark.parametrize("src,dst,n,expected", [(24, 30, 24, 30), (24, 60, 10, 25), (23.976, 59.94, 48, 120),
                                                (12, 24, 5, 10), (30, 24, 10, 8)])
def test_output_count_follows_an_arbitrary_target_fps(src, dst, n, expected):
    a = ClipAnalysis(num_frames=n, starts=list(range(n)))
    assert len(timing.plan_retiming(a, src, dst)) == expected == timing.output_count(n, src, dst)


def test_on_twos_at_double_rate_interpolates_at_quarter_steps_between_drawings():
    a = ClipAnalysis(num_frames=6, starts=[0, 2, 4])
    plan = timing.plan_retiming(a, 24, 48)
    assert plan[:8] == [OutFrame(0), OutFrame(0, 2, 0.25), OutFrame(0, 2, 0.5), OutFrame(0, 2, 0.75),
                        OutFrame(2), OutFrame(2, 4, 0.25), OutFrame(2, 4, 0.5), OutFrame(2, 4, 0.75)]
    assert plan[8:] == [OutFrame(4)] * 4  # after the last drawing: held
    # at the same rate, the repeated frames become the midpoints ("on ones")
    assert timing.plan_retiming(a, 24, 24) == [OutFrame(0), OutFrame(0, 2, 0.5), OutFrame(2), OutFrame(2, 4, 0.5),
                                               OutFrame(4), OutFrame(4)]


def test_drawing_times_are_exact_copies_for_any_rate():
    a = ClipAnalysis(num_frames=9, starts=list(range(9)))
    for dst in (48, 72, 30, 59.94):
        plan = timing.plan_retiming(a, 24, dst)
        for j, f in enumerate(plan):
            tau = j * Fraction(24) / timing.as_fraction(dst)
            if tau.denominator == 1 and tau < 9:
                assert f == OutFrame(int(tau))
            assert f.is_copy or 0 < f.t < 1


def test_a_cut_is_never_crossed():
    # drawings at 0, 2, 4 | cut | 6, 8
    a = ClipAnalysis(num_frames=10, starts=[0, 2, 4, 6, 8], cuts=[3], cut_scores={6: 0.9})
    for dst in (48, 96, 30, 24):
        plan = timing.plan_retiming(a, 24, dst)
        assert all(f.is_copy or (f.a, f.b) != (4, 6) for f in plan)
        assert {(f.a, f.b) for f in plan if not f.is_copy} <= {(0, 2), (2, 4), (6, 8)}
    plan = timing.plan_retiming(a, 24, 48)
    assert plan[8:12] == [OutFrame(4)] * 4 and plan[12] == OutFrame(6)


def test_a_long_held_pose_stays_still_then_moves_over_the_usual_cadence():
    # on twos, then drawing 2 held for 10 frames
    a = ClipAnalysis(num_frames=18, starts=[0, 2, 4, 14, 16])
    assert a.cadence == 2 and timing.hold_limit(2) == 4
    plan = timing.plan_retiming(a, 24, 24)
    assert plan[4:12] == [OutFrame(4)] * 8  # held
    assert plan[12:14] == [OutFrame(4), OutFrame(4, 14, 0.5)]  # the last 2 frames move to the next drawing
    assert "held pose" in " ".join(timing.describe(a, plan, 24, 24))


def test_pairs_in_plan_are_in_order_and_distinct():
    a = ClipAnalysis(num_frames=6, starts=[0, 2, 4])
    assert timing.pairs_in_plan(timing.plan_retiming(a, 24, 96)) == [(0, 2), (2, 4)]


def test_cadence_ignores_the_last_hold():
    assert timing.dominant_cadence([2, 2, 2, 1]) == 2
    assert timing.dominant_cadence([3]) == 3
    assert timing.dominant_cadence([2, 3, 2, 3, 5]) == 2  # tie: the shorter

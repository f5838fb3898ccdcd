"""Forward splatting ("summation" + normalisation) against a float64 loop written from its definition."""
import pytest
import torch

from animevideo.pipelines.interpolate import softsplat


def reference_splat(values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Each source pixel adds value * bilinear weight to the 4 pixels around (x + u, y + v), in float64."""
    v = values.double()
    f = flow.double()
    n, c, h, w = v.shape
    out = torch.zeros_like(v)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                tx = x + f[b, 0, y, x].item()
                ty = y + f[b, 1, y, x].item()
                x0, y0 = int(torch.floor(torch.tensor(tx))), int(torch.floor(torch.tensor(ty)))
                for cx, cy in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                    if 0 <= cx < w and 0 <= cy < h:
                        wgt = (1 - abs(tx - cx)) * (1 - abs(ty - cy))
                        out[b, :, cy, cx] += v[b, :, y, x] * wgt
    return out


def random_case(seed, n=2, c=3, h=7, w=9, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, c, h, w, generator=g)
    flow = torch.randn(n, 2, h, w, generator=g) * scale  # many pixels leave the frame on purpose
    flow[0, :, 0, :3] = torch.tensor([[1.0, -2.0, 0.0], [0.0, 1.0, -1.0]])  # exact integer shifts too
    return values, flow


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_float64_reference_on_random_flows(seed):
    values, flow = random_case(seed)
    ref = reference_splat(values, flow)
    ours64 = softsplat.forward_splat(values.double(), flow.double())
    ours32 = softsplat.forward_splat(values, flow)
    assert ours64.dtype == torch.float64 and ours32.dtype == torch.float32
    assert (ours64 - ref).abs().max() < 1e-12
    assert (ours32.double() - ref).abs().max() < 1e-5


def test_normalised_splat_divides_by_the_splatted_ones_where_positive():
    values, flow = random_case(3)
    ref_sum = reference_splat(values, flow)
    ref_w = reference_splat(torch.ones_like(values[:, :1]), flow)
    ref = torch.where(ref_w > 0, ref_sum / ref_w.clamp_min(1e-300), torch.zeros_like(ref_sum))
    out, weight = softsplat.splat_normalized(values.double(), flow.double())
    assert (weight - ref_w).abs().max() < 1e-12
    assert (out - ref).abs().max() < 1e-10
    assert (out[(weight == 0).expand_as(out)] == 0).all()


def test_zero_flow_returns_the_input_exactly():
    values, _ = random_case(4)
    zero = torch.zeros(values.shape[0], 2, *values.shape[2:])
    assert torch.equal(softsplat.forward_splat(values, zero), values)
    out, weight = softsplat.splat_normalized(values, zero)
    assert torch.equal(out, values) and torch.equal(weight, torch.ones_like(weight))


def test_integer_shift_moves_pixels_and_drops_what_leaves_the_frame():
    values = torch.rand(1, 2, 6, 8)
    flow = torch.zeros(1, 2, 6, 8)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # right by 2, up by 1
    out = softsplat.forward_splat(values, flow)
    assert torch.equal(out[:, :, :5, 2:], values[:, :, 1:, :6])
    assert (out[:, :, 5:, :] == 0).all() and (out[:, :, :, :2] == 0).all()


def test_weights_sum_to_one_per_source_pixel_that_stays_inside():
    h, w = 16, 20
    flow = torch.rand(1, 2, h, w) * 4  # all land inside after a shift of < 4 px from the top-left block
    flow[:, :, :, w - 5:] = 0
    flow[:, :, h - 5:, :] = 0
    weight = softsplat.forward_splat(torch.ones(1, 1, h, w), flow)
    assert abs(weight.sum().item() - h * w) < 1e-3


def test_non_finite_and_huge_flows_are_dropped_not_propagated():
    values = torch.rand(1, 3, 5, 5)
    flow = torch.zeros(1, 2, 5, 5)
    flow[0, 0, 0, 0] = float("nan")
    flow[0, 1, 1, 1] = float("inf")
    flow[0, 0, 2, 2] = 1e30
    out, weight = softsplat.splat_normalized(values, flow)
    assert torch.isfinite(out).all() and torch.isfinite(weight).all()
    assert weight.sum().item() == pytest.approx(25 - 3)


def test_batch_items_are_independent():
    values, flow = random_case(5, n=3)
    batched = softsplat.forward_splat(values, flow)
    for i in range(3):
        assert torch.allclose(batched[i:i + 1], softsplat.forward_splat(values[i:i + 1], flow[i:i + 1]), atol=1e-6)


def test_half_inputs_accumulate_in_float32():
    values, flow = random_case(6)
    out = softsplat.forward_splat(values.half(), flow)
    assert out.dtype == torch.float16
    assert (out.float() - softsplat.forward_splat(values.half().float(), flow)).abs().max() < 2e-3


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        softsplat.forward_splat(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 5))
    with pytest.raises(ValueError):
        softsplat.forward_splat(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))

"""The residual-capable SVD UNet forward (the plug-in point for ControlNets) equals diffusers' forward."""
import pytest
import torch

from animevideo.pipelines.svd import sampler
from animevideo.pipelines.svd.conditioning import SVDConditioning
from animevideo.pipelines.svd.controlled_unet import ControlledUNetDenoiser, svd_unet_forward


def _inputs(unet, h, w, frames=3):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, frames, 8, h, w, generator=g)
    hidden = torch.randn(2, 1, unet.config.cross_attention_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02], [6.0, 127.0, 0.02]])
    return sample, torch.tensor(0.25 * 3.0), hidden, ids


@pytest.mark.parametrize("h, w", [(8, 8), (5, 9)])
def test_without_residuals_it_is_diffusers_forward(tiny_svd, h, w):
    unet = tiny_svd[0]
    sample, t, hidden, ids = _inputs(unet, h, w)
    with torch.no_grad():
        ref = unet(sample, t, encoder_hidden_states=hidden, added_time_ids=ids, return_dict=False)[0]
        ours = svd_unet_forward(unet, sample, t, hidden, ids)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_residuals_are_added_to_the_skips_and_the_middle(tiny_svd):
    unet = tiny_svd[0]
    sample, t, hidden, ids = _inputs(unet, 8, 8)
    with torch.no_grad():
        # record the skip shapes by running once with zero residuals of the right shapes
        n_skips = 1 + sum(len(b.resnets) + (1 if b.downsamplers else 0) for b in unet.down_blocks)
        shapes = []
        x = unet.conv_in(sample.flatten(0, 1))
        shapes.append(x.shape)
        for lvl, c in enumerate(unet.config.block_out_channels):
            size = 8 // (2 ** lvl)
            for _ in range(unet.config.layers_per_block):
                shapes.append((x.shape[0], c, size, size))
            if lvl < len(unet.config.block_out_channels) - 1:
                shapes.append((x.shape[0], c, size // 2, size // 2))
        assert len(shapes) == n_skips
        zeros = [torch.zeros(s) for s in shapes]
        mid = torch.zeros(x.shape[0], unet.config.block_out_channels[-1], 4, 4)
        base = svd_unet_forward(unet, sample, t, hidden, ids)
        same = svd_unet_forward(unet, sample, t, hidden, ids, zeros, mid)
        moved = svd_unet_forward(unet, sample, t, hidden, ids, zeros, mid + 0.5)
    torch.testing.assert_close(same, base)
    assert (moved - base).abs().max() > 1e-3
    with pytest.raises(ValueError):
        svd_unet_forward(unet, sample, t, hidden, ids, zeros[:-1], mid)


def test_controlled_denoiser_plugs_into_the_sampler(tiny_svd):
    unet = tiny_svd[0]
    cond = SVDConditioning(torch.randn(1, 1, 32), torch.randn(1, 2, 4, 8, 8), torch.tensor([[6.0, 127.0, 0.02]]))
    noise = torch.randn(1, 2, 4, 8, 8)
    sigmas = sampler.karras_sigmas(2)
    steps = []
    plain = sampler.EDMEulerSampler(sampler.UNetDenoiser(unet)).sample(cond, noise, sigmas, None)
    controlled = sampler.EDMEulerSampler(
        ControlledUNetDenoiser(unet, lambda *a: steps.append(a[-1]))).sample(cond, noise, sigmas, None)
    assert steps == [0, 1]
    torch.testing.assert_close(controlled, plain, rtol=0, atol=1e-5)


def _diffusers_forward_with_residuals(unet, sample, t, hidden, ids, down, mid):
    """The independent reference: diffusers' own ``unet.forward``, with ControlNet's additions made by hooks -
    each skip residual added to the skip an up block receives (``res_hidden_states_tuple``, consumed from the
    end as diffusers pops them) and the mid residual to the middle block's output."""
    handles = []
    remaining = list(down)
    for block in unet.up_blocks:
        n = len(block.resnets)
        mine, remaining = remaining[-n:], remaining[:-n]

        def pre(module, args, kwargs, mine=mine):
            res = kwargs["res_hidden_states_tuple"]
            assert len(res) == len(mine)
            kwargs["res_hidden_states_tuple"] = tuple(s + r for s, r in zip(res, mine))
            return args, kwargs

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    handles.append(unet.mid_block.register_forward_hook(lambda m, a, out: out + mid))
    try:
        return unet(sample, t, encoder_hidden_states=hidden, added_time_ids=ids, return_dict=False)[0]
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("h, w", [(8, 8), (5, 9)])
def test_nonzero_skip_and_mid_residuals_match_diffusers_forward_with_hooks(tiny_svd, h, w):
    """Every skip residual lands on its own skip (order, level) and the mid residual after the middle block:
    non-zero residuals of distinct sizes against diffusers' forward with the additions hooked in."""
    unet = tiny_svd[0]
    sample, t, hidden, ids = _inputs(unet, h, w)
    with torch.no_grad():
        x = unet.conv_in(sample.flatten(0, 1))
        indicator = torch.zeros(sample.shape[0], sample.shape[1])
        from animevideo.pipelines.svd.controlled_unet import svd_embeddings, svd_encoder
        emb, hid = svd_embeddings(unet, sample, t, hidden, ids)
        mid_in, skips = svd_encoder(unet, x, emb, hid, indicator)
        g = torch.Generator().manual_seed(1)
        # each residual different in size and pattern, so a swapped, dropped or misplaced one shows
        down = [torch.randn(s.shape, generator=g) * (0.3 + 0.2 * i) for i, s in enumerate(skips)]
        mid = torch.randn(mid_in.shape, generator=g)
        ref = _diffusers_forward_with_residuals(unet, sample, t, hidden, ids, down, mid)
        ours = svd_unet_forward(unet, sample, t, hidden, ids, down, mid)
        plain = svd_unet_forward(unet, sample, t, hidden, ids)
        no_mid = svd_unet_forward(unet, sample, t, hidden, ids, down, None)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5)
    assert (ours - plain).abs().max() > 1e-2  # the residuals matter at this size
    assert (ours - no_mid).abs().max() > 1e-2  # and the mid residual on its own
    for i in range(len(down)):  # every single skip residual moves the output
        one = [torch.zeros_like(r) for r in down]
        one[i] = down[i]
        with torch.no_grad():
            only = svd_unet_forward(unet, sample, t, hidden, ids, one, None)
            ref_only = _diffusers_forward_with_residuals(unet, sample, t, hidden, ids, one, torch.zeros_like(mid))
        torch.testing.assert_close(only, ref_only, rtol=0, atol=2e-5)
        assert (only - plain).abs().max() > 1e-3, i

"""GANime's VQ-GAN: the thesis architecture (shapes, sizes), straight-through quantisation, the layers."""
import pytest
import torch
import torch.nn.functional as F

from animevideo.pipelines.ganime import vqgan as V
from animevideo.pipelines.ganime.tiny import TINY_VQGAN


pytestmark = pytest.mark.usefixtures("one_thread")


def test_thesis_config_shapes_through_the_whole_vqgan():
    model = V.VQGAN(V.THESIS_CONFIG).eval()
    cfg = model.config
    assert cfg.level_channels == (64, 128, 256, 256)
    assert cfg.attention_levels() == (False, False, False, True)  # nominal 128, 64, 32, 16
    assert cfg.latent_size == (8, 16) and cfg.tokens_per_frame == 128
    # parameter count of the original (encoder 7.23 M, decoder 11.35 M, 1x1 convs 0.13 M, codebook 6.43 M)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model.encoder) == 7_233_984
    assert count(model.decoder) == 11_353_091
    assert count(model.quantize) == 50257 * 128
    assert len(model.encoder.down[3].attns) == 1 and len(model.decoder.up[3].attns) == 2
    assert not any(len(model.encoder.down[i].attns) for i in range(3))
    x = torch.rand(1, 3, 64, 128) * 2 - 1
    with torch.no_grad():
        h = model.encoder(x)
        assert h.shape == (1, 512, 8, 16)
        z = model.quant_conv(h)
        assert z.shape == (1, 128, 8, 16)
        q, idx, loss = model.quantize(z)
        assert idx.shape == (1, 8, 16) and idx.max() < 50257
        assert model.post_quant_conv(q).shape == (1, 512, 8, 16)
        rec = model.decode(q)
    assert rec.shape == (1, 3, 64, 128)
    assert rec.abs().max() <= 1.0  # tanh


def test_tiny_shapes_and_codes_round_trip():
    torch.manual_seed(0)
    model = V.VQGAN(TINY_VQGAN).eval()
    x = torch.rand(3, 3, 64, 128) * 2 - 1
    codes = model.encode_to_codes(x)
    assert codes.shape == (3, 128) and codes.dtype == torch.long
    _, idx, _ = model.encode(x)
    assert torch.equal(idx.flatten(1), codes)  # row-major over the 8x16 grid
    with torch.no_grad():
        rec_codes = model.decode_codes(codes)
        rec, _, _ = model(x)
    assert rec_codes.shape == (3, 3, 64, 128)
    assert torch.allclose(rec_codes, rec, atol=1e-5)


def test_straight_through_quantisation():
    torch.manual_seed(0)
    vq = V.VectorQuantizer(16, 4, beta=0.25)
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    q, idx, loss = vq(z)
    e = vq.embedding.weight
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(flat, e.detach()).argmin(1)
    assert torch.equal(idx.flatten(), brute)
    assert torch.allclose(q, e[idx].permute(0, 3, 1, 2), atol=1e-6)  # forward: the codes
    upstream = torch.randn_like(q)
    (q * upstream).sum().backward(retain_graph=True)
    assert torch.allclose(z.grad, upstream)  # backward: identity to the encoder output
    z.grad = None
    codes = e[idx].permute(0, 3, 1, 2)
    expected = F.mse_loss(codes, z.detach()) + 0.25 * F.mse_loss(codes.detach(), z)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert vq.embedding.weight.grad is not None and z.grad is not None


def test_faithful_attention_has_no_scaling():
    torch.manual_seed(0)
    blocks = {m: V.AttnBlock(8, 4, m) for m in V.ATTENTION_MODES}
    blocks["faithful"].load_state_dict(blocks["scaled"].state_dict())
    x = torch.randn(1, 8, 2, 3)
    blk = blocks["faithful"]
    n = blk.norm(x)
    q, k, v = (m(n).reshape(1, 8, 6).transpose(1, 2) for m in (blk.q, blk.k, blk.v))
    for mode, scale in (("faithful", 1.0), ("scaled", 8 ** -0.5)):
        w = torch.softmax(q @ k.transpose(1, 2) * scale, -1)
        expected = x + blk.proj_out((w @ v).transpose(1, 2).reshape(1, 8, 2, 3))
        assert torch.allclose(blocks[mode](x), expected, atol=1e-5)


def test_resampling_is_average_pool_then_conv_and_bilinear_then_conv():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4, 6)
    down, up = V.Downsample(4), V.Upsample(4)
    assert torch.allclose(down(x), down.conv(F.avg_pool2d(x, 2)))
    # Keras' bilinear UpSampling2D = half-pixel centres = align_corners=False
    ref = F.interpolate(x, size=(8, 12), mode="bilinear", align_corners=False)
    assert torch.allclose(up(x), up.conv(ref), atol=1e-6)


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError):
        V.VQGANConfig(image_size=(60, 104))  # not a multiple of 8
    with pytest.raises(ValueError):
        V.VQGANConfig(channels=8)  # 16 channels do not split into 32 groups
    cfg = V.VQGANConfig.from_dict(V.THESIS_CONFIG.to_dict())
    assert cfg == V.THESIS_CONFIG

import torch

from animevideo.pipelines import latent_preview as preview


def test_fit_recovers_an_affine_encoder_exactly():
    # A made-up "VAE": latent = A · (2x2-pooled colour) + b. The fit must invert it to the pooled colour.
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 3, generator=gen), torch.randn(6, generator=gen)

    def encode(pics):
        pooled = torch.nn.functional.avg_pool2d(pics, 2)
        return torch.einsum("nchw,kc->nkhw", pooled, a) + b[None, :, None, None]

    proj = preview.fit_latent_to_rgb(encode, size=16)
    pics = torch.rand(2, 3, 16, 16, generator=gen)
    lat = encode(pics)
    got = preview.preview_rgb(lat[1], proj, max_side=8).float() / 255
    want = torch.nn.functional.avg_pool2d(pics, 2)[1].permute(1, 2, 0)
    assert got.shape == (8, 8, 3)
    assert (got - want).abs().max() < 1.5 / 255


def test_preview_is_uint8_and_upscaled():
    proj = torch.zeros(5, 3)
    proj[-1] = torch.tensor([1.0, 0.5, 0.0])
    img = preview.preview_rgb(torch.zeros(4, 10, 20), proj, max_side=100)
    assert img.dtype == torch.uint8 and img.shape == (50, 100, 3)
    assert img[0, 0].tolist() == [255, 128, 0]

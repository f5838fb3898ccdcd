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


def test_previews_follow_comfyuis_preview_method(monkeypatch):
    """Inside ComfyUI the bridge reads comfy.cli_args.args.preview_method (set per prompt from the frontend's
    setting by ComfyUI's executor): 'none' turns the pack's previews off, any other method leaves them on."""
    import enum
    import sys
    import types

    from animevideo.nodes import comfy_bridge as bridge

    class LatentPreviewMethod(enum.Enum):
        NoPreviews = "none"
        Auto = "auto"
        Latent2RGB = "latent2rgb"
        TAESD = "taesd"

    args = types.SimpleNamespace(preview_method=LatentPreviewMethod.NoPreviews, preview_size=256)
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.LatentPreviewMethod, cli_args.args = LatentPreviewMethod, args
    comfy = types.ModuleType("comfy")
    comfy.cli_args = cli_args
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    assert bridge.previews_enabled() is True  # outside ComfyUI: on
    monkeypatch.setattr(bridge, "IN_COMFYUI", True)
    assert bridge.previews_enabled() is False
    assert bridge.preview_size() == 256
    for method in (LatentPreviewMethod.Auto, LatentPreviewMethod.Latent2RGB, LatentPreviewMethod.TAESD):
        args.preview_method = method
        assert bridge.previews_enabled() is True

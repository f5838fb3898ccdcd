"""StreamingT2V's CAM mergers and APM token mixing against float64 re-derivations; the extended UNet with
zero-initialised mergers and gates equals diffusers' ModelScope UNet exactly."""
import math

import torch
import torch.nn.functional as F

from animevideo.pipelines.streaming_t2v import model as M

UNET = dict(in_channels=4, out_channels=4, block_out_channels=(64, 64), layers_per_block=2,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=32, attention_head_dim=16, norm_num_groups=32, sample_size=4)


def _randomize(module, seed, std=0.1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


def test_cam_merger_matches_float64_rederivation():
    torch.manual_seed(0)
    merger = _randomize(M.CrossAttentionMerger(128), 1).double()
    b, f, fc, c, h, w = 1, 16, 8, 128, 3, 2
    x = torch.randn(b, f, c, h, w, dtype=torch.float64)
    cam = torch.randn(b, fc, c, h, w, dtype=torch.float64)
    got = merger(x, cam)

    # re-derivation: GroupNorm(32) over (C/32, F, H, W) per group, per video
    g = 32
    xs = x.permute(0, 2, 1, 3, 4).reshape(b, g, c // g, f, h, w)
    mean = xs.mean(dim=(2, 3, 4, 5), keepdim=True)
    var = xs.var(dim=(2, 3, 4, 5), unbiased=False, keepdim=True)
    xn = ((xs - mean) / torch.sqrt(var + 1e-6)).reshape(b, c, f, h, w)
    xn = xn * merger.norm.weight.view(1, c, 1, 1, 1) + merger.norm.bias.view(1, c, 1, 1, 1)
    out = torch.zeros_like(x)
    a = merger.attention
    heads, d = c // 64, 64
    for y in range(h):
        for z in range(w):
            q_in = xn[0, :, :, y, z].T @ merger.proj_in.weight.T + merger.proj_in.bias  # [F, C]
            kv_in = cam[0, :, :, y, z]  # [Fc, C]
            q, k, v = q_in @ a.to_q.weight.T, kv_in @ a.to_k.weight.T, kv_in @ a.to_v.weight.T
            o = torch.zeros(f, c, dtype=torch.float64)
            for hd in range(heads):
                s = slice(hd * d, (hd + 1) * d)
                p = torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(d), dim=-1)
                o[:, s] = p @ v[:, s]
            o = o @ a.to_out[0].weight.T + a.to_out[0].bias
            out[0, :, :, y, z] = o @ merger.proj_out.weight.T + merger.proj_out.bias
    assert torch.allclose(got, x + out, atol=1e-10), (got - x - out).abs().max()


def test_merger_output_projection_starts_at_zero():
    merger = M.CrossAttentionMerger(64)
    assert not merger.proj_out.weight.any() and not merger.proj_out.bias.any()
    x, cam = torch.randn(1, 16, 64, 2, 2), torch.randn(1, 8, 64, 2, 2)
    assert torch.equal(merger(x, cam), x)


def test_apm_token_mixing_matches_float64_rederivation():
    unet = M.build_base_unet(UNET).double()
    name, attn = next(M.spatial_cross_attentions(unet))
    _randomize(attn, 3)
    with torch.no_grad():
        attn.alpha.fill_(0.7)
    d = UNET["cross_attention_dim"]
    ctx = torch.randn(2, 93, d, dtype=torch.float64)
    got = M.mix_image_tokens(attn, ctx)

    # Conv1d(93 -> 77, k=3, 'same'): tokens are channels, the feature axis is the length
    wt, bias = attn.conv.weight, attn.conv.bias  # [77, 93, 3], [77]
    padded = F.pad(ctx, (1, 1))
    conv = torch.zeros(2, 77, d, dtype=torch.float64)
    for k in range(3):
        conv += torch.einsum("oi,nil->nol", wt[:, :, k], padded[:, :, k:k + d])
    conv += bias.view(1, 77, 1)
    mu, var = conv.mean(-1, keepdim=True), conv.var(-1, unbiased=False, keepdim=True)
    ln = (conv - mu) / torch.sqrt(var + 1e-5) * attn.conv_ln.weight + attn.conv_ln.bias
    silu = 0.7 / (1 + math.exp(-0.7))
    want = ctx[:, :77] + silu * ln
    assert torch.allclose(got, want, atol=1e-10), (got - want).abs().max()

    # and the attention reads K/V from the mixed context (the processor is installed)
    hidden = torch.randn(2, 5, attn.to_q.in_features, dtype=torch.float64)
    assert torch.allclose(attn(hidden, encoder_hidden_states=ctx), attn(hidden, encoder_hidden_states=want), atol=1e-10)
    assert not torch.allclose(attn(hidden, encoder_hidden_states=ctx),
                              attn(hidden, encoder_hidden_states=ctx[:, :77]), atol=1e-6)


def test_every_spatial_cross_attention_mixes_and_no_other():
    unet = M.build_base_unet(UNET)
    mixed = {n for n, m in unet.named_modules() if hasattr(m, "alpha")}
    spatial = {n for n, _ in M.spatial_cross_attentions(unet)}
    assert mixed == spatial and len(spatial) == 6  # down 2 + mid 1 + up 3 (the tiny layout)
    assert all(".temp_attentions." not in n and ".transformer_in." not in n for n in mixed)


def _zero_init_pair(seed=0):
    from diffusers import UNet3DConditionModel

    torch.manual_seed(seed)
    base = M.build_base_unet(UNET)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in base.named_parameters():
            if "cross_attention_merger" in n and ".proj_out." in n or n.endswith(".alpha"):
                continue  # keep the official zero initialisation
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + (1.0 if "norm" in n and n.endswith("weight") else 0))
    ref = UNet3DConditionModel(**UNET)
    missing, unexpected = ref.load_state_dict(base.state_dict(), strict=False)
    assert not missing and all("merger" in k or ".attn2.conv" in k or k.endswith(".alpha") for k in unexpected)
    return base.eval(), ref.eval()


def test_zero_initialised_mergers_and_gates_equal_the_base_modelscope_unet():
    base, ref = _zero_init_pair()
    cam_model = M.CAMEncoder(UNET)
    _randomize(cam_model, 5, 0.05)  # a live CAM: its features must not leak through zero mergers
    x = torch.randn(1, 4, 16, 8, 8)
    text, img = torch.randn(1, 77, 32), torch.randn(1, 16, 32)
    frames = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        down, mid = cam_model(x, 321, text, frames)
        got = M.base_unet_forward(base, x, 321, torch.cat([text, img], 1), down, mid)
        want = ref(x, 321, encoder_hidden_states=text).sample
        assert torch.equal(got, want)
        # the mechanisms are live once trained: a non-zero merger or gate changes the output
        base.cross_attention_merger_down_blocks[2].temporal_transformer.proj_out.bias.fill_(0.1)
        assert not torch.equal(M.base_unet_forward(base, x, 321, torch.cat([text, img], 1), down, mid), want)
        base.cross_attention_merger_down_blocks[2].temporal_transformer.proj_out.bias.zero_()
        next(M.spatial_cross_attentions(base))[1].alpha.fill_(1.0)
        assert not torch.equal(M.base_unet_forward(base, x, 321, torch.cat([text, img], 1), down, mid), want)


def test_without_cam_features_the_forward_is_diffusers_forward():
    base, ref = _zero_init_pair(1)
    with torch.no_grad():
        for n, p in base.named_parameters():
            if ".proj_out." in n and "merger" in n:
                p.normal_()  # mergers are skipped without CAM features
        x, text = torch.randn(2, 4, 16, 4, 4), torch.randn(2, 77, 32)
        assert torch.equal(M.base_unet_forward(base, x, 10, text), ref(x, 10, encoder_hidden_states=text).sample)


def test_cam_reads_the_first_8_latent_frames_and_the_text_tokens_only():
    cam_model = _randomize(M.CAMEncoder(UNET), 7, 0.05).eval()
    x = torch.randn(1, 4, 16, 4, 4)
    text = torch.randn(1, 93, 32)
    frames = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        d1, m1 = cam_model(x, 5, text, frames)
        x2 = x.clone()
        x2[:, :, 8:] += 1.0
        text2 = text.clone()
        text2[:, 77:] += 1.0
        d2, m2 = cam_model(x2, 5, text2, frames)
        assert all(torch.equal(a, b) for a, b in zip(d1, d2)) and torch.equal(m1, m2)
        d3, _ = cam_model(x, 5, text, frames + 1.0)  # the conditioning frames do reach the features
        assert not torch.equal(d1[1], d3[1])
    assert [t.shape[1] for t in d1] == M.merger_channels(UNET["block_out_channels"], 2)

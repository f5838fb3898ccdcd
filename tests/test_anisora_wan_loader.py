"""AniSora Wan loading: tiny models written in the NATIVE released layouts load back exactly."""

import pytest
import torch

from animevideo.pipelines.anisora import loader
from animevideo.pipelines.backbones.wan import keys as wan_keys, tiny
from animevideo.pipelines.errors import AnimeVideoModelError

DIFFUSERS_VOCAB = ("condition_embedder", "attn1", "attn2", ".to_q.", ".to_out.", "add_k_proj", "scale_shift_table",
                   "proj_out", "ffn.net", "down_blocks", "up_blocks", "mid_block", "resnets", "conv_in", "conv_out",
                   "norm_out", "quant_conv", "upsamplers", "conv_shortcut")


@pytest.fixture(scope="module")
def tiny_parts():
    return tiny.build_tiny_transformer(0), tiny.build_tiny_vae(0)


def assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_native_names_are_the_released_ones(tiny_parts):
    tr, vae = tiny_parts
    nt = wan_keys.transformer_to_native(tr.state_dict())
    nv = wan_keys.vae_to_native(vae.state_dict())
    for k in list(nt) + list(nv):
        assert not any(v in k for v in DIFFUSERS_VOCAB), k
    # names from the real Wan2.1-I2V-14B / Wan2.1_VAE.pth files
    for k in ("head.modulation", "head.head.weight", "blocks.0.modulation", "blocks.0.norm3.weight",
              "blocks.0.self_attn.q.weight", "blocks.0.cross_attn.k_img.weight", "blocks.0.cross_attn.norm_k_img.weight",
              "blocks.1.ffn.2.bias", "img_emb.proj.1.weight", "img_emb.proj.4.bias", "time_projection.1.weight",
              "text_embedding.2.weight", "time_embedding.0.weight", "patch_embedding.weight"):
        assert k in nt, k
    for k in ("decoder.middle.0.residual.0.gamma", "encoder.conv1.weight", "conv1.weight", "conv2.weight",
              "encoder.downsamples.5.time_conv.weight", "decoder.upsamples.3.resample.1.weight",
              "decoder.upsamples.4.shortcut.weight", "decoder.middle.1.to_qkv.weight", "decoder.head.2.weight"):
        assert k in nv, k
    assert wan_keys.is_native_wan_transformer(nt) and wan_keys.is_native_wan_vae(nv)


def test_round_trip_through_diffusers_converters(tiny_parts):
    tr, vae = tiny_parts
    sd = {k: v.clone() for k, v in tr.state_dict().items()}
    back = wan_keys.transformer_to_diffusers(wan_keys.transformer_to_native(sd))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    vsd = vae.state_dict()
    vback = wan_keys.vae_to_diffusers(wan_keys.vae_to_native(vsd))
    assert vback.keys() == vsd.keys() and all(torch.equal(vback[k], vsd[k]) for k in vsd)


def test_config_inferred_from_shapes(tiny_parts):
    tr, vae = tiny_parts
    cfg = wan_keys.transformer_config(tr.state_dict(), head_dim=tiny.TINY_HEAD_DIM)
    for k, v in tiny.TINY_TRANSFORMER_CONFIG.items():
        assert cfg[k] == (tuple(v) if isinstance(v, list) else v), k
    vcfg = wan_keys.vae_config(vae.state_dict())
    for k, v in tiny.TINY_VAE_CONFIG.items():
        assert vcfg[k] == v, k


def test_real_size_config_from_shapes_only():
    # shapes of the released Wan2.1-I2V-14B (AniSora V3) transformer, without allocating it
    dim, shapes = 5120, {}
    for k, s in {"patch_embedding.weight": (dim, 36, 1, 2, 2), "proj_out.weight": (64, dim),
                 "condition_embedder.text_embedder.linear_1.weight": (dim, 4096),
                 "condition_embedder.time_embedder.linear_1.weight": (dim, 256),
                 "blocks.0.ffn.net.0.proj.weight": (13824, dim), "blocks.39.norm2.weight": (dim,),
                 "blocks.0.norm2.weight": (dim,), "blocks.0.attn1.norm_q.weight": (dim,),
                 "condition_embedder.image_embedder.ff.net.0.proj.weight": (1280, 1280),
                 "blocks.0.attn2.add_k_proj.weight": (dim, dim)}.items():
        shapes[k] = torch.empty(s, device="meta")
    cfg = wan_keys.transformer_config(shapes)
    assert cfg == dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                       out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                       qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120)
    # pos_embed_seq_len only for first-last-frame Wan files (the argument is new in diffusers 0.34)
    shapes["condition_embedder.image_embedder.pos_embed"] = torch.empty(1, 514, 1280, device="meta")
    assert wan_keys.transformer_config(shapes)["pos_embed_seq_len"] == 514


@pytest.mark.parametrize("vae_ext", [".safetensors", ".pth"])
def test_native_files_load_exactly(tmp_path, tiny_parts, vae_ext):
    tr, vae = tiny_parts
    tpath, vpath = str(tmp_path / "t.safetensors"), str(tmp_path / f"Wan2.1_VAE{vae_ext}")
    tiny.write_native_transformer(tpath, tr)
    tiny.write_native_vae(vpath, vae)
    assert loader.detect_backbone(tpath) == "wan"
    m = loader.load_anisora(tpath, vpath, "fp32")
    assert m.backbone == "wan" and m.dtype == torch.float32
    assert_same(tr, m.transformer)
    assert_same(vae, m.vae)
    assert not any(p.is_meta for p in m.transformer.parameters())


def test_comfy_prefixed_and_bf16_file(tmp_path, tiny_parts):
    from safetensors.torch import save_file

    tr, _ = tiny_parts
    native = wan_keys.transformer_to_native({k: v.to(torch.bfloat16) for k, v in tr.state_dict().items()})
    path = str(tmp_path / "prefixed.safetensors")
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in native.items()}, path,
              metadata={wan_keys.HEAD_DIM_METADATA: str(tiny.TINY_HEAD_DIM)})
    t = loader.load_wan_transformer(path, torch.float32)
    ref = tr.state_dict()
    for k, v in t.state_dict().items():
        assert torch.equal(v, ref[k].to(torch.bfloat16).float()), k


def test_fp8_weights_stored_and_upcast_per_layer(tmp_path, tiny_parts):
    tr, _ = tiny_parts
    path = str(tmp_path / "fp8.safetensors")
    tiny.write_native_transformer(path, tr, dtype=torch.float8_e4m3fn)
    # an fp8 file loaded as fp32: upcast at load
    t32 = loader.load_wan_transformer(path, torch.float32)
    assert t32.blocks[0].attn1.to_q.weight.dtype == torch.float32
    assert torch.equal(t32.blocks[0].attn1.to_q.weight, tr.blocks[0].attn1.to_q.weight.to(torch.float8_e4m3fn).float())
    # dtype fp8_e4m3fn: block linears stay 8-bit, each layer upcasts as it runs, same result as the upcast copy
    compute, storage = loader.resolve_dtype("fp8_e4m3fn", torch.device("cpu"))
    t8 = loader.load_wan_transformer(path, compute, storage)
    assert t8.blocks[0].ffn.net[0].proj.weight.dtype == torch.float8_e4m3fn
    assert t8.patch_embedding.weight.dtype == torch.float32
    linears = {f"{n}.weight" for n, m in t8.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("blocks.")}
    assert linears == {k for k in t8.state_dict() if loader.is_block_linear_weight(k)}  # diffusers names
    native = {k for k in wan_keys.transformer_to_native(t8.state_dict()) if loader.is_block_linear_weight(k)}
    assert len(native) == len(linears)  # the same weights in native names (what the file is read with)
    assert all(t8.state_dict()[k].dtype == torch.float8_e4m3fn for k in linears)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 36, 2, 4, 4, generator=g)
    kw = dict(timestep=torch.tensor([500]), encoder_hidden_states=torch.randn(1, 512, tiny.TINY_TEXT_DIM, generator=g),
              encoder_hidden_states_image=torch.randn(1, 257, tiny.TINY_IMAGE_DIM, generator=g), return_dict=False)
    with torch.no_grad():
        a, b = t8(hidden_states=x, **kw)[0], t32(hidden_states=x, **kw)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_diffusers_folder_loads(tmp_path, tiny_parts):
    tr, vae = tiny_parts
    folder = str(tmp_path / "anisora-diffusers")
    tiny.write_diffusers_folder(folder, tr, vae)
    assert loader.is_wan_diffusers_folder(folder) and loader.detect_backbone(folder) == "wan"
    m = loader.load_anisora(folder, None, "fp32")
    assert_same(tr, m.transformer)
    assert_same(vae, m.vae)


def test_text_to_video_wan_is_refused(tmp_path):
    from diffusers import WanTransformer3DModel

    cfg = dict(tiny.TINY_TRANSFORMER_CONFIG, in_channels=16, image_dim=None, added_kv_proj_dim=None)
    path = str(tmp_path / "t2v.safetensors")
    tiny.write_native_transformer(path, WanTransformer3DModel(**cfg))
    with pytest.raises(AnimeVideoModelError, match="36 input channels"):
        loader.load_wan_transformer(path, torch.float32)


def test_unknown_files_get_clear_errors(tmp_path):
    from safetensors.torch import save_file

    p = str(tmp_path / "other.safetensors")
    save_file({"foo.weight": torch.zeros(2)}, p)
    with pytest.raises(AnimeVideoModelError, match="is an unknown model .*, not a Wan2.1 video transformer"):
        loader.detect_backbone(p)
    with pytest.raises(AnimeVideoModelError, match="not a Wan2.1 VAE"):
        loader.load_wan_vae(p)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(AnimeVideoModelError, match="damaged"):
        loader.detect_backbone(str(bad))


def test_head_dim_must_divide_width():
    from diffusers import WanTransformer3DModel

    narrow = WanTransformer3DModel(**dict(tiny.TINY_TRANSFORMER_CONFIG, attention_head_dim=12, added_kv_proj_dim=24))
    with pytest.raises(AnimeVideoModelError, match="head size 128"):
        wan_keys.transformer_config(narrow.state_dict())  # width 24 with the real 128-dim heads


def test_dtype_choices():
    cpu = torch.device("cpu")
    assert loader.resolve_dtype("auto", cpu) == (torch.float32, None)
    assert loader.resolve_dtype("bf16", cpu) == (torch.bfloat16, None)
    assert loader.resolve_dtype("fp8_e4m3fn", cpu) == (torch.float32, torch.float8_e4m3fn)
    with pytest.raises(AnimeVideoModelError):
        loader.resolve_dtype("int4", cpu)


def test_wan22_layout_without_clip_branch_is_refused(tmp_path):
    from diffusers import WanTransformer3DModel

    cfg = dict(tiny.TINY_TRANSFORMER_CONFIG, image_dim=None, added_kv_proj_dim=None)
    path = str(tmp_path / "v32.safetensors")
    tiny.write_native_transformer(path, WanTransformer3DModel(**cfg))
    with pytest.raises(AnimeVideoModelError, match="V3.2"):
        loader.load_wan_transformer(path, torch.float32)


def test_svd_loader_error_names_wan_files(tiny_parts):
    from animevideo.pipelines.svd.detect import describe_checkpoint

    tr, vae = tiny_parts
    native = wan_keys.transformer_to_native(tr.state_dict())
    assert "Load AniSora" in describe_checkpoint(["model.diffusion_model." + k for k in native])
    assert "Load AniSora" in describe_checkpoint(list(native))
    assert "Wan2.1 VAE" in describe_checkpoint(list(wan_keys.vae_to_native(vae.state_dict())))


def test_bf16_keeps_the_modules_diffusers_keeps_in_fp32(tmp_path, tiny_parts):
    tr, vae = tiny_parts
    path = str(tmp_path / "t.safetensors")
    tiny.write_native_transformer(path, tr)
    folder = str(tmp_path / "folder")
    tiny.write_diffusers_folder(folder, tr, vae)
    ours = loader.load_wan_transformer(path, torch.bfloat16)
    ref = loader.load_wan_transformer(folder, torch.bfloat16)  # diffusers' own from_pretrained(torch_dtype=bf16)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert {k: v.dtype for k, v in ours_sd.items()} == {k: v.dtype for k, v in ref_sd.items()}
    assert all(torch.equal(ours_sd[k], ref_sd[k]) for k in ref_sd)
    assert ours_sd["scale_shift_table"].dtype == torch.float32
    assert ours_sd["blocks.0.attn1.to_q.weight"].dtype == torch.bfloat16
    assert ours_sd["condition_embedder.time_embedder.linear_1.weight"].dtype == torch.float32
    cast = loader.cast_like_diffusers(tiny.build_tiny_transformer(0), torch.bfloat16)
    assert {k: v.dtype for k, v in cast.state_dict().items()} == {k: v.dtype for k, v in ref_sd.items()}


def test_real_size_layouts_round_trip_on_meta():
    """The released Wan2.1-I2V-14B transformer and Wan2.1 VAE layouts (built on the meta device: no memory):
    native names -> diffusers' converters -> the same keys and shapes, and configs read back from the shapes."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    real = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120)
    with torch.device("meta"):
        tr = WanTransformer3DModel(**real)
        vae = AutoencoderKLWan()
    sd = tr.state_dict()
    assert sum(v.numel() for v in sd.values()) == 16_394_878_784  # the released V3 file's parameter count
    native = wan_keys.transformer_to_native(sd)
    back = wan_keys.transformer_to_diffusers(dict(native))
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in sd.items()}
    cfg = wan_keys.transformer_config(back)
    assert all(cfg[k] == v for k, v in real.items())
    assert wan_keys.diffusers_names(native.keys()) == {n: d for n, d in zip(native, sd)}
    vsd = vae.state_dict()
    vback = wan_keys.vae_to_diffusers(wan_keys.vae_to_native(vsd))
    assert {k: v.shape for k, v in vback.items()} == {k: v.shape for k, v in vsd.items()}
    assert wan_keys.vae_config(vback) == dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                              attn_scales=[], temperal_downsample=[False, True, True])


# ---------------------------------------------------------------------------------------------
# Native folders as Wan-AI publishes them: config.json + shards + index
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def sharded_folder(tmp_path, tiny_parts):
    tr, vae = tiny_parts
    folder = tmp_path / "Wan2.1-I2V-14B-480P"
    shards = tiny.write_native_folder(str(folder), tr, num_shards=3)
    tiny.write_native_vae(str(folder / "Wan2.1_VAE.pth"), vae)
    return folder, shards


def test_sharded_native_folder_loads_exactly(sharded_folder, tiny_parts):
    folder, shards = sharded_folder
    tr, vae = tiny_parts
    assert shards == [f"diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert loader.is_anisora_folder(str(folder)) and loader.detect_backbone(str(folder)) == "wan"
    m = loader.load_anisora(str(folder), None, "fp32")  # the VAE the folder ships
    assert_same(tr, m.transformer)
    assert_same(vae, m.vae)


def test_a_shard_listed_as_a_file_loads_the_whole_set(sharded_folder, tiny_parts):
    """ComfyUI lists every shard in models/diffusion_models as a file; picking any of them loads all shards
    through the index (one shard alone is a third of the weights)."""
    folder, shards = sharded_folder
    t = loader.load_wan_transformer(str(folder / shards[1]), torch.float32)
    assert_same(tiny_parts[0], t)


def test_missing_or_foreign_shard_is_named(sharded_folder):
    import json

    folder, shards = sharded_folder
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    moved = next(k for k, v in data["weight_map"].items() if v == shards[2])
    data["weight_map"][moved] = shards[0]  # the index says shard 1 holds a tensor it does not
    index.write_text(json.dumps(data))
    with pytest.raises(AnimeVideoModelError,
                       match="shard .*-00001-of-00003.safetensors. does not hold what .*index.json lists"):
        loader.load_wan_transformer(str(folder), torch.float32)
    (folder / shards[2]).unlink()
    with pytest.raises(AnimeVideoModelError, match=f"shard '{shards[2]}'.* is missing"):
        loader.load_wan_transformer(str(folder), torch.float32)
    data["weight_map"][moved] = "../elsewhere.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(AnimeVideoModelError, match="not a file name"):
        loader.load_wan_transformer(str(folder), torch.float32)


def test_native_folder_without_vae_asks_for_one(tmp_path, tiny_parts):
    folder = tmp_path / "V3"
    tiny.write_native_folder(str(folder), tiny_parts[0], num_shards=1)
    with pytest.raises(AnimeVideoModelError, match="vae_name"):
        loader.load_anisora(str(folder), None, "fp32")


# ---------------------------------------------------------------------------------------------
# dtype: auto keeps fp8 files in fp8; ComfyUI's fp8_scaled files
# ---------------------------------------------------------------------------------------------

def forward(t, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 36, 2, 4, 4, generator=g)
    kw = dict(timestep=torch.tensor([500]), encoder_hidden_states=torch.randn(1, 16, tiny.TINY_TEXT_DIM, generator=g),
              encoder_hidden_states_image=torch.randn(1, 257, tiny.TINY_IMAGE_DIM, generator=g), return_dict=False)
    with torch.no_grad():
        return t(hidden_states=x, **kw)[0]


def test_auto_keeps_an_fp8_file_in_fp8(tmp_path, tiny_parts):
    tr, vae = tiny_parts
    path, vpath = str(tmp_path / "kijai_fp8_e4m3fn.safetensors"), str(tmp_path / "vae.safetensors")
    tiny.write_native_transformer(path, tr, dtype=torch.float8_e4m3fn)
    tiny.write_native_vae(vpath, vae)
    assert loader.resolve_dtype("auto", torch.device("cpu"), torch.float8_e4m3fn) == (torch.float32,
                                                                                    torch.float8_e4m3fn)
    m = loader.load_wan(path, vpath, "auto")
    linear = m.transformer.blocks[0].attn1.to_q.weight
    assert linear.dtype == torch.float8_e4m3fn and m.dtype == torch.float32
    assert m.extras["storage_dtype"] == torch.float8_e4m3fn
    explicit = loader.load_wan(path, vpath, "fp8_e4m3fn").transformer
    assert torch.equal(forward(m.transformer), forward(explicit))
    # a bf16 file under auto is not upcast-stored: fp32 compute on the CPU, no fp8 storage
    tiny.write_native_transformer(path, tr, dtype=torch.bfloat16)
    assert loader.load_wan(path, vpath, "auto").extras["storage_dtype"] is None


def scaled_fp8_file(path, tr, new_format=False, prefix="", fmt="float8_e4m3fn"):
    """ComfyUI's fp8_scaled layout: every Linear weight fp8 with a float32 per-tensor scale (old: .scale_weight
    + the scaled_fp8 marker; new: .weight_scale + a comfy_quant JSON tensor per layer). Returns the dequantised
    native state dict (what the file means)."""
    import json

    from safetensors.torch import save_file

    native = wan_keys.transformer_to_native({k: v.detach().clone() for k, v in tr.state_dict().items()})
    linears = {wan_keys.transformer_to_native({f"{n}.weight": torch.zeros(1)}).popitem()[0]
               for n, mod in tr.named_modules() if isinstance(mod, torch.nn.Linear)}
    out, meaning = {}, dict(native)
    for k, v in native.items():
        if k in linears:
            scale = (v.abs().amax().float() / 448.0).clamp(min=1e-12)
            q = (v / scale).to(torch.float8_e4m3fn)
            layer = k[:-len(".weight")]
            out[prefix + k] = q
            if new_format:
                out[prefix + layer + ".weight_scale"] = scale
                out[prefix + layer + ".comfy_quant"] = torch.tensor(list(json.dumps({"format": fmt}).encode()),
                                                                    dtype=torch.uint8)
            else:
                out[prefix + layer + ".scale_weight"] = scale
                out[prefix + layer + ".scale_input"] = torch.ones(())
            meaning[k] = q.float() * scale
        else:
            out[prefix + k] = v.contiguous()
    if not new_format:
        out[prefix + "scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(out, path)
    return meaning


@pytest.mark.parametrize("new_format,prefix", [(False, "model.diffusion_model."), (True, "")])
def test_comfyui_fp8_scaled_file_loads(tmp_path, tiny_parts, new_format, prefix):
    tr, vae = tiny_parts
    path = str(tmp_path / "wan2.1_i2v_480p_14B_fp8_scaled.safetensors")
    meaning = scaled_fp8_file(path, tr, new_format, prefix)
    reference = tiny.build_tiny_transformer(0)
    reference.load_state_dict(wan_keys.transformer_to_diffusers(meaning))
    # fp32: every weight dequantised at load, exactly weight * scale
    t32 = loader.load_wan_transformer(path, torch.float32)
    assert_same(reference, t32)
    # auto keeps it fp8: block linears stay 8-bit with their scale; outside the blocks dequantised at load
    compute, storage = loader.resolve_dtype("auto", torch.device("cpu"), loader.wan_loader.stored_dtype(path))
    assert storage == torch.float8_e4m3fn
    t8 = loader.load_wan_transformer(path, compute, storage)
    q = t8.blocks[1].ffn.net[2]
    assert q.weight.dtype == torch.float8_e4m3fn and q.scale_weight.dtype == torch.float32
    assert t8.condition_embedder.text_embedder.linear_1.weight.dtype == torch.float32
    assert "scale_weight" not in "".join(t8.state_dict())  # a non-persistent buffer: the layout stays diffusers'
    a, b = forward(t8), forward(reference)
    assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item()), (a - b).abs().max()


def test_other_comfyui_quantisations_are_refused_by_name(tmp_path, tiny_parts):
    path = str(tmp_path / "nvfp4.safetensors")
    scaled_fp8_file(path, tiny_parts[0], new_format=True, fmt="nvfp4")
    with pytest.raises(AnimeVideoModelError, match="quantised file in nvfp4"):
        loader.load_wan_transformer(path, torch.float32)

"""GANime files: our safetensors format, architecture from the tensors, clear errors, the TF converter mapping."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from animevideo.pipelines.errors import AnimeVideoModelError
from animevideo.pipelines.ganime import convert_tf, loader, tiny
from animevideo.pipelines.ganime.transformer import GANimeTransformer, TransformerConfig
from animevideo.pipelines.ganime.vqgan import VQGAN, VQGANConfig


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    assert tiny.write_tiny_ganime(str(d)) == [tiny.VQGAN_FILE, tiny.TRANSFORMER_FILE]
    return str(d)


def test_round_trip_and_architecture_from_the_tensors(tiny_dir):
    vq_path, tr_path = (os.path.join(tiny_dir, f) for f in (tiny.VQGAN_FILE, tiny.TRANSFORMER_FILE))
    model = loader.load_ganime(vq_path, tr_path)
    ref = tiny.build_tiny_ganime(0)
    assert model.vqgan.config == tiny.TINY_VQGAN
    assert model.transformer.config == tiny.TINY_TRANSFORMER
    for a, b in ((model.vqgan, ref.vqgan), (model.transformer, ref.transformer)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert model.transformer.gpt2.lm_head.weight.data_ptr() == model.transformer.gpt2.transformer.wte.weight.data_ptr()


def test_sizes_are_read_without_metadata(tmp_path):
    torch.manual_seed(0)
    vq = VQGAN(VQGANConfig(channels=32, channels_multiplier=(1, 2, 2), num_res_blocks=2, attention_resolution=(16,),
                           resolution=64, z_channels=32, embedding_dim=8, num_embeddings=40, image_size=(32, 64)))
    save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, str(tmp_path / "v.safetensors"))
    cfg = loader.load_vqgan(str(tmp_path / "v.safetensors")).config
    assert (cfg.channels, cfg.channels_multiplier, cfg.num_res_blocks) == (32, (1, 2, 2), 2)
    assert cfg.attention_levels() == (False, False, True) and (cfg.num_embeddings, cfg.embedding_dim) == (40, 8)
    tr = GANimeTransformer(TransformerConfig(vocab_size=40, n_positions=64, n_embd=128, n_layer=3, n_head=2,
                                             remaining_frames_size=10, tokens_per_frame=32))
    save_file({k: v.contiguous() for k, v in tr.export_state_dict().items()}, str(tmp_path / "t.safetensors"))
    tcfg = loader.load_transformer(str(tmp_path / "t.safetensors")).config
    assert (tcfg.n_layer, tcfg.n_embd, tcfg.n_positions, tcfg.remaining_frames_size) == (3, 128, 64, 10)
    assert tcfg.n_head == 2  # 128 / 64: GPT-2's 64-wide heads when the metadata is missing


def test_non_ganime_files_are_refused_with_what_they_look_like(tmp_path, tiny_dir):
    svd = tmp_path / "svd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(svd))
    with pytest.raises(AnimeVideoModelError, match="is a Stable Diffusion image checkpoint.*not a GANime VQ-GAN file"):
        loader.load_vqgan(str(svd))
    gpt = tmp_path / "gpt2.safetensors"
    save_file({"transformer.h.0.attn.c_attn.weight": torch.zeros(2, 6), "transformer.wte.weight": torch.zeros(5, 2)},
              str(gpt))
    with pytest.raises(AnimeVideoModelError, match="plain GPT-2.*remaining-frames"):
        loader.load_transformer(str(gpt))
    tr_path = os.path.join(tiny_dir, tiny.TRANSFORMER_FILE)
    with pytest.raises(AnimeVideoModelError, match="transformer_name instead"):
        loader.load_vqgan(tr_path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 20)
    with pytest.raises(AnimeVideoModelError, match="damaged"):
        loader.load_vqgan(str(broken))


def test_a_pair_that_does_not_belong_together(tmp_path):
    vq = tiny.build_tiny_vqgan()
    tr = GANimeTransformer(TransformerConfig(vocab_size=65, n_positions=512, n_embd=32, n_layer=1, n_head=2,
                                             remaining_frames_size=4))
    with pytest.raises(AnimeVideoModelError, match="not trained together"):
        loader.GANimeModel(vq, tr)


def test_metadata_is_json_config(tiny_dir):
    meta = loader.read_metadata(os.path.join(tiny_dir, tiny.VQGAN_FILE))
    assert meta["format"] == loader.FORMAT_VQGAN
    assert json.loads(meta["config"])["norm_groups"] == 4


# ---------------------------------------------------------------------------------------------
# TF converter: names as the original code's layers and Keras' object-based checkpoints give them
# ---------------------------------------------------------------------------------------------

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def tf_conv(w):  # torch (out, in, kh, kw) -> Keras (kh, kw, in, out)
    return w.permute(2, 3, 1, 0).numpy()


def tf_res_block(out, prefix, blk):
    for norm in ("norm1", "norm2"):
        n = getattr(blk, norm)
        out[f"{prefix}/{norm}/gamma{SUFFIX}"] = n.weight.numpy()
        out[f"{prefix}/{norm}/beta{SUFFIX}"] = n.bias.numpy()
    for conv in ("conv1", "conv2", "nin_shortcut"):
        c = getattr(blk, conv)
        if c is not None:
            out[f"{prefix}/{conv}/kernel{SUFFIX}"] = tf_conv(c.weight)
            out[f"{prefix}/{conv}/bias{SUFFIX}"] = c.bias.numpy()


def tf_attn_block(out, prefix, blk):
    out[f"{prefix}/norm/gamma{SUFFIX}"] = blk.norm.weight.numpy()
    out[f"{prefix}/norm/beta{SUFFIX}"] = blk.norm.bias.numpy()
    for conv in ("q", "k", "v", "proj_out"):
        c = getattr(blk, conv)
        out[f"{prefix}/{conv}/kernel{SUFFIX}"] = tf_conv(c.weight)
        out[f"{prefix}/{conv}/bias{SUFFIX}"] = c.bias.numpy()


def tf_names_for(vq: VQGAN, tr: GANimeTransformer, root="first_stage_model/", gpt_root="transformer/transformer/transformer/"):
    """Build what a Net2Net checkpoint would hold, walking the original code's layer lists."""
    out = {}
    with torch.no_grad():
        for part, net, list_name in (("encoder", vq.encoder, "downsampling_list"), ("decoder", vq.decoder, "upsampling_list")):
            p = f"{root}{part}"
            out[f"{p}/conv_in/kernel{SUFFIX}"] = tf_conv(net.conv_in.weight)
            out[f"{p}/conv_in/bias{SUFFIX}"] = net.conv_in.bias.numpy()
            out[f"{p}/norm_out/gamma{SUFFIX}"] = net.norm_out.weight.numpy()
            out[f"{p}/norm_out/beta{SUFFIX}"] = net.norm_out.bias.numpy()
            out[f"{p}/conv_out/kernel{SUFFIX}"] = tf_conv(net.conv_out.weight)
            out[f"{p}/conv_out/bias{SUFFIX}"] = net.conv_out.bias.numpy()
            tf_res_block(out, f"{p}/mid/block_1", net.mid.block_1)
            tf_attn_block(out, f"{p}/mid/attn_1", net.mid.attn_1)
            tf_res_block(out, f"{p}/mid/block_2", net.mid.block_2)
            levels = net.down if part == "encoder" else list(reversed(net.up))
            i = 0
            for level in levels:  # the flat list: res (+ attn) per block, then the resample
                for b, blk in enumerate(level.blocks):
                    tf_res_block(out, f"{p}/{list_name}/{i}", blk)
                    i += 1
                    if len(level.attns):
                        tf_attn_block(out, f"{p}/{list_name}/{i}", level.attns[b])
                        i += 1
                if level.resample is not None:
                    out[f"{p}/{list_name}/{i}/conv/kernel{SUFFIX}"] = tf_conv(level.resample.conv.weight)
                    out[f"{p}/{list_name}/{i}/conv/bias{SUFFIX}"] = level.resample.conv.bias.numpy()
                    i += 1
        out[f"{root}pre_quant_conv/kernel{SUFFIX}"] = tf_conv(vq.quant_conv.weight)
        out[f"{root}pre_quant_conv/bias{SUFFIX}"] = vq.quant_conv.bias.numpy()
        out[f"{root}post_quant_conv/kernel{SUFFIX}"] = tf_conv(vq.post_quant_conv.weight)
        out[f"{root}post_quant_conv/bias{SUFFIX}"] = vq.post_quant_conv.bias.numpy()
        out[f"{root}quantize/embeddings{SUFFIX}"] = vq.quantize.embedding.weight.t().numpy()  # (128, 50257) in TF
        g = tr.gpt2.transformer
        out[f"{gpt_root}wte/weight{SUFFIX}"] = g.wte.weight.numpy()
        out[f"{gpt_root}wpe{SUFFIX}"] = g.wpe.weight.numpy()
        rem = tr.remaining_frames.weight.numpy()
        out[f"{gpt_root}wte_remaining_frames/weight{SUFFIX}"] = np.concatenate([rem, np.ones((3, rem.shape[1]), np.float32)])
        for i, blk in enumerate(g.h):
            for ln in ("ln_1", "ln_2"):
                out[f"{gpt_root}h/{i}/{ln}/gamma{SUFFIX}"] = getattr(blk, ln).weight.numpy()
                out[f"{gpt_root}h/{i}/{ln}/beta{SUFFIX}"] = getattr(blk, ln).bias.numpy()
            for name, mod in (("attn/c_attn", blk.attn.c_attn), ("attn/c_proj", blk.attn.c_proj),
                              ("mlp/c_fc", blk.mlp.c_fc), ("mlp/c_proj", blk.mlp.c_proj)):
                out[f"{gpt_root}h/{i}/{name}/weight{SUFFIX}"] = mod.weight.numpy()  # (in, out) in both
                out[f"{gpt_root}h/{i}/{name}/bias{SUFFIX}"] = mod.bias.numpy()[None]  # (1, out) in TF
        out[f"{gpt_root}ln_f/gamma{SUFFIX}"] = g.ln_f.weight.numpy()
        out[f"{gpt_root}ln_f/beta{SUFFIX}"] = g.ln_f.bias.numpy()
    # things a training checkpoint also holds, which must be skipped
    out[f"optimizer/iter{SUFFIX}"] = np.zeros(())
    out[f"{root}encoder/conv_in/kernel/.OPTIMIZER_SLOT/optimizer/m{SUFFIX}"] = np.zeros((3, 3, 3, 8))
    out[f"{root}discriminator/model/layer_with_weights-0/kernel{SUFFIX}"] = np.zeros((4, 4, 3, 64))
    out[f"save_counter{SUFFIX}"] = np.zeros(())
    return out


def test_tf_name_and_transpose_mapping_on_a_synthetic_checkpoint():
    model = tiny.build_tiny_ganime(3)
    arrays = tf_names_for(model.vqgan, model.transformer)
    vq_sd, tr_sd = convert_tf.convert_arrays(arrays, remaining_rows=model.transformer.config.remaining_frames_size)
    ref_vq = model.vqgan.state_dict()
    assert set(vq_sd) == set(ref_vq)
    assert all(torch.equal(vq_sd[k], ref_vq[k]) for k in ref_vq)
    ref_tr = model.transformer.export_state_dict()
    assert set(tr_sd) == set(ref_tr)
    assert all(torch.equal(tr_sd[k], ref_tr[k]) for k in ref_tr)
    # and the converted dicts load through the normal loader path (architecture from the tensors)
    vq = loader.vqgan_from_state_dict(vq_sd, {"image_size": [64, 128], "norm_groups": 4, "attention": "faithful"})
    assert vq.config.channels_multiplier == tiny.TINY_VQGAN.channels_multiplier
    assert vq.config.attention == "faithful"
    tr = loader.transformer_from_state_dict(tr_sd, {"n_head": 2})
    assert tr.config.n_layer == 2 and tr.config.remaining_frames_size == 32


def test_layer_name_style_gpt2_names_and_unknown_names():
    entries, unplaced = convert_tf.plan_conversion([
        "tfgp_t2lm_head_model/transformer/h_._3/attn/c_attn/weight:0",
        "tfgp_t2lm_head_model/transformer/ln_f/gamma:0",
        "something/else/entirely/kernel:0",
    ])
    assert {e.torch_name for e in entries} == {"gpt2.transformer.h.3.attn.c_attn.weight", "gpt2.transformer.ln_f.weight"}
    assert unplaced == ["something/else/entirely/kernel:0"]
    with pytest.raises(AnimeVideoModelError, match="could not place 1"):
        convert_tf.convert_arrays({"something/else/kernel": np.zeros((1, 1, 1, 1))})


def test_converter_needs_tensorflow_only_when_run(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tf(name, *a, **k):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("no tensorflow")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tf)
    with pytest.raises(AnimeVideoModelError, match="pip install tensorflow-cpu"):
        convert_tf.read_tf_checkpoint("/nonexistent/checkpoint")


def test_convert_checkpoint_writes_a_loadable_pair(tmp_path, monkeypatch):
    model = tiny.build_tiny_ganime(4)
    arrays = tf_names_for(model.vqgan, model.transformer)
    monkeypatch.setattr(convert_tf, "read_tf_checkpoint", lambda path: arrays)
    out_vq, out_tr = str(tmp_path / "vq.safetensors"), str(tmp_path / "tr.safetensors")
    written = convert_tf.convert_checkpoint("ckpt/checkpoint", out_vq, out_tr, n_head=2, frames_before=1,
                                            remaining_rows=32, norm_groups=4)
    assert written == [out_vq, out_tr]
    pair = loader.load_ganime(out_vq, out_tr)
    assert pair.vqgan.config.attention == "faithful" and pair.transformer.config.frames_before == 1
    vq_sd = pair.vqgan.state_dict()
    assert all(torch.equal(vq_sd[k], v) for k, v in model.vqgan.state_dict().items())
    sd = pair.transformer.export_state_dict()
    assert all(torch.equal(sd[k], v) for k, v in model.transformer.export_state_dict().items())

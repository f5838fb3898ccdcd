"""Long SVD image-to-video: one segment equals stock SVD; later segments blend bit-identically."""
import pytest
import torch

from animevideo.pipelines.long_video import svd_long
from animevideo.pipelines.long_video.segments import LongVideoOptions
from animevideo.pipelines.svd import loader, pipeline, tiny

H, W = 32, 32


@pytest.fixture(scope="module")
def svd_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("svdlong")
    tiny.write_sgm_file(str(root / "svd.safetensors"), *tiny.build_tiny_svd(0))
    return loader.load_svd(str(root / "svd.safetensors"), torch.float32)


def image():
    return torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("max_cfg", [1.0, 2.0])
def test_one_segment_equals_stock_svd(svd_model, one_thread, max_cfg):
    req = pipeline.SVDRequest(num_frames=4, steps=2, seed=3, max_cfg=max_cfg, decode_chunk_size=4)
    stock = pipeline.image_to_video(svd_model, image(), req)
    long = svd_long.long_image_to_video(svd_model, image(), req, LongVideoOptions(segment_length=4, overlap=2))
    assert torch.equal(long.latents, stock.latents)
    assert torch.equal(long.frames, stock.frames)


def test_long_clip_first_segment_is_stock_and_overlaps_are_bit_identical(svd_model, one_thread):
    opts = LongVideoOptions(segment_length=4, overlap=2)
    req = pipeline.SVDRequest(num_frames=7, steps=2, seed=3, max_cfg=2.0, decode_chunk_size=4)
    steps = []
    long = svd_long.long_image_to_video(svd_model, image(), req, opts, on_segment_step=lambda i, st: steps.append(i))
    assert long.frames.shape == (7, H, W, 3) and long.latents.shape[1] == 7
    assert steps == [0, 0, 1, 1, 2, 2]  # 3 segments (0-3, 2-5, shifted 3-6) x 2 steps
    stock = pipeline.image_to_video(svd_model, image(), pipeline.SVDRequest(num_frames=4, steps=2, seed=3, max_cfg=2.0,
                                                                            decode_chunk_size=4))
    assert torch.equal(long.latents[:, :4], stock.latents)
    # the attention patch is left in place but planless: stock SVD again
    again = pipeline.image_to_video(svd_model, image(), pipeline.SVDRequest(num_frames=4, steps=2, seed=3,
                                                                            max_cfg=2.0, decode_chunk_size=4))
    assert torch.equal(again.latents, stock.latents)


@pytest.mark.parametrize("max_cfg", [1.0, 2.5])
def test_long_svd_overlapped_frames_bit_identical(svd_model, one_thread, monkeypatch, max_cfg):
    from animevideo.pipelines.long_video import sampler as lv

    passes = []
    real = lv.LongSampler.sample

    def spy(self, *a, **k):
        self.on_segment = lambda p, x: passes.append((p, x.clone()))
        return real(self, *a, **k)

    monkeypatch.setattr(lv.LongSampler, "sample", spy)
    req = pipeline.SVDRequest(num_frames=8, steps=2, seed=1, max_cfg=max_cfg, decode_chunk_size=8)
    res = svd_long.long_image_to_video(svd_model, image(), req, LongVideoOptions(segment_length=4, overlap=2,
                                                                                 alpha=10.0, shift=1))
    passes = passes[:3]
    assert len(passes) == 3 and [p.num_ref_frames for p, _ in passes] == [0, 3, 3]
    for (pa, xa), (pb, xb) in zip(passes, passes[1:]):
        for j in range(pb.segment.known):
            fr = pb.segment.start + j
            assert torch.equal(xa[pa.num_ref_frames + fr - pa.segment.start], xb[pb.num_ref_frames + j])
            assert torch.equal(res.latents[0, fr], xb[pb.num_ref_frames + j])
    # prev-reference attention changes the new frames (the plan is really used)
    off = svd_long.long_image_to_video(svd_model, image(), req, LongVideoOptions(segment_length=4, overlap=2,
                                                                                 shift=1, prev_reference=False))
    assert torch.equal(off.latents[0, :4], res.latents[0, :4])
    assert not torch.equal(off.latents[0, 4:], res.latents[0, 4:])

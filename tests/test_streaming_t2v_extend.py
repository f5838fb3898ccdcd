"""StreamingT2V's extension loop on the tiny released-layout checkpoint: chunk 0 kept whole, exactly 8 new frames
per chunk for every length, the CAM/APM inputs of each chunk, noise sharing, Cancel, and bad input."""
import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.streaming_t2v import extend, loader, tiny

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 32  # 4x4 latents: the smallest the tiny 2-level UNet and the x8 CAM embedding take


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tiny.write_tiny_streaming_t2v(str(tmp_path_factory.mktemp("stt2v")))
    return loader.load_streaming_t2v(path)


@pytest.fixture(scope="module")
def prompts(model):
    tok = loader.load_tokenizer(model.tokenizer_dir)
    return extend.encode_prompt(model, tok, "a girl waves"), extend.encode_prompt(model, tok, "")


@pytest.mark.parametrize("given", range(8, 17))
def test_plan_keeps_chunk_0_and_adds_8_frames_per_chunk_for_every_length(given):
    for target in range(1, 130):
        plan = extend.plan_extension(given, target)
        made = plan.total_frames
        assert made == given + 8 * plan.chunks
        assert made >= target and (plan.chunks == 0 or made - 8 < target)  # the least reachable length
        if made != target:
            assert f"asked for {target} frames" in plan.note() and f"made {made} frames" in plan.note()


def test_fewer_than_8_conditioning_frames_is_refused():
    with pytest.raises(AnimeVideoInputError, match="needs at least 8"):
        extend.plan_extension(7, 40)


def test_text_free_run_is_refused(model):
    clip = torch.rand(16, 3, SIZE, SIZE)
    with pytest.raises(AnimeVideoInputError, match="prompt: StreamingT2V's UNet and CAM are text-conditioned"):
        extend.extend_clip(model, clip, None, None, 24, steps=1)


def test_prompt_embeddings_come_from_the_checkpoints_text_encoder(model, prompts):
    pos, neg = prompts
    assert pos.shape == (1, 77, 64) and not torch.equal(pos, neg)


def _recording(monkeypatch):
    seen = {"decoded": [], "cam": [], "noise": [], "anchor": []}
    real_decode, real_sample, real_tokens = extend.decode_frames, extend.sample_chunk, extend.image_tokens

    def decode(model, latents):
        out = real_decode(model, latents)
        seen["decoded"].append(out.clone())
        return out

    def sample(model, scheduler, latents, cam_frames, *a, **kw):
        seen["cam"].append(cam_frames.clone())
        seen["noise"].append(latents.clone())
        return real_sample(model, scheduler, latents, cam_frames, *a, **kw)

    def tokens(model, anchor):
        seen["anchor"].append(anchor.clone())
        return real_tokens(model, anchor)

    monkeypatch.setattr(extend, "decode_frames", decode)
    monkeypatch.setattr(extend, "sample_chunk", sample)
    monkeypatch.setattr(extend, "image_tokens", tokens)
    return seen


@pytest.mark.parametrize("given,target,chunks", [(16, 32, 2), (11, 20, 2)])
def test_loop_appends_the_last_8_frames_of_each_chunk(model, prompts, monkeypatch, given, target, chunks):
    seen = _recording(monkeypatch)
    clip = torch.rand(given, 3, SIZE, SIZE)
    steps = []
    res = extend.extend_clip(model, clip, *prompts, target, steps=2, seed=5, on_step=lambda k, i: steps.append((k, i)))
    assert res.plan.chunks == chunks and res.frames.shape == (given + 8 * chunks, SIZE, SIZE, 3)
    assert torch.equal(res.frames[:given], clip.permute(0, 2, 3, 1))  # chunk 0 whole, bit for bit
    assert len(seen["decoded"]) == chunks
    tail = clip[-8:]
    for k, decoded in enumerate(seen["decoded"]):
        assert decoded.shape[0] == 16
        new = res.frames[given + 8 * k: given + 8 * (k + 1)]
        assert torch.equal(new, decoded[8:].permute(0, 2, 3, 1))  # exactly the chunk's last 8
        assert torch.equal(seen["cam"][k], tail * 2 - 1)  # CAM: the previous chunk's last 8, in [-1, 1]
        tail = decoded[-8:]
    assert len(seen["anchor"]) == 1 and torch.equal(seen["anchor"][0], clip[:8])  # APM: chunk 0's first 8
    assert steps == [(k, i) for k in range(chunks) for i in range(2)]


def test_noise_is_fresh_per_chunk_unless_shared(model, prompts, monkeypatch):
    seen = _recording(monkeypatch)
    clip = torch.rand(16, 3, SIZE, SIZE)
    a = extend.extend_clip(model, clip, *prompts, 32, steps=1, seed=3)
    assert not torch.equal(seen["noise"][0], seen["noise"][1])
    seen["noise"].clear()
    b = extend.extend_clip(model, clip, *prompts, 32, steps=1, seed=3, shared_noise=True)
    assert torch.equal(seen["noise"][0], seen["noise"][1])
    assert torch.equal(a.frames[:24], b.frames[:24])  # the first chunk is the same run
    c = extend.extend_clip(model, clip, *prompts, 32, steps=1, seed=3)
    assert torch.equal(a.frames, c.frames)  # seeded: repeatable


def test_cancel_stops_within_a_step(model, prompts, monkeypatch):
    calls = {"unet": 0, "checks": 0}
    real = model.predict_noise

    def counting(*a, **kw):
        calls["unet"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(model, "predict_noise", counting)

    class Cancelled(Exception):
        pass

    def check():
        calls["checks"] += 1
        if calls["checks"] == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        extend.extend_clip(model, torch.rand(16, 3, SIZE, SIZE), *prompts, 40, steps=4, check_interrupt=check)
    assert calls["unet"] == 2  # checks before chunk 1, after step 0 and after step 1: two UNet evaluations


def test_any_clip_is_adapted_to_16_square_frames():
    clip = torch.rand(25, 3, 72, 128)  # SVD-XT's 25 frames, 16:9
    out = extend.adapt_clip(clip, size=64)
    assert out.shape == (16, 3, 64, 64)
    centre = torch.nn.functional.interpolate(clip[:16, :, :, 28:100], size=(64, 64), mode="bilinear")
    assert torch.allclose(out, centre.clamp(0, 1), atol=1e-6)

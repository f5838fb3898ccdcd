"""GANime in-betweening: the shared-prefix transformer, batched variations, outputs, bad input."""
import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.ganime import inference as I
from animevideo.pipelines.ganime import tiny


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny.build_tiny_ganime(0)


@pytest.fixture(scope="module")
def keyframes():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 48, 80, generator=g), torch.rand(1, 3, 48, 80, generator=g)


def test_shared_prefix_equals_the_hugging_face_forward(model):
    tr = model.transformer
    g = torch.Generator().manual_seed(1)
    last = torch.randint(0, 64, (2, 128), generator=g)
    prev = torch.randint(0, 64, (5, 256), generator=g)  # two previous frames
    rows = torch.tensor([0, 1, 1, 0, 1])
    r = torch.tensor([5, 0])
    with torch.no_grad():
        full = tr(torch.cat([last[rows], prev], 1), r[rows])
    shared = tr.shared_prefix_logits(last, r, prev, rows)
    assert full.shape == shared.shape == (5, 128, 64)
    assert torch.allclose(full, shared, atol=1e-4)


def test_batched_pairs_give_the_codes_of_each_pair_alone_greedy(model):
    g = torch.Generator().manual_seed(2)
    first = torch.randint(0, 64, (3, 128), generator=g)
    last = torch.randint(0, 64, (3, 128), generator=g)
    batched = I.generate(model, first, last, 6, generate_last=True)
    for p in range(3):
        alone = I.generate(model, first[p:p + 1], last[p:p + 1], 6, generate_last=True)
        assert torch.equal(batched.codes[p], alone.codes[0])
        assert torch.allclose(batched.images[p], alone.images[0], atol=1e-5)


@pytest.mark.parametrize("reencode", [False, True])
def test_batched_variations_give_the_codes_of_each_variation_alone_sampled(model, reencode):
    g = torch.Generator().manual_seed(3)
    first = torch.randint(0, 64, (1, 128), generator=g)
    last = torch.randint(0, 64, (1, 128), generator=g)
    kw = dict(mode="sample", temperature=1.5, top_k=8, reencode_previous=reencode)
    rows = torch.zeros(4, dtype=torch.long)
    batched = I.generate(model, first, last, 5, pair_of_row=rows, seeds=[10, 11, 12, 13], **kw)
    assert len({tuple(c.flatten().tolist()) for c in batched.codes}) > 1  # the variations differ
    for v in range(4):
        alone = I.generate(model, first, last, 5, pair_of_row=rows[:1], seeds=[10 + v], **kw)
        assert torch.equal(batched.codes[v], alone.codes[0])


def test_sampling_respects_top_k_and_seed():
    logits = torch.randn(2, 16, 50)
    gens = I.make_generators([5, 6])
    codes = I.choose_codes(logits, "sample", gens, 1.0, 3)
    top3 = logits.topk(3, -1).indices
    assert ((codes[..., None] == top3).any(-1)).all()
    again = I.choose_codes(logits, "sample", I.make_generators([5, 6]), 1.0, 3)
    assert torch.equal(codes, again)
    assert torch.equal(I.choose_codes(logits, "greedy"), logits.argmax(-1))


def test_inbetween_output_keyframes_and_sizes(model, keyframes):
    first, last = keyframes
    res = I.inbetween(model, first, last, I.InbetweenRequest(num_frames=5))
    assert res.frames.shape == (1, 5, 3, 48, 80)
    assert torch.equal(res.frames[0, 0], first[0]) and torch.equal(res.frames[0, -1], last[0])
    assert res.codes.shape == (1, 5, 128)
    assert 0 <= res.frames.min() and res.frames.max() <= 1
    res = I.inbetween(model, first, last, I.InbetweenRequest(num_frames=4, output_size="model", use_generated_last=True))
    assert res.frames.shape == (1, 4, 3, 64, 128)
    assert not torch.allclose(res.frames[0, -1], I.to_model(last, (64, 128), "squash")[0] * 0.5 + 0.5)


def test_greedy_variations_are_one_clip_and_sampled_ones_differ(model, keyframes):
    first, last = keyframes
    greedy = I.inbetween(model, first, last, I.InbetweenRequest(num_frames=4, variations=3))
    assert greedy.frames.shape[0] == 3 and torch.equal(greedy.frames[0], greedy.frames[2])
    sampled = I.inbetween(model, first, last, I.InbetweenRequest(num_frames=4, variations=2, mode="sample", seed=7))
    assert not torch.equal(sampled.codes[0], sampled.codes[1])
    alone = I.inbetween(model, first, last, I.InbetweenRequest(num_frames=4, mode="sample", seed=8))
    assert torch.equal(alone.codes[0], sampled.codes[1])  # variation k = seed + k


def test_letterbox_round_trip():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 60), torch.linspace(0, 1, 60), indexing="ij")
    img = torch.stack([yy, xx, (yy + xx) / 2])[None]  # smooth, so resampling keeps it
    boxed = (I.to_model(img, (64, 128), "letterbox") + 1) / 2
    y0, x0, nh, nw = I.letterbox_box((60, 60), (64, 128))
    assert (nh, nw) == (64, 64) and (y0, x0) == (0, 32)
    assert boxed[..., :, :x0].abs().max() == 0  # black bars
    back = I.from_model(boxed, (60, 60), (64, 128), "letterbox")
    assert back.shape == img.shape and (back - img).abs().max() < 0.02
    squashed = (I.to_model(img, (64, 128), "squash") + 1) / 2
    assert I.from_model(squashed, (60, 60), (64, 128), "squash").shape == img.shape


def test_bad_input(model, keyframes):
    first, last = keyframes
    with pytest.raises(AnimeVideoInputError, match="same size"):
        I.inbetween(model, first, torch.rand(1, 3, 40, 80), I.InbetweenRequest(num_frames=5))
    with pytest.raises(AnimeVideoInputError, match="at least 3"):
        I.inbetween(model, first, last, I.InbetweenRequest(num_frames=2))
    with pytest.raises(AnimeVideoInputError, match="at most 33"):  # the tiny table has 32 rows
        I.inbetween(model, first, last, I.InbetweenRequest(num_frames=40))
    with pytest.raises(AnimeVideoInputError, match="1 to 3"):  # 128 * (1 + 4) > 512 positions
        I.inbetween(model, first, last, I.InbetweenRequest(num_frames=5, frames_before=4))
    with pytest.raises(AnimeVideoInputError, match="temperature"):
        I.inbetween(model, first, last, I.InbetweenRequest(mode="sample", temperature=0))
    with pytest.raises(AnimeVideoInputError, match="mode"):
        I.inbetween(model, first, last, I.InbetweenRequest(mode="beam"))


def test_more_previous_frames(model, keyframes):
    first, last = keyframes
    res = I.inbetween(model, first, last, I.InbetweenRequest(num_frames=6, frames_before=3))
    assert res.frames.shape == (1, 6, 3, 48, 80)


def test_thesis_transformer_size():
    """gpt2-medium plus a 50257-row remaining-frames table is the original's 406.3 M parameters."""
    from animevideo.pipelines.ganime.transformer import GANimeTransformer, TransformerConfig

    with torch.device("meta"):
        tr = GANimeTransformer(TransformerConfig.preset("gpt2-medium", remaining_frames_size=50257))
    assert sum(p.numel() for p in tr.parameters()) == 406_286_336
    assert tr.gpt2.lm_head.weight is tr.gpt2.transformer.wte.weight
    assert (tr.config.n_layer, tr.config.n_embd, tr.config.n_head, tr.config.n_positions) == (24, 1024, 16, 1024)


@pytest.mark.parametrize("frames_before", [1, 3])
def test_generate_feeds_the_thesis_layout_at_every_step(model, frames_before, monkeypatch):
    """Every step reads [codes(last frame) | codes of the M previous frames, oldest first] with the remaining-frames
    value r = n - 1 - c of the frame c it predicts (thesis B1/B3, Table 6), written out here by hand; the
    predicted codes land in slot c and become context for the next steps."""
    tr = model.transformer
    g = torch.Generator().manual_seed(7)
    first = torch.randint(0, 64, (1, 128), generator=g)
    last = torch.randint(0, 64, (1, 128), generator=g)
    n = 6
    seen = []
    real = tr.shared_prefix_logits

    def spy(prefix_ids, prefix_remaining, suffix_ids, prefix_of_row, n_out=None):
        seen.append((prefix_ids.clone(), prefix_remaining.clone(), suffix_ids.clone()))
        return real(prefix_ids, prefix_remaining, suffix_ids, prefix_of_row, n_out=n_out)

    monkeypatch.setattr(tr, "shared_prefix_logits", spy)
    out = I.generate(model, first, last, n, frames_before=frames_before, generate_last=True)
    assert len(seen) == n - 1
    codes = out.codes[0]
    for c, (prefix, r, suffix) in enumerate(seen, start=1):
        previous = list(range(max(0, c - frames_before), c))
        assert torch.equal(prefix, last)
        assert r.tolist() == [n - 1 - c]
        assert torch.equal(suffix[0], torch.cat([codes[j] for j in previous]))
    # the uncached forward on that layout gives the codes the loop chose (greedy)
    c = n - 2
    ids = torch.cat([last[0]] + [codes[j] for j in range(max(0, c - frames_before), c)])[None]
    with torch.no_grad():
        full = tr(ids, torch.tensor([n - 1 - c]))
    assert torch.equal(full.argmax(-1)[0], codes[c])

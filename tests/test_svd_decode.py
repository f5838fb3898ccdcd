"""Chunked temporal-VAE decode: same frames as diffusers' chunked decode, bounded chunks, blended tiles."""
import torch

from animevideo.pipelines.svd import decode


class LocalVAE(torch.nn.Module):
    """A stand-in decoder that is purely local (x8 nearest upsampling), so tiled must equal untiled exactly."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = []

    def decode(self, z, num_frames):
        self.calls.append((z.shape[0], num_frames, tuple(z.shape[-2:])))
        x = torch.nn.functional.interpolate(z[:, :3] * self.w, scale_factor=8, mode="nearest")

        class Out:
            sample = x

        return Out()


def test_chunked_decode_matches_diffusers_decode(tiny_svd):
    _, vae, _ = tiny_svd
    torch.manual_seed(0)
    lat = torch.randn(5, 4, 4, 6)
    ours = decode.decode_latents(vae, lat, 0.18215, decode_chunk_size=2)
    with torch.no_grad():
        ref = torch.cat([vae.decode(lat[i:i + 2] / 0.18215, num_frames=len(lat[i:i + 2])).sample for i in range(0, 5, 2)])
    ref = (ref / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert ours.shape == (5, 32, 48, 3) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_decode_never_sees_more_than_one_chunk():
    vae = LocalVAE()
    decode.decode_latents(vae, torch.randn(25, 4, 4, 4), 1.0, decode_chunk_size=4)
    assert max(n for n, _, _ in vae.calls) == 4 and sum(n for n, _, _ in vae.calls) == 25
    assert all(n == f for n, f, _ in vae.calls)  # the temporal decoder is told each chunk's length


def test_tiled_decode_blends_seams_exactly_for_a_local_decoder():
    vae = LocalVAE()
    lat = torch.randn(3, 4, 20, 28)
    whole = decode.decode_latents(vae, lat, 1.0, decode_chunk_size=3)
    vae.calls.clear()
    tiled = decode.decode_latents(vae, lat, 1.0, decode_chunk_size=3, tile_size=8, tile_overlap=3)
    assert max(hw for _, _, hw in vae.calls) <= (8, 8)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_tiled_decode_of_real_temporal_vae_is_close_to_whole_frames(tiny_svd):
    _, vae, _ = tiny_svd
    torch.manual_seed(1)
    lat = torch.randn(2, 4, 12, 12)
    whole = decode.decode_latents(vae, lat, 0.18215, decode_chunk_size=2)
    tiled = decode.decode_latents(vae, lat, 0.18215, decode_chunk_size=2, tile_size=8, tile_overlap=4)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    assert (tiled - whole).abs().mean() < 0.05


def test_tile_starts_cover_the_frame():
    for size, tile, ov in [(20, 8, 3), (8, 8, 2), (9, 8, 4), (100, 32, 8)]:
        starts = decode.tile_starts(size, tile, ov)
        covered = set()
        for s in starts:
            covered |= set(range(s, min(size, s + tile)))
        assert covered == set(range(size)) and starts[0] == 0


class OOMUnlessSmallVAE(LocalVAE):
    """Runs out of memory for more than ``limit`` frames at once, like a GPU at the decode peak."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def decode(self, z, num_frames):
        if z.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().decode(z, num_frames)


def test_out_of_memory_retries_with_smaller_chunks_and_gives_the_same_frames():
    lat = torch.randn(7, 4, 4, 4)
    whole = decode.decode_latents(LocalVAE(), lat, 1.0, decode_chunk_size=7)
    vae = OOMUnlessSmallVAE(limit=2)
    got = decode.decode_latents(vae, lat, 1.0, decode_chunk_size=7)
    torch.testing.assert_close(got, whole, rtol=0, atol=0)
    assert max(n for n, _, _ in vae.calls) <= 2

"""Model names from node inputs resolve only inside the model folders."""
import os

import pytest
import torch

from animevideo.pipelines.checkpoint_io import FileIdentity, resolve_in_folders
from animevideo.pipelines.errors import AnimeVideoInputError


def test_resolves_nested_names(tmp_path):
    (tmp_path / "anime").mkdir()
    (tmp_path / "anime" / "svd_anime.safetensors").write_bytes(b"x")
    assert resolve_in_folders("anime/svd_anime.safetensors", [str(tmp_path)]) == str(tmp_path / "anime" / "svd_anime.safetensors")


@pytest.mark.parametrize("name", ["../secret.safetensors", "/etc/passwd", "a/../../secret.safetensors", "C:\\x.ckpt", ""])
def test_refuses_escapes(tmp_path, name):
    (tmp_path.parent / "secret.safetensors").write_bytes(b"x")
    with pytest.raises(AnimeVideoInputError):
        resolve_in_folders(name, [str(tmp_path)])


def test_symlink_out_of_the_folder_is_not_followed(tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    folder = tmp_path / "models"
    folder.mkdir()
    os.symlink(outside, folder / "link.safetensors")
    with pytest.raises(FileNotFoundError):
        resolve_in_folders("link.safetensors", [str(folder)])


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        resolve_in_folders("nope.safetensors", [str(tmp_path)])


def test_file_identity_changes_when_the_file_changes(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"abc")
    a = FileIdentity.of(str(p))
    p.write_bytes(b"abcd")
    assert FileIdentity.of(str(p)) != a


def test_text_file_named_pth_is_reported_as_damaged(tmp_path):
    from animevideo.pipelines.checkpoint_io import read_state_dict
    from animevideo.pipelines.errors import AnimeVideoModelError

    p = tmp_path / "notes.pth"
    p.write_text("hello, this is not a checkpoint")
    with pytest.raises(AnimeVideoModelError) as e:
        read_state_dict(str(p))
    assert "damaged or incomplete" in str(e.value)


def test_nested_wrappers_are_unwrapped(tmp_path):
    import torch

    from animevideo.pipelines.checkpoint_io import read_state_dict

    p = tmp_path / "m.pth"
    torch.save({"net": {"params-ema": {"w": torch.ones(2)}}}, p)
    assert list(read_state_dict(str(p))) == ["w"]


def test_safetensors_reads_come_back_aligned_whatever_the_file_offsets(tmp_path):
    """safetensors >= 0.8 maps tensors at the file's offsets; unaligned weights make CPU kernels round
    differently, so every read hands out aligned memory (checkpoint_io.owned_tensor)."""
    from safetensors.torch import save_file

    from animevideo.pipelines.checkpoint_io import CPU_ALIGNMENT, own_module_tensors, read_state_dict

    # odd-sized tensors put the later ones at offsets that are not multiples of 64
    sd = {f"t{i}": torch.randn(3 + i) for i in range(6)}
    path = tmp_path / "odd.safetensors"
    save_file(sd, str(path))
    got = read_state_dict(str(path))
    assert all(v.data_ptr() % CPU_ALIGNMENT == 0 for v in got.values())
    assert all(torch.equal(got[k], sd[k]) for k in sd)

    from safetensors.torch import load_file

    raw = load_file(str(path))
    if all(v.data_ptr() % CPU_ALIGNMENT == 0 for v in raw.values()):
        pytest.skip("this safetensors copies on load: nothing unaligned to fix")
    module = torch.nn.Module()
    for k, v in raw.items():
        module.register_buffer(k, v)
    own_module_tensors(module)
    assert all(b.data_ptr() % CPU_ALIGNMENT == 0 for b in module.buffers())

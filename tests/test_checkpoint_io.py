"""Model names from node inputs resolve only inside the model folders."""
import os

import pytest

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

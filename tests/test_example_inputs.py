"""The example inputs reach ComfyUI's input/ folder at pack load, and a user's file is never replaced."""
from __future__ import annotations

import os

from pack_paths import ROOT

from animevideo.nodes import example_inputs


def shipped_names():
    return sorted(f for f in os.listdir(os.path.join(ROOT, "example_inputs")) if not f.startswith("."))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_every_shipped_input_is_prefixed():
    names = shipped_names()
    assert names
    assert example_inputs.example_files() == names, "a file in example_inputs/ lacks the animevideo_example_ prefix"


def test_missing_inputs_are_copied_and_a_users_file_is_left_alone(tmp_path):
    names = shipped_names()
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    users = input_dir / names[0]
    users.write_bytes(b"the user's own picture")
    stamp = os.stat(users).st_mtime_ns

    copied = example_inputs.install_example_inputs(str(input_dir))

    assert copied == names[1:]
    assert users.read_bytes() == b"the user's own picture" and os.stat(users).st_mtime_ns == stamp
    for name in names[1:]:
        assert read(input_dir / name) == read(os.path.join(ROOT, "example_inputs", name))
    assert sorted(os.listdir(input_dir)) == names, "temporary files left behind"
    assert example_inputs.install_example_inputs(str(input_dir)) == [], "a second load copied again"


def test_input_folder_is_made_when_missing_and_the_copy_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_COPY_EXAMPLE_INPUTS", "0")
    assert example_inputs.install_example_inputs(str(tmp_path / "off")) == []
    assert not (tmp_path / "off").exists()
    monkeypatch.delenv("ANIMEVIDEO_COPY_EXAMPLE_INPUTS")
    assert example_inputs.install_example_inputs(str(tmp_path / "new" / "input")) == shipped_names()


def test_a_read_only_input_folder_does_not_stop_the_pack(tmp_path, caplog):
    blocked = tmp_path / "input"
    blocked.write_text("a file where the folder should be")
    assert example_inputs.install_example_inputs(str(blocked)) == []
    assert "could not copy the example inputs" in caplog.text


def test_copy_never_replaces_a_file_that_appears_during_the_copy(tmp_path, monkeypatch):
    src = tmp_path / "src.png"
    src.write_bytes(b"example")
    dest = tmp_path / "animevideo_example_x.png"
    real_copyfile = example_inputs.shutil.copyfile

    def copy_then_user_saves(a, b):
        real_copyfile(a, b)
        dest.write_bytes(b"user")  # the user's file lands between the existence check and the link

    monkeypatch.setattr(example_inputs.shutil, "copyfile", copy_then_user_saves)
    assert example_inputs.copy_if_missing(str(src), str(dest)) is False
    assert dest.read_bytes() == b"user"
    assert sorted(os.listdir(tmp_path)) == ["animevideo_example_x.png", "src.png"]

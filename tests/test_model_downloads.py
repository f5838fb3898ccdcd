"""Pinned model downloads through the real huggingface_hub client against a local Hub (tests/hub_server.py)."""
import dataclasses
import hashlib
import os
import re
import subprocess
import sys

import pytest

from pack_paths import ROOT
from hub_server import COMMIT, HubServer, unused_endpoint

from animevideo.pipelines import model_downloads as md
from animevideo.pipelines.model_downloads import AnimeVideoDownloadError, PinnedFile

CHUNK = 4096
REPO = "animevideo-test/tiny-models"


class Cancelled(Exception):
    pass


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)  # several chunks from a small file
    monkeypatch.setenv("ANIMEVIDEO_DOWNLOADS", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def payload(n=50_000, seed=1) -> bytes:
    return hashlib.shake_256(f"animevideo-{seed}".encode()).digest(n)


def entry_for(data: bytes, **kw) -> PinnedFile:
    fields = dict(folder="upscale_models", name="tiny_model.safetensors", repo_id=REPO,
                  filename="sub/tiny_model.safetensors", revision=COMMIT,
                  sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    fields.update(kw)
    return PinnedFile(**fields)


def serve(hub, entry, data, **kw):
    hub.files.add(entry.repo_id, entry.revision, entry.filename, data, **kw)


def leftovers(dest):
    part_dir = os.path.join(dest, md.PARTIAL_DIR)
    return os.listdir(part_dir) if os.path.isdir(part_dir) else []


# ---------------------------------------------------------------------------------------------
# The download itself
# ---------------------------------------------------------------------------------------------

def test_download_lands_in_the_folder_under_the_pinned_name(hub, tmp_path):
    data = payload()
    entry = entry_for(data)
    serve(hub, entry, data)
    seen = []
    path = md.download_pinned(entry, str(tmp_path), on_bytes=lambda done, total: seen.append((done, total)))
    assert path == os.path.join(str(tmp_path), "tiny_model.safetensors")
    assert open(path, "rb").read() == data
    assert not leftovers(str(tmp_path)) and not os.path.exists(os.path.join(str(tmp_path), md.PARTIAL_DIR))
    # progress: several byte counts up to the whole file (then the sha256 pass)
    assert (len(data), len(data)) in seen and len({d for d, _ in seen}) > 3
    # exactly the pinned repository, revision and file were asked for
    assert {p for _, p, _, _ in hub.files.requests} == {f"/{REPO}/resolve/{COMMIT}/sub/tiny_model.safetensors"}


def test_sha256_mismatch_deletes_the_download_and_says_so(hub, tmp_path):
    data, wrong = payload(seed=1), payload(seed=2)
    entry = entry_for(data)
    serve(hub, entry, wrong)
    hub.files.etag_override = entry.sha256  # the Hub claims the pinned hash but serves other bytes
    with pytest.raises(AnimeVideoDownloadError, match="sha256") as e:
        md.download_pinned(entry, str(tmp_path))
    assert "deleted" in str(e.value) and entry.url in str(e.value)
    assert not os.path.exists(os.path.join(str(tmp_path), entry.name)) and not leftovers(str(tmp_path))


def test_a_changed_file_on_the_hub_is_refused_before_downloading(hub, tmp_path):
    data = payload()
    entry = entry_for(data, sha256=hashlib.sha256(b"the pinned file").hexdigest())
    serve(hub, entry, data)  # advertises its real sha256, not the pinned one
    with pytest.raises(AnimeVideoDownloadError, match="different file"):
        md.download_pinned(entry, str(tmp_path))
    assert not hub.files.gets() and not os.listdir(str(tmp_path))


def test_size_only_entries_are_checked_by_size(hub, tmp_path):
    data = payload()
    entry = entry_for(data, sha256=None, size=len(data) + 1)
    serve(hub, entry, data)
    with pytest.raises(AnimeVideoDownloadError, match="bytes"):
        md.download_pinned(entry, str(tmp_path))
    assert not os.path.exists(os.path.join(str(tmp_path), entry.name))
    ok = entry_for(data, sha256=None)
    assert open(md.download_pinned(ok, str(tmp_path)), "rb").read() == data


def test_an_existing_file_is_never_overwritten(hub, tmp_path):
    data = payload()
    entry = entry_for(data)
    serve(hub, entry, data)
    mine = tmp_path / entry.name
    mine.write_bytes(b"the user's own file")
    assert md.download_pinned(entry, str(tmp_path)) == str(mine)
    assert mine.read_bytes() == b"the user's own file" and not hub.files.requests

    # a file of that name that appears while the download runs is kept too
    mine.unlink()

    def user_saves_a_file(done, total):
        if done and not mine.exists():
            mine.write_bytes(b"saved meanwhile")

    md.download_pinned(entry, str(tmp_path), on_bytes=user_saves_a_file)
    assert mine.read_bytes() == b"saved meanwhile" and not leftovers(str(tmp_path))


def test_a_dropped_connection_resumes_with_a_range_request(hub, tmp_path):
    data = payload()
    entry = entry_for(data)
    serve(hub, entry, data)
    hub.files.drop_after = 20_000  # huggingface_hub reconnects within the same call and asks for the rest
    path = md.download_pinned(entry, str(tmp_path))
    assert open(path, "rb").read() == data
    ranges = [rng for _, rng in hub.files.gets()]
    assert ranges[0] is None and re.fullmatch(r"bytes=\d+-", ranges[1] or ""), ranges


def test_an_interrupted_download_resumes_on_the_next_call(hub, tmp_path, monkeypatch):
    import huggingface_hub.file_download as fd

    monkeypatch.setattr(fd.time, "sleep", lambda s: None)  # the client's waits between its own retries
    data = payload()
    entry = entry_for(data)
    serve(hub, entry, data)
    hub.files.drop_after = 20_000

    def hub_goes_down(done, total):
        if done >= 8192:
            hub.files.refuse_gets = True  # every retry of this call now fails

    with pytest.raises(AnimeVideoDownloadError, match="next run resumes") as e:
        md.download_pinned(entry, str(tmp_path), on_bytes=hub_goes_down)
    part = md.partial_path(entry, str(tmp_path))
    kept = os.path.getsize(part)
    assert 0 < kept < len(data) and part in str(e.value)
    assert not os.path.exists(os.path.join(str(tmp_path), entry.name))

    hub.files.refuse_gets = False
    path = md.download_pinned(entry, str(tmp_path))
    assert open(path, "rb").read() == data
    assert hub.files.gets()[-1][1] == f"bytes={kept}-"
    assert not leftovers(str(tmp_path))


def test_cancel_stops_between_chunks_and_leaves_no_final_file(hub, tmp_path):
    data = payload()
    entry = entry_for(data)
    serve(hub, entry, data)
    calls = []

    def cancel_after_two_chunks(done, total):
        calls.append(done)
        if done >= 2 * CHUNK:
            raise Cancelled()

    with pytest.raises(Cancelled):
        md.download_pinned(entry, str(tmp_path), on_bytes=cancel_after_two_chunks)
    assert max(calls) == 2 * CHUNK  # stopped at the first chunk boundary past the cancel, not at the end
    assert not os.path.exists(os.path.join(str(tmp_path), entry.name))
    kept = os.path.getsize(md.partial_path(entry, str(tmp_path)))
    assert 0 < kept <= 2 * CHUNK
    # the next run picks up where the cancel left off
    assert open(md.download_pinned(entry, str(tmp_path)), "rb").read() == data
    assert hub.files.gets()[-1][1] == f"bytes={kept}-"


def test_offline_is_a_clear_message(hub, tmp_path, monkeypatch):
    data = payload()
    entry = entry_for(data)
    monkeypatch.setenv("HF_ENDPOINT", unused_endpoint())  # nothing listens there: the Hub is unreachable
    with pytest.raises(AnimeVideoDownloadError) as e:
        md.download_pinned(entry, str(tmp_path))
    msg = str(e.value)
    for part in ("unreachable", entry.name, str(tmp_path), entry.url, "by hand"):
        assert part in msg, part
    assert entry.url.startswith("https://huggingface.co/")

    for env, value in (("HF_HUB_OFFLINE", "1"), ("ANIMEVIDEO_DOWNLOADS", "0")):
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv(env, value)
        with pytest.raises(AnimeVideoDownloadError, match=env) as e:
            md.download_pinned(entry, str(tmp_path))
        assert entry.url in str(e.value)
        monkeypatch.delenv(env)
    assert not hub.files.requests


def test_a_gated_repository_asks_for_the_license_and_a_token(hub, tmp_path, monkeypatch):
    data = payload()
    entry = entry_for(data, gated=True)
    serve(hub, entry, data, gated=True)
    with pytest.raises(AnimeVideoDownloadError) as e:
        md.download_pinned(entry, str(tmp_path))
    msg = str(e.value)
    for part in ("gated", f"https://huggingface.co/{REPO}", "HF_TOKEN", "license", entry.url):
        assert part in msg, part
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    assert open(md.download_pinned(entry, str(tmp_path)), "rb").read() == data
    assert hub.files.requests[-1][3] == "Bearer hf_local_test_token"


def test_a_file_missing_on_the_hub_says_so(hub, tmp_path):
    entry = entry_for(payload())
    with pytest.raises(AnimeVideoDownloadError, match="no longer has this file"):
        md.download_pinned(entry, str(tmp_path))


def test_importing_the_pack_opens_no_network_connection():
    """ComfyUI imports the pack by path: with every socket connect refused, the import must still succeed."""
    code = f"""
import importlib.util, socket, sys
def refuse(*a, **k):
    raise AssertionError("network access at import")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
spec = importlib.util.spec_from_file_location("anime_video_nodes", {os.path.join(ROOT, '__init__.py')!r})
mod = importlib.util.module_from_spec(spec)
sys.modules["anime_video_nodes"] = mod
spec.loader.exec_module(mod)
assert mod.NODE_CLASS_MAPPINGS["AnimeVideoLoadUpscaler"]
for cls in mod.NODE_CLASS_MAPPINGS.values():
    cls.INPUT_TYPES()
print("imported", len(mod.NODE_CLASS_MAPPINGS))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("ANIMEVIDEO_DOWNLOADS", "HF_HUB_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=str(os.path.dirname(ROOT)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "imported" in out.stdout


# ---------------------------------------------------------------------------------------------
# The pinned table
# ---------------------------------------------------------------------------------------------

KNOWN_FOLDERS = {"checkpoints", "diffusers", "diffusion_models", "vae", "text_encoders", "clip_vision",
                 "upscale_models", "lvcd", "lineart", "interpolation", "ganime"}


def test_pinned_table_is_exact():
    seen = set()
    for e in md.PINNED:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", e.repo_id), e
        assert e.folder in KNOWN_FOLDERS, e
        assert "/" not in e.name and not e.name.startswith("."), e
        assert e.revision_is_commit or e.revision == "main", e
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256), e
        assert e.size is None or e.size > 0, e
        assert e.sha256 or e.size, f"{e.name}: nothing to check a download against"
        assert (e.folder, e.name) not in seen, e
        seen.add((e.folder, e.name))
        assert e.url == f"https://huggingface.co/{e.repo_id}/resolve/{e.revision}/{e.filename}"
        # safetensors wherever the source publishes it; the two pickles have no safetensors release
        assert e.name.endswith(".safetensors") or e.name in ("sk_model.pth", "sk_model2.pth", "AnimeSR_v2.pth"), e
    for gated in ("svd_xt.safetensors", "svd.safetensors", "svd_xt_1_1.safetensors"):
        assert md.find_pinned("checkpoints", gated).gated
    assert md.find_pinned("checkpoints", "../svd.safetensors") is None


def test_the_hub_etag_check_uses_the_pinned_sha(hub, tmp_path):
    """The pinned sha256 is what a real download is held to (here with the real table's AnimeSR entry)."""
    real = md.find_pinned("upscale_models", "AnimeSR_v2.pth")
    data = payload(seed=3)
    substitute = dataclasses.replace(real, size=len(data))  # same repo, revision, file and sha256
    serve(hub, substitute, data)
    with pytest.raises(AnimeVideoDownloadError, match=real.sha256):
        md.download_pinned(substitute, str(tmp_path))

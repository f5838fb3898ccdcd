"""Pinned model downloads from the Hugging Face Hub (plain Python, no ComfyUI import).

Only the files in :data:`PINNED` can be fetched: an exact repository, revision and file, the ComfyUI model
folder and file name they land as, and the sha256 / size the Hub publishes for them (its LFS metadata). A
download streams through ``huggingface_hub`` (``get_hf_file_metadata`` + ``http_get``: the Hub's headers,
token, redirects and its own in-call resume after a dropped connection) into
``<folder>/.animevideo_downloads/<name>.part``, is checked against the pinned size and sha256, and is then
moved into place without ever replacing an existing file. The partial file survives a Cancel or a lost
connection, so the next run resumes it with a Range request. (``hf_hub_download`` cannot do that here: in
huggingface_hub 2.4 it downloads to a per-call temporary file that it deletes on any failure, see
``file_download._download_to_tmp_and_move``.)

Nothing here runs at import: ``huggingface_hub`` is imported when a download starts.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable

from .errors import AnimeVideoModelError

HUB = "https://huggingface.co"
PARTIAL_DIR = ".animevideo_downloads"
# ANIMEVIDEO_DOWNLOADS=0 turns every download off (shared or offline servers); HF_HUB_OFFLINE=1 does too.
DOWNLOADS_ENV = "ANIMEVIDEO_DOWNLOADS"
HASH_CHUNK = 8 << 20


class AnimeVideoDownloadError(AnimeVideoModelError):
    """A pinned download that could not be made: offline, gated, refused by the Hub, or a wrong file."""


@dataclass(frozen=True)
class PinnedFile:
    """One downloadable file: where it comes from and where it lands."""

    folder: str  # ComfyUI model folder kind ("checkpoints", "vae", "lvcd", ...)
    name: str  # file name it gets in that folder (what the loader input names)
    repo_id: str
    filename: str  # path inside the repository
    revision: str  # a 40-hex commit where one was found, else a branch name (the sha256 still pins the bytes)
    sha256: str | None  # the Hub's LFS sha256 of the file, None where no published value was found
    size: int | None  # bytes, None where no exact published value was found
    gated: bool = False  # the repository asks for a license acceptance and a token

    @property
    def url(self) -> str:
        """The direct download URL (what the frontend's missing-model dialog and a browser use)."""
        return f"{HUB}/{self.repo_id}/resolve/{self.revision}/{self.filename}"

    @property
    def page(self) -> str:
        return f"{HUB}/{self.repo_id}"

    @property
    def revision_is_commit(self) -> bool:
        return len(self.revision) == 40 and all(c in "0123456789abcdef" for c in self.revision)

    def describe_size(self) -> str:
        return f"{self.size / 1e9:.2f} GB" if self.size else "size not published"


# Values read from the Hub's LFS pointers ("Git LFS Details" / commit diffs), never guessed:
#  svd_xt: the repo's blob page (refs/pr/94) and its commit history (file unchanged since f4aeead; 432149c is a
#    later commit of the repo); svd: the official LFS object name (= sha256) in a CDN link of the repo and an
#    identical upload (thesudio/SVD) that also gives the size; svd_xt_1_1: weights/stable-video-diffusion-img2vid-
#    xt-1-1, a duplicate of the official repo (same upload commit e2fe0c4), size not published there;
#  lvcd-fp16: vdo/lvcd commit 7efc6c6 ("thanks to Kijai", Kijai's file); sk_model(2): Zedge/lllyasviel-Annotators
#    (lllyasviel's upload ffc2f17) and a controlnet_aux ckpts copy with the size; AnimeSR_v2: the repo's upload
#    commit 63fe75a; wan_2.1_vae, umt5, clip_vision_h: identical copies of the Comfy-Org files (fofr/comfyui,
#    calcuis/wan-gguf, ...; sizes from commit diffs), the Comfy-Org files unchanged since before commit 566dac4.
# Where a revision is "main" no commit could be pinned; the sha256 still pins the bytes.
PINNED: tuple[PinnedFile, ...] = (
    PinnedFile("checkpoints", "svd_xt.safetensors", "stabilityai/stable-video-diffusion-img2vid-xt",
               "svd_xt.safetensors", "432149c8ff8775073416c9b1dd615b24e1acaddc",
               "b2652c23d64a1da5f14d55011b9b6dce55f2e72e395719f1cd1f8a079b00a451", 9559625980, gated=True),
    PinnedFile("checkpoints", "svd.safetensors", "stabilityai/stable-video-diffusion-img2vid",
               "svd.safetensors", "main",
               "3e0994626df395a3831de024f11b2d9d241143bb6f16e2efbacced248aa18ce0", 9559625980, gated=True),
    PinnedFile("checkpoints", "svd_xt_1_1.safetensors", "stabilityai/stable-video-diffusion-img2vid-xt-1-1",
               "svd_xt_1_1.safetensors", "main",
               "69ccfea1bb45dd63b3ba8b6cfe8b0d45d780995dfdde590aeaa97cc567018d33", None, gated=True),
    PinnedFile("lvcd", "lvcd-fp16.safetensors", "Kijai/LVCD-pruned", "lvcd-fp16.safetensors", "main",
               "296e2972e2b08dde64b60eb373e3d071f3937ef0a9b9bf57898f0e0f3c86b1a6", 1562449850),
    # The lineart generator exists only as a pickle; it is read with torch.load(weights_only=True).
    PinnedFile("lineart", "sk_model.pth", "lllyasviel/Annotators", "sk_model.pth", "main",
               "c686ced2a666b4850b4bb6ccf0748031c3eda9f822de73a34b8979970d90f0c6", 17173511),
    PinnedFile("lineart", "sk_model2.pth", "lllyasviel/Annotators", "sk_model2.pth", "main",
               "30a534781061f34e83bb9406b4335da4ff2616c95d22a585c1245aa8363e74e0", None),
    # A mirror of TencentARC's Google-Drive release (same size as the official file; raw state_dict pickle).
    PinnedFile("upscale_models", "AnimeSR_v2.pth", "kadirnar/AnimeSR_v2", "AnimeSR_v2.pth",
               "63fe75a3cdc43ed13cd483e653d64da8c213dac0",
               "d0f29c8966b53718828bd424bbdc306e7ff0cbf6350beadaf8b5b2500b108548", 5996559),
    PinnedFile("vae", "wan_2.1_vae.safetensors", "Comfy-Org/Wan_2.1_ComfyUI_repackaged",
               "split_files/vae/wan_2.1_vae.safetensors", "566dac4513dedede586a3b4d6e7f5b4c45c5d2f1",
               "2fc39d31359a4b0a64f55876d8ff7fa8d780956ae2cb13463b0223e15148976b", 253815318),
    # Used by core's Load CLIP / Load CLIP Vision in the AniSora workflows (embedded model links only).
    PinnedFile("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "Comfy-Org/Wan_2.1_ComfyUI_repackaged",
               "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
               "566dac4513dedede586a3b4d6e7f5b4c45c5d2f1",
               "c3355d30191f1f066b26d93fba017ae9809dce6c627dda5f6a66eaa651204f68", 6735906897),
    PinnedFile("clip_vision", "clip_vision_h.safetensors", "Comfy-Org/Wan_2.1_ComfyUI_repackaged",
               "split_files/clip_vision/clip_vision_h.safetensors", "566dac4513dedede586a3b4d6e7f5b4c45c5d2f1",
               "64a7ef761bfccbadbaa3da77366aac4185a6c58fa5de5f589b42a65bcc21f161", 1264219396),
)


def find_pinned(folder: str, name: str) -> PinnedFile | None:
    """The pinned entry for exactly this folder kind and file name (no paths, no patterns)."""
    for entry in PINNED:
        if entry.folder == folder and entry.name == name:
            return entry
    return None


def pinned_names(folder: str) -> list[str]:
    return [e.name for e in PINNED if e.folder == folder]


def downloads_disabled_reason() -> str | None:
    """Why downloads are off for the whole process, or None when they may run."""
    if os.environ.get(DOWNLOADS_ENV, "").strip().lower() in ("0", "false", "off", "no"):
        return f"downloads are turned off ({DOWNLOADS_ENV}={os.environ[DOWNLOADS_ENV]})"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "on", "yes"):
        return "Hugging Face is set to offline mode (HF_HUB_OFFLINE=1)"
    return None


def by_hand(entry: PinnedFile, dest_dir: str) -> str:
    """The sentence that lets a user fetch the file without us."""
    return (f"Download {entry.url} by hand ({entry.describe_size()}) and save it as "
            f"{os.path.join(dest_dir, entry.name)}.")


def gated_hint(entry: PinnedFile) -> str:
    if not entry.gated:
        return ""
    return (f" {entry.repo_id} is gated: accept its license at {entry.page} while logged in, then give this "
            "machine a token (set HF_TOKEN, or run `hf auth login`).")


def partial_path(entry: PinnedFile, dest_dir: str) -> str:
    return os.path.join(dest_dir, PARTIAL_DIR, entry.name + ".part")


def file_sha256(path: str, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if on_bytes is not None:
                on_bytes(done)
    return digest.hexdigest()


class _CountingFile:
    """The partial file as ``http_get`` sees it: every chunk is reported to ``on_bytes`` before it is written,
    so a Cancel raised there stops between chunks with only whole chunks on disk."""

    def __init__(self, f, start: int, on_bytes: Callable[[int], None] | None):
        self._f, self.done, self._on_bytes = f, start, on_bytes
        if on_bytes is not None:
            on_bytes(start)

    def write(self, chunk) -> int:
        if self._on_bytes is not None:
            self._on_bytes(self.done + len(chunk))
        n = self._f.write(chunk)
        self.done += len(chunk)
        return n

    def truncate(self, size=None):  # the client restarts from 0 when a server ignores the Range header
        out = self._f.truncate(size)
        self.done = self._f.tell() if size is None else size
        return out

    def __getattr__(self, name):  # tell, seek, flush, ...
        return getattr(self._f, name)


def _place_without_overwriting(src: str, dst: str) -> bool:
    """Move ``src`` to ``dst`` only if ``dst`` does not exist (atomic where hard links exist).
    Returns False when another file took the name first; ``src`` is removed either way."""
    try:
        os.link(src, dst)  # fails with FileExistsError instead of replacing
    except FileExistsError:
        os.unlink(src)
        return False
    except OSError:  # no hard links on this filesystem: exclusive create, then the atomic rename
        try:
            fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            os.unlink(src)
            return False
        os.close(fd)
        os.replace(src, dst)
        return True
    os.unlink(src)
    return True


def _hub_error_message(entry: PinnedFile, dest_dir: str, err: Exception) -> str:
    from huggingface_hub import errors as hf_errors

    where = f"'{entry.name}' ({entry.repo_id}, {entry.filename} at {entry.revision})"
    if isinstance(err, hf_errors.GatedRepoError) or (
            isinstance(err, hf_errors.HfHubHTTPError) and getattr(err.response, "status_code", None) in (401, 403)):
        return (f"Could not download {where}: the Hub refused access.{gated_hint(entry) or ' Check HF_TOKEN.'} "
                f"{by_hand(entry, dest_dir)}")
    if isinstance(err, (hf_errors.RevisionNotFoundError, hf_errors.EntryNotFoundError,
                        hf_errors.RepositoryNotFoundError)):
        return (f"Could not download {where}: the Hub no longer has this file at the pinned revision "
                f"({type(err).__name__}). {by_hand(entry, dest_dir)}")
    if isinstance(err, hf_errors.HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", "?")
        return f"Could not download {where}: the Hub answered HTTP {status}. {by_hand(entry, dest_dir)}"
    return (f"Could not download {where}: the Hub is unreachable ({type(err).__name__}: {err}). "
            f"No network? {by_hand(entry, dest_dir)}")


def _is_network_error(err: Exception) -> bool:
    """A Hub answer or a transport failure (huggingface_hub raises its own HTTP errors, and the transport's
    connection errors from httpx2, httpx or requests depending on its version)."""
    from huggingface_hub import errors as hf_errors

    if isinstance(err, (hf_errors.HfHubHTTPError, ConnectionError, TimeoutError)):
        return True
    return any(c.__module__.split(".")[0] in ("httpx2", "httpx", "requests", "urllib3") for c in type(err).__mro__)


def download_pinned(entry: PinnedFile, dest_dir: str, *, on_bytes: Callable[[int, int | None], None] | None = None,
                    endpoint: str | None = None, token: str | bool | None = None) -> str:
    """Fetch ``entry`` into ``dest_dir`` and return the final path.

    ``on_bytes(done, total)`` is called after every chunk (and while hashing); it may raise to cancel, which
    keeps the partial file for the next call to resume. An existing ``dest_dir/entry.name`` is returned
    untouched. ``endpoint`` defaults to ``HF_ENDPOINT`` (read now, not at import) or huggingface.co.
    """
    final = os.path.join(dest_dir, entry.name)
    if os.path.exists(final):
        return final
    if entry.sha256 is None and entry.size is None:
        raise AnimeVideoDownloadError(f"'{entry.name}' has no published size or sha256 to check a download "
                                      f"against. {by_hand(entry, dest_dir)}")
    reason = downloads_disabled_reason()
    if reason:
        raise AnimeVideoDownloadError(f"'{entry.name}' is missing and {reason}. {by_hand(entry, dest_dir)}")

    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    url = hf_hub_url(entry.repo_id, entry.filename, revision=entry.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except Exception as err:  # noqa: BLE001 - every Hub/transport failure becomes one readable message
        if not _is_network_error(err):
            raise
        raise AnimeVideoDownloadError(_hub_error_message(entry, dest_dir, err)) from None

    expected_size = entry.size if entry.size is not None else meta.size
    # The Hub's etag of an LFS file is its sha256: a changed file is refused before any byte is fetched.
    if entry.sha256 and meta.etag and len(meta.etag) == 64 and meta.etag.lower() != entry.sha256:
        raise AnimeVideoDownloadError(
            f"'{entry.name}': the Hub now serves a different file at {entry.url} (sha256 {meta.etag}, pinned "
            f"{entry.sha256}); nothing was downloaded. {by_hand(entry, dest_dir)}")
    if entry.size is not None and meta.size is not None and meta.size != entry.size:
        raise AnimeVideoDownloadError(
            f"'{entry.name}': the Hub reports {meta.size} bytes at {entry.url}, pinned {entry.size}; nothing was "
            f"downloaded. {by_hand(entry, dest_dir)}")

    part = partial_path(entry, dest_dir)
    os.makedirs(os.path.dirname(part), exist_ok=True)
    resume = os.path.getsize(part) if os.path.exists(part) else 0
    if expected_size is not None and resume > expected_size:
        os.unlink(part)  # longer than the file: not ours to resume
        resume = 0
    if expected_size is not None:
        free = shutil.disk_usage(os.path.dirname(part)).free
        if free < expected_size - resume:
            raise AnimeVideoDownloadError(
                f"'{entry.name}' needs {(expected_size - resume) / 1e9:.2f} GB more but {dest_dir} has "
                f"{free / 1e9:.2f} GB free. Free some space and run again. {by_hand(entry, dest_dir)}")

    report = (lambda done: on_bytes(done, expected_size)) if on_bytes is not None else None
    stalled = 0
    while True:
        resume = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            with open(part, "ab") as f:
                http_get(meta.location, _CountingFile(f, resume, report), resume_size=resume,
                         headers=build_hf_headers(token=token), expected_size=expected_size,
                         displayed_filename=entry.name)
            break
        except Exception as err:  # noqa: BLE001
            if not (_is_network_error(err) or isinstance(err, OSError) and "Consistency check failed" in str(err)):
                raise  # a Cancel (or anything else) keeps the partial file for the next run
            kept = os.path.getsize(part) if os.path.exists(part) else 0
            # Resume at once while bytes keep arriving (older clients do not retry a dropped stream themselves);
            # give up after two attempts in a row that fetched nothing.
            stalled = 0 if kept > resume else stalled + 1
            if stalled >= 2:
                raise AnimeVideoDownloadError(
                    _hub_error_message(entry, dest_dir, err)
                    + f" The {kept} bytes fetched so far are kept in {part} and the next run resumes from there."
                ) from None
            time.sleep(1)

    size = os.path.getsize(part)
    if expected_size is not None and size != expected_size:
        os.unlink(part)
        raise AnimeVideoDownloadError(f"'{entry.name}': downloaded {size} bytes, expected {expected_size}; the "
                                      f"partial file was deleted. {by_hand(entry, dest_dir)}")
    if entry.sha256:
        digest = file_sha256(part, (lambda done: on_bytes(done, size)) if on_bytes is not None else None)
        if digest != entry.sha256:
            os.unlink(part)
            raise AnimeVideoDownloadError(
                f"'{entry.name}': the downloaded file's sha256 is {digest}, pinned {entry.sha256}; it was "
                f"deleted. {by_hand(entry, dest_dir)}")
    _place_without_overwriting(part, final)  # False: another run placed the file first, theirs is kept
    try:
        os.rmdir(os.path.dirname(part))  # only when empty
    except OSError:
        pass
    return final

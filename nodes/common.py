"""Small pieces every node module shares: model files by name, model placement for one run and model-input
validation."""
from __future__ import annotations

import logging
import os
from typing import Callable

from ..pipelines import model_downloads
from ..pipelines.checkpoint_io import resolve_in_folders
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.model_cache import model_nbytes
from . import comfy_bridge as bridge

log = logging.getLogger("AnimeVideo")

# On by default, as comfyui_controlnet_aux and Kijai's wrappers fetch their models on first use: the input is on
# the node for everyone to see, only pinned files with a published size/sha256 are fetched, and
# ANIMEVIDEO_DOWNLOADS=0 (or HF_HUB_OFFLINE=1) turns it off for a whole server.
DOWNLOAD_DEFAULT = True
DOWNLOAD_INPUT = ("BOOLEAN", {
    "default": DOWNLOAD_DEFAULT,
    "tooltip": "When the selected file is missing and it is one of the pack's pinned Hugging Face files (see the "
               "README's Model downloads), download it into the model folder first: size and sha256 checked, "
               "progress on this node, Cancel stops it and the next run resumes. Off: a missing file is an error. "
               "ANIMEVIDEO_DOWNLOADS=0 or HF_HUB_OFFLINE=1 turns downloads off for the whole server."})


def fetchable_entry(kind: str, name: str):
    """The pinned download for this folder kind and exact file name, when it has a size or sha256 to check."""
    entry = model_downloads.find_pinned(kind, name) if isinstance(name, str) else None
    return entry if entry is not None and (entry.sha256 or entry.size) else None


def with_fetchable(names: list[str], kind: str) -> list[str]:
    """A model list plus the pinned files of ``kind`` that are not there yet, while downloads are allowed: a fresh
    install's loader offers what it can fetch (picking one downloads it on the first run)."""
    if model_downloads.downloads_disabled_reason() is not None:
        return names
    extra = [n for n in model_downloads.pinned_names(kind) if n not in names and fetchable_entry(kind, n)]
    return names + extra


def download_folder(kind: str) -> str:
    folders = bridge.model_folders(kind)
    if not folders:
        raise AnimeVideoModelError(f"No ComfyUI model folder '{kind}' is configured to download into.")
    return folders[0]


def can_fetch(kind: str, name: str, download_if_missing: bool) -> bool:
    return (bool(download_if_missing) and fetchable_entry(kind, name) is not None
            and model_downloads.downloads_disabled_reason() is None)


def explain_missing(message: str, kind: str, name: str, download_if_missing: bool) -> str:
    """``message`` plus how this file can be downloaded, when the pack pins it."""
    entry = fetchable_entry(kind, name)
    if entry is None:
        return message
    hand = model_downloads.by_hand(entry, download_folder(kind))
    if not download_if_missing:
        return (f"{message} Turn on download_if_missing to fetch it from {entry.url} ({entry.describe_size()})"
                f"{model_downloads.gated_hint(entry)}. Or: {hand}")
    reason = model_downloads.downloads_disabled_reason()
    return f"{message} It could be downloaded, but {reason}. {hand}" if reason else message


def fetch_model(kind: str, name: str) -> str:
    """Download the pinned file for ``name`` into the first ``kind`` folder, with progress on the node's bar
    (Cancel stops it between chunks; the partial file stays for the next run to resume)."""
    entry = fetchable_entry(kind, name)
    dest = download_folder(kind)
    log.info("AnimeVideo: downloading %s from %s into %s", name, entry.url, dest)
    progress = bridge.Progress(entry.size or 1, desc=f"Download {name}")

    def on_bytes(done: int, total: int | None):
        if total:
            progress.total = max(1, int(total))
        progress.set(done)  # also raises on Cancel

    try:
        os.makedirs(dest, exist_ok=True)
        return model_downloads.download_pinned(entry, dest, on_bytes=on_bytes)
    finally:
        progress.close()


def resolve_model_file(name: str, kind: str, input_name: str, missing: Callable[[], str],
                       download_if_missing: bool = False, fetch: bool = True) -> str | None:
    """``name`` inside ComfyUI's ``kind`` model folders (never outside them). When it is not there and
    ``download_if_missing`` allows a pinned download, it is fetched (``fetch``; VALIDATE_INPUTS passes False and
    gets None); otherwise an AnimeVideoModelError with ``missing()`` (the input, the folders and what belongs
    there) plus how to download it where the pack pins the file."""
    try:
        return resolve_in_folders(name, bridge.model_folders(kind), input_name)
    except FileNotFoundError:
        pass
    if can_fetch(kind, name, download_if_missing):
        return fetch_model(kind, name) if fetch else None
    raise AnimeVideoModelError(explain_missing(missing(), kind, name, download_if_missing))


class ModelOnDevice:
    """Moves a model to the compute device for one run and back to the offload device afterwards.

    ``working_bytes``: memory the run itself needs beyond the weights, made room for before it starts.
    """

    def __init__(self, model, keep_on_gpu: bool, working_bytes: int = 0):
        self.model, self.keep, self.working = model, keep_on_gpu, working_bytes
        self.device = bridge.torch_device()

    def __enter__(self):
        if self.model.device != self.device:
            bridge.make_room(model_nbytes(self.model) + self.working, self.device)
            self.model.to(self.device)
        elif self.working:
            bridge.make_room(self.working, self.device)
        return self.model

    def __exit__(self, *exc):
        if not self.keep:
            off = bridge.offload_device()
            if self.model.device != off:
                self.model.to(off)
                bridge.empty_cache()
        return False


def validate_model_inputs(dtype: str, dtypes, *checks: Callable[[], object]):
    """For VALIDATE_INPUTS: True, or the message of the first failing check (dtype first)."""
    if dtype not in dtypes:
        return f"dtype: '{dtype}' is not one of {', '.join(dtypes)}."
    for check in checks:
        try:
            check()
        except (AnimeVideoModelError, AnimeVideoInputError) as e:
            return str(e)
    return True

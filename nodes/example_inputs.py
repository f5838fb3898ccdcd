"""The pictures the shipped workflows load, put into ComfyUI's input/ folder when the pack loads.

A workflow dragged onto the canvas (or opened from the Templates browser) then finds its *Load Image* files on a
fresh install. Only files missing from input/ are copied: a file of the same name already there, whatever its
content, is the user's and is never replaced. Every name starts with ``animevideo_example_`` so it cannot be
mistaken for a user's picture. ``ANIMEVIDEO_COPY_EXAMPLE_INPUTS=0`` turns the copy off.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid

log = logging.getLogger("AnimeVideo")

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_INPUTS_DIR = os.path.join(PACK_ROOT, "example_inputs")
PREFIX = "animevideo_example_"


def example_files(source_dir: str = EXAMPLE_INPUTS_DIR) -> list[str]:
    if not os.path.isdir(source_dir):
        return []
    return sorted(f for f in os.listdir(source_dir)
                  if f.startswith(PREFIX) and os.path.isfile(os.path.join(source_dir, f)))


def copy_if_missing(src: str, dest: str) -> bool:
    """Copy ``src`` to ``dest`` unless ``dest`` exists; True when copied. The copy is written under a temporary
    name and linked into place, which fails rather than replaces when ``dest`` appeared meanwhile, so neither a
    user's file nor a half-written picture can end up under the name."""
    if os.path.lexists(dest):
        return False
    tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.{uuid.uuid4().hex}.part")
    try:
        shutil.copyfile(src, tmp)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FAT file systems): exclusive create instead
            try:
                with open(dest, "xb") as out, open(tmp, "rb") as f:
                    shutil.copyfileobj(f, out)
            except FileExistsError:
                return False
        return True
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def install_example_inputs(input_dir: str | None, source_dir: str = EXAMPLE_INPUTS_DIR) -> list[str]:
    """Copy the example inputs missing from ``input_dir``; returns the names copied. Problems are logged, never
    raised: the pack must load even with a read-only input folder."""
    if not input_dir or os.environ.get("ANIMEVIDEO_COPY_EXAMPLE_INPUTS", "1") == "0":
        return []
    copied = []
    try:
        os.makedirs(input_dir, exist_ok=True)
        for name in example_files(source_dir):
            if copy_if_missing(os.path.join(source_dir, name), os.path.join(input_dir, name)):
                copied.append(name)
    except OSError as e:
        log.warning("AnimeVideo: could not copy the example inputs into %s (%s); copy example_inputs/* there "
                    "by hand to run the shipped workflows.", input_dir, e)
    if copied:
        log.info("AnimeVideo: copied %d example input(s) for the shipped workflows into %s", len(copied), input_dir)
    return copied

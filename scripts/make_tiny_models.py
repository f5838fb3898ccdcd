#!/usr/bin/env python3
"""Write tiny random-weight models in the real on-disk formats, under the real file names.

    python scripts/make_tiny_models.py MODELS_DIR

Every shipped workflow then runs unchanged against MODELS_DIR (a ComfyUI ``models/`` layout), in
seconds on a CPU. Because the names are the real ones, this never overwrites a file it did not make:
it refuses unless MODELS_DIR is empty or was made by this script (a marker file records what it wrote).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import types

MARKER = ".animevideo-tiny-models.json"
SVD_FILES = ("checkpoints/svd_xt.safetensors",)
SVD_FOLDERS = ("diffusers/stable-video-diffusion-img2vid-xt",)
INTERP_FILES = ("interpolation/anime_interp_full.ckpt",)


def import_pack():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "animevideo" not in sys.modules:
        pkg = types.ModuleType("animevideo")
        pkg.__path__ = [root]
        sys.modules["animevideo"] = pkg
    return root


class RefuseError(SystemExit):
    pass


def check_target(models_dir: str, targets: list[str]):
    """Refuse unless the folder is empty or every existing target was written by us."""
    if not os.path.exists(models_dir):
        return
    marker = os.path.join(models_dir, MARKER)
    ours = set()
    if os.path.exists(marker):
        with open(marker) as f:
            ours = set(json.load(f).get("written", []))
    elif any(os.scandir(models_dir)):
        raise RefuseError(
            f"refusing to write into '{models_dir}': it is not empty and was not made by this script "
            f"(no {MARKER}). Point it at an empty folder; it never overwrites real models."
        )
    for t in targets:
        if os.path.exists(os.path.join(models_dir, t)) and t not in ours:
            raise RefuseError(f"refusing to overwrite '{os.path.join(models_dir, t)}': this script did not write it.")


def _svd_writer(tmp: str, seed: int) -> list[str]:
    from animevideo.pipelines.svd import tiny

    unet, vae, clip = tiny.build_tiny_svd(seed)
    for rel in SVD_FILES:
        os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
        tiny.write_sgm_file(os.path.join(tmp, rel), unet, vae, clip)
    for rel in SVD_FOLDERS:
        tiny.write_diffusers_folder(os.path.join(tmp, rel), unet, vae, clip)
    return list(SVD_FILES) + list(SVD_FOLDERS)


def writers(with_core_sized: bool = False):
    """(relative paths, writer(root, seed) -> relative paths written under root) for every tiny model.

    Each method's ``tiny`` module owns its files; adding a method adds one entry here."""
    from animevideo.pipelines.backbones.wan import tiny as anisora_tiny
    from animevideo.pipelines.backbones.wan import tiny22 as anisora_wan22_tiny
    from animevideo.pipelines.backbones.cogvideox import tiny as cogvideox_tiny
    from animevideo.pipelines.ganime import tiny as ganime_tiny
    from animevideo.pipelines.interpolate import tiny as interp_tiny
    from animevideo.pipelines.lineart import tiny as lineart_tiny
    from animevideo.pipelines.lvcd import tiny as lvcd_tiny
    from animevideo.pipelines.metrics import tiny as metrics_tiny
    from animevideo.pipelines.streaming_t2v import tiny as streaming_t2v_tiny
    from animevideo.pipelines.svd import tiny_core as svd_core_tiny
    from animevideo.pipelines.t2v import tiny as t2v_tiny
    from animevideo.pipelines.upscale import tiny as upscale_tiny

    return [
        (list(SVD_FILES) + list(SVD_FOLDERS), _svd_writer),
        (list(INTERP_FILES), interp_tiny.write_tiny_interpolator),
        (list(upscale_tiny.TINY_FILES), upscale_tiny.write_tiny_upscalers),
        ([ganime_tiny.VQGAN_FILE, ganime_tiny.TRANSFORMER_FILE], ganime_tiny.write_tiny_ganime),
        (list(lineart_tiny.TINY_FILES), lineart_tiny.write_tiny_lineart),
        (list(lvcd_tiny.TINY_FILES), lvcd_tiny.write_tiny_lvcd),
        (list(anisora_tiny.TINY_FILES), anisora_tiny.write_tiny_anisora),
        (list(anisora_wan22_tiny.TINY_FILES), anisora_wan22_tiny.write_tiny_wan22),
        (list(cogvideox_tiny.TINY_FILES), cogvideox_tiny.write_tiny_cogvideox),
        (list(metrics_tiny.TINY_FILES), metrics_tiny.write_tiny_metrics),
        (list(t2v_tiny.TINY_FILES), t2v_tiny.write_tiny_t2v),
        (list(streaming_t2v_tiny.TINY_FILES), streaming_t2v_tiny.write_tiny_models),
    ] + ([(list(svd_core_tiny.TINY_FILES), svd_core_tiny.write_core_svd)] if with_core_sized else [])


# Written only where core's own loaders need them (the real-ComfyUI tests): core recognises SVD only at its
# released widths, so this "tiny" one is 620 MB and would slow every unit-test session for nothing.
CORE_SIZED = "--with-core-sized"


def write_all(models_dir: str, seed: int = 0, with_core_sized: bool = False) -> list[str]:
    import_pack()
    entries = writers(with_core_sized)
    targets = [rel for rels, _ in entries for rel in rels]
    check_target(models_dir, targets)
    os.makedirs(models_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        # Build in a scratch folder, then move into place: a crash never leaves half a model behind.
        for rels, write in entries:
            written = write(tmp, seed)
            if sorted(written) != sorted(rels):
                raise RuntimeError(f"tiny writer {write.__name__} wrote {written}, announced {rels}")
        for rel in targets:
            dst = os.path.join(models_dir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            elif os.path.exists(dst):
                os.remove(dst)
            os.replace(os.path.join(tmp, rel), dst)
            os.chmod(dst, 0o755 if os.path.isdir(dst) else 0o644)
    marker = os.path.join(models_dir, MARKER)
    written = set(targets)
    if os.path.exists(marker):
        with open(marker) as f:
            written |= set(json.load(f).get("written", []))
    with open(marker, "w") as f:
        json.dump({"written": sorted(written), "note": "tiny random-weight test models; not real weights"}, f, indent=1)
    return targets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models_dir", help="a ComfyUI models/ layout to create (empty, or made by this script)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(CORE_SIZED, action="store_true",
                    help="also write the models only core ComfyUI's loaders read (an SVD at its released widths, 620 MB)")
    args = ap.parse_args(argv)
    try:
        for rel in write_all(args.models_dir, args.seed, args.with_core_sized):
            print(os.path.join(args.models_dir, rel))
    except RefuseError as e:
        print(f"make_tiny_models: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

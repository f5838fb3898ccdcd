"""What the architecture registry costs at load time.

For each tiny model that scripts/make_tiny_models.py writes: ``identify`` alone (reading the header or the pickle,
then every entry's ``detect``), and a load through ``registry.load`` (identify, then the entry's loader) against
the package's own loader called directly, side by side: one warm-up call each, then interleaved timed calls
(direct, registry, registry, direct, ...), medians and their ratio. Process CPU time (``--clock cpu``) is steadier
when other jobs share the machine.

``--against REF`` instead compares each package's direct loader at git commit REF (extracted with ``git archive``
into a temporary folder and imported as a second package) with today's, side by side in the same way: what the
spine (one reader, the registry's checks, the dtype policy) costs a load.

    python bench/registry.py
    python bench/registry.py --repeats 21 --clock cpu
    python bench/registry.py --against f12d2e0 --clock cpu
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_tiny_models  # noqa: E402

make_tiny_models.import_pack()

import torch  # noqa: E402

from animevideo.pipelines import registry  # noqa: E402
from animevideo.pipelines.interpolate import loader as interp_loader  # noqa: E402
from animevideo.pipelines.lineart import loader as lineart_loader  # noqa: E402
from animevideo.pipelines.svd import loader as svd_loader  # noqa: E402
from animevideo.pipelines.upscale import loader as upscale_loader  # noqa: E402

# (file, kinds asked for, options of the entry's load, the direct call given the loader modules)
CASES = [
    ("upscale_models/AnimeSR_v2.pth", "animesr", {}, lambda m, p: m["upscale"].load_upscaler(p)),
    ("upscale_models/realesr-animevideov3.pth", "upscaler", {}, lambda m, p: m["upscale"].load_upscaler(p)),
    ("interpolation/anime_interp_full.ckpt", "animeinterp", {}, lambda m, p: m["interpolate"].load_interpolator(p)),
    ("lineart/sk_model.pth", "lineart", {}, lambda m, p: m["lineart"].load_lineart_model(p)),
    ("checkpoints/svd_xt.safetensors", "svd", {"dtype": torch.float32},
     lambda m, p: m["svd"].load_svd(p, torch.float32)),
]
TODAY = {"upscale": upscale_loader, "interpolate": interp_loader, "lineart": lineart_loader, "svd": svd_loader}


def loaders_at(ref: str, scratch: str) -> dict:
    """The loader modules of commit ``ref``, imported as the package ``animevideo_at_ref``."""
    data = subprocess.run(["git", "-C", ROOT, "archive", ref], capture_output=True, check=True).stdout
    root = os.path.join(scratch, "at_ref")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(root, filter="data")
    pkg = types.ModuleType("animevideo_at_ref")
    pkg.__path__ = [root]
    sys.modules["animevideo_at_ref"] = pkg
    return {k: importlib.import_module(f"animevideo_at_ref.pipelines.{k}.loader") for k in TODAY}


def side_by_side(a_fn, b_fn, repeats, timed):
    a_fn(), b_fn()  # warm-up
    a, b = [], []
    for i in range(repeats):
        for fn in ((a_fn, b_fn) if i % 2 == 0 else (b_fn, a_fn)):
            (a if fn is a_fn else b).append(timed(fn))
    return statistics.median(a), statistics.median(b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--against", metavar="REF", help="compare the direct loaders with those of git commit REF")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    def timed(fn):
        t0 = clock()
        fn()
        return clock() - t0

    with tempfile.TemporaryDirectory() as d:
        make_tiny_models.write_all(d)
        registry.entries()  # the entry modules imported once, as in a running ComfyUI
        if args.against:
            before = loaders_at(args.against, d)
            print(f"{'file':42s} {args.against[:9]:>9s} {'today':>9s} {'ratio':>6s}")
            for rel, _, _, direct in CASES:
                path = os.path.join(d, rel)
                ma, mb = side_by_side(lambda: direct(before, path), lambda: direct(TODAY, path), args.repeats, timed)
                print(f"{rel:42s} {ma * 1e3:7.1f}ms {mb * 1e3:7.1f}ms {mb / ma:6.2f}")
            return
        print(f"{'file':42s} {'identify':>9s} {'direct':>9s} {'registry':>9s} {'ratio':>6s}")
        for rel, kinds, options, direct in CASES:
            path = os.path.join(d, rel)
            ident = statistics.median(timed(lambda: registry.identify(path)) for _ in range(args.repeats))
            ma, mb = side_by_side(lambda: direct(TODAY, path), lambda: registry.load(path, kinds, **options),
                                  args.repeats, timed)
            print(f"{rel:42s} {ident * 1e3:7.1f}ms {ma * 1e3:7.1f}ms {mb * 1e3:7.1f}ms {mb / ma:6.2f}")


if __name__ == "__main__":
    main()

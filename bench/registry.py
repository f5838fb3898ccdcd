"""What the architecture registry costs at load time.

For each tiny model that scripts/make_tiny_models.py writes: ``identify`` alone (reading the header or the pickle,
then every entry's ``detect``), and a load through ``registry.load`` (identify, then the entry's loader) against
the package's own loader called directly, side by side: one warm-up call each, then interleaved timed calls
(direct, registry, registry, direct, ...), medians and their ratio. Process CPU time (``--clock cpu``) is steadier
when other jobs share the machine.

    python bench/registry.py
    python bench/registry.py --repeats 21 --clock cpu
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

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

# (file, kinds asked for, options of the entry's load, the direct call)
CASES = [
    ("upscale_models/AnimeSR_v2.pth", "animesr", {}, lambda p: upscale_loader.load_upscaler(p)),
    ("upscale_models/realesr-animevideov3.pth", "upscaler", {}, lambda p: upscale_loader.load_upscaler(p)),
    ("interpolation/anime_interp_full.ckpt", "animeinterp", {}, lambda p: interp_loader.load_interpolator(p)),
    ("lineart/sk_model.pth", "lineart", {}, lambda p: lineart_loader.load_lineart_model(p)),
    ("checkpoints/svd_xt.safetensors", "svd", {"dtype": torch.float32},
     lambda p: svd_loader.load_svd(p, torch.float32)),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--threads", type=int, default=1)
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
        print(f"{'file':42s} {'identify':>9s} {'direct':>9s} {'registry':>9s} {'ratio':>6s}")
        for rel, kinds, options, direct in CASES:
            path = os.path.join(d, rel)
            via = lambda: registry.load(path, kinds, **options)  # noqa: E731
            ident = statistics.median(timed(lambda: registry.identify(path)) for _ in range(args.repeats))
            direct(path), via()
            a, b = [], []
            for i in range(args.repeats):
                order = (direct, via) if i % 2 == 0 else (via, direct)
                for fn in order:
                    (a if fn is direct else b).append(timed(lambda: fn(path) if fn is direct else fn()))
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"{rel:42s} {ident * 1e3:7.1f}ms {ma * 1e3:7.1f}ms {mb * 1e3:7.1f}ms {mb / ma:6.2f}")


if __name__ == "__main__":
    main()

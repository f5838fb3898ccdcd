"""What the pack's own layers cost: tiny-model runs through the node entry points, this tree vs an older one.

Issue 10 (the registry, ComfyUI-managed models, the loader-node factory) must not cost speed: goal ratio <= 1.03.
Each tree runs in its own worker process that imports it as the package ``animevideo``, writes its own tiny models
(its ``scripts/make_tiny_models.py``, real formats and names) into a scratch ``models/`` folder and then answers
one case at a time; the parent alternates the trees case by case (ABBA order), so both see the same machine load.

Cases (outside ComfyUI, CPU, one torch thread; the node classes exactly as ComfyUI calls them):
  svd            AnimeVideo Load SVD (a cache hit) + AnimeVideo SVD Sampler, 3 frames 64x64, 2 steps
  svd_cold       the same after clearing the model cache: the loader reads and builds the checkpoint
  animesr        Load Upscaler (hit) + Upscale, AnimeSR, 8 frames 64x64
  compact        Load Upscaler (hit) + Upscale, realesr-animevideov3, 8 frames 64x64
  compact_cold   the same, cache cleared
  interp         Load Interpolator (hit) + Interpolate x2, 5 drawings 128x128
  interp_cold    the same, cache cleared

The old tree is ``git archive REF`` unpacked into a temporary folder (nothing is registered in the repository);
``--old-tree PATH`` uses a checkout instead. ``--rounds`` pairs of fresh workers run one after the other (a bias
that lasts a process's life, such as its memory layout, averages out), ``--repeats`` calls per case, tree and
round. The ratio is new/old of the median process CPU time (steadier than wall time on a shared machine); the
median of per-pair ratios, the ratio of the minima and the wall-time ratio are shown beside it. To see the noise
floor, compare a tree with itself: ``--ref HEAD``.

    python bench/spine_overhead.py                      # this tree vs f12d2e0 (the code before issue 10)
    python bench/spine_overhead.py --ref main --rounds 4 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ["svd", "svd_cold", "animesr", "compact", "compact_cold", "interp", "interp_cold"]
GOAL = 1.03


# ---------------------------------------------------------------------------------------------
# the worker (one per tree)
# ---------------------------------------------------------------------------------------------

def _worker(tree: str):
    pkg = types.ModuleType("animevideo")
    pkg.__path__ = [tree]
    pkg.__file__ = os.path.join(tree, "__init__.py")
    sys.modules["animevideo"] = pkg
    import gc
    import importlib

    import torch

    torch.set_num_threads(1)
    models = tempfile.mkdtemp(prefix="spine_models_")
    os.environ.update(ANIMEVIDEO_MODELS_DIR=models, ANIMEVIDEO_DEVICE="cpu", ANIMEVIDEO_QUIET="1",
                      ANIMEVIDEO_DOWNLOADS="0")
    try:
        sys.path.insert(0, os.path.join(tree, "scripts"))
        import make_tiny_models

        sys.path.pop(0)
        _write_models(make_tiny_models, models)
        svd = importlib.import_module("animevideo.nodes.svd")
        up = importlib.import_module("animevideo.nodes.upscale")
        it = importlib.import_module("animevideo.nodes.interpolate")
        cache = importlib.import_module("animevideo.pipelines.model_cache").MODEL_CACHE
        g = torch.Generator().manual_seed(0)
        image = torch.rand(1, 72, 100, 3, generator=g)
        small = torch.rand(8, 64, 64, 3, generator=g)
        drawings = _clip(5)

        def run_svd():
            h = svd.AnimeVideoLoadSVD().load("svd_xt.safetensors", "auto")[0]
            return svd.AnimeVideoSVDSampler().sample(
                h, image, width=64, height=64, fit="crop", num_frames=3, fps=8.0, motion_bucket_id=127,
                augmentation_level=0.02, steps=2, min_cfg=1.0, max_cfg=2.5, seed=1, decode_chunk_size=2)

        def run_up(name):
            def call():
                h = up.AnimeVideoLoadUpscaler().load(name, "auto")[0]
                return up.AnimeVideoUpscale().upscale(h, small, chunk_size=4, tile_size=0, input_rescaling=1.0,
                                                      output_scale=0.0)
            return call

        def run_interp():
            h = it.AnimeVideoLoadInterpolator().load("anime_interp_full.ckpt", "auto")[0]
            return it.AnimeVideoInterpolate().interpolate(h, drawings, source_fps=24.0, multiplier=2,
                                                          target_fps=0.0, dedup=True, dedup_threshold=0.02,
                                                          scene_cut_threshold=0.4)

        def cold(fn):
            def call():
                gc.collect()
                cache.clear()
                return fn()
            return call

        calls = {"svd": run_svd, "svd_cold": cold(run_svd), "animesr": run_up("AnimeSR_v2.pth"),
                 "compact": run_up("realesr-animevideov3.pth"), "compact_cold": cold(run_up("realesr-animevideov3.pth")),
                 "interp": run_interp, "interp_cold": cold(run_interp)}
        for fn in calls.values():  # warm-up: imports, thread pools, the cache filled
            fn()
        print("RESULT " + json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            case = line.strip()
            if not case:
                continue
            if case == "quit":
                break
            gc.collect()
            c0, w0 = time.process_time(), time.perf_counter()
            out = calls[case]()
            w1, c1 = time.perf_counter(), time.process_time()
            del out
            print("RESULT " + json.dumps({"case": case, "wall": w1 - w0, "cpu": c1 - c0}), flush=True)
    finally:
        shutil.rmtree(models, ignore_errors=True)


NEEDED = ("checkpoints/svd_xt", "upscale_models/", "interpolation/")


def _write_models(make_tiny_models, models: str):
    """Only the tree's tiny SVD, upscalers and interpolator (its own writers); everything if that API moved."""
    try:
        entries = [(rels, w) for rels, w in make_tiny_models.writers() if any(r.startswith(NEEDED) for r in rels)]
    except (AttributeError, TypeError, ValueError):
        entries = []
    if len(entries) < 3:
        make_tiny_models.write_all(models)
        return
    for _, write in entries:
        write(models, 0)


def _clip(n, h=128, w=128):
    """Drawings of a square moving 6 px each (as tests/test_interp_nodes.py)."""
    import torch

    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = []
    for d in range(n):
        img = torch.empty(h, w, 3)
        img[:] = torch.tensor((0.85, 0.8, 0.7))
        img[((xx - 20 - 6 * d).abs() < 12) & ((yy - h // 2).abs() < 12)] = torch.tensor((0.9, 0.2, 0.15))
        out.append(img)
    return torch.stack(out)


class Worker:
    def __init__(self, name: str, tree: str):
        self.name, self.tree = name, tree
        self.err = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", tree],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     env=env, cwd=tree)

    def result(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        self.err.seek(0)
        raise SystemExit(f"the worker for the {self.name} tree ({self.tree}) stopped:\n{self.err.read()[-4000:]}")

    def run(self, case: str) -> dict:
        self.proc.stdin.write(case + "\n")
        self.proc.stdin.flush()
        return self.result()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.err.close()


# ---------------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------------

def export_ref(ref: str, dest: str) -> str:
    """``git archive`` of ``ref`` unpacked into ``dest`` (no worktree is registered in the repository)."""
    sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", ref + "^{commit}"], capture_output=True,
                         text=True, check=True).stdout.strip()
    archive = subprocess.Popen(["git", "-C", ROOT, "archive", "--format=tar", sha], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", dest], stdin=archive.stdout, check=True)
    if archive.wait():
        raise SystemExit(f"git archive {ref} failed")
    return sha


def main(argv=None):
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return _worker(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="f12d2e0", help="the old code: a git ref of this repository (default f12d2e0)")
    ap.add_argument("--old-tree", default="", help="the old code as a checkout folder instead of --ref")
    ap.add_argument("--new-tree", default=ROOT, help="the new code (default: this tree)")
    ap.add_argument("--rounds", type=int, default=3, help="pairs of fresh worker processes, one after the other")
    ap.add_argument("--repeats", type=int, default=5, help="calls of every case per tree and round")
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join(CASES)}")

    scratch = tempfile.mkdtemp(prefix="spine_old_")
    workers = {}
    try:
        if args.old_tree:
            old, old_label = os.path.abspath(args.old_tree), args.old_tree
        else:
            old = scratch
            old_label = f"{args.ref} ({export_ref(args.ref, old)[:12]})"
        new = os.path.abspath(args.new_tree)
        head = subprocess.run(["git", "-C", new, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", new, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        print(f"new: {new} (HEAD {head}{', with uncommitted changes' if dirty else ''})\nold: {old_label}\n"
              f"{args.rounds} round(s) of fresh worker processes x {args.repeats} repeats x {len(cases)} cases; "
              f"trees alternated case by case (ABBA)", flush=True)
        times = {(t, c): [] for t in ("new", "old") for c in cases}
        for rnd in range(args.rounds):
            # fresh processes each round: a bias fixed for one process's life (memory layout) averages out
            t0 = time.perf_counter()
            workers = {"new": Worker("new", new), "old": Worker("old", old)}
            for w in workers.values():
                w.result()
            for r in range(args.repeats):
                order = ["new", "old"] if (rnd * args.repeats + r) % 2 == 0 else ["old", "new"]
                for c in cases:
                    for t in order:
                        times[(t, c)].append(workers[t].run(c))
            for w in workers.values():
                w.close()
            workers = {}
            print(f"  round {rnd + 1}/{args.rounds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{'case':14s} {'new cpu s':>10s} {'old cpu s':>10s} {'ratio cpu':>10s} {'per-pair':>9s} {'of minima':>10s} "
          f"{'new wall s':>11s} {'old wall s':>11s} {'ratio wall':>11s}")
    ratios = {}
    for c in cases:
        n, o = times[("new", c)], times[("old", c)]
        nc, oc = statistics.median(x["cpu"] for x in n), statistics.median(x["cpu"] for x in o)
        nw, ow = statistics.median(x["wall"] for x in n), statistics.median(x["wall"] for x in o)
        pair = statistics.median(a["cpu"] / b["cpu"] for a, b in zip(n, o))
        mins = min(x["cpu"] for x in n) / min(x["cpu"] for x in o)
        ratios[c] = nc / oc
        print(f"{c:14s} {nc:10.4f} {oc:10.4f} {nc / oc:10.3f} {pair:9.3f} {mins:10.3f} {nw:11.4f} {ow:11.4f} "
              f"{nw / ow:11.3f}")
    geo = statistics.geometric_mean(ratios.values())
    for c, v in ratios.items():
        print(f"ratio {c} new/old={v:.3f}")
    worst = max(ratios, key=ratios.get)
    print(f"worst case {worst} {ratios[worst]:.3f}; goal <= {GOAL} per case")
    print(f"spine overhead ratio new/old (geometric mean over cases)={geo:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared plumbing for the reference-fixture generators (scripts/reference_fixtures/make_<method>.py).

Each generator imports an ORIGINAL code base from a path given on the command line (a scratch checkout outside
the repository: their code is never copied or committed), builds tiny random weights in the original's own
module classes, saves them in the original's on-disk format and records the original's outputs. This module
holds only what every generator needs: argument parsing, placeholder modules for the originals' heavy imports
that the traced code paths never use, seeded randomisation, and SOURCE.json.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import shlex
import subprocess
import sys
import types

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES_DIR = os.path.join(REPO_ROOT, "tests", "data", "reference_fixtures")


def parse_args(description: str, default_out: str, basicsr: bool = False, svd_base: bool = False) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    if svd_base:
        ap.add_argument("--svd-base", default=os.path.join(FIXTURES_DIR, "svd", "svd-fp16.recipe.json"),
                        help="the SVD base: a .safetensors file or a weight recipe (default: the svd fixture's "
                             "recipe, written by make_svd.py)")
    if basicsr:
        ap.add_argument("--basicsr", required=True, help="a checkout of XPixelGroup/BasicSR (the original's arch "
                                                          "library)")
        ap.add_argument("--basicsr-commit", help="BasicSR's commit, when --basicsr is not a git checkout")
    ap.add_argument("original_path", help="a checkout of the original repository (outside this repository)")
    ap.add_argument("out_dir", nargs="?", default=os.path.join(FIXTURES_DIR, default_out),
                    help=f"where to write the fixture (default tests/data/reference_fixtures/{default_out})")
    ap.add_argument("--commit", help="the original's commit, when original_path is not a git checkout "
                                     "(e.g. made with git archive)")
    return ap.parse_args()


def original_commit(path: str, given: str | None) -> str:
    if given:
        return given
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sys.exit(f"{path} is not a git checkout: pass --commit with the commit it was taken from")


class _Placeholder(types.ModuleType):
    """A module whose every attribute is an empty class: enough for ``from x import Y`` at import time."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (torch.nn.Module,), {})


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, fullname, path, target=None):
        if any(fullname == r or fullname.startswith(r + ".") for r in self.roots):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Placeholder(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def import_original(path: str, placeholders=()):
    """Put the original first on sys.path; ``placeholders``: top-level packages its modules import but the
    fixture's code path never calls (training frameworks, optional encoders), replaced by empty modules."""
    if placeholders:
        sys.meta_path.insert(0, _PlaceholderFinder(placeholders))
    sys.path.insert(0, os.path.abspath(path))


def bare_package(name: str, path: str):
    """Register ``name`` as a package rooted at ``path`` WITHOUT running its ``__init__.py`` (which in several
    originals imports every pipeline with its heavy dependencies): only the submodules imported run."""
    pkg = types.ModuleType(name)
    pkg.__path__ = [os.path.abspath(path)]
    sys.modules[name] = pkg
    return pkg


def import_basicsr(path: str):
    """BasicSR's arch modules (``basicsr.archs.*``, ``basicsr.utils.registry``) without its package imports
    (OpenCV, data pipelines, compiled deformable convolutions, which no fixture calls)."""
    import logging

    sys.meta_path.insert(0, _PlaceholderFinder(["basicsr.ops"]))
    sys.path.insert(0, os.path.abspath(path))
    bare_package("basicsr", os.path.join(path, "basicsr"))
    bare_package("basicsr.archs", os.path.join(path, "basicsr", "archs"))
    utils = bare_package("basicsr.utils", os.path.join(path, "basicsr", "utils"))
    utils.get_root_logger = logging.getLogger  # arch_util imports it for warnings only


def import_pack():
    """This repository as the package ``animevideo`` (as tests/conftest.py and scripts/make_tiny_models.py do)."""
    if "animevideo" not in sys.modules:
        pkg = types.ModuleType("animevideo")
        pkg.__path__ = [REPO_ROOT]
        sys.modules["animevideo"] = pkg


def randomize_(module: torch.nn.Module, seed: int, std: float = 0.05, record: list | None = None) -> torch.nn.Module:
    """Every parameter random (no zero-initialised layer may hide a wrong mapping): N(0, std), GroupNorm /
    LayerNorm weights around 1, sgm's AlphaBlender ``mix_factor`` uniform in [-1, 1]. ``record``: a list that
    receives ``[key, shape, rule]`` per parameter in draw order (tests/reference_weights.py's recipe entries; the
    group's draw dtype is float64, its param dtype the module's)."""
    gen = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for mod_name, mod in module.named_modules():  # the same order as module.modules()
            for name, p in mod.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float64) * std
                rule = ["normal", std, 0.0, 1.0]
                if isinstance(mod, norms) and name == "weight":
                    noise += 1.0
                    rule = ["normal", std, 1.0, 1.0]
                elif name == "mix_factor":  # replaces the normal draw (which still advanced the generator)
                    noise = torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1
                    rule = ["normal_then_uniform", 2.0, -1.0, 1.0]
                p.copy_(noise.to(p.dtype))
                if record is not None:
                    record.append([f"{mod_name}.{name}" if mod_name else name, list(p.shape), rule])
    return module


def reference_weights():
    """tests/reference_weights.py: the recipe code the tests use to rebuild the fixtures' weights."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
    try:
        import reference_weights as rw
    finally:
        sys.path.pop(0)
    return rw


def sgm_in_float64_(module: torch.nn.Module) -> torch.nn.Module:
    """Run Stability-sgm-based networks (SVD, LVCD) in float64: sgm computes sinusoidal embeddings in float32
    (``timestep_embedding`` calls ``.float()``; the releases run under autocast), so they are cast to the float64
    Linear layers they feed, and its ``GroupNorm32`` (which upcasts fp16 activations to float32) stays in float64."""
    module.double()
    for mod in module.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.register_forward_pre_hook(lambda m, a: (a[0].to(m.weight.dtype),) + tuple(a[1:]))
        if type(mod).__name__ == "GroupNorm32":
            mod.forward = types.MethodType(torch.nn.GroupNorm.forward, mod)
    return module


def round_to_(module: torch.nn.Module, dtype: torch.dtype):
    """Round every parameter through ``dtype`` (the stored precision) so both sides use the same values."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(dtype).to(p.dtype))
    return module


def write_source(out_dir: str, repo: str, commit: str, files: dict, notes: str, extra: dict | None = None):
    """SOURCE.json: where the fixture came from and how it was made."""
    info = {
        "original_repository": f"https://github.com/{repo}",
        "original_commit": commit,
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        [os.path.relpath(os.path.abspath(sys.argv[0]), REPO_ROOT)] + sys.argv[1:]),
        "torch_version": torch.__version__,
        "files": files,
        "notes": notes,
    }
    info.update(extra or {})
    for name in os.listdir(out_dir):  # readable by everyone, like the rest of the repository
        os.chmod(os.path.join(out_dir, name), 0o644)
    with open(os.path.join(out_dir, "SOURCE.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")


def sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sizes(out_dir: str) -> dict:
    return {name: os.path.getsize(os.path.join(out_dir, name)) for name in sorted(os.listdir(out_dir))
            if name != "SOURCE.json"}

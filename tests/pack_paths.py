"""Paths the tests share, and the registration of the repo root as the package ``animevideo``.

ComfyUI imports the pack by path, not by name, so the tests do the same here.
"""
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
MANIFESTS = os.path.join(SHARED, "manifests")

if "animevideo" not in sys.modules:
    _pkg = types.ModuleType("animevideo")
    _pkg.__path__ = [ROOT]
    _pkg.__file__ = os.path.join(ROOT, "__init__.py")
    sys.modules["animevideo"] = _pkg

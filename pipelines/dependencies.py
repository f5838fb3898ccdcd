"""The lowest package versions each capability needs, checked from installed metadata (no heavy imports).

The pack imports diffusers & co. lazily, so an older diffusers (pinned by another custom node) would otherwise
fail in the middle of a run with an ImportError deep inside. Instead: one readable line per problem in the log
when the pack loads, and an AnimeVideoDependencyError naming the package, the installed and the needed version
when a node that needs it runs. The floors are what the code uses, checked by running the tests against those releases:
the Wan path needs diffusers 0.37 (WanTransformer3DModel, AutoencoderKLWan and the Wan single-file converters
came in 0.33, AutoencoderKLWan tiling in 0.34, and ``sigmas`` in UniPCMultistepScheduler.set_timesteps, which
the native Wan time grid goes through, in 0.37); LVCD needs 0.32 (``diffusers.models.controlnets``); SVD's and
CogVideoX's classes are in 0.30.
"""
from __future__ import annotations

import re
import sys
from importlib import metadata

from .errors import AnimeVideoDependencyError

# capability -> ((distribution, lowest version), ...)
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "SVD": (("diffusers", "0.30"), ("transformers", "4.45"), ("safetensors", "0.4.2")),
    "LVCD": (("diffusers", "0.32"), ("transformers", "4.45"), ("safetensors", "0.4.2")),
    "AniSora V2/V3 (Wan2.1)": (("diffusers", "0.37"), ("safetensors", "0.4.2")),
    "AniSora V1 (CogVideoX)": (("diffusers", "0.30"), ("safetensors", "0.4.2")),
    "GANime": (("transformers", "4.45"), ("safetensors", "0.4.2")),
    "Upscale (spandrel models)": (("spandrel", "0.4"),),
}


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.33.0.dev0' -> (0, 33, 0): the leading release numbers (enough to compare with a floor)."""
    out = []
    for part in version.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.group() != part:
            break
    return tuple(out)


def at_least(installed: str, needed: str) -> bool:
    a, b = version_tuple(installed), version_tuple(needed)
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)) >= b + (0,) * (n - len(b))


def problem(capability: str, distribution: str, needed: str) -> str | None:
    have = installed_version(distribution)
    if have is not None and at_least(have, needed):
        return None
    found = f"this Python has {distribution} {have}" if have else f"{distribution} is not installed"
    return (f"AnimeVideo {capability} needs {distribution} {needed} or newer; {found} (another custom node may pin "
            f"it). Update it in ComfyUI's Python: {sys.executable} -m pip install -U \"{distribution}>={needed}\"")


def problems(capability: str) -> list[str]:
    return [p for d, v in NEEDS[capability] for p in [problem(capability, d, v)] if p]


def require(capability: str):
    """Raise AnimeVideoDependencyError (all problems, one per line) when ``capability``'s packages are too old."""
    found = problems(capability)
    if found:
        raise AnimeVideoDependencyError("\n".join(found))


def all_problems() -> list[str]:
    return [p for capability in NEEDS for p in problems(capability)]

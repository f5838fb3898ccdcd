"""Package floors: a too-old or missing package gives a readable message naming the package, the version found
and the version needed: logged when the pack loads, raised when a node that needs it runs."""
from __future__ import annotations

import importlib
import logging

import pytest

from animevideo.pipelines import dependencies
from animevideo.pipelines.errors import AnimeVideoDependencyError

WAN = "AniSora V2/V3 (Wan2.1)"


@pytest.fixture
def old_diffusers(monkeypatch):
    real = dependencies.installed_version
    monkeypatch.setattr(dependencies, "installed_version",
                        lambda dist: "0.31.0" if dist == "diffusers" else real(dist))


def test_versions_compare_by_release_numbers():
    assert dependencies.at_least("0.37.0", "0.37") and dependencies.at_least("0.37.0.dev0", "0.37")
    assert dependencies.at_least("1.0", "0.37") and dependencies.at_least("0.4.2", "0.4.2")
    assert not dependencies.at_least("0.36.9", "0.37") and not dependencies.at_least("0.4.1", "0.4.2")
    assert dependencies.version_tuple("4.45.0rc1") == (4, 45, 0)


def test_this_environment_meets_every_floor():
    assert dependencies.all_problems() == []


def test_requirements_txt_asks_for_at_least_every_floor():
    import os

    from pack_paths import ROOT

    with open(os.path.join(ROOT, "requirements.txt")) as f:
        floors = dict(line.strip().split(">=") for line in f if ">=" in line and not line.startswith("#"))
    for needs in dependencies.NEEDS.values():
        for dist, version in needs:
            assert dist in floors, f"{dist} is needed but not in requirements.txt"
            assert dependencies.at_least(floors[dist], version), f"requirements.txt: {dist}>={floors[dist]} < {version}"


def test_an_old_diffusers_names_the_package_and_the_versions(old_diffusers):
    with pytest.raises(AnimeVideoDependencyError) as e:
        dependencies.require(WAN)
    msg = str(e.value)
    assert msg.startswith(f"AnimeVideo {WAN} needs diffusers 0.37 or newer; this Python has diffusers 0.31.0")
    assert 'pip install -U "diffusers>=0.37"' in msg
    dependencies.require("SVD")  # 0.31 is enough for SVD
    assert len([p for p in dependencies.all_problems() if "diffusers" in p]) == 2  # Wan and LVCD


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(dependencies, "installed_version", lambda dist: None if dist == "spandrel" else "99")
    with pytest.raises(AnimeVideoDependencyError, match="needs spandrel 0.4 or newer; spandrel is not installed"):
        dependencies.require("Upscale (spandrel models)")


def test_nodes_refuse_at_validation_and_at_run(old_diffusers, models_env):
    from animevideo.nodes import anisora, lvcd, svd

    spec = lvcd.AnimeVideoLoadLVCD.INPUT_TYPES()["required"]
    msg = lvcd.AnimeVideoLoadLVCD.VALIDATE_INPUTS(spec["ckpt_name"][1]["default"], spec["lvcd_name"][1]["default"])
    assert isinstance(msg, str) and "LVCD needs diffusers 0.32 or newer; this Python has diffusers 0.31.0" in msg
    assert svd.AnimeVideoLoadSVD.VALIDATE_INPUTS("svd_xt.safetensors") is True
    with pytest.raises(AnimeVideoDependencyError, match="needs diffusers 0.37"):
        anisora.AnimeVideoLoadAniSora().load("anisora_v3_i2v_14b.safetensors", "wan_2.1_vae.safetensors")


def test_the_pack_logs_the_problems_when_it_loads(old_diffusers, caplog):
    import animevideo.nodes as pack

    with caplog.at_level(logging.WARNING, logger="AnimeVideo"):
        importlib.reload(pack)
    lines = [r.getMessage() for r in caplog.records if "needs diffusers" in r.getMessage()]
    assert len(lines) == 2 and any(WAN in line for line in lines)
    assert pack.NODE_CLASS_MAPPINGS  # the pack still loads; the other nodes work

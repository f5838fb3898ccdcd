"""AniSora Wan Conditioning beyond one GPU (issue 11, deliverable 7): the node runs wherever core's Wan MODEL runs
(core's multi-GPU nodes, raylight's Ray workers, several ComfyUI servers) only if it is device-agnostic and keeps
no state between calls. Checked here on CPU:

* the guide latent stays on the device and in the dtype the VAE returned it (a "meta" VAE, a bfloat16 VAE): the
  node never moves it to a device of its own choosing (core's ``concat_cond`` moves it to the model's device);
* no CUDA/device names in the node's code, no module-level mutable state, no ``global``;
* two calls interleaved (one run inside the other's VAE pass, and two threads) give what each gives alone, and
  the incoming CONDITIONING is never modified (graphs and servers share it);
* the outputs survive pickling and deepcopy (Ray ships conditioning to its workers by pickling; core clones it
  per device).
"""
from __future__ import annotations

import ast
import copy
import os
import pickle
import threading

import pytest
import torch

from animevideo.nodes import anisora_core
from animevideo.nodes.anisora_core import AnimeVideoAniSoraWanConditioning
from animevideo.pipelines.anisora import core_route, packing
from animevideo.pipelines.guides import Guide

from pack_paths import ROOT

MODULES = ("nodes/anisora_core.py", "pipelines/anisora/core_route.py", "pipelines/anisora/packing.py")
# Module-level names that are registration tables or constants by convention (ComfyUI reads the two mappings once
# at import). Anything else bound at module level must be immutable.
REGISTRATION = {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "__all__"}


class FakeVAE:
    """Core's VAE.encode contract ([F, H, W, 3] in 0..1 -> raw latent [1, 16, T, h, w]) with a deterministic
    latent made from the pixels, returned on ``device`` in ``dtype``."""

    def __init__(self, device="cpu", dtype=torch.float32, during=None):
        self.device, self.dtype, self.during = torch.device(device), dtype, during

    def encode(self, pixels):
        if self.during is not None:  # another call runs in the middle of this one
            self.during()
        f, h, w, _ = pixels.shape
        t = packing.latent_frames(f)
        pooled = torch.nn.functional.avg_pool2d(pixels.permute(0, 3, 1, 2), 8)  # [F, 3, h, w]
        per_latent = torch.stack([pooled[max(0, 4 * i - 3): 4 * i + 1].mean(0) for i in range(t)], 1)  # [3, T, h, w]
        latent = per_latent.repeat(6, 1, 1, 1)[:16][None] * 2 - 1
        if self.device.type == "meta":
            return torch.empty(latent.shape, device="meta", dtype=self.dtype)
        return latent.to(self.device, self.dtype)


def conditioning(seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 3, 8, generator=g), {"pooled_output": None, "note": seed}]]


def picture(seed, h=48, w=64):
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed))


SETTINGS = {
    "a": dict(guide=Guide().with_keyframe(picture(1), 0).with_keyframe(picture(2), -1), width=64, height=48,
              length=9, batch_size=1),
    "b": dict(guide=Guide().with_keyframe(picture(3, 32, 32), 4).with_motion_mask(torch.ones(32, 32).tril()),
              width=32, height=32, length=13, batch_size=2),
}


def run(name, vae=None, positive=None, negative=None):
    s = SETTINGS[name]
    return AnimeVideoAniSoraWanConditioning().condition(
        positive if positive is not None else conditioning(1), negative if negative is not None else conditioning(2),
        vae or FakeVAE(), s["width"], s["height"], s["length"], s["batch_size"], guide=s["guide"])


def assert_same(x, y):
    (p1, n1, l1, i1), (p2, n2, l2, i2) = x, y
    assert i1 == i2
    assert torch.equal(l1["samples"], l2["samples"])
    for c1, c2 in ((p1, p2), (n1, n2)):
        for key in ("concat_latent_image", "concat_mask"):
            assert torch.equal(c1[0][1][key], c2[0][1][key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_guide_latent_keeps_the_vaes_device_and_dtype(dtype):
    pos, neg, latent, _ = run("a", FakeVAE("meta", dtype))
    for cond in (pos, neg):
        image = cond[0][1]["concat_latent_image"]
        assert image.device.type == "meta" and image.dtype == dtype  # not copied to a device we chose
        assert cond[0][1]["concat_mask"].device.type == "cpu"  # core moves it to the model's device itself
    assert latent["samples"].shape == (1, 16, 3, 6, 8)


def test_plain_cpu_latent_is_passed_through_unchanged():
    vae = FakeVAE()
    pos, _, _, _ = run("a", vae)
    cond = packing.build_wan_condition(SETTINGS["a"]["guide"], 9, 48, 64)
    want = vae.encode(packing.guide_pixels(cond.video))
    assert torch.equal(pos[0][1]["concat_latent_image"], want)


def module_tree(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return ast.parse(f.read(), rel)


@pytest.mark.parametrize("rel", MODULES)
def test_no_device_names_and_no_global_state_in_the_code(rel):
    tree = module_tree(rel)
    for node in ast.walk(tree):
        assert not isinstance(node, ast.Global), f"{rel}:{node.lineno}: 'global' statement"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert "cuda" not in node.value.lower() or " " in node.value, f"{rel}:{node.lineno}: {node.value!r}"
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("cuda", "set_device", "set_default_device"), f"{rel}:{node.lineno}: .{node.attr}"
    for stmt in tree.body:  # module level: constants, imports, functions and classes only
        targets = []
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        for target in targets:
            name = getattr(target, "id", None)
            if name in REGISTRATION:
                continue
            mutable = isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp))
            assert not mutable, f"{rel}:{stmt.lineno}: module-level mutable '{name}'"


def state_of(*objects):
    """What a call could leave behind: module and class namespaces (values by identity, lists/dicts by copy)."""
    out = {}
    for obj in objects:
        for k, v in vars(obj).items():
            out[(getattr(obj, "__name__", obj), k)] = copy.copy(v) if isinstance(v, (list, dict, set)) else id(v)
    return out


def test_calls_leave_no_state_behind():
    before = state_of(anisora_core, core_route, packing, AnimeVideoAniSoraWanConditioning)
    run("a")
    run("b")
    assert state_of(anisora_core, core_route, packing, AnimeVideoAniSoraWanConditioning) == before


def test_interleaved_calls_give_what_each_gives_alone():
    alone_a, alone_b = run("a"), run("b")
    inner = {}
    outer = run("a", FakeVAE(during=lambda: inner.setdefault("b", run("b"))))  # b runs inside a's VAE pass
    assert_same(outer, alone_a)
    assert_same(inner["b"], alone_b)


def test_threads_with_different_settings_give_what_each_gives_alone():
    alone = {"a": run("a"), "b": run("b")}
    barrier = threading.Barrier(4)
    results, errors = {}, []

    def work(key, name):
        try:
            barrier.wait(timeout=30)
            results[key] = run(name, FakeVAE(during=lambda: barrier.wait(timeout=30)))  # all four mid-call
        except Exception as e:  # reported below with the thread's name
            errors.append((key, repr(e)))

    threads = [threading.Thread(target=work, args=(k, "ab"[k % 2])) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for k in range(4):
        assert_same(results[k], alone["ab"[k % 2]])


def test_incoming_conditioning_is_not_modified():
    pos, neg = conditioning(7), conditioning(8)
    keep = copy.deepcopy((pos, neg))
    out_pos, out_neg, _, _ = run("b", positive=pos, negative=neg)
    for got, want in zip((pos, neg), keep):
        assert set(got[0][1]) == set(want[0][1]) and torch.equal(got[0][0], want[0][0])
    assert out_pos[0][1]["note"] == 7 and "concat_mask" in out_pos[0][1] and "concat_mask" not in pos[0][1]
    assert out_pos[0][0] is pos[0][0]  # the prompt embedding is shared, not copied per call


def test_outputs_survive_pickling_and_deepcopy():
    out = run("b")
    for copied in (pickle.loads(pickle.dumps(out)), copy.deepcopy(out)):
        assert_same(copied, out)

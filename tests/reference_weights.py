"""Seeded weight recipes for the reference fixtures (tests/data/reference_fixtures/<method>/*.recipe.json).

A fixture's random weights are stored as the recipe that drew them instead of the tensors (megabytes of noise):
the seeds, the ordered list of ``(key, shape, rule)`` in the order the generator drew them from one seeded
``torch.Generator`` per group, the dtypes, the release file's layout and a sha256 of the resulting tensors.
``scripts/reference_fixtures/make_<method>.py`` records the recipe while it randomises the ORIGINAL's modules and
asserts that this module rebuilds, bit for bit, the tensors the original module held; the tests call
``write_release_file`` to write the file in the release's on-disk format into a temporary folder (after checking
the sha256) and load it through the pack's own loaders. Both sides use this one module.

A rule is ``[dist, scale, offset, post]``: ``dist`` ``"normal"`` (``torch.randn``), ``"uniform"``
(``torch.rand``) or ``"normal_then_uniform"`` (a discarded ``randn`` of the same shape, then ``rand``: the sgm
randomiser's ``mix_factor``), drawn in the group's ``draw_dtype``, times ``scale``, plus ``offset`` (when not 0), cast to the
group's ``param_dtype`` (the module's parameter dtype), times ``post`` (when not 1, in ``param_dtype``), then cast
to the recipe's ``storage_dtype``: the same operations, in the same order, as the generators' own randomisers.
"""
from __future__ import annotations

import hashlib
import json
import os

import torch

DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


def draw(shape, rule, gen: torch.Generator, draw_dtype: torch.dtype, param_dtype: torch.dtype) -> torch.Tensor:
    dist, scale, offset, post = rule
    if dist == "normal":
        t = torch.randn(shape, generator=gen, dtype=draw_dtype) * scale
    elif dist in ("uniform", "normal_then_uniform"):
        if dist == "normal_then_uniform":  # the generator drew a normal sample first, then replaced it
            torch.randn(shape, generator=gen, dtype=draw_dtype)
        t = torch.rand(shape, generator=gen, dtype=draw_dtype) * scale
    else:
        raise ValueError(f"unknown distribution {dist!r} in a weight recipe")
    if offset != 0:
        t = t + offset
    t = t.to(param_dtype)
    if post != 1:
        t = t * post
    return t


def state_dict_from_recipe(recipe: dict) -> dict[str, torch.Tensor]:
    """The tensors the recipe describes, with their file keys (group prefix + key), in the storage dtype."""
    storage = DTYPES[recipe["storage_dtype"]]
    out = {}
    for group in recipe["groups"]:
        gen = torch.Generator().manual_seed(group["seed"])
        draw_dtype, param_dtype = DTYPES[group["draw_dtype"]], DTYPES[group["param_dtype"]]
        for key, shape, rule in group["entries"]:
            name = group.get("prefix", "") + key
            if name in out:
                raise ValueError(f"weight recipe lists {name!r} twice")
            out[name] = draw(tuple(shape), rule, gen, draw_dtype, param_dtype).to(storage).contiguous()
    return out


def tensors_sha256(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted keys, dtypes, shapes and raw bytes: independent of the file format's framing."""
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k].detach().contiguous().cpu()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_recipe(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def write_release_file(recipe_path: str, out_dir: str) -> str:
    """Rebuild the recipe's tensors, check their sha256, write them in the release's layout; returns the path."""
    recipe = load_recipe(recipe_path)
    sd = state_dict_from_recipe(recipe)
    digest = tensors_sha256(sd)
    if digest != recipe["sha256"]:
        raise AssertionError(f"{os.path.basename(recipe_path)}: the rebuilt weights' sha256 is {digest}, the recipe "
                             f"records {recipe['sha256']} (torch's generator or the recipe changed)")
    path = os.path.join(out_dir, recipe["file"])
    save(sd, recipe["layout"], path)
    return path


def save(sd: dict[str, torch.Tensor], layout: str, path: str):
    """``safetensors``: a flat .safetensors; ``state_dict``: ``torch.save(sd)`` (sk_model.pth);
    ``model_state_dict``: ``torch.save({'model_state_dict': sd})`` (AnimeInterp's anime_interp_full.ckpt)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if layout == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, path)
    elif layout == "state_dict":
        torch.save(sd, path)
    elif layout == "model_state_dict":
        torch.save({"model_state_dict": sd}, path)
    else:
        raise ValueError(f"unknown release layout {layout!r} in a weight recipe")


def make_recipe(file: str, layout: str, storage_dtype: str, groups: list[dict]) -> dict:
    recipe = {"file": file, "layout": layout, "storage_dtype": storage_dtype, "groups": groups}
    recipe["sha256"] = tensors_sha256(state_dict_from_recipe(recipe))
    return recipe


def assert_reproduces(recipe: dict, expected: dict[str, torch.Tensor]):
    """The generators' check: the recipe gives exactly the tensors the original's modules held (as stored)."""
    rebuilt = state_dict_from_recipe(recipe)
    assert rebuilt.keys() == expected.keys(), sorted(set(rebuilt) ^ set(expected))[:10]
    for k, v in expected.items():
        assert rebuilt[k].dtype == v.dtype and torch.equal(rebuilt[k], v), f"recipe does not reproduce {k}"


def write_recipe(recipe: dict, path: str):
    """One entry a line: readable diffs, small file."""
    head = {k: v for k, v in recipe.items() if k != "groups"}
    lines = ["{"]
    lines += [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "groups": [')
    for gi, group in enumerate(recipe["groups"]):
        lines.append("  {" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in group.items()
                                        if k != "entries") + ', "entries": [')
        entries = group["entries"]
        lines += ["   " + json.dumps(list(e)) + ("," if i < len(entries) - 1 else "") for i, e in enumerate(entries)]
        lines.append("  ]}" + ("," if gi < len(recipe["groups"]) - 1 else ""))
    lines += [" ]", "}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    assert load_recipe(path) == json.loads(json.dumps(recipe))

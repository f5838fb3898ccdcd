#!/usr/bin/env python3
"""Reference fixture from the ORIGINAL AnimeInterp code (lisiyao21/AnimeInterp): its pure-torch model
``models.AnimeInterp_no_cupy.AnimeInterpNoCupy`` (RFR flow with 12 refinement iterations and ErrorAttention,
feature pyramid, summation splatting, GridNet) with random weights, saved in the release's checkpoint layout
(``{'model_state_dict': {'module.' + key: tensor}}``, as ``anime_interp_full.ckpt``, fp16 tensors; stored as its
seeded recipe ``anime_interp_full_fp16.recipe.json``, which tests/reference_weights.py turns back into that file
bit for bit), two 128x128 frames, initial (SGM) flows and the original's outputs (It, F12, F21, F12in, F21in).

    python scripts/reference_fixtures/make_animeinterp.py /path/to/AnimeInterp [OUT_DIR] [--commit SHA]

The original's widths are fixed in its classes (no tiny variant), so this is the released size (6.2 M params).
It runs in float32, its own precision (RFR casts feature maps and coordinates to float32). Following the
original README for torch > 1.1, every ``grid_sample`` gets ``align_corners=True``; ``Tensor.cuda()`` (called
on a sampling grid in ``rfr_new.backwarp``) is a no-op so it runs on the CPU.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402

REPO = "lisiyao21/AnimeInterp"
PLACEHOLDERS = []
SIZE = 128  # the smallest side whose 1/8 correlation pyramid keeps 4 levels
T = 0.5


FLOW_HEAD = "flownet.update_block.flow_head.conv2.weight"
FLOW_HEAD_DAMPING = 0.2


def randomize(model: torch.nn.Module, seed: int, record: list | None = None):
    """Conv weights ~ N(0, 1/fan_in), small biases, PReLU slopes around 0.25, and a damped flow head (flows of a
    few pixels, as a trained model gives), every tensor random so a mis-mapped one shows. ``record`` receives
    ``[key, shape, rule]`` per parameter in draw order (tests/reference_weights.py's recipe entries)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                std = (1.0 / fan_in) ** 0.5
                p.copy_(torch.randn(p.shape, generator=gen) * std)
                rule = ["normal", std, 0.0, 1.0]
            elif "prelu" in name or (p.ndim == 1 and p.numel() == 1):
                p.copy_(0.25 + 0.05 * torch.randn(p.shape, generator=gen))
                rule = ["normal", 0.05, 0.25, 1.0]
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
                rule = ["normal", 0.01, 0.0, 1.0]
            if name == FLOW_HEAD:
                rule[3] = FLOW_HEAD_DAMPING
            if record is not None:
                record.append([name, list(p.shape), rule])
        dict(model.named_parameters())[FLOW_HEAD].mul_(FLOW_HEAD_DAMPING)
    return model


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "animeinterp")
    commit = fc.original_commit(args.original_path, args.commit)
    fc.import_original(args.original_path, PLACEHOLDERS)
    fc.bare_package("models", os.path.join(args.original_path, "models"))  # its __init__ imports the cupy twin
    grid_sample = torch.nn.functional.grid_sample

    def grid_sample_align_corners(*a, **kw):  # the README's instruction for torch > 1.1
        kw["align_corners"] = True
        return grid_sample(*a, **kw)

    torch.nn.functional.grid_sample = grid_sample_align_corners
    torch.Tensor.cuda = lambda self, *a, **kw: self  # rfr_new.backwarp moves its grid with .cuda(): stay on CPU
    from models.AnimeInterp_no_cupy import AnimeInterpNoCupy  # the original

    rw = fc.reference_weights()
    torch.manual_seed(0)
    entries = []
    model = randomize(AnimeInterpNoCupy(path=None), 1, record=entries)
    fc.round_to_(model, torch.float16)
    model.eval()

    # The checkpoint (the released size, 12.5 MB in fp16) is stored as its seeded recipe, rebuilt bit for bit.
    recipe = rw.make_recipe("anime_interp_full_fp16.ckpt", "model_state_dict", "float16", [
        {"seed": 1, "draw_dtype": "float32", "param_dtype": "float32", "prefix": "module.", "entries": entries}])
    rw.assert_reproduces(recipe, {"module." + k: v.detach().half() for k, v in model.state_dict().items()})
    os.makedirs(args.out_dir, exist_ok=True)
    rw.write_recipe(recipe, os.path.join(args.out_dir, "anime_interp_full_fp16.recipe.json"))

    gen = torch.Generator().manual_seed(2)
    # smooth frames (a random 16x16 image upsampled) so flows and splatting see structure, not pixel noise
    base = torch.rand(2, 3, 16, 16, generator=gen)
    frames = torch.nn.functional.interpolate(base, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    c = {"I1": frames[:1].contiguous(), "I2": frames[1:].contiguous(),
         "F12i": torch.randn(1, 2, SIZE, SIZE, generator=gen) * 2.0,
         "F21i": torch.randn(1, 2, SIZE, SIZE, generator=gen) * 2.0, "t": torch.tensor([T])}
    with torch.no_grad():
        outs = model(c["I1"], c["I2"], c["F12i"], c["F21i"], T)
    for name, v in zip(("It", "F12", "F21", "F12in", "F21in"), outs):
        c[name] = v.float().contiguous()
        print(f"{name}: {tuple(v.shape)} |max| {v.abs().max():.4f}")
    from safetensors.torch import save_file

    save_file(c, os.path.join(args.out_dir, "cases.safetensors"))
    fc.write_source(
        args.out_dir, REPO, commit, fc.file_sizes(args.out_dir),
        "models/AnimeInterp_no_cupy.AnimeInterpNoCupy at the released size, random fp16-rounded weights (the "
        "checkpoint stored as its seeded recipe, anime_interp_full_fp16.recipe.json), run in "
        "float32 (its own precision) with grid_sample(align_corners=True) per the original README; forward(I1, "
        "I2, F12i, F21i, t=0.5) -> It, F12, F21, F12in, F21in.", {"size": SIZE, "t": T})


if __name__ == "__main__":
    main()

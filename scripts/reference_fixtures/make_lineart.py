#!/usr/bin/env python3
"""Reference fixture from the ORIGINAL lineart annotator that LVCD uses (luckyhzt/LVCD
``lineart_extractor/annotator/lineart``: ControlNet-1.1's informative-drawings ``Generator`` and
``LineartDetector``): a ``Generator(3, 1, 1)`` with random weights (the release, ``sk_model.pth``, has 3
residual blocks; the widths 64/128/256 are fixed in the class), a raw state dict ``.pth`` in fp16 stored as its
seeded recipe ``sk_model_tiny_fp16.recipe.json`` (tests/reference_weights.py rebuilds the file bit for bit), two RGB uint8 images, and the original's outputs: the generator's line map in float64 and
``LineartDetector.__call__``'s uint8 line image (its own float32 path).

    python scripts/reference_fixtures/make_lineart.py /path/to/LVCD [OUT_DIR] [--commit SHA]
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402

REPO = "luckyhzt/LVCD"
PLACEHOLDERS = ["cv2"]  # annotator/util.py imports OpenCV for resizing helpers the detector does not call
N_RES = 1
H, W = 48, 64


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "lineart")
    commit = fc.original_commit(args.original_path, args.commit)
    fc.import_original(args.original_path, PLACEHOLDERS)
    from lineart_extractor.annotator.lineart import Generator, LineartDetector  # the original

    rw = fc.reference_weights()
    torch.manual_seed(0)
    model = Generator(3, 1, N_RES)
    gen = torch.Generator().manual_seed(1)
    entries = []  # [key, shape, rule] in draw order: tests/reference_weights.py's recipe
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                std = (1.0 / fan_in) ** 0.5
            else:
                std = 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * std)
            entries.append([name, list(p.shape), ["normal", std, 0.0, 1.0]])
    fc.round_to_(model, torch.float16)
    model.eval()
    # sk_model_tiny_fp16.pth (3.9 MB: the widths are fixed in the class) is stored as its seeded recipe.
    recipe = rw.make_recipe("sk_model_tiny_fp16.pth", "state_dict", "float16", [
        {"seed": 1, "draw_dtype": "float32", "param_dtype": "float32", "entries": entries}])
    rw.assert_reproduces(recipe, {k: v.half() for k, v in model.state_dict().items()})
    os.makedirs(args.out_dir, exist_ok=True)
    rw.write_recipe(recipe, os.path.join(args.out_dir, "sk_model_tiny_fp16.recipe.json"))

    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    images = []
    for k in range(2):  # soft shapes with edges: circles and stripes
        r = np.hypot(xx - 0.3 - 0.3 * k, yy - 0.5)
        img = np.stack([(r < 0.25) * 0.8 + 0.1, (np.sin(12 * xx + k) > 0) * 0.6 + 0.2, 0.5 + 0.4 * yy], axis=-1)
        images.append(np.round(img * 255).clip(0, 255).astype(np.uint8))
    images = np.stack(images)

    detector = LineartDetector.__new__(LineartDetector)  # its __init__ downloads the released files
    detector.device = torch.device("cpu")
    detector.model = detector.model_coarse = model
    c = {"images_u8": torch.from_numpy(images)}
    c["detector_u8"] = torch.from_numpy(np.stack([detector(img, coarse=False) for img in images]))
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255.0
        c["line_map"] = model.double()(x)[:, 0].contiguous()
    print(f"line_map {tuple(c['line_map'].shape)} range {c['line_map'].min():.3f}..{c['line_map'].max():.3f}")
    from safetensors.torch import save_file

    save_file(c, os.path.join(args.out_dir, "cases.safetensors"))
    fc.write_source(
        args.out_dir, REPO, commit, fc.file_sizes(args.out_dir),
        "lineart_extractor/annotator/lineart: Generator(3, 1, n_residual_blocks=1) with random fp16-rounded "
        "weights (state dict .pth like sk_model.pth, stored as its seeded recipe sk_model_tiny_fp16.recipe.json); line_map = Generator on uint8/255 in float64; detector_u8 = "
        "LineartDetector.__call__ (float32, (line*255).clip.astype(uint8)) with the tiny model set on it.",
        {"n_residual_blocks": N_RES, "size": [H, W]})


if __name__ == "__main__":
    main()

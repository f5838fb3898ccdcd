#!/usr/bin/env python3
"""Reference fixture from the ORIGINAL AnimeSR code (TencentARC/AnimeSR): a tiny ``MSRSWVSR``
(``animesr/archs/vsr_arch.py``, on BasicSR's ``ResidualBlockNoBN`` / ``pixel_unshuffle``) with random weights,
saved as a raw state dict ``.pth`` like ``AnimeSR_v2.pth``, a 10-frame clip and the original's x4 output
(``MSRSWVSR.forward`` over the whole clip: prev/cur/next frames, the previous SR frame and the recurrent state),
in float64 (stored as float32).

    python scripts/reference_fixtures/make_animesr.py /path/to/AnimeSR [OUT_DIR] --basicsr /path/to/BasicSR \
        [--commit SHA] [--basicsr-commit SHA]
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402

REPO = "TencentARC/AnimeSR"
NET = dict(num_feat=8, num_block=(3, 2, 1), netscale=4)  # the release: 64, (5, 3, 2), 4
FRAMES, H, W = 10, 12, 16


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "animesr", basicsr=True)
    commit = fc.original_commit(args.original_path, args.commit)
    basicsr_commit = fc.original_commit(args.basicsr, args.basicsr_commit)
    fc.import_basicsr(args.basicsr)
    sys.path.insert(0, os.path.abspath(args.original_path))
    fc.bare_package("animesr", os.path.join(args.original_path, "animesr"))  # its __init__ imports the trainers
    fc.bare_package("animesr.archs", os.path.join(args.original_path, "animesr", "archs"))
    from animesr.archs.vsr_arch import MSRSWVSR  # the original

    torch.manual_seed(0)
    model = MSRSWVSR(**NET)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # PyTorch's default conv scale, random biases
            if p.ndim == 4:
                bound = 1.0 / (p.shape[1] * p.shape[2] * p.shape[3]) ** 0.5
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    fc.round_to_(model, torch.float32)
    os.makedirs(args.out_dir, exist_ok=True)
    torch.save({k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
               os.path.join(args.out_dir, "AnimeSR_tiny.pth"))

    # a smooth moving pattern, so the prev/next frames and the recurrent state carry information
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H, dtype=torch.float64), torch.linspace(0, 1, W, dtype=torch.float64),
                            indexing="ij")
    frames = torch.stack([torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 0.5 * i + k) * torch.cos(4 * yy - 0.3 * i)
                                       for k in range(3)]) for i in range(FRAMES)]).float()
    with torch.no_grad():
        out = model.double()(frames.double()[None])[0]
    print(f"out: {tuple(out.shape)} range {out.min():.3f}..{out.max():.3f}")
    from safetensors.torch import save_file

    save_file({"frames": frames.contiguous(), "out": out.float().contiguous()},
              os.path.join(args.out_dir, "cases.safetensors"))
    fc.write_source(
        args.out_dir, REPO, commit, fc.file_sizes(args.out_dir),
        "animesr/archs/vsr_arch.MSRSWVSR with tiny widths (BasicSR arch_util for its blocks), random weights, raw "
        "state dict .pth as released; output = MSRSWVSR.forward over the whole clip in float64 (stored as float32, unclamped).",
        {"config": {"num_feat": NET["num_feat"], "num_block": list(NET["num_block"]), "netscale": NET["netscale"]},
         "basicsr_repository": "https://github.com/XPixelGroup/BasicSR", "basicsr_commit": basicsr_commit})


if __name__ == "__main__":
    main()

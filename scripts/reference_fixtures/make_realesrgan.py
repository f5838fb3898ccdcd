#!/usr/bin/env python3
"""Reference fixture from the ORIGINAL Real-ESRGAN anime models (xinntao/Real-ESRGAN, on BasicSR): a tiny
``SRVGGNetCompact`` (``realesrgan/archs/srvgg_arch.py``, the realesr-animevideov3 architecture) saved as
``{"params": state_dict}`` and a tiny ``RRDBNet`` (``basicsr/archs/rrdbnet_arch.py``, the
RealESRGAN_x4plus_anime_6B architecture; growth width 32 as released) saved as ``{"params_ema": state_dict}``,
with random weights, one 20x24 image and each network's x4 output in float64 (stored as float32).

    python scripts/reference_fixtures/make_realesrgan.py /path/to/Real-ESRGAN [OUT_DIR] --basicsr /path/to/BasicSR \
        [--commit SHA] [--basicsr-commit SHA]
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common as fc  # noqa: E402

REPO = "xinntao/Real-ESRGAN"
COMPACT = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, upscale=4, act_type="prelu")  # release: 64, 16
RRDB = dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=16, num_block=1, num_grow_ch=32)  # release: 64, 6, 32
H, W = 20, 24


def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 4:
                bound = 1.0 / (p.shape[1] * p.shape[2] * p.shape[3]) ** 0.5
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif p.ndim == 1 and name.startswith("body.") and name.endswith("weight"):  # PReLU slopes
                p.copy_(0.25 + 0.05 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


def main():
    args = fc.parse_args(__doc__.split("\n\n")[0], "realesrgan", basicsr=True)
    commit = fc.original_commit(args.original_path, args.commit)
    basicsr_commit = fc.original_commit(args.basicsr, args.basicsr_commit)
    fc.import_basicsr(args.basicsr)
    sys.path.insert(0, os.path.abspath(args.original_path))
    fc.bare_package("realesrgan", os.path.join(args.original_path, "realesrgan"))  # __init__ imports data/models
    fc.bare_package("realesrgan.archs", os.path.join(args.original_path, "realesrgan", "archs"))
    from basicsr.archs.rrdbnet_arch import RRDBNet  # the originals
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    torch.manual_seed(0)
    compact = randomize(SRVGGNetCompact(**COMPACT), 1)
    rrdb = randomize(RRDBNet(**RRDB), 2)
    with torch.no_grad():  # RRDBNet has no image skip: a mid-grey output bias keeps its output inside 0..1
        rrdb.conv_last.bias.add_(0.5)
    os.makedirs(args.out_dir, exist_ok=True)
    torch.save({"params": {k: v.float().contiguous() for k, v in compact.state_dict().items()}},
               os.path.join(args.out_dir, "realesr-animevideov3_tiny.pth"))
    torch.save({"params_ema": {k: v.float().contiguous() for k, v in rrdb.state_dict().items()}},
               os.path.join(args.out_dir, "RealESRGAN_x4plus_anime_6B_tiny.pth"))

    yy, xx = torch.meshgrid(torch.linspace(0, 1, H, dtype=torch.float64), torch.linspace(0, 1, W, dtype=torch.float64),
                            indexing="ij")
    image = torch.stack([0.5 + 0.4 * torch.sin(7 * xx + k) * torch.cos(5 * yy - k) for k in range(3)])[None].float()
    c = {"image": image.contiguous()}
    with torch.no_grad():
        c["compact.out"] = compact.double()(image.double()).float().contiguous()
        c["rrdb.out"] = rrdb.double()(image.double()).float().contiguous()
    for k in ("compact.out", "rrdb.out"):
        print(f"{k}: {tuple(c[k].shape)} range {c[k].min():.3f}..{c[k].max():.3f}")
    from safetensors.torch import save_file

    save_file(c, os.path.join(args.out_dir, "cases.safetensors"))
    fc.write_source(
        args.out_dir, REPO, commit, fc.file_sizes(args.out_dir),
        "SRVGGNetCompact (realesrgan/archs/srvgg_arch.py) and BasicSR's RRDBNet with tiny widths, random weights, "
        "saved wrapped in params / params_ema as the releases; outputs = forward in float64 (stored as float32, "
        "unclamped).",
        {"compact_config": COMPACT, "rrdb_config": RRDB,
         "basicsr_repository": "https://github.com/XPixelGroup/BasicSR", "basicsr_commit": basicsr_commit})


if __name__ == "__main__":
    main()

"""Load the metrics' feature networks from ``models/metrics`` in their released formats.

Files are read by :func:`checkpoint_io.read_state_dict` (safetensors, or ``torch.load(weights_only=True)``: the
released LPIPS heads are legacy pickles with CUDA storages, mapped to the CPU), and the network is recognised
from its keys and sized from its tensors, never from the file name.
"""
from __future__ import annotations

import os

import torch

from ..checkpoint_io import read_state_dict, strip_common_prefix
from .. import registry
from ..errors import AnimeVideoModelError
from . import i3d as i3d_net
from . import inception as inception_net
from . import lpips as lpips_net

FOLDER = "metrics"
EXTENSIONS = (".pth", ".pt", ".safetensors", ".sft", ".ckpt", ".bin")
I3D_FILE = "i3d_pretrained_400.pt"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
ALEX_FILE = "alexnet-owt-7be5be79.pth"
VGG16_FILE = "vgg16-397923af.pth"
LPIPS_HEADS = {"alex": "lpips/alex.pth", "vgg": "lpips/vgg.pth"}
LPIPS_BACKBONES = {"alex": ALEX_FILE, "vgg": VGG16_FILE}

WHERE = {
    "i3d": (f"FVD/KVD need the I3D Kinetics-400 network in models/{FOLDER}: {I3D_FILE} (49 MB), VideoGPT's PyTorch "
            "conversion of TF-Hub deepmind/i3d-kinetics-400/1, as used by VideoGPT, TATS and cd-fvd (github.com/"
            "wilson1yan/VideoGPT, videogpt/download.py; a copy is in huggingface.co/spaces/LanguageBind/"
            "Open-Sora-Plan-v1.0.0 under opensora/eval/fvd/videogpt/). StyleGAN-V's i3d_torchscript.pt is a "
            "TorchScript archive and is refused (it cannot be loaded without running its code)."),
    "inception": (f"FID needs the FID Inception-v3 in models/{FOLDER}: {INCEPTION_FILE} (92 MB) from github.com/"
                  "mseitzer/pytorch-fid/releases/download/fid_weights/ (pytorch-fid's conversion of the TF FID "
                  "graph)."),
    "lpips": (f"LPIPS needs two files in models/{FOLDER}: the heads lpips/alex.pth or lpips/vgg.pth (from "
              "github.com/richzhang/PerceptualSimilarity, lpips/weights/v0.1/, also inside the lpips and torchmetrics "
              f"packages) and the matching torchvision backbone {ALEX_FILE} or {VGG16_FILE} (download.pytorch.org/"
              "models/)."),
}


def describe_state_dict(sd: dict) -> str:
    """What a state dict is, for error messages (the architecture registry's words)."""
    return registry.describe(sd)


def is_torchvision_features(sd) -> bool:
    return "features.0.weight" in sd


def _read(path: str) -> dict[str, torch.Tensor]:
    return strip_common_prefix(read_state_dict(path))


_KINDS = {"i3d": "i3d", "inception": "inception_fid", "lpips": "lpips_heads"}


def _wrong(name: str, sd: dict, kind: str) -> AnimeVideoModelError:
    return AnimeVideoModelError(registry.wrong_file_message(name, describe_state_dict(sd), (_KINDS[kind],),
                                                            WHERE[kind]))


def _build(path: str, kind: str, is_kind, build):
    """Read ``path``, check the state dict is a ``kind`` network, build it inferring sizes from the shapes."""
    name = os.path.basename(path)
    sd = _read(path)
    if not is_kind(sd):
        raise _wrong(name, sd, kind)
    try:
        model = build(sd)
    except AnimeVideoModelError as e:
        raise AnimeVideoModelError(f"'{name}': {e}. {WHERE[kind]}") from None
    model.source = name
    return model


def load_i3d(path: str, fuse: bool = True) -> i3d_net.InceptionI3d:
    """``fuse``: fold the batch norms into the convolutions (inference only; same features up to rounding)."""
    model = _build(path, "i3d", i3d_net.is_i3d_state_dict, i3d_net.build_from_state_dict)
    if fuse:
        model.fuse_batch_norms()
    return model


def load_inception(path: str) -> inception_net.FIDInceptionV3:
    return _build(path, "inception", inception_net.is_inception_state_dict, inception_net.build_from_state_dict)


def load_lpips(backbone_path: str, heads_path: str) -> lpips_net.LPIPS:
    bname, hname = os.path.basename(backbone_path), os.path.basename(heads_path)
    backbone_sd, heads_sd = _read(backbone_path), _read(heads_path)
    if lpips_net.is_heads_state_dict(backbone_sd) and "features.0.weight" in heads_sd:
        raise AnimeVideoModelError(f"'{bname}' holds LPIPS heads and '{hname}' a backbone: swap the two inputs.")
    if not lpips_net.is_heads_state_dict(heads_sd):
        raise _wrong(hname, heads_sd, "lpips")
    try:
        model = lpips_net.build_lpips(backbone_sd, heads_sd)
    except AnimeVideoModelError as e:
        raise AnimeVideoModelError(f"LPIPS from '{bname}' and '{hname}': {e}. {WHERE['lpips']}") from None
    model.source = f"{bname} + {hname}"
    return model


def _entry_loader(load, build):
    def run(source, name: str | None = None, **options):
        if isinstance(source, str):
            return load(source, **options)
        try:
            model = build(strip_common_prefix(source))
        except AnimeVideoModelError as e:
            raise AnimeVideoModelError(f"'{name or 'the state dict'}': {e}.") from None
        model.source = name
        return model
    return run


ARCHITECTURES = (
    registry.Architecture("i3d", "an I3D network (FVD)", "i3d", registry.keys_only(i3d_net.is_i3d_state_dict),
                          _entry_loader(load_i3d, lambda sd: i3d_net.build_from_state_dict(sd).fuse_batch_norms()),
                          takes_state_dict=True),
    registry.Architecture("inception_fid", "an Inception-v3 network (FID)", "inception_fid",
                          registry.keys_only(inception_net.is_inception_state_dict),
                          _entry_loader(load_inception, inception_net.build_from_state_dict), takes_state_dict=True),
    registry.Architecture("lpips_heads", "LPIPS heads", "lpips_heads", registry.keys_only(lpips_net.is_heads_state_dict)),
    registry.Architecture("lpips_backbone", "a torchvision AlexNet/VGG-style backbone", "lpips_backbone",
                          registry.keys_only(is_torchvision_features), lambda source: lpips_net.build_backbone(
                              strip_common_prefix(read_state_dict(source) if isinstance(source, str) else source))),
)

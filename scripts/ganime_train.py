#!/usr/bin/env python3
"""Train GANime on your own clips, or convert the original TensorFlow checkpoints.

    python scripts/ganime_train.py init-config {vqgan,gpt} CONFIG.json     write a config with the thesis' values
    python scripts/ganime_train.py vqgan RUN_DIR [--config CONFIG.json] [--data DIR] [--set key=value ...]
    python scripts/ganime_train.py gpt   RUN_DIR [--config CONFIG.json] [--data DIR] [--vqgan FILE] [--set ...]
    python scripts/ganime_train.py convert-tf TF_CHECKPOINT [--vqgan OUT] [--transformer OUT]

Stage 1 (vqgan) trains the frame tokenizer, stage 2 (gpt) the transformer with the stage-1 VQ-GAN
frozen. A run folder keeps its config.json, a resumable checkpoint.pt (running the same command again
continues it), log.jsonl and the exported ganime_vqgan.safetensors / ganime_transformer.safetensors:
copy those two into ComfyUI's models/ganime.

The perceptual loss needs VGG19 weights in models/ganime (torchvision's vgg19-dcbb9e9d.pth, or
--set vgg=PATH). convert-tf needs ``pip install tensorflow-cpu`` (only for the conversion).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_pack():
    if "animevideo" not in sys.modules:
        pkg = types.ModuleType("animevideo")
        pkg.__path__ = [ROOT]
        sys.modules["animevideo"] = pkg


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def default_vgg() -> str:
    models = os.environ.get("ANIMEVIDEO_MODELS_DIR", os.path.join(os.getcwd(), "models"))
    return os.path.join(models, "ganime", "vgg19-dcbb9e9d.pth")


def build_config(stage: str, a):
    from animevideo.pipelines.ganime.training import config as C

    run_cfg = os.path.join(a.run_dir, C.CONFIG_FILE)
    if a.config:
        d = C.to_dict(C.load_config(a.config))
    elif os.path.isfile(run_cfg):  # resuming: the run's own config
        d = C.to_dict(C.load_config(run_cfg))
    else:
        d = C.to_dict(C.STAGES[stage]())
    if d.get("stage") != stage:
        raise SystemExit(f"the config is for the {d.get('stage')} stage, not {stage}")
    if a.data:
        d["data"] = a.data
    if getattr(a, "vqgan", None):
        d["vqgan"] = a.vqgan
    for key, value in parse_set(a.set).items():
        if key.startswith("model."):
            d.setdefault("model", {})[key[len("model."):]] = value
        else:
            d[key] = value
    if stage == "vqgan" and not d.get("vgg"):
        d["vgg"] = default_vgg()
    return C.from_dict(d)


def main(argv=None):
    import_pack()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ic = sub.add_parser("init-config", help="write a config file with the thesis' values")
    ic.add_argument("stage", choices=["vqgan", "gpt"])
    ic.add_argument("path")
    for stage in ("vqgan", "gpt"):
        p = sub.add_parser(stage, help=f"train (or resume) the {stage} stage")
        p.add_argument("run_dir")
        p.add_argument("--config", help="a JSON (or YAML) config; default: the run's own, else the thesis values")
        p.add_argument("--data", help="the dataset folder (scripts/ganime_prepare_dataset.py)")
        if stage == "gpt":
            p.add_argument("--vqgan", help="the stage-1 VQ-GAN (ganime_vqgan.safetensors)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (JSON values; model.FIELD for model sizes)")
        p.add_argument("--stop-after", type=int, help="stop after this many steps (resume later)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    cv = sub.add_parser("convert-tf", help="convert an original GANime TensorFlow checkpoint (best effort)")
    cv.add_argument("checkpoint", help="the checkpoint prefix, e.g. .../kny_image_full_vgg19/checkpoint")
    cv.add_argument("--vqgan", help="output VQ-GAN file (e.g. models/ganime/ganime_kny_vqgan.safetensors)")
    cv.add_argument("--transformer", help="output transformer file (e.g. models/ganime/ganime_kny_gpt2_medium.safetensors)")
    cv.add_argument("--n-head", type=int, default=None, help="GPT-2 heads (default: width / 64, 16 for gpt2-medium)")
    cv.add_argument("--frames-before", type=int, default=5,
                    help="M the transformer was trained with (5 in the released kny_video_gpt2_medium.yaml)")
    cv.add_argument("--remaining-rows", type=int, default=1024, help="rows of the remaining-frames table kept (1024)")
    a = ap.parse_args(argv)

    from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError

    try:
        if a.cmd == "init-config":
            from animevideo.pipelines.ganime.training import config as C

            cfg = C.STAGES[a.stage]()
            with open(a.path, "w", encoding="utf-8") as f:
                json.dump(C.to_dict(cfg), f, indent=1)
            print(a.path)
        elif a.cmd == "vqgan":
            from animevideo.pipelines.ganime.training.train_vqgan import EXPORT, train_vqgan

            hist = train_vqgan(build_config("vqgan", a), a.run_dir, progress=not a.quiet, stop_after=a.stop_after)
            if hist:
                print(f"step {hist[-1]['step']}: loss {hist[-1]['loss']:.4f}")
            print(os.path.join(a.run_dir, EXPORT))
        elif a.cmd == "gpt":
            from animevideo.pipelines.ganime.training.train_gpt import EXPORT, train_gpt

            hist = train_gpt(build_config("gpt", a), a.run_dir, progress=not a.quiet, stop_after=a.stop_after)
            if hist:
                print(f"step {hist[-1]['step']}: loss {hist[-1]['loss']:.4f}")
            print(os.path.join(a.run_dir, EXPORT))
        else:
            from animevideo.pipelines.ganime.convert_tf import convert_checkpoint

            if not (a.vqgan or a.transformer):
                raise SystemExit("convert-tf: give --vqgan and/or --transformer output files")
            for path in convert_checkpoint(a.checkpoint, a.vqgan, a.transformer, n_head=a.n_head,
                                           frames_before=a.frames_before, remaining_rows=a.remaining_rows):
                print(path)
    except (AnimeVideoInputError, AnimeVideoModelError) as e:
        print(f"ganime_train: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What both training stages share: device, resumable checkpoints, the log, the progress bar."""
from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"


def resolve_device(name: str) -> torch.device:
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def save_checkpoint(run_dir: str, state: dict) -> str:
    """Atomic ``torch.save`` of tensors, numbers and lists only (it loads with ``weights_only=True``)."""
    path = os.path.join(run_dir, CHECKPOINT)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy_seed": int(np.random.randint(0, 2 ** 31 - 1)),
            "python_seed": random.randint(0, 2 ** 31 - 1)}


def restore_rng(state: dict | None):
    if not state:
        return
    torch.set_rng_state(state["torch"])
    np.random.seed(int(state["numpy_seed"]))
    random.seed(int(state["python_seed"]))


def append_log(run_dir: str, record: dict):
    with open(os.path.join(run_dir, LOG), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_log(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, LOG)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)


def warmup_cosine(step: int, total: int, lr_start: float, lr_max: float, warmup_fraction: float) -> float:
    """Linear lr_start -> lr_max over the warmup, then a cosine to 0 (the original's WarmUpCosine)."""
    warm = max(1, int(total * warmup_fraction))
    if step < warm:
        return lr_start + (lr_max - lr_start) * step / warm
    rest = max(1, total - warm)
    return lr_max * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / rest)))

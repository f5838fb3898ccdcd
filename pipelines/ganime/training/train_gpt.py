"""Stage 2: train the transformer on your clips, the VQ-GAN frozen.

Per clip, for c = 1 .. n-1, the input is ``[last | previous M frames]`` with r = n-1-c and the loss is
the cross-entropy of the 128 predicted codes of frame c (B8: the thesis' second "perceptual" term
passed no gradient, so cross-entropy alone is the faithful loss), averaged over the frames;
gradients are accumulated frame by frame and applied once per batch. For the first
``teacher_forcing_steps`` optimizer steps the previous frames are the true ones; after that the
model's own argmax frames (its codes, or its decoded pixels re-encoded with ``reencode_previous``).

Batches are truncated to their shortest clip, keeping the first and last frame and a random sorted
subset in between, with the clips' own remaining-frames counts (as the original did). AdamW (weight
decay 1e-4) with the warmup-cosine schedule (5e-6 -> 1e-4 over 15 %, cosine to 0).

The VQ-GAN's codes of every clip are computed once and cached. Resumable like stage 1; the model is
exported to ``<run_dir>/ganime_transformer.safetensors``.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AnimeVideoInputError, AnimeVideoModelError
from .. import loader, tokens
from ..transformer import GANimeTransformer, TransformerConfig
from . import common
from .config import GPTTrainConfig, save_config
from .dataset import ClipDataset

EXPORT = "ganime_transformer.safetensors"


def build_transformer(cfg: GPTTrainConfig, vq_cfg) -> GANimeTransformer:
    base = TransformerConfig() if cfg.size == "custom" else TransformerConfig.preset(cfg.size)
    fields = {**base.to_dict(), **cfg.model, "vocab_size": vq_cfg.num_embeddings,
              "tokens_per_frame": vq_cfg.tokens_per_frame, "frames_before": cfg.frames_before}
    tcfg = TransformerConfig.from_dict(fields)
    tokens.validate_frames_before(tcfg.frames_before, tcfg.tokens_per_frame, tcfg.n_positions, "frames_before")
    model = GANimeTransformer(tcfg)
    if cfg.init_from:
        if os.path.isdir(cfg.init_from):  # a Hugging Face GPT-2 folder (config.json + weights), offline
            from transformers import GPT2LMHeadModel

            hf = GPT2LMHeadModel.from_pretrained(cfg.init_from, local_files_only=True)
            missing, unexpected = model.gpt2.load_state_dict(hf.state_dict(), strict=False)
            if any(not k.endswith((".attn.bias", ".attn.masked_bias")) for k in list(missing) + list(unexpected)):
                raise AnimeVideoModelError(f"'{cfg.init_from}' does not match the configured GPT-2 size.")
            model.gpt2.tie_weights()
        else:
            src = loader.load_transformer(cfg.init_from)
            model.load_state_dict(src.state_dict())
    return model


class ClipCodes:
    """Codes of each clip by the frozen VQ-GAN, computed on first use."""

    def __init__(self, ds: ClipDataset, vq, device):
        self.ds, self.vq, self.device = ds, vq, device
        self.cache: dict[int, torch.Tensor] = {}

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self.cache:
            frames = self.ds[i].permute(0, 3, 1, 2).float() / 127.5 - 1.0
            self.cache[i] = self.vq.encode_to_codes(frames.to(self.device)).cpu()
        return self.cache[i]


def truncate_indices(length: int, n: int, rng: np.random.Generator) -> list[int]:
    """Keep the first and last frame and a random sorted subset of n-2 frames in between."""
    if n >= length:
        return list(range(length))
    inner = sorted(rng.choice(np.arange(1, length - 1), size=n - 2, replace=False).tolist())
    return [0] + inner + [length - 1]


def make_batch(codes: ClipCodes, clip_ids, rng, max_frames: int = 0):
    lengths = [int(codes.ds.clips[i]["frames"]) for i in clip_ids]
    n = min(lengths)
    if max_frames:
        n = min(n, max_frames)
    if n < 3:
        raise AnimeVideoInputError("training clips need at least 3 frames.")
    rows, rem = [], []
    for i, length in zip(clip_ids, lengths):
        keep = truncate_indices(length, n, rng)
        rows.append(codes[i][keep])
        rem.append([length - 1 - k for k in keep])  # the clip's own remaining-frames counts
    return torch.stack(rows), torch.tensor(rem, dtype=torch.long)


def train_gpt(cfg: GPTTrainConfig, run_dir: str, progress: bool = True, stop_after: int | None = None) -> list[dict]:
    os.makedirs(run_dir, exist_ok=True)
    save_config(cfg, run_dir)
    device = common.resolve_device(cfg.device)
    common.seed_everything(cfg.seed)
    ds = ClipDataset(cfg.data)
    vq = loader.load_vqgan(cfg.vqgan).to(device).eval()
    if tuple(ds.size) != tuple(vq.config.image_size):
        raise AnimeVideoInputError(f"the dataset's frames are {ds.size[1]}x{ds.size[0]} but the VQ-GAN works at "
                                   f"{vq.config.image_size[1]}x{vq.config.image_size[0]}.")
    model = build_transformer(cfg, vq.config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr_start, weight_decay=cfg.weight_decay)
    step = 0
    state = common.load_checkpoint(run_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        common.restore_rng(state.get("rng"))
    rng = np.random.default_rng(cfg.seed + step)
    codes = ClipCodes(ds, vq, device)
    m = cfg.frames_before
    history = []
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    bar = common.progress_bar(cfg.steps, step, "GPT-2", progress)

    def save():
        common.save_checkpoint(run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                         "rng": common.rng_state()})
        loader.save_transformer(model, os.path.join(run_dir, EXPORT), trained_steps=str(step),
                                vqgan=os.path.basename(cfg.vqgan))

    while step < end:
        clip_ids = rng.integers(0, len(ds), size=cfg.batch_size).tolist()
        batch, remaining = make_batch(codes, clip_ids, rng, cfg.max_clip_frames)
        batch, remaining = batch.to(device), remaining.to(device)
        n = batch.shape[1]
        teacher = step < cfg.teacher_forcing_steps
        lr = common.warmup_cosine(step, cfg.steps, cfg.lr_start, cfg.lr_max, cfg.warmup_fraction)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        context = batch.clone()
        total, correct = 0.0, 0.0
        for c in range(1, n):
            ids = tokens.context_ids(batch[:, -1], [context[:, j] for j in tokens.previous_indices(c, m)])
            logits = model(ids, remaining[:, c])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, c].reshape(-1))
            (loss / (n - 1)).backward()
            total += loss.item() / (n - 1)
            pred = logits.detach().argmax(-1)
            correct += float((pred == batch[:, c]).float().mean()) / (n - 1)
            if not teacher:
                if cfg.reencode_previous:
                    pred = vq.encode_to_codes(vq.decode_codes(pred))
                context[:, c] = pred
        if cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        step += 1
        bar.update(1)
        if step % max(1, cfg.log_every) == 0 or step == end:
            rec = {"step": step, "loss": total, "accuracy": correct, "lr": lr, "teacher_forcing": teacher, "frames": n}
            history.append(rec)
            common.append_log(run_dir, rec)
            bar.set_postfix(loss=f"{total:.4f}", acc=f"{correct:.3f}")
        if step % max(1, cfg.save_every) == 0:
            save()
    save()
    bar.close()
    return history

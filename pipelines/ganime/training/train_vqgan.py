"""Stage 1: train the VQ-GAN on frames of your clips.

Loss (thesis Eq. 6-8, B7): ``MAE + 4.0 * VGG19 perceptual + codebook + 0.25 * commitment``; the
PatchGAN discriminator (hinge loss, adaptive weight at the decoder's last layer, clipped to
[0, 1e4], x 0.8) is optional and off by default, as in the thesis' final model. Adam (0.5, 0.9),
lr 3e-5, gradients clipped to norm 1.0. Frames get the thesis' jitter: resized to 72x142 (for
64x128 frames), randomly cropped back and flipped with p = 0.5.

Resumable: ``<run_dir>/checkpoint.pt`` holds the model, the optimisers, the step and the RNG; the
model is exported to ``<run_dir>/ganime_vqgan.safetensors`` (our format, for models/ganime) at
every save.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AnimeVideoInputError
from .. import loader
from ..vqgan import VQGAN, VQGANConfig
from . import common
from .config import VQGANTrainConfig, save_config
from .dataset import ClipDataset
from .losses import PatchDiscriminator, PerceptualLoss, VGG19Features, adaptive_weight, hinge_d_loss, load_vgg

EXPORT = "ganime_vqgan.safetensors"


class FrameSampler:
    def __init__(self, ds: ClipDataset, frame_step: int, jitter: bool, seed: int):
        self.ds, self.jitter = ds, jitter
        self.items = [(i, j) for i, c in enumerate(ds.clips) for j in range(0, int(c["frames"]), max(1, frame_step))]
        if not self.items:
            raise AnimeVideoInputError(f"the dataset '{ds.root}' holds no frames.")
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        picks = self.rng.integers(0, len(self.items), size=n)
        x = torch.stack([self.ds[self.items[p][0]][self.items[p][1]] for p in picks])
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return jitter(x, self.rng) if self.jitter else x


def jitter(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Resize up by 72/64 x 142/128, random crop back to the size, horizontal flip with p = 0.5."""
    b, _, h, w = x.shape
    big_h, big_w = int(round(h * 72 / 64)), int(round(w * 142 / 128))
    big = F.interpolate(x, size=(big_h, big_w), mode="bilinear", align_corners=False, antialias=False)
    out = torch.empty_like(x)
    for i in range(b):
        y0, x0 = int(rng.integers(0, big_h - h + 1)), int(rng.integers(0, big_w - w + 1))
        crop = big[i, :, y0:y0 + h, x0:x0 + w]
        out[i] = crop.flip(-1) if rng.random() < 0.5 else crop
    return out


def train_vqgan(cfg: VQGANTrainConfig, run_dir: str, progress: bool = True, vgg: VGG19Features | None = None,
                stop_after: int | None = None) -> list[dict]:
    """Train (or resume) until ``cfg.steps``; ``stop_after`` ends this call earlier (tests, time slices)."""
    os.makedirs(run_dir, exist_ok=True)
    save_config(cfg, run_dir)
    device = common.resolve_device(cfg.device)
    common.seed_everything(cfg.seed)
    ds = ClipDataset(cfg.data)
    mcfg = VQGANConfig.from_dict(cfg.model)
    if tuple(ds.size) != tuple(mcfg.image_size):
        raise AnimeVideoInputError(f"the dataset's frames are {ds.size[1]}x{ds.size[0]} but the model works at "
                                   f"{mcfg.image_size[1]}x{mcfg.image_size[0]}; set model.image_size or prepare the "
                                   "dataset at that size.")
    model = VQGAN(mcfg).to(device).train()
    percep = None
    if cfg.perceptual_weight > 0:
        percep = PerceptualLoss(vgg if vgg is not None else load_vgg(cfg.vgg)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    disc = dopt = None
    if cfg.use_discriminator:
        disc = PatchDiscriminator(cfg.disc_layers, cfg.disc_filters).to(device).train()
        dopt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=tuple(cfg.betas))
    sampler = FrameSampler(ds, cfg.frame_step, cfg.jitter, cfg.seed)
    step = 0
    state = common.load_checkpoint(run_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if disc is not None and "discriminator" in state:
            disc.load_state_dict(state["discriminator"])
            dopt.load_state_dict(state["disc_optimizer"])
        step = int(state["step"])
        common.restore_rng(state.get("rng"))
        sampler.rng = np.random.default_rng(int(state.get("sampler_seed", cfg.seed)) + step)
    history = []
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    bar = common.progress_bar(cfg.steps, step, "VQ-GAN", progress)

    def save():
        st = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "rng": common.rng_state(),
              "sampler_seed": cfg.seed}
        if disc is not None:
            st["discriminator"], st["disc_optimizer"] = disc.state_dict(), dopt.state_dict()
        common.save_checkpoint(run_dir, st)
        loader.save_vqgan(model, os.path.join(run_dir, EXPORT), trained_steps=str(step))

    while step < end:
        x = sampler.batch(cfg.batch_size).to(device)
        rec, idx, vq_loss = model(x)
        rec_loss = (x - rec).abs().mean()
        p_loss = percep(x, rec) if percep is not None else rec_loss.new_zeros(())
        nll = cfg.reconstruction_weight * rec_loss + cfg.perceptual_weight * p_loss
        loss = nll + cfg.codebook_weight * vq_loss
        gan_on = disc is not None and step >= cfg.disc_start
        g_loss = rec_loss.new_zeros(())
        if gan_on:
            g_loss = -disc(rec).mean()
            loss = loss + adaptive_weight(nll, g_loss, model.decoder.last_layer, cfg.disc_weight) * cfg.disc_factor * g_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        d_loss = rec_loss.new_zeros(())
        if gan_on:
            d_loss = hinge_d_loss(disc(x), disc(rec.detach()))
            dopt.zero_grad(set_to_none=True)
            d_loss.backward()
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.clip_norm)
            dopt.step()
        step += 1
        bar.update(1)
        if step % max(1, cfg.log_every) == 0 or step == end:
            rec_ = {"step": step, "loss": loss.item(), "mae": rec_loss.item(), "perceptual": p_loss.item(),
                    "vq": vq_loss.item(), "g": g_loss.item(), "d": d_loss.item(),
                    "codes_used": int(torch.unique(idx).numel())}
            history.append(rec_)
            common.append_log(run_dir, rec_)
            bar.set_postfix(loss=f"{rec_['loss']:.4f}", mae=f"{rec_['mae']:.4f}")
        if step % max(1, cfg.save_every) == 0:
            save()
    save()
    bar.close()
    return history

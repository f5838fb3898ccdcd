"""GANime's video transformer: ``transformers.GPT2LMHeadModel`` plus a learned remaining-frames embedding.

The input ids are codes of the VQ-GAN (the codebook has as many entries as GPT-2 has tokens, 50257,
so GPT-2's token embedding and its tied LM head serve as the code vocabulary). The embedding of the
remaining-frames count ``r`` is added at every position, on top of GPT-2's token and position
embeddings ("own embeddings", the thesis' adopted method). The logits of the last ``T`` positions
are the next frame's ``T`` codes, predicted in one pass (B1, B2).

The model is built from a config (never downloaded). ``forward`` goes through Hugging Face's GPT-2
(training, reference); ``shared_prefix_logits`` runs the same blocks by hand so that rows that share
the last frame and ``r`` compute that prefix once (batched variations) - the numbers are the same.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Hugging Face's GPT-2 sizes (thesis Table 5): n_layer, n_embd, n_head.
PRESETS = {
    "gpt2": (12, 768, 12),
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
}


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 1024
    n_layer: int = 24
    n_head: int = 16
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.1  # embd/resid/attn dropout (training only)
    scale_attn_by_inverse_layer_idx: bool = False
    remaining_frames_size: int = 1024  # rows of the remaining-frames table (B3)
    tokens_per_frame: int = 128
    frames_before: int = 1  # M the model was trained with (B4)

    @classmethod
    def preset(cls, name: str, **overrides) -> "TransformerConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown GPT-2 size {name!r}; one of {', '.join(PRESETS)}")
        n_layer, n_embd, n_head = PRESETS[name]
        return cls(**{"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, **overrides})

    def gpt2_config(self):
        from transformers import GPT2Config

        cfg = GPT2Config(
            vocab_size=self.vocab_size, n_positions=self.n_positions, n_embd=self.n_embd, n_layer=self.n_layer,
            n_head=self.n_head, n_inner=self.n_inner, activation_function=self.activation_function,
            layer_norm_epsilon=self.layer_norm_epsilon, resid_pdrop=self.dropout, embd_pdrop=self.dropout,
            attn_pdrop=self.dropout, scale_attn_by_inverse_layer_idx=self.scale_attn_by_inverse_layer_idx,
            tie_word_embeddings=True, use_cache=False,
            bos_token_id=self.vocab_size - 1, eos_token_id=self.vocab_size - 1,  # unused; GPT-2's 50256
        )
        try:
            cfg._attn_implementation = "sdpa"
        except (AttributeError, TypeError, ValueError):  # older/newer config objects: keep their default
            pass
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


THESIS_CONFIG = TransformerConfig.preset("gpt2-medium")


class GANimeTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig = THESIS_CONFIG):
        super().__init__()
        from transformers import GPT2LMHeadModel

        self.config = cfg
        self.gpt2 = GPT2LMHeadModel(cfg.gpt2_config())
        self.remaining_frames = nn.Embedding(cfg.remaining_frames_size, cfg.n_embd)
        nn.init.normal_(self.remaining_frames.weight, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.remaining_frames.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.remaining_frames.weight.dtype

    def forward(self, input_ids: torch.Tensor, remaining: torch.Tensor, n_out: int | None = None) -> torch.Tensor:
        """input_ids [B, L], remaining [B] -> logits [B, n_out, vocab] of the last ``n_out`` positions."""
        n_out = self.config.tokens_per_frame if n_out is None else n_out
        tr = self.gpt2.transformer
        embeds = tr.wte(input_ids) + self.remaining_frames(remaining.long())[:, None, :]
        hidden = tr(inputs_embeds=embeds).last_hidden_state
        return self.gpt2.lm_head(hidden[:, -n_out:])

    # -- inference with a shared prefix ---------------------------------------------------------
    def _embed(self, ids: torch.Tensor, r_emb: torch.Tensor, offset: int) -> torch.Tensor:
        tr = self.gpt2.transformer
        pos = torch.arange(offset, offset + ids.shape[1], device=ids.device)
        return tr.wte(ids) + tr.wpe(pos)[None] + r_emb[:, None, :]

    def _qkv(self, block, x):
        n_head = self.config.n_head
        b, n, d = x.shape
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(d, dim=2)
        return tuple(t.view(b, n, n_head, d // n_head).transpose(1, 2) for t in (q, k, v))

    def _finish(self, block, x, attn):
        b, _, n, _ = attn.shape
        x = x + block.attn.c_proj(attn.transpose(1, 2).reshape(b, n, -1))
        return x + block.mlp(block.ln_2(x))

    @torch.no_grad()
    def shared_prefix_logits(self, prefix_ids: torch.Tensor, prefix_remaining: torch.Tensor,
                             suffix_ids: torch.Tensor, prefix_of_row: torch.Tensor,
                             n_out: int | None = None) -> torch.Tensor:
        """Logits for rows ``[prefix_ids[prefix_of_row[b]] | suffix_ids[b]]`` with r = prefix_remaining[...].

        prefix_ids [P, Tp] (the last frames), prefix_remaining [P], suffix_ids [B, S] (previous
        frames), prefix_of_row [B] -> logits [B, n_out, vocab]. Each prefix row is run once however
        many rows share it; the suffix rows attend to its keys and values (exact: the prefix sees
        only itself under the causal mask).
        """
        n_out = self.config.tokens_per_frame if n_out is None else n_out
        tr = self.gpt2.transformer
        p_len, s_len = prefix_ids.shape[1], suffix_ids.shape[1]
        r_emb = self.remaining_frames(prefix_remaining.long())
        xp = self._embed(prefix_ids, r_emb, 0)
        xs = self._embed(suffix_ids, r_emb[prefix_of_row], p_len)
        head_dim = self.config.n_embd // self.config.n_head
        allowed = torch.ones(s_len, p_len + s_len, dtype=torch.bool, device=xs.device)
        allowed[:, p_len:] = torch.ones(s_len, s_len, dtype=torch.bool, device=xs.device).tril()
        for i, block in enumerate(tr.h):
            scale = head_dim ** -0.5
            if self.config.scale_attn_by_inverse_layer_idx:
                scale /= float(i + 1)
            qp, kp, vp = self._qkv(block, xp)
            qs, ks, vs = self._qkv(block, xs)
            k_all = torch.cat([kp[prefix_of_row], ks], dim=2)
            v_all = torch.cat([vp[prefix_of_row], vs], dim=2)
            attn_s = F.scaled_dot_product_attention(qs, k_all, v_all, attn_mask=allowed, scale=scale)
            xs = self._finish(block, xs, attn_s)
            if i + 1 < len(tr.h):  # the prefix's own output is not needed after the last block
                attn_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=scale)
                xp = self._finish(block, xp, attn_p)
        return self.gpt2.lm_head(tr.ln_f(xs[:, -n_out:]))

    # -- weights --------------------------------------------------------------------------------
    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Our file layout: GPT-2's tensors under ``gpt2.`` (the LM head is tied to ``wte``, not stored)
        and ``remaining_frames.weight``."""
        sd = self.state_dict()
        return {k: v for k, v in sd.items() if k != "gpt2.lm_head.weight" and not k.endswith(".attn.bias")
                and not k.endswith(".attn.masked_bias")}

    def load_exported(self, sd: dict[str, torch.Tensor]):
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if k != "gpt2.lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
        if missing or unexpected:
            raise KeyError(f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}")
        self.gpt2.tie_weights()
        return self

"""The attention backend is chosen at run time; without xformers or CUDA it is PyTorch SDPA."""
import torch

from animevideo.pipelines.attention import select_attention_backend


def test_cpu_uses_sdpa(tiny_svd):
    unet = tiny_svd[0]
    assert select_attention_backend(unet, torch.device("cpu")) == "sdpa"
    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    assert not any("XFormers" in name for name in processors)

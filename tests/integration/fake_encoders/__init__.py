"""TEST-ONLY ComfyUI node pack: stand-ins for core's text and CLIP-vision encoders, sized for the tiny models.

Core's CLIPLoader / CLIPVisionLoader build full-size encoders (UMT5-XXL, ViT-H), far too big for CPU tests,
so the integration tests rewrite each shipped AniSora workflow (``swap.swap_core_encoders``): every
CLIPTextEncode becomes ``AVTestTextEncode`` and every CLIPVisionEncode ``AVTestClipVisionEncode``, and
the loaders that fed them are dropped. The outputs have core's shapes and types: CONDITIONING
``[[tensor [1, L, D], {"pooled_output": None}]]`` and a CLIP_VISION_OUTPUT-like object with
``penultimate_hidden_states`` [1, 257, D_img].

The ids deliberately do not start with "AnimeVideo": the server tests require every AnimeVideo* node in
/object_info to come from the real pack. Never install this pack for users.
"""
import zlib

import torch

# The tiny AniSora transformer's text_dim / image_dim (pipelines/backbones/wan/tiny.py; the tiny V1 CogVideoX's
# text_embed_dim is the same, so one stand-in serves UMT5 and T5; a test checks they agree).
TEXT_DIM = 4096
IMAGE_DIM = 1280
IMAGE_TOKENS = 257


def text_embedding(text: str, dim: int = TEXT_DIM) -> torch.Tensor:
    """Deterministic [1, L, dim] from the text: one token per word (at least one), seeded by a CRC32."""
    tokens = max(1, min(64, len(text.split())))
    g = torch.Generator().manual_seed(zlib.crc32(text.encode("utf-8")))
    return torch.randn(1, tokens, dim, generator=g)


class FakeClipVisionOutput:
    def __init__(self, penultimate):
        self.penultimate_hidden_states = penultimate
        self.last_hidden_state = penultimate
        self.image_embeds = penultimate[:, 0]

    def __getitem__(self, key):  # core's Output is also subscriptable
        return getattr(self, key)


class AVTestTextEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "tooltip": "Prompt text (test stand-in)."})},
                "optional": {"dim": ("INT", {"default": TEXT_DIM, "min": 1, "max": 8192,
                                             "tooltip": "Embedding width."})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing/AnimeVideo"

    def encode(self, text, dim=TEXT_DIM):
        return ([[text_embedding(text, int(dim)), {"pooled_output": None}]],)


class AVTestClipVisionEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": "The image (test stand-in)."})},
                "optional": {"dim": ("INT", {"default": IMAGE_DIM, "min": 1, "max": 8192,
                                             "tooltip": "Token width."})}}

    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "encode"
    CATEGORY = "testing/AnimeVideo"

    def encode(self, image, dim=IMAGE_DIM):
        seed = int(float(image.float().mean()) * 1e6) % (2 ** 31)
        g = torch.Generator().manual_seed(seed)
        return (FakeClipVisionOutput(torch.randn(1, IMAGE_TOKENS, int(dim), generator=g)),)


# SVD's CLIP image embedding width (ViT-H/14 projection = core SVD's context_dim)
SVD_IMAGE_EMBED_DIM = 1024


class FakeClipVision:
    """Core's CLIP_VISION contract as SVD_img2vid_Conditioning uses it: ``encode_image(image)`` -> an output
    with ``image_embeds`` [N, 1024]."""

    def __init__(self, dim: int = SVD_IMAGE_EMBED_DIM):
        self.dim = dim

    def encode_image(self, image, crop=True):
        seed = int(float(image.float().mean()) * 1e6) % (2 ** 31)
        g = torch.Generator().manual_seed(seed)
        embeds = torch.randn(image.shape[0], self.dim, generator=g)
        out = FakeClipVisionOutput(embeds[:, None].expand(-1, IMAGE_TOKENS, -1).contiguous())
        out.image_embeds = embeds
        return out


class AVTestClipVisionLoader:
    """Stands in for the CLIP_VISION output of core's Image Only Checkpoint Loader (a ViT-H in released SVD)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"dim": ("INT", {"default": SVD_IMAGE_EMBED_DIM, "min": 1, "max": 8192,
                                                             "tooltip": "Embedding width."})}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = "testing/AnimeVideo"

    def load(self, dim=SVD_IMAGE_EMBED_DIM):
        return (FakeClipVision(int(dim)),)


NODE_CLASS_MAPPINGS = {"AVTestTextEncode": AVTestTextEncode, "AVTestClipVisionEncode": AVTestClipVisionEncode,
                       "AVTestClipVisionLoader": AVTestClipVisionLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"AVTestTextEncode": "Test Text Encode (AnimeVideo tests only)",
                              "AVTestClipVisionEncode": "Test CLIP Vision Encode (AnimeVideo tests only)",
                              "AVTestClipVisionLoader": "Test CLIP Vision Loader (AnimeVideo tests only)"}

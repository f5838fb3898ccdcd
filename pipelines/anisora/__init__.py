"""AniSora (bilibili Index-AniSora): spatiotemporal-mask image-to-video on two backbones.

V2/V3/anymask are Wan2.1-I2V-14B fine-tunes (``wan.py``: 36 input channels = noise + 4-channel packed
known-mask + guide latent, flow matching); V1 is a CogVideoX-5B-I2V fine-tune (``cogvideox.py``). The
shared shapes live in ``model.py``; ``loader.py`` detects which one a file holds.
"""

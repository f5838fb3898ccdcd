"""Stable Video Diffusion image-to-video: loaders, conditioning, EDM sampler and chunked decode."""

"""Anime Video nodes for ComfyUI: SVD image-to-video and the anime research methods built on it."""
# ComfyUI imports this file as a package, so the relative import works. pytest imports it on its own (no
# parent package) when the checkout's folder name is no Python identifier: then there is nothing to register.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

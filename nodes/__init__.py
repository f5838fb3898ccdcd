"""ComfyUI nodes (classic NODE_CLASS_MAPPINGS style): one module per capability, thin over ``pipelines``."""
from . import anisora, comfy_bridge, ganime, guides, interpolate, lineart, lvcd, metrics, svd, upscale

comfy_bridge.register_pack_folders()

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (svd, interpolate, upscale, ganime, lineart, guides, lvcd, anisora, metrics):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

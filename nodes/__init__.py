"""ComfyUI nodes (classic NODE_CLASS_MAPPINGS style): one module per capability, thin over ``pipelines``."""
from ..pipelines import dependencies
from . import (anisora, anisora_core, comfy_bridge, common, example_inputs, ganime, guides, interpolate, lineart, lvcd,
               metrics, streaming_t2v, svd, svd_core, t2v, upscale)
from . import anisora_wan22

comfy_bridge.register_pack_folders()
for _problem in dependencies.all_problems():  # logged, never raised: the other nodes keep working
    comfy_bridge.log.warning(_problem)
example_inputs.install_example_inputs(comfy_bridge.input_directory())

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (svd, interpolate, upscale, ganime, lineart, guides, lvcd, anisora, metrics, anisora_core, svd_core,
                anisora_wan22, t2v, streaming_t2v):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
for _cls in NODE_CLASS_MAPPINGS.values():
    common.guard_inputs(_cls)

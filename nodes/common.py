"""Small pieces every node module shares: model files by name, model placement for one run and model-input
validation."""
from __future__ import annotations

from typing import Callable

from ..pipelines.checkpoint_io import resolve_in_folders
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.model_cache import model_nbytes
from . import comfy_bridge as bridge


def resolve_model_file(name: str, kind: str, input_name: str, missing: Callable[[], str]) -> str:
    """``name`` inside ComfyUI's ``kind`` model folders (never outside them); when it is not there, an
    AnimeVideoModelError with ``missing()``: the message naming the input, the folders and what belongs there."""
    try:
        return resolve_in_folders(name, bridge.model_folders(kind), input_name)
    except FileNotFoundError:
        raise AnimeVideoModelError(missing()) from None


class ModelOnDevice:
    """Moves a model to the compute device for one run and back to the offload device afterwards.

    ``working_bytes``: memory the run itself needs beyond the weights, made room for before it starts.
    """

    def __init__(self, model, keep_on_gpu: bool, working_bytes: int = 0):
        self.model, self.keep, self.working = model, keep_on_gpu, working_bytes
        self.device = bridge.torch_device()

    def __enter__(self):
        if self.model.device != self.device:
            bridge.make_room(model_nbytes(self.model) + self.working, self.device)
            self.model.to(self.device)
        elif self.working:
            bridge.make_room(self.working, self.device)
        return self.model

    def __exit__(self, *exc):
        if not self.keep:
            off = bridge.offload_device()
            if self.model.device != off:
                self.model.to(off)
                bridge.empty_cache()
        return False


def validate_model_inputs(dtype: str, dtypes, *checks: Callable[[], object]):
    """For VALIDATE_INPUTS: True, or the message of the first failing check (dtype first)."""
    if dtype not in dtypes:
        return f"dtype: '{dtype}' is not one of {', '.join(dtypes)}."
    for check in checks:
        try:
            check()
        except (AnimeVideoModelError, AnimeVideoInputError) as e:
            return str(e)
    return True

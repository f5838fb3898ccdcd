"""The one model cache every loader goes through.

Two tiers:
- a *strong* LRU that keeps recently used models alive within a byte budget;
- a *weak* index that finds a model again for as long as anything else (ComfyUI's output cache, a
  node) still holds it, at no memory cost of its own.

Inside ComfyUI the cached value is the ComfyUI-managed model (nodes/comfy_bridge.py wraps each loaded model
in core's ModelPatcher), so two loader nodes with the same file share one patcher, and the strong budget
defaults to 0: what keeps a model alive is the :class:`ModelRef` in a loader node's output (held by ComfyUI's
output cache). ``release_all`` (called after ComfyUI's unload_all_models, i.e. the Unload Models button) makes
every ModelRef drop its model, so nothing of ours holds the weights; the next run loads them again through the
cache. Scripts and tests get a real LRU budget. ``ANIMEVIDEO_CACHE_BUDGET_GB`` overrides both.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable

import torch

DEFAULT_BUDGET_GB = 16.0


def _budget_from_env(default_gb: float) -> int:
    raw = os.environ.get("ANIMEVIDEO_CACHE_BUDGET_GB")
    try:
        gb = float(raw) if raw not in (None, "") else default_gb
    except ValueError:
        gb = default_gb
    return max(0, int(gb * (1 << 30)))


def model_nbytes(model: Any) -> int:
    """Bytes held by the parameters and buffers of a module or of a bundle of modules."""
    modules = model.modules_for_memory() if hasattr(model, "modules_for_memory") else [model]
    total = 0
    seen: set[int] = set()
    for m in modules:
        if not isinstance(m, torch.nn.Module):
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


class ModelRef:
    """What a loader node's output holds: the cached model while it is alive, and how to get it again (cache key
    and load function) once :meth:`release` dropped it, so a released model costs no memory but a workflow whose
    loader output ComfyUI kept still runs."""

    def __init__(self, cache: "ModelCache", key: Hashable, load: Callable[[], Any]):
        self.cache, self.key, self._load = cache, key, load
        self._model = cache.get_or_load(key, load)
        cache._track(self)

    def get(self) -> Any:
        model = self._model
        if model is None:
            model = self._model = self.cache.get_or_load(self.key, self._load)
        return model

    @property
    def released(self) -> bool:
        return self._model is None

    def release(self):
        self._model = None


class ModelCache:
    def __init__(self, budget_bytes: int | None = None):
        self._lock = threading.RLock()
        self._strong: "OrderedDict[Hashable, tuple[Any, int]]" = OrderedDict()
        self._weak: dict[Hashable, weakref.ref] = {}
        self._refs: "weakref.WeakSet[ModelRef]" = weakref.WeakSet()
        # called with each model release_all lets go of (inside ComfyUI: take it out of core's loaded list)
        self.on_release: Callable[[Any], None] | None = None
        self.budget_bytes = _budget_from_env(DEFAULT_BUDGET_GB) if budget_bytes is None else budget_bytes
        self.hits = 0
        self.misses = 0

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        with self._lock:
            model = self._lookup(key)
            if model is not None:
                self.hits += 1
                self._keep(key, model)
                return model
        model = load()  # outside the lock: loading is slow and must not block other lookups
        with self._lock:
            self.misses += 1
            self._weak[key] = weakref.ref(model)
            self._keep(key, model)
        return model

    def _lookup(self, key):
        if key in self._strong:
            self._strong.move_to_end(key)
            return self._strong[key][0]
        ref = self._weak.get(key)
        model = ref() if ref is not None else None
        if model is None:
            self._weak.pop(key, None)
        return model

    def _keep(self, key, model):
        if self.budget_bytes <= 0:
            self._strong.pop(key, None)
            return
        if key not in self._strong:
            self._strong[key] = (model, model_nbytes(model))
        self._strong.move_to_end(key)
        self._evict_to(self.budget_bytes, protect=key)

    def _evict_to(self, budget: int, protect=None):
        while self._strong and self.strong_bytes() > budget:
            oldest = next(iter(self._strong))
            if oldest == protect:
                # The newest model alone exceeds the budget: keep only it.
                if len(self._strong) == 1:
                    break
                self._strong.move_to_end(oldest)
                continue
            self._strong.pop(oldest)

    def strong_bytes(self) -> int:
        return sum(n for _, n in self._strong.values())

    def set_budget(self, budget_bytes: int):
        with self._lock:
            self.budget_bytes = max(0, int(budget_bytes))
            self._evict_to(self.budget_bytes)

    def ref(self, key: Hashable, load: Callable[[], Any]) -> ModelRef:
        """The model for ``key`` (loaded now, or shared with whoever holds it) as a releasable reference."""
        return ModelRef(self, key, load)

    def _track(self, ref: ModelRef):
        with self._lock:
            self._refs.add(ref)

    def release_all(self):
        """Drop every strong reference, ours and those of the ModelRefs handed out: a model stays alive only
        while something outside the pack holds it."""
        with self._lock:
            released = {id(m): m for m, _ in self._strong.values()}
            self._strong.clear()
            for ref in list(self._refs):
                if ref._model is not None:
                    released.setdefault(id(ref._model), ref._model)
                ref.release()
        if self.on_release is not None:
            for model in released.values():
                self.on_release(model)

    def clear(self):
        with self._lock:
            self._strong.clear()
            self._weak.clear()
            self._refs = weakref.WeakSet()

    def alive_keys(self) -> list:
        with self._lock:
            return [k for k, r in self._weak.items() if r() is not None]


# The process-wide cache shared by every loader.
MODEL_CACHE = ModelCache()

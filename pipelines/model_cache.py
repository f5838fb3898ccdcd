"""The one model cache every loader goes through.

Two tiers:
- a *strong* LRU that keeps recently used models alive within a byte budget;
- a *weak* index that finds a model again for as long as anything else (ComfyUI's output cache, a
  node) still holds it, at no memory cost of its own.

Inside ComfyUI the strong budget defaults to 0: ComfyUI's own caches hold the models, so its
``POST /free`` (which drops those caches) releases our models too and nothing of ours keeps them
alive. Scripts and tests get a real LRU budget. ``ANIMEVIDEO_CACHE_BUDGET_GB`` overrides both.
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


class ModelCache:
    def __init__(self, budget_bytes: int | None = None):
        self._lock = threading.RLock()
        self._strong: "OrderedDict[Hashable, tuple[Any, int]]" = OrderedDict()
        self._weak: dict[Hashable, weakref.ref] = {}
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

    def release_all(self):
        """Drop every strong reference; models stay findable only while someone else holds them."""
        with self._lock:
            self._strong.clear()

    def clear(self):
        with self._lock:
            self._strong.clear()
            self._weak.clear()

    def alive_keys(self) -> list:
        with self._lock:
            return [k for k, r in self._weak.items() if r() is not None]


# The process-wide cache shared by every loader.
MODEL_CACHE = ModelCache()

"""The shared model cache: hits, LRU eviction under a budget, and release when nobody holds a model."""
import gc

import torch

from animevideo.pipelines.model_cache import ModelCache, model_nbytes


def _model(n):
    return torch.nn.Linear(n, n, bias=False)  # n*n*4 bytes


def test_second_load_is_a_hit():
    cache, loads = ModelCache(budget_bytes=1 << 30), []
    a = cache.get_or_load("k", lambda: loads.append(1) or _model(4))
    b = cache.get_or_load("k", lambda: loads.append(1) or _model(4))
    assert a is b and loads == [1] and (cache.hits, cache.misses) == (1, 1)


def test_lru_eviction_keeps_the_budget_and_the_most_recent():
    one = model_nbytes(_model(16))
    cache = ModelCache(budget_bytes=2 * one)
    cache.get_or_load("a", lambda: _model(16))
    cache.get_or_load("b", lambda: _model(16))
    cache.get_or_load("a", lambda: _model(16))  # a becomes most recent
    cache.get_or_load("c", lambda: _model(16))  # evicts b
    gc.collect()
    assert cache.strong_bytes() <= 2 * one
    assert set(cache.alive_keys()) == {"a", "c"}


def test_budget_zero_keeps_nothing_alive_but_finds_models_still_held_elsewhere():
    cache = ModelCache(budget_bytes=0)
    held = cache.get_or_load("a", lambda: _model(8))
    assert cache.get_or_load("a", lambda: _model(8)) is held  # found through the weak index
    del held
    gc.collect()
    assert cache.alive_keys() == []  # nothing of ours kept it alive
    loads = []
    cache.get_or_load("a", lambda: loads.append(1) or _model(8))
    assert loads == [1]


def test_release_all_drops_strong_references():
    cache = ModelCache(budget_bytes=1 << 30)
    cache.get_or_load("a", lambda: _model(8))
    cache.release_all()
    gc.collect()
    assert cache.alive_keys() == []


def test_a_model_larger_than_the_budget_is_still_returned():
    cache = ModelCache(budget_bytes=10)
    m = cache.get_or_load("big", lambda: _model(64))
    assert isinstance(m, torch.nn.Linear)


def test_comfyui_unload_all_models_also_releases_our_cache(monkeypatch):
    import types

    from animevideo.nodes import comfy_bridge
    from animevideo.pipelines import model_cache

    cache = ModelCache(budget_bytes=1 << 30)
    monkeypatch.setattr(comfy_bridge, "MODEL_CACHE", cache)
    calls = []
    fake_mm = types.SimpleNamespace(unload_all_models=lambda: calls.append("comfy"))
    comfy_bridge.release_models_with(fake_mm)
    comfy_bridge.release_models_with(fake_mm)  # installed once
    cache.get_or_load("a", lambda: _model(8))
    fake_mm.unload_all_models()
    gc.collect()
    assert calls == ["comfy"] and cache.alive_keys() == []
    assert model_cache.MODEL_CACHE is not cache


def test_a_model_ref_holds_the_model_until_release_all_and_loads_it_again_after():
    """What a loader node outputs (ComfyUI keeps it in its output cache): it keeps the model alive until Unload
    Models (release_all), then holds nothing, and the next use loads the model again through the cache."""
    import weakref

    cache, loads, released = ModelCache(budget_bytes=0), [], []
    cache.on_release = lambda m: released.append(type(m).__name__)  # not the model itself
    ref = cache.ref("k", lambda: loads.append(1) or _model(8))
    other = cache.ref("k", lambda: loads.append(1) or _model(8))  # a second loader node, same file: shared
    assert other.get() is ref.get() and loads == [1]
    alive = weakref.ref(ref.get())
    gc.collect()
    assert alive() is not None  # the refs hold it (the cache's budget is 0)
    cache.release_all()
    gc.collect()
    assert ref.released and other.released and alive() is None and len(released) == 1
    released.clear()
    assert isinstance(ref.get(), torch.nn.Linear) and loads == [1, 1] and not ref.released
    assert other.get() is ref.get() and loads == [1, 1]


def test_comfyui_unload_all_models_releases_the_loader_outputs(monkeypatch):
    import types
    import weakref

    from animevideo.nodes import comfy_bridge

    cache = ModelCache(budget_bytes=0)
    monkeypatch.setattr(comfy_bridge, "MODEL_CACHE", cache)
    fake_mm = types.SimpleNamespace(unload_all_models=lambda: None)
    comfy_bridge.release_models_with(fake_mm)
    ref = cache.ref("a", lambda: _model(8))
    alive = weakref.ref(ref.get())
    fake_mm.unload_all_models()
    gc.collect()
    assert ref.released and alive() is None

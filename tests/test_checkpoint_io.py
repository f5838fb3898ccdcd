"""Model names from node inputs resolve only inside the model folders."""
import os

import pytest
import torch

from animevideo.pipelines.checkpoint_io import FileIdentity, resolve_in_folders
from animevideo.pipelines.errors import AnimeVideoInputError


def test_resolves_nested_names(tmp_path):
    (tmp_path / "anime").mkdir()
    (tmp_path / "anime" / "svd_anime.safetensors").write_bytes(b"x")
    assert resolve_in_folders("anime/svd_anime.safetensors", [str(tmp_path)]) == str(tmp_path / "anime" / "svd_anime.safetensors")


@pytest.mark.parametrize("name", ["../secret.safetensors", "/etc/passwd", "a/../../secret.safetensors", "C:\\x.ckpt", ""])
def test_refuses_escapes(tmp_path, name):
    (tmp_path.parent / "secret.safetensors").write_bytes(b"x")
    with pytest.raises(AnimeVideoInputError):
        resolve_in_folders(name, [str(tmp_path)])


def test_symlink_out_of_the_folder_is_not_followed(tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    folder = tmp_path / "models"
    folder.mkdir()
    os.symlink(outside, folder / "link.safetensors")
    with pytest.raises(FileNotFoundError):
        resolve_in_folders("link.safetensors", [str(folder)])


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        resolve_in_folders("nope.safetensors", [str(tmp_path)])


def test_file_identity_changes_when_the_file_changes(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"abc")
    a = FileIdentity.of(str(p))
    p.write_bytes(b"abcd")
    assert FileIdentity.of(str(p)) != a


def test_text_file_named_pth_is_reported_as_damaged(tmp_path):
    from animevideo.pipelines.checkpoint_io import read_state_dict
    from animevideo.pipelines.errors import AnimeVideoModelError

    p = tmp_path / "notes.pth"
    p.write_text("hello, this is not a checkpoint")
    with pytest.raises(AnimeVideoModelError) as e:
        read_state_dict(str(p))
    assert "damaged or incomplete" in str(e.value)


def test_nested_wrappers_are_unwrapped(tmp_path):
    import torch

    from animevideo.pipelines.checkpoint_io import read_state_dict

    p = tmp_path / "m.pth"
    torch.save({"net": {"params-ema": {"w": torch.ones(2)}}}, p)
    assert list(read_state_dict(str(p))) == ["w"]


def test_safetensors_reads_come_back_aligned_whatever_the_file_offsets(tmp_path):
    """safetensors >= 0.8 maps tensors at the file's offsets; unaligned weights make CPU kernels round
    differently, so every read hands out aligned memory (checkpoint_io.owned_tensor)."""
    from safetensors.torch import save_file

    from animevideo.pipelines.checkpoint_io import CPU_ALIGNMENT, own_module_tensors, read_state_dict

    # odd-sized tensors put the later ones at offsets that are not multiples of 64
    sd = {f"t{i}": torch.randn(3 + i) for i in range(6)}
    path = tmp_path / "odd.safetensors"
    save_file(sd, str(path))
    got = read_state_dict(str(path))
    assert all(v.data_ptr() % CPU_ALIGNMENT == 0 for v in got.values())
    assert len({v.untyped_storage().data_ptr() for v in got.values()}) == 1
    assert all(torch.equal(got[k], sd[k]) for k in sd)

    from safetensors.torch import load_file

    raw = load_file(str(path))
    if all(v.data_ptr() % CPU_ALIGNMENT == 0 for v in raw.values()):
        pytest.skip("this safetensors copies on load: nothing unaligned to fix")
    module = torch.nn.Module()
    for k, v in raw.items():
        module.register_buffer(k, v)
    own_module_tensors(module)
    assert all(b.data_ptr() % CPU_ALIGNMENT == 0 for b in module.buffers())
    assert all(torch.equal(getattr(module, k), sd[k]) for k in sd)
    # the copies share one allocation (malloc returns one large block to the system; thousands of small ones
    # stay in its heap after the model is freed)
    assert len({b.untyped_storage().data_ptr() for b in module.buffers()}) == 1


# ---------------------------------------------------------------------------------------------
# Load errors say what happened: memory, a package, a damaged file (each case simulated)
# ---------------------------------------------------------------------------------------------

def _tiny_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    st, pth = tmp_path / "m.safetensors", tmp_path / "m.pth"
    save_file({"w": torch.randn(64, 64)}, str(st))
    torch.save({"w": torch.randn(64, 64)}, str(pth))
    return st, pth


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
@pytest.mark.parametrize("error", ["cuda", "ram", "allocator"])
def test_out_of_memory_while_reading_is_memory_advice_not_a_damaged_file(tmp_path, monkeypatch, kind, error):
    import safetensors.torch
    import torch

    from animevideo.pipelines.checkpoint_io import read_state_dict
    from animevideo.pipelines.errors import AnimeVideoMemoryError

    st, pth = _tiny_files(tmp_path)

    def allocation_fails(*a, **k):
        if error == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 33.00 GiB")
        if error == "allocator":
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 35433480192 bytes.")
        raise MemoryError()

    monkeypatch.setattr(safetensors.torch, "load_file", allocation_fails)
    monkeypatch.setattr(torch, "load", allocation_fails)
    with pytest.raises(AnimeVideoMemoryError) as e:
        read_state_dict(str(st if kind == "safetensors" else pth))
    msg = str(e.value)
    assert "Out of" in msg and ("GPU" in msg if error == "cuda" else "RAM" in msg)
    assert "not damaged" in msg and "damaged or incomplete" not in msg and "download it again" not in msg
    assert "Free memory" in msg


def test_out_of_memory_moving_a_loaded_model_in_the_node_is_memory_advice(tmp_path, monkeypatch, models_env):
    """The node's load (read, build, move to the offload device) reports an allocation failure as memory."""
    import importlib

    import torch

    from animevideo.pipelines.errors import AnimeVideoMemoryError
    from animevideo.pipelines.model_cache import MODEL_CACHE

    up_nodes = importlib.import_module("animevideo.nodes.upscale")
    MODEL_CACHE.clear()

    def to(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.nn.Module, "to", to)
    with pytest.raises(AnimeVideoMemoryError) as e:
        up_nodes.load_upscaler_cached("AnimeSR_v2.pth", "auto")
    msg = str(e.value)
    assert "Out of GPU memory while loading 'AnimeSR_v2.pth'" in msg and "damaged" not in msg.replace(
        "not damaged", "")
    MODEL_CACHE.clear()


def test_missing_class_in_an_old_diffusers_names_the_package_and_version(tmp_path, monkeypatch):
    """An ImportError from an incompatible diffusers (a class it does not have yet) is reported as that, with the
    installed version and the version needed, not as a damaged file."""
    import importlib.metadata
    import sys
    import types

    from animevideo.pipelines import dependencies
    from animevideo.pipelines.anisora import loader as anisora_loader
    from animevideo.pipelines.backbones.wan import tiny as anisora_tiny
    from animevideo.pipelines.errors import AnimeVideoDependencyError

    anisora_tiny.write_tiny_anisora(str(tmp_path))
    transformer = os.path.join(str(tmp_path), anisora_tiny.TRANSFORMER_FILE)
    vae = os.path.join(str(tmp_path), anisora_tiny.VAE_FILE)
    old = types.ModuleType("diffusers")  # a diffusers without the Wan classes
    old.__version__ = "0.31.0"
    monkeypatch.setitem(sys.modules, "diffusers", old)
    with pytest.raises(AnimeVideoDependencyError) as e:
        anisora_loader.load_anisora(transformer, vae, "fp32")
    msg = str(e.value)
    installed = importlib.metadata.version("diffusers")
    floor = dict(dependencies.NEEDS["AniSora V2/V3 (Wan2.1)"])["diffusers"]
    assert f"diffusers {installed}" in msg and f"diffusers>={floor}" in msg and "pip install -U" in msg
    assert "ImportError" in msg and "damaged" not in msg.replace("not damaged", "")


def test_attribute_error_from_a_package_names_it_and_our_own_bugs_pass_through():
    import diffusers

    from animevideo.pipelines.checkpoint_io import explain_load_errors
    from animevideo.pipelines.errors import AnimeVideoDependencyError

    with pytest.raises(AnimeVideoDependencyError, match=r"diffusers .*lacks what this model needs.*diffusers>=0\.37"):
        with explain_load_errors("model.safetensors"):
            raise AttributeError("module 'diffusers' has no attribute 'NewModel'", name="NewModel", obj=diffusers)

    class Ours:
        pass

    with pytest.raises(AttributeError, match="no_such_field"):  # a bug of ours is not relabelled
        with explain_load_errors("model.safetensors"):
            Ours().no_such_field  # noqa: B018


@pytest.mark.parametrize("cut", [0, 5, 100, -100])
@pytest.mark.parametrize("kind", ["safetensors", "pth", "legacy"])
def test_truncated_files_are_reported_as_damaged(tmp_path, kind, cut):
    import torch

    from animevideo.pipelines.checkpoint_io import read_state_dict
    from animevideo.pipelines.errors import AnimeVideoModelError

    st, pth = _tiny_files(tmp_path)
    src = st if kind == "safetensors" else pth
    if kind == "legacy":
        torch.save({"w": torch.randn(64, 64)}, str(pth), _use_new_zipfile_serialization=False)
    data = src.read_bytes()
    bad = tmp_path / f"cut{src.suffix}"
    bad.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(AnimeVideoModelError, match="damaged or incomplete"):
        read_state_dict(str(bad))


def test_unreadable_file_is_not_called_damaged(tmp_path):
    from animevideo.pipelines.checkpoint_io import read_state_dict
    from animevideo.pipelines.errors import AnimeVideoModelError

    with pytest.raises(AnimeVideoModelError) as e:
        read_state_dict(str(tmp_path / "gone.safetensors"))
    assert "Could not open 'gone.safetensors'" in str(e.value) and "damaged" not in str(e.value)


def test_no_catch_all_except_in_the_loaders():
    """Loaders must not turn every failure into one message: no bare ``except:`` / ``except Exception``."""
    import glob
    import re

    from pack_paths import ROOT

    files = glob.glob(os.path.join(ROOT, "pipelines", "*", "loader.py")) + [
        os.path.join(ROOT, "pipelines", "checkpoint_io.py"), os.path.join(ROOT, "pipelines", "anisora", "cogvideox.py")] + \
        glob.glob(os.path.join(ROOT, "pipelines", "backbones", "*", "*.py"))
    # the nodes load models too; comfy_bridge.py only wraps ComfyUI's own internals (not a loader)
    files += [f for f in glob.glob(os.path.join(ROOT, "nodes", "*.py")) if not f.endswith("comfy_bridge.py")]
    offenders = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if re.search(r"except\s*(\(\s*)?(Exception|BaseException)\b|except\s*:", line):
                    offenders.append(f"{os.path.relpath(f, ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)

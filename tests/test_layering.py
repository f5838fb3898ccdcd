"""The layering rules, read from the source with ``ast`` (imports inside functions included):

- ``pipelines/`` is plain torch/diffusers code: it never imports the pack's ``nodes/`` nor ComfyUI
  (``comfy``, ``comfy_extras``, ``folder_paths``, ``server``, ComfyUI's own ``nodes``);
- in the pack's runtime code (``__init__.py``, ``nodes/``, ``pipelines/``) only ``nodes/comfy_bridge.py`` imports
  ComfyUI;
- the packages under ``pipelines/`` (``svd``, ``lvcd``, ``backbones.wan``, …, and each top-level module such as
  ``registry``) import each other without a cycle.
"""
import ast
import glob
import os

from pack_paths import ROOT

COMFY_MODULES = {"comfy", "comfy_extras", "folder_paths", "server", "comfy_api", "comfy_execution", "nodes"}
BRIDGE = os.path.join("nodes", "comfy_bridge.py")


def module_name(rel_path: str) -> str:
    parts = rel_path[:-3].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(rel_path: str, source: str | None = None) -> list[tuple[str, int, bool]]:
    """(absolute module, line, is_relative) for every import in the file, function-level ones included. Names
    taken from a package (``from .. import registry``) count as that submodule when it is one."""
    if source is None:
        with open(os.path.join(ROOT, rel_path), encoding="utf-8") as f:
            source = f.read()
    name = module_name(rel_path)
    package = name if rel_path.endswith("__init__.py") else name.rsplit(".", 1)[0] if "." in name else ""
    found = []
    for node in ast.walk(ast.parse(source, rel_path)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, False) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.module, node.lineno, False))
                continue
            base = package.split(".") if package else []
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                is_module = os.path.exists(os.path.join(ROOT, *sub.split(".")) + ".py") or \
                    os.path.isdir(os.path.join(ROOT, *sub.split(".")))
                found.append((sub if is_module else target, node.lineno, True))
    return found


def runtime_files() -> list[str]:
    files = ["__init__.py"]
    for top in ("nodes", "pipelines"):
        files += [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, top, "**", "*.py"), recursive=True)]
    return sorted(files)


def comfy_imports(rel_path: str, source: str | None = None) -> list[str]:
    return [f"{rel_path}:{line}: {mod}" for mod, line, relative in imports_of(rel_path, source)
            if not relative and mod.split(".")[0] in COMFY_MODULES]


def group_of(module: str) -> str | None:
    """The package a pipelines module belongs to: ``pipelines.svd.loader`` -> ``svd``,
    ``pipelines.backbones.wan.keys`` -> ``backbones.wan``, ``pipelines.registry`` -> ``registry``."""
    parts = module.split(".")
    if parts[0] != "pipelines" or len(parts) < 2:
        return None
    if parts[1] == "backbones" and len(parts) > 2:
        return ".".join(parts[1:3])
    return parts[1]


def package_graph(sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for rel in runtime_files():
        if not rel.startswith("pipelines" + os.sep):
            continue
        src = group_of(module_name(rel))
        if src is None:
            continue
        graph.setdefault(src, set())
        for mod, _, _ in imports_of(rel, (sources or {}).get(rel)):
            dst = group_of(mod)
            if dst is not None and dst != src:
                graph[src].add(dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_pipelines_never_import_nodes_or_comfy():
    offenders = []
    for rel in runtime_files():
        if not rel.startswith("pipelines" + os.sep):
            continue
        offenders += comfy_imports(rel)
        offenders += [f"{rel}:{line}: {mod}" for mod, line, relative in imports_of(rel)
                      if relative and mod.split(".")[0] == "nodes"]
    assert not offenders, "\n".join(offenders)


def test_only_the_bridge_imports_comfy():
    offenders = [hit for rel in runtime_files() if rel != BRIDGE for hit in comfy_imports(rel)]
    assert not offenders, "\n".join(offenders)
    assert comfy_imports(BRIDGE), "the bridge is where ComfyUI is imported; the scan must see it"


def test_no_import_cycles_between_pipeline_packages():
    graph = package_graph()
    assert {"svd", "lvcd", "registry", "backbones.cogvideox", "backbones.wan", "anisora"} <= set(graph)
    assert not cycles(graph), cycles(graph)


def test_the_scan_sees_function_level_and_relative_imports():
    """The rules above would catch a violation: checked on edited copies of real files."""
    rel = os.path.join("pipelines", "backbones", "wan", "keys.py")
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        source = f.read()
    nested = source + "\n\ndef _late():\n    from ...anisora import wan\n    import folder_paths\n    return wan\n"
    assert comfy_imports(rel, nested) == [f"{rel}:{nested.count(chr(10)) - 1}: folder_paths"]
    # backbones.wan -> anisora, while anisora imports backbones.wan: a cycle
    assert ["anisora", "backbones.wan"] in cycles(package_graph({rel: nested}))
    assert ("pipelines.registry", 1, True) in imports_of(
        os.path.join("pipelines", "svd", "detect.py"), "from .. import registry\n")

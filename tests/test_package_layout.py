"""The package's shape: no import cycles, imports that flow one way between the stage folders,
and the accessor registered by ``import mastcut_dask`` alone (checked in a fresh interpreter)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import mastcut_dask

PACKAGE = Path(mastcut_dask.__file__).parent
DATA = Path(__file__).parent / "data"

# Each folder may import only from folders further down this list (and from itself); the
# top-level modules options/exceptions sit below everything, cli above everything.
FLOW = ["exceptions", "options", "targets", "services", "decode", "store", "pipeline", "cli", "__init__"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """Every package module ``name`` imports, at module or function level, with the line."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import submodule` imports the submodule; `from mod import name` the module.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        found += [(t, node.lineno) for t in targets if t in known]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: {t for t, _ in _imports(name, path, known) if t != name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_walker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "mastcut_dask"
    (pkg / "sub").mkdir(parents=True)
    source = textwrap.dedent("""
        from ..exceptions import MastcutError
        def f():
            from . import other
            import mastcut_dask.options
    """)
    path = pkg / "sub" / "mod.py"
    path.write_text(source)
    known = {"mastcut_dask.exceptions", "mastcut_dask.sub.other", "mastcut_dask.options", "mastcut_dask.sub"}
    assert sorted(t for t, _ in _imports("mastcut_dask.sub.mod", path, known)) == [
        "mastcut_dask.exceptions", "mastcut_dask.options", "mastcut_dask.sub.other"]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_imports_flow_one_way_between_stages():
    bad = []
    for name, targets in _graph().items():
        source = _stage(name)
        if source == "emulator":
            bad += [f"{name} -> {t}" for t in targets if _stage(t) != "emulator"]
            continue
        for t in targets:
            target = _stage(t)
            if target == "emulator":
                if source != "cli":
                    bad.append(f"{name} -> {t}")
            elif target != source and FLOW.index(target) > FLOW.index(source):
                bad.append(f"{name} -> {t}")
    assert bad == []


def test_only_the_pipeline_imports_distributed():
    users = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(m == "distributed" or m.startswith("distributed.") for m in mods):
                users.add(_stage(name))
    assert users == {"pipeline"}


@pytest.mark.slow
def test_accessor_exists_on_an_opened_store_in_a_fresh_interpreter(tmp_path):
    """``mc.open_cutouts(out)[tid][product].ds.mastcut`` works with nothing imported but
    mastcut_dask (the README's own workflow)."""
    from mastcut_dask.decode import tpf_to_xarray
    from mastcut_dask.store import write_dataset

    with zipfile.ZipFile(DATA / "astrocut_107.27_-70.0_5x5.zip") as zf:
        member = next(m for m in zf.namelist() if m.endswith(".fits"))
        ds = tpf_to_xarray(zf.read(member))
    out = tmp_path / "out"
    write_dataset(str(out), "star", "s0001-4-3", ds)
    script = textwrap.dedent(f"""
        import mastcut_dask as mc
        ds = mc.open_cutouts({str(out)!r})["star"]["s0001-4-3"].ds
        lc = ds.mastcut.lightcurve(aperture="all")
        print(lc.sizes["time"], ds.sizes["time"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    n_lc, n_ds = done.stdout.split()
    assert int(n_lc) == int(n_ds) > 0

"""The package's import graph: three wings, imports one way.

    vitpe_ext.command  ->  vitpe_ext.integrations  ->  vitpe_ext.op

Every module of vitpe_ext is parsed (not imported) and every import statement
in it counts, those inside functions too: a lazy import is still a
dependency, and a cycle of lazy imports is still a cycle. The top level
(vitpe_ext/__init__.py, __main__.py and the old public paths such as
vitpe_ext/ops.py) builds on the wings; no wing imports it back. The public
paths users import by are checked to still work, and importing vitpe_ext to
import neither torchvision nor timm.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = "vitpe_ext"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
WINGS = ("op", "integrations", "command")  # each may import only the wings before it
# Leaves any wing may import: the compiled modules (present or not in this
# checkout) and _version.py (the version alone; it imports nothing).
EXTENSIONS = {"_C", "_C_cuda", "_version"}


# -- the graph ----------------------------------------------------------------------

def module_names(root: Path, package: str) -> Dict[str, Path]:
    """Dotted module name -> file, for every .py file under root."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imports(tree: ast.AST, name: str, is_package: bool, known: Set[str]) -> Set[str]:
    """The package-internal modules a module's import statements name."""
    here = name if is_package else name.rpartition(".")[0]
    found = set()

    def resolve(dotted: str) -> str:
        # the longest known module the dotted name starts with (an imported name's module)
        while dotted not in known and "." in dotted:
            dotted = dotted.rpartition(".")[0]
        return dotted

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import x` imports module pkg.x when there is one, else a name of pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found |= {resolve(t) for t in targets if t == PACKAGE or t.startswith(PACKAGE + ".")}
    found.discard(name)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> Dict[str, Set[str]]:
    files = module_names(root, package)
    known = set(files) | {f"{package}.{ext}" for ext in EXTENSIONS}
    graph = {name: set() for name in known}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py", known)
    return graph


def wing(name: str) -> str:
    """'op', 'integrations', 'command', or 'top' (the package and its top-level modules)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else "top"


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component with more than one module
    (Tarjan), each as a path back to its start."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for component in components:  # a path through the component back to its first module
        start = min(component)
        path, seen = [start], {start}
        while True:
            nxt = min(w for w in graph[path[-1]] if w in component)
            if nxt in seen:
                found.append(path[path.index(nxt):] + [nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return found


def back_imports(graph: Dict[str, Set[str]], package: str = PACKAGE) -> List[str]:
    """Imports against the direction: a wing importing a later wing, or the top level."""
    order = {w: i for i, w in enumerate(WINGS)}
    leaves = {f"{package}.{ext}" for ext in EXTENSIONS}
    bad = []
    for source in sorted(graph):
        if wing(source) == "top":
            continue
        for target in sorted(graph[source]):
            if target in leaves:
                continue
            if wing(target) == "top" or order[wing(target)] > order[wing(source)]:
                bad.append(f"{source} imports {target} ({wing(source)} -> {wing(target)})")
    return bad


# -- the package --------------------------------------------------------------------

def test_every_wing_is_there():
    graph = import_graph()
    for name in WINGS:
        assert any(wing(module) == name for module in graph), f"no modules in {PACKAGE}.{name}"


def test_no_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_imports_run_one_way():
    bad = back_imports(import_graph())
    assert not bad, "imports against command -> integrations -> op:\n" + "\n".join(bad)


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # a function-level import (the command's demo), and a relative from-import of a module
    assert "vitpe_ext.command.demo" in graph["vitpe_ext.command.cli"]
    assert "vitpe_ext.integrations.sincos" in graph["vitpe_ext.command.checkpoint"]
    assert "vitpe_ext.op.function" in graph["vitpe_ext.op"]
    assert "vitpe_ext._C" in graph["vitpe_ext.op.registration"]
    assert graph["vitpe_ext._version"] == set()  # a leaf


# -- the checker itself, on a small package with the mistakes it must catch ------------

def _write(root: Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_reports_back_imports_and_cycles(tmp_path):
    root = tmp_path / PACKAGE
    _write(root, {
        "__init__.py": "from . import op\n",
        "op/__init__.py": "",
        "op/function.py": "def f():\n    from ..command import cli  # lazy, still a dependency\n",
        "op/profiles.py": "from .function import f\n",
        "integrations/__init__.py": "",
        "integrations/dynamic.py": "import vitpe_ext.op.profiles\nfrom vitpe_ext import interpolate\n",
        "command/__init__.py": "",
        "command/cli.py": "from ..op import profiles\n",
    })
    graph = import_graph(root)
    assert back_imports(graph) == [
        "vitpe_ext.integrations.dynamic imports vitpe_ext (integrations -> top)",
        "vitpe_ext.op.function imports vitpe_ext.command.cli (op -> command)",
    ]
    assert cycles(graph) == [["vitpe_ext.command.cli", "vitpe_ext.op.profiles", "vitpe_ext.op.function",
                              "vitpe_ext.command.cli"]]


# -- public paths ---------------------------------------------------------------------

def _python(code: str) -> subprocess.CompletedProcess:
    # from another directory, so that the installed package is what is imported
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT.parents[1], capture_output=True, text=True,
                          timeout=120)


def test_importing_vitpe_ext_imports_neither_torchvision_nor_timm():
    done = _python("import sys, vitpe_ext\n"
                   "assert 'torchvision' not in sys.modules and 'timm' not in sys.modules, "
                   "sorted(m for m in sys.modules if m.startswith(('torchvision', 'timm')))")
    assert done.returncode == 0, done.stderr


def test_importing_vitpe_ext_does_not_import_transformers():
    done = _python("import sys, vitpe_ext, vitpe_ext.integrations\n"
                   "assert 'transformers' not in sys.modules, "
                   "sorted(m for m in sys.modules if m.startswith('transformers'))")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("old, new", [
    ("vitpe_ext.ops", "vitpe_ext.op"),
    ("vitpe_ext.profiles", "vitpe_ext.op.profiles"),
    ("vitpe_ext.reference", "vitpe_ext.op.reference"),
    ("vitpe_ext.param_groups", "vitpe_ext.integrations.param_groups"),
    ("vitpe_ext.torchvision", "vitpe_ext.integrations.torchvision"),
    ("vitpe_ext.timm", "vitpe_ext.integrations.timm"),
    ("vitpe_ext.transformers", "vitpe_ext.integrations.transformers"),
    ("vitpe_ext.bench", "vitpe_ext.command.bench"),
])
def test_public_paths_are_the_wings_modules(old, new):
    done = _python(f"import importlib, {old}, {new}\n"
                   f"assert importlib.import_module({old!r}) is importlib.import_module({new!r})\n"
                   f"import {old} as alias; assert alias.__name__ == {new!r}")
    assert done.returncode == 0, done.stderr


def test_public_names():
    import vitpe_ext
    from vitpe_ext import op
    assert vitpe_ext.interpolate_pos_embed is op.interpolate_pos_embed
    assert vitpe_ext.MODES == op.MODES and vitpe_ext.PROFILES is op.PROFILES
    assert vitpe_ext.ops is op and vitpe_ext.profiles is op.profiles
    assert vitpe_ext.ops.check_call is op.check_call
    from vitpe_ext.integrations.dynamic import DynamicPosEmbed
    from vitpe_ext.integrations.param_groups import layer_decay_groups
    assert vitpe_ext.DynamicPosEmbed is DynamicPosEmbed and vitpe_ext.layer_decay_groups is layer_decay_groups


def test_python_m_vitpe_ext_bench_runs_the_bench():
    done = subprocess.run([sys.executable, "-m", "vitpe_ext.bench", "--help"], cwd=ROOT.parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: vitpe bench"), done.stderr

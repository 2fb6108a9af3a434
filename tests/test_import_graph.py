"""The package's import graph: no cycle in affpipe/ (module-level and function-level imports alike),
and the registry the DAG build reads is torch-free (issue 14 §4)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "affpipe"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the affpipe modules it imports anywhere in its body (top level, functions, classes,
    TYPE_CHECKING blocks). `from pkg import name` counts as importing the submodule pkg.name when
    there is one, else pkg. A package's __init__ imported only implicitly (as the parent of a submodule)
    is not an edge."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for a in node.names:
                    if f"{mod}.{a.name}" in mods:
                        deps.add(f"{mod}.{a.name}")
                    elif mod in mods:
                        deps.add(mod)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    # function-level: common.smk-facing helpers import lazily; e.g. experiment.py imports train in a function
    assert "affpipe.regress.train" in graph["affpipe.regress.experiment"]
    assert "affpipe.regress.registry" in graph["affpipe.regress.regressors"]
    assert "affpipe.regress.regressors" in graph["affpipe.regress"]


def test_no_import_cycle_in_the_package():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_registry_is_complete_and_torch_free():
    """Importing the registry (which runs the package's __init__, registering every regressor) loads
    no torch: the Snakemake DAG build asks it which inputs a regressor reads."""
    code = ("import sys; from affpipe.regress.registry import REGRESSORS; "
            "print(sorted(REGRESSORS)); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cv2', 'dlib')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    names, heavy = res.stdout.strip().splitlines()
    assert names == str(sorted(["ap", "astnet", "attention", "bgru", "cnn", "multilevel", "none"]))
    assert heavy == "[]"


def test_only_the_cli_imports_the_commands():
    """The command modules are the CLI's edge (issue 14): no package module outside affpipe.commands
    imports them except affpipe.cli, and a command imports no other command (shared helpers live in
    affpipe.commands._common)."""
    graph = import_graph()
    commands = {m for m in graph if m == "affpipe.commands" or m.startswith("affpipe.commands.")}
    shared = {"affpipe.commands", "affpipe.commands._common"}
    outside = sorted(f"{m} -> {d}" for m, deps in graph.items() if m not in commands and m != "affpipe.cli"
                     for d in deps & commands)
    assert outside == [], "package modules importing the CLI layer: " + "; ".join(outside)
    across = sorted(f"{m} -> {d}" for m in commands - shared for d in graph[m] & (commands - shared - {m}))
    assert across == [], "commands importing other commands: " + "; ".join(across)
    assert graph["affpipe.cli"] & commands, "the check found no import of affpipe.commands by the CLI"

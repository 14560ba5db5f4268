"""The package's import graph: one-way layers, no cycles (function-level imports included).

Layers (DESIGN of the EP-family model, README "Architecture"): core (registry, equations,
network, dynamics) -> algorithms -> backends and engines -> config -> training ->
storage -> hardware -> lava -> sweep/report -> cli. A lower module never imports a
higher one; the fixed engine is registered by name (``Registry.register_lazy``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import neuro_hts

PKG = Path(neuro_hts.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports anywhere in its source (``from . import x`` counts x and the package)."""
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        base = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    graph[m].add(t)
    return graph


def find_cycle(graph) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None (iterative DFS with colours)."""
    colour = {m: 0 for m in graph}
    for root in graph:
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "neuro_hts.training" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_lower_layers_do_not_import_higher_ones():
    graph = import_graph()
    lower = ["neuro_hts.registry", "neuro_hts.dynamics", "neuro_hts.algorithms", "neuro_hts.engines",
             "neuro_hts.network", "neuro_hts.learning", "neuro_hts.training"]
    for m in lower:
        bad = {t for t in graph[m] if t.startswith(("neuro_hts.hardware", "neuro_hts.lava", "neuro_hts.cli",
                                                     "neuro_hts.sweep", "neuro_hts.report"))}
        assert not bad, f"{m} imports {bad}"
    # training reaches the fixed engine only through the engine registry
    assert "neuro_hts.hardware.fixed_learning" not in graph["neuro_hts.training"]

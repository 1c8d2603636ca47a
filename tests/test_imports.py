"""The skdd package's import graph has no cycles, counting imports inside functions.

A cycle (it was cli <-> pipeline_cli through the stage lookup, and s3 <-> storage) means two modules can only be
understood, tested and loaded together; stages are found in `skdd.stages.registry`, the folder layout both stores
share lives in `skdd.layout`.
"""

from __future__ import annotations

from import_closure import imports_of, modules


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_skdd_import_graph_has_no_cycles():
    graph = {m: imports_of(m) - {m} for m in modules()}
    assert len(graph) > 40 and graph["skdd.cli"]          # the graph was really read
    assert _cycles(graph) == []
